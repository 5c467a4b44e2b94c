//! Aggregation state over many epochs and restarts: large multisets (MIN
//! and MAX over a table, COUNT_DISTINCT, TOPK) give what a recount of the
//! source gives, after updates, deletes, a group emptied and filled again,
//! and restarts that read the state back from the store.

use std::path::Path;
use std::sync::Arc;

mod common;

use brook_server::Brook;

const SETUP: &str = "CREATE TABLE src (id INT PRIMARY KEY, k INT, v INT) WITH (KAFKA_TOPIC='src', PARTITIONS=1);
CREATE TABLE agg AS SELECT k, COUNT(*) AS n, MIN(v) AS lo, MAX(v) AS hi, COUNT_DISTINCT(v) AS d, TOPK(v, 3) AS best FROM src GROUP BY k;";

async fn sorted(brook: &Arc<Brook>, sql: &str) -> Vec<String> {
    let mut rows = common::rows(brook, sql).await;
    rows.sort();
    rows
}

/// The table as the query keeps it, and as a recount of the source gives it.
async fn table_and_recount(brook: &Arc<Brook>) -> (Vec<String>, Vec<String>) {
    // A group whose rows are all gone stays, counting 0 (as in ksqlDB).
    let table = sorted(brook, "SELECT k, n, lo, hi, d, best FROM agg WHERE n > 0;").await;
    let recount = sorted(
        brook,
        "SELECT k, COUNT(*), MIN(v), MAX(v), COUNT(DISTINCT v), TOPK(v, 3) FROM src GROUP BY k;",
    )
    .await;
    (table, recount)
}

async fn insert(brook: &Arc<Brook>, rows: impl Iterator<Item = (i64, i64, i64)>) {
    let values: Vec<String> = rows.map(|(id, k, v)| format!("({id}, {k}, {v})")).collect();
    brook
        .session()
        .execute(&format!(
            "INSERT INTO src (id, k, v) VALUES {}; FLUSH;",
            values.join(", ")
        ))
        .await
        .unwrap();
}

async fn delete(brook: &Arc<Brook>, ids: impl Iterator<Item = i64>) {
    // A tombstone per id, written as a Kafka producer would.
    let records: Vec<brook_storage::Record> = ids
        .map(|id| brook_storage::Record {
            timestamp: 1,
            key: Some((id as i32).to_be_bytes().to_vec()),
            value: None,
            headers: vec![],
        })
        .collect();
    brook.engine().produce("src", 0, &records).unwrap();
    brook.session().execute("FLUSH;").await.unwrap();
}

async fn reopen(dir: &Path, brook: Arc<Brook>) -> Arc<Brook> {
    brook.shutdown().await;
    drop(brook);
    Brook::open_with(dir, false).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_multisets_survive_updates_deletes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute(SETUP).await.unwrap();
    // Three groups of 100 distinct values each, over several epochs.
    for chunk in 0..3 {
        insert(
            &brook,
            (0..100).map(|i| {
                let id = chunk * 100 + i;
                (id, id % 3, (id * 7) % 300)
            }),
        )
        .await;
    }
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    assert_eq!(table.len(), 3);

    // Restart: the state is read back from the store.
    brook = reopen(dir.path(), brook).await;
    // Updates move values (the old one retracted), some to new extremes.
    insert(&brook, (0..60).map(|id| (id, id % 3, 1000 + id))).await;
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);

    // Group 1 loses every row; the others lose their top values.
    let group_1: Vec<i64> = (0..300).filter(|id| id % 3 == 1).collect();
    delete(&brook, group_1.iter().copied()).await;
    delete(&brook, (0..60).filter(|id| id % 3 != 1)).await;
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    assert_eq!(table.len(), 2, "group 1 has no rows: {table:?}");

    // It comes back with new values only: nothing of its old values may
    // linger in its state, which a restart reads back.
    brook = reopen(dir.path(), brook).await;
    insert(&brook, (0..5).map(|i| (1000 + i, 1, 5000 + i))).await;
    brook = reopen(dir.path(), brook).await;
    insert(&brook, (5..80).map(|i| (1000 + i, 1, 5000 + i))).await;
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    let group_1 = sorted(&brook, "SELECT n, d FROM agg WHERE k = 1;").await;
    assert_eq!(group_1, vec!["80 80".to_string()]);
    brook.shutdown().await;
}
