//! A damaged catalog stops Brook with a clear error naming the record's
//! offset (never a panic), and `brook catalog truncate` recovers it. One
//! process per data directory.

use std::sync::Arc;

use brook_server::{repair, Brook, Output};
use brook_storage::{LogConfig, LogStore, Record, CATALOG_TOPIC};

async fn run(brook: &Arc<Brook>, sql: &str) -> Vec<Output> {
    brook.session().execute(sql).await.unwrap()
}

fn append_to_catalog(dir: &std::path::Path, key: Option<Vec<u8>>, value: Option<Vec<u8>>) {
    let log = LogStore::open(dir.join("log"), LogConfig::default()).unwrap();
    let record = Record {
        timestamp: 0,
        key,
        value,
        headers: vec![],
    };
    log.append(CATALOG_TOPIC, 0, &[record]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_catalog_is_reported_by_offset_and_truncate_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    run(
        &brook,
        "CREATE STREAM s (id INT KEY, v STRING) WITH (KAFKA_TOPIC='s', PARTITIONS=1);",
    )
    .await;
    brook.shutdown().await;
    drop(brook);

    // What a client once could write there: a record that is no command.
    append_to_catalog(dir.path(), Some(vec![]), Some(b"x".to_vec()));
    let err = match Brook::open_with(dir.path(), false).await {
        Ok(_) => panic!("a damaged catalog must stop Brook"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("catalog record at offset 1"), "{err}");
    assert!(err.contains("brook catalog truncate --at 1"), "{err}");

    let listed = repair::catalog_records(dir.path()).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0]
        .statement
        .as_ref()
        .unwrap()
        .contains("CREATE STREAM s"));
    assert!(listed[1].statement.is_err());

    let (backup, kept) = repair::truncate_catalog(dir.path(), 1).unwrap();
    assert_eq!(kept, 1);
    assert!(backup.is_dir());

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    assert!(brook.catalog_snapshot().sources.contains_key("S"));
    let out = run(
        &brook,
        "CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;",
    )
    .await;
    // Command 1 is S, command 2 the marker of what was dropped: the new
    // query's id does not reuse a dropped command's number.
    match &out[0] {
        Output::Command { query_id, .. } => assert_eq!(query_id.as_deref(), Some("CTAS_T_3")),
        _ => panic!("expected a command"),
    }
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_command_that_is_not_json_is_reported_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.shutdown().await;
    drop(brook);
    append_to_catalog(
        dir.path(),
        Some(1u64.to_be_bytes().to_vec()),
        Some(b"{\"sql\": 1}".to_vec()),
    );
    let err = match Brook::open_with(dir.path(), false).await {
        Ok(_) => panic!("a damaged catalog must stop Brook"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("offset 0 (command 1) cannot be replayed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let err = match Brook::open_with(dir.path(), false).await {
        Ok(_) => panic!("two engines on one data directory"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use by another Brook process"), "{err}");
    assert!(repair::catalog_records(dir.path()).is_err());
    brook.shutdown().await;
}
