//! A data directory of a version that kept its state in sled (`meta/`)
//! opens with that state moved to the LSM store (`state/`): tables answer
//! at once, without a rebuild, nothing is written to a sink again, and the
//! sled directory is gone.

use std::sync::Arc;

mod common;

use brook_server::Brook;
use brook_storage::{FjallStateStore, SledStateStore, StateStore, WriteBatch};

const SETUP: &str = "CREATE STREAM s (id INT KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);
CREATE TABLE t AS SELECT id, COUNT(*) AS n, SUM(v) AS total FROM s GROUP BY id;";

async fn table(brook: &Arc<Brook>) -> Vec<String> {
    let mut rows = common::rows(brook, "SELECT id, n, total FROM t;").await;
    rows.sort();
    rows
}

fn sink_records(brook: &Arc<Brook>) -> usize {
    brook.engine().log().read("T", 0, 0, 100_000).unwrap().len()
}

/// Rewrites the data directory as the earlier version left it: every pair
/// of the state store in the sled tree `state` under `meta/`.
fn downgrade(dir: &std::path::Path) {
    let state = dir.join("state");
    let pairs = FjallStateStore::open(&state, true)
        .unwrap()
        .scan_prefix(b"")
        .unwrap();
    assert!(!pairs.is_empty());
    let db = SledStateStore::open_db(&dir.join("meta")).unwrap();
    let mut batch = WriteBatch::default();
    for (k, v) in pairs {
        batch.put(k, v);
    }
    SledStateStore::open(&db).unwrap().commit(batch).unwrap();
    db.flush().unwrap();
    drop(db);
    std::fs::remove_dir_all(&state).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_kept_in_sled_by_an_earlier_version_is_moved_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), true).await.unwrap();
    brook.session().execute(SETUP).await.unwrap();
    common::insert_in_one_epoch(&brook, 0..40).await;
    let before = table(&brook).await;
    let written = sink_records(&brook);
    assert_eq!(before.len(), 7);
    brook.shutdown().await;
    drop(brook);
    downgrade(dir.path());

    let brook = Brook::open_with(dir.path(), true).await.unwrap();
    assert!(!dir.path().join("meta").exists(), "the sled store is gone");
    assert!(dir.path().join("state").is_dir());
    // No rebuild: the table answers before any FLUSH, with the same rows.
    assert_eq!(table(&brook).await, before);
    brook.session().execute("FLUSH;").await.unwrap();
    assert_eq!(sink_records(&brook), written, "nothing written again");
    // The query goes on from its migrated checkpoint.
    common::insert_in_one_epoch(&brook, 40..45).await;
    assert_eq!(sink_records(&brook), written + 5);
    let after = table(&brook).await;
    let recount = {
        let mut rows =
            common::rows(&brook, "SELECT id, COUNT(*), SUM(v) FROM s GROUP BY id;").await;
        rows.sort();
        rows
    };
    assert_eq!(after, recount);
    brook.shutdown().await;
}
