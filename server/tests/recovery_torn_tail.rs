//! A torn tail cut below what a persistent query committed: the source's
//! end moves past the offsets the query had read (so no new record takes
//! one), a table is rebuilt from what the log holds (so it, and the last
//! record per key of its sink topic, equal a recount of the surviving
//! source), a stream keeps what it emitted and misses nothing new, and a
//! torn sink is rebuilt rather than stopping the query for good. And the
//! crash window of the commit protocol: an epoch's output appended to the
//! sink, its commit lost; the epoch runs again and nothing is written twice.

use std::path::Path;
use std::sync::Arc;

mod common;

use brook_server::Brook;

/// Without the record cache, `t`'s sink gets one upsert per input record:
/// what a torn sink lost is then known record for record.
const SETUP: &str = "SET 'cache.max.bytes.buffering' = '0';
CREATE STREAM s (id INT KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);
CREATE TABLE t AS SELECT id, COUNT(*) AS n, SUM(v) AS total FROM s GROUP BY id;
CREATE STREAM odd AS SELECT id, v FROM s WHERE v % 2 = 1;";

/// The rows of a pull query, sorted.
async fn sorted(brook: &Arc<Brook>, sql: &str) -> Vec<String> {
    let mut rows = common::rows(brook, sql).await;
    rows.sort();
    rows
}

/// The table as the query keeps it, and as a recount of the source gives it.
async fn table_and_recount(brook: &Arc<Brook>) -> (Vec<String>, Vec<String>) {
    (
        sorted(brook, "SELECT id, n, total FROM t;").await,
        sorted(
            brook,
            "SELECT id, COUNT(*) AS n, SUM(v) AS total FROM s GROUP BY id;",
        )
        .await,
    )
}

/// What a topic's partition 0 holds: key and value of each record.
type Contents = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;

fn contents(brook: &Arc<Brook>, topic: &str) -> Contents {
    brook
        .engine()
        .log()
        .read(topic, 0, 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|r| (r.record.key, r.record.value))
        .collect()
}

/// Inserts rows `(i % 7, i)` into `s`, one statement (and epoch) each.
async fn insert_one_per_epoch(brook: &Arc<Brook>, rows: std::ops::Range<i32>) {
    for i in rows {
        brook
            .session()
            .execute(&format!(
                "INSERT INTO s (id, v) VALUES ({}, {i}); FLUSH;",
                i % 7
            ))
            .await
            .unwrap();
    }
}

/// Writes 100 records through the query, then stops; returns what the
/// sink `T` holds. With `one_epoch_each`, the query takes each record in
/// an epoch of its own (each sink record is a batch of one); else all 100
/// come in one statement and the query takes them in one epoch (the sink
/// gets one batch of 100).
async fn fill(dir: &Path, one_epoch_each: bool) -> Contents {
    let brook = Brook::open_with(dir, false).await.unwrap();
    brook.session().execute(SETUP).await.unwrap();
    if one_epoch_each {
        insert_one_per_epoch(&brook, 0..100).await;
    } else {
        common::insert_in_one_epoch(&brook, 0..100).await;
    }
    let sink = contents(&brook, "T");
    assert_eq!(sink.len(), 100);
    brook.shutdown().await;
    sink
}

/// Whether recovery cut a torn tail off `topic` when `brook` opened.
fn tail_cut(brook: &Arc<Brook>, topic: &str) -> bool {
    brook.engine().log().recovery_reports().iter().any(|r| {
        r.topic == topic && matches!(r.action, brook_storage::RecoveryAction::TailCut { .. })
    })
}

/// Cuts `bytes` off the last segment of a topic's partition 0, as a torn
/// write (or an operator) would leave it.
fn cut_tail(dir: &Path, topic: &str, bytes: u64) {
    let part = dir.join("log").join(topic).join("0");
    let last = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_source_rebuilds_the_table_and_reuses_no_offset() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), true).await;
    cut_tail(dir.path(), "s", 100);

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let count = |brook: &Arc<Brook>, sql: &'static str| {
        let brook = Arc::clone(brook);
        async move { common::rows(&brook, sql).await[0].parse::<u64>().unwrap() }
    };
    let survived = count(&brook, "SELECT COUNT(*) FROM s;").await;
    assert!(survived < 100, "the cut dropped nothing");
    // The offsets the query had read stay unused, and SHOW TOPICS EXTENDED
    // says so.
    assert_eq!(brook.engine().log().end_offset("s", 0).unwrap(), 100);
    let out = brook
        .session()
        .execute("SHOW TOPICS EXTENDED;")
        .await
        .unwrap();
    let Some(brook_server::Output::Listing { batches, .. }) = out.into_iter().next() else {
        panic!("SHOW TOPICS EXTENDED gives a listing");
    };
    let text: String = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).flat_map(move |r| {
                b.columns().iter().map(move |c| {
                    brook_server::render::cell_text(c.as_ref(), r).unwrap_or_default()
                })
            })
        })
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains(&format!("partition 0: end moved from {survived} to 100")),
        "{text}"
    );
    brook.session().execute("FLUSH;").await.unwrap();
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);

    // New records take fresh offsets: the table counts them, the stream
    // has each once, after the 50 odd rows it emitted before the cut.
    brook
        .session()
        .execute("INSERT INTO s (id, v) VALUES (1, 1001), (2, 2001); FLUSH;")
        .await
        .unwrap();
    assert_eq!(brook.engine().log().end_offset("s", 0).unwrap(), 102);
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    let odd = sorted(&brook, "SELECT v FROM odd;").await;
    let mut want: Vec<String> = (0..100)
        .filter(|v| v % 2 == 1)
        .chain([1001, 2001])
        .map(|v: i32| v.to_string())
        .collect();
    want.sort();
    assert_eq!(odd, want);

    // The sink topic's last record per key is the recount too.
    brook
        .session()
        .execute("CREATE TABLE sink_view (id INT PRIMARY KEY, n BIGINT, total INT) WITH (KAFKA_TOPIC='T'); FLUSH;")
        .await
        .unwrap();
    let from_sink = sorted(&brook, "SELECT id, n, total FROM sink_view;").await;
    assert_eq!(from_sink, recount);

    // And after a restart, the hole is still there and nothing moves.
    brook.shutdown().await;
    drop(brook);
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    assert_eq!(brook.engine().log().end_offset("s", 0).unwrap(), 102);
    brook.session().execute("FLUSH;").await.unwrap();
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    assert_eq!(count(&brook, "SELECT COUNT(*) FROM odd;").await, 52);
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_sink_is_reconciled_and_the_query_goes_on() {
    // The cut takes sink records the query committed: the 100 records came
    // one per epoch, or all in one epoch (one batch). Its output is stored
    // once, in the sink, so the table is counted again from its source and
    // the sink gets what makes its last record per key the table's.
    for one_epoch_each in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let before = fill(dir.path(), one_epoch_each).await;
        cut_tail(dir.path(), "T", 600);

        let brook = Brook::open_with(dir.path(), false).await.unwrap();
        assert!(tail_cut(&brook, "T"));
        brook.session().execute("FLUSH;").await.unwrap();
        let (table, recount) = table_and_recount(&brook).await;
        assert_eq!(table, recount);
        assert_eq!(last_per_key(&contents(&brook, "T")), last_per_key(&before));
        brook
            .session()
            .execute("INSERT INTO s (id, v) VALUES (3, 5); FLUSH;")
            .await
            .unwrap();
        let (table, recount) = table_and_recount(&brook).await;
        assert_eq!(table, recount);
        let reconciled = contents(&brook, "T");
        brook.shutdown().await;
        drop(brook);

        // And a restart finds nothing more to write.
        let brook = Brook::open_with(dir.path(), false).await.unwrap();
        brook.session().execute("FLUSH;").await.unwrap();
        assert!(contents(&brook, "T") == reconciled, "the sink differs");
        brook.shutdown().await;
    }
}

/// Copies a directory tree (a stopped engine's state store).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Puts back the state store saved by `save_state`: the commits made since
/// are lost, as when a crash comes after an epoch's output is appended and
/// before its commit, while the log keeps that output.
fn lose_commits_since(dir: &Path, saved: &Path) {
    let state = dir.join("state");
    std::fs::remove_dir_all(&state).unwrap();
    copy_dir(saved, &state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_written_but_not_committed_are_processed_again_and_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute(SETUP).await.unwrap();
    insert_one_per_epoch(&brook, 0..20).await;
    brook.shutdown().await;
    drop(brook);
    copy_dir(&dir.path().join("state"), saved.path());

    // Several more epochs, one of several records.
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    insert_one_per_epoch(&brook, 20..30).await;
    common::insert_in_one_epoch(&brook, 30..60).await;
    let (t, odd) = (contents(&brook, "T"), contents(&brook, "ODD"));
    assert_eq!((t.len(), odd.len()), (60, 30));
    brook.shutdown().await;
    drop(brook);
    lose_commits_since(dir.path(), saved.path());

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute("FLUSH;").await.unwrap();
    // Every epoch after the saved state ran again over the same input and
    // wrote nothing: its output was there.
    assert!(contents(&brook, "T") == t, "the table's sink differs");
    assert!(contents(&brook, "ODD") == odd, "the stream's sink differs");
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    // And the queries go on from there.
    brook
        .session()
        .execute("INSERT INTO s (id, v) VALUES (3, 61); FLUSH;")
        .await
        .unwrap();
    assert_eq!(contents(&brook, "T").len(), 61);
    assert_eq!(contents(&brook, "ODD").len(), 31);
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_written_in_part_before_a_crash_gets_the_rest_of_its_output_once() {
    // An epoch's output larger than one log append is written in several;
    // a crash after the first and before the commit leaves a prefix: the
    // epoch runs again and only the rest is written.
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook
        .session()
        .execute(
            "CREATE STREAM s (id INT KEY, n INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);
             CREATE STREAM big AS SELECT id, LPAD('x', 5000000 + n, 'y') AS pad FROM s;
             INSERT INTO s (id, n) VALUES (0, 0); FLUSH;",
        )
        .await
        .unwrap();
    brook.shutdown().await;
    drop(brook);
    copy_dir(&dir.path().join("state"), saved.path());
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook
        .session()
        .execute("INSERT INTO s (id, n) VALUES (1, 1), (2, 2), (3, 3); FLUSH;")
        .await
        .unwrap();
    let before = contents(&brook, "BIG");
    assert_eq!(before.len(), 4);
    brook.shutdown().await;
    drop(brook);
    lose_commits_since(dir.path(), saved.path());
    // The last of the epoch's appends did not happen either.
    cut_tail(dir.path(), "BIG", 600);

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    assert!(tail_cut(&brook, "BIG"));
    brook.session().execute("FLUSH;").await.unwrap();
    assert!(contents(&brook, "BIG") == before, "the sink differs");
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_torn_deep_is_rebuilt() {
    // A cut through many committed epochs: the query's state is rebuilt
    // from the source, and the sink gets back what it lost.
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute(SETUP).await.unwrap();
    insert_one_per_epoch(&brook, 0..300).await;
    let before = contents(&brook, "T");
    assert_eq!(before.len(), 300);
    brook.shutdown().await;
    drop(brook);
    // Leave about 20 of the 300 records.
    let segment = dir.path().join("log/T/0/00000000000000000000.log");
    let len = std::fs::metadata(&segment).unwrap().len();
    cut_tail(dir.path(), "T", len * 280 / 300);

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    assert!(tail_cut(&brook, "T"));
    brook.session().execute("FLUSH;").await.unwrap();
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    // The sink gets what differs from the rebuilt table, not its history:
    // its last record per key is the table's again.
    let after = contents(&brook, "T");
    assert!(after.len() < before.len(), "{} records", after.len());
    assert_eq!(last_per_key(&after), last_per_key(&before));
    brook.shutdown().await;
}

/// The last value per key of a changelog.
fn last_per_key(
    records: &Contents,
) -> std::collections::BTreeMap<Option<Vec<u8>>, Option<Vec<u8>>> {
    records.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_source_rows_were_all_lost_is_deleted_from_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute(SETUP).await.unwrap();
    for row in ["(1, 1)", "(1, 2)", "(99, 3)"] {
        brook
            .session()
            .execute(&format!("INSERT INTO s (id, v) VALUES {row}; FLUSH;"))
            .await
            .unwrap();
    }
    brook.shutdown().await;
    drop(brook);
    // The last source record, the only one of key 99, is torn off.
    cut_tail(dir.path(), "s", 5);

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute("FLUSH;").await.unwrap();
    let (table, recount) = table_and_recount(&brook).await;
    assert_eq!(table, recount);
    assert_eq!(table, vec!["1 2 3"]);
    brook
        .session()
        .execute("CREATE TABLE sink_view (id INT PRIMARY KEY, n BIGINT, total INT) WITH (KAFKA_TOPIC='T'); FLUSH;")
        .await
        .unwrap();
    assert_eq!(
        sorted(&brook, "SELECT id, n, total FROM sink_view;").await,
        recount
    );
    // Key 1's row was right already: only the tombstone of 99 is new.
    assert_eq!(contents(&brook, "T").len(), 4);
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sink_torn_after_a_source_tear_is_rebuilt_by_content() {
    // A stream keeps a row it emitted from a source record a torn tail
    // took; the same row, inserted again, is emitted again; a cut then
    // takes that second one, and a later one, from the sink. The query's
    // output is stored once, in the sink: it is rebuilt from its source,
    // writing what the sink does not hold. The second copy of the row is
    // taken for the first (docs/design: what a torn sink keeps).
    let dir = tempfile::tempdir().unwrap();
    let setup = "CREATE STREAM s (id INT KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);
        CREATE STREAM f AS SELECT id, v FROM s WHERE v > 0;";
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook.session().execute(setup).await.unwrap();
    for row in ["(1, 5)", "(2, 6)"] {
        brook
            .session()
            .execute(&format!("INSERT INTO s (id, v) VALUES {row}; FLUSH;"))
            .await
            .unwrap();
    }
    brook.shutdown().await;
    drop(brook);
    cut_tail(dir.path(), "s", 5);

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook
        .session()
        .execute("INSERT INTO s (id, v) VALUES (2, 6); FLUSH;")
        .await
        .unwrap();
    let segment = dir.path().join("log/F/0/00000000000000000000.log");
    let len = std::fs::metadata(&segment).unwrap().len();
    // One more epoch: the cut takes two.
    brook
        .session()
        .execute("INSERT INTO s (id, v) VALUES (3, 7); FLUSH;")
        .await
        .unwrap();
    let last_frame = std::fs::metadata(&segment).unwrap().len() - len;
    let before = contents(&brook, "F");
    assert_eq!(
        before.len(),
        4,
        "the emitted row stays, and the new ones come"
    );
    brook.shutdown().await;
    drop(brook);
    cut_tail(dir.path(), "F", last_frame + 5);

    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    assert!(tail_cut(&brook, "F"));
    brook.session().execute("FLUSH;").await.unwrap();
    let after = contents(&brook, "F");
    let distinct = |c: &Contents| c.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    assert_eq!(distinct(&after), distinct(&before));
    assert_eq!(after.len(), 3, "each distinct row once: {after:?}");
    brook.shutdown().await;
}
