//! Crash tests of a `brook server` child process.
//!
//! - SIGKILL at seeded random moments during concurrent INSERT ingest, 20
//!   rounds: after each restart every acknowledged row is present exactly
//!   once, the COUNT table agrees with the stream, a stream-table join saw
//!   every row exactly once and a query chained on it agrees too, hourly
//!   tumbling windows and sessions (merged on every record) hold exactly
//!   the stream's rows, and the sink topic holds one upsert per input row.
//! - A deleted or unopenable state store is rebuilt from the log with
//!   identical pull results; until then pull queries say "not ready".
//!
//! `BROOK_CRASH_SEED` picks another seed (the default is fixed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

mod common;
use common::{lcg, rows, Server};

/// Without the record cache every input row is one upsert of the sink,
/// which is how the checks below count that no epoch was written twice.
const SETUP: &str = "SET 'cache.max.bytes.buffering' = '0';
     CREATE STREAM pageviews (user_id INT KEY, url STRING, ms BIGINT) WITH (PARTITIONS=3);
     CREATE TABLE views_per_user AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM pageviews GROUP BY user_id;";

/// A stream-table join and a query chained on it, in the second test's
/// workload: every page view gets its user's name, and the chained count
/// must match; and a three-way join (page views, users, tiers).
const JOIN_SETUP: &str = "CREATE TABLE users (user_id INT PRIMARY KEY, name STRING) WITH (PARTITIONS=3);
     INSERT INTO users (user_id, name) VALUES (0, 'u0'), (1, 'u1'), (2, 'u2'), (3, 'u3'), (4, 'u4'), (5, 'u5'), (6, 'u6'), (7, 'u7'), (8, 'u8'), (9, 'u9'), (10, 'u10'), (11, 'u11'), (12, 'u12');
     FLUSH;
     CREATE STREAM named AS SELECT p.user_id AS user_id, p.ms, u.name FROM pageviews p JOIN users u ON p.user_id = u.user_id;
     CREATE TABLE named_counts AS SELECT user_id, COUNT(*) AS n FROM named GROUP BY user_id;
     CREATE TABLE tiers (user_id INT PRIMARY KEY, tier STRING) WITH (PARTITIONS=3);
     INSERT INTO tiers (user_id, tier) VALUES (0, 'a'), (1, 'b'), (2, 'a'), (3, 'b'), (4, 'a'), (5, 'b'), (6, 'a'), (7, 'b'), (8, 'a'), (9, 'b'), (10, 'a'), (11, 'b'), (12, 'a');
     FLUSH;
     CREATE STREAM tiered AS SELECT p.user_id AS user_id, p.ms, u.name, t.tier FROM pageviews p JOIN users u ON p.user_id = u.user_id JOIN tiers t ON p.user_id = t.user_id;";

/// Windowed aggregations in the same workload: hourly tumbling windows, and
/// sessions with a gap of an hour (one per user while the test runs, merged
/// on every record).
const WINDOW_SETUP: &str = "CREATE TABLE hourly AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total, WINDOWSTART AS ws FROM pageviews WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY user_id;
     CREATE TABLE visits AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total, WINDOWSTART AS ws, WINDOWEND AS we FROM pageviews WINDOW SESSION (1 HOUR) GROUP BY user_id;";

/// What the windowed tables must hold for the stream's rows: (user, window
/// start) → (count, sum), and user → (count, sum, first time, last time).
type Windows = (
    BTreeMap<(i64, i64), (i64, i64)>,
    BTreeMap<i64, (i64, i64, i64, i64)>,
);

async fn windows_expected(client: &Client) -> Windows {
    let mut hourly: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    let mut sessions: BTreeMap<i64, (i64, i64, i64, i64)> = BTreeMap::new();
    for r in rows(client, "SELECT user_id, ms, ROWTIME FROM pageviews").await {
        let n = |i: usize| r[i].parse::<i64>().expect("number");
        let (user, ms, t) = (n(0), n(1), n(2));
        let h = hourly.entry((user, t - t % 3_600_000)).or_default();
        h.0 += 1;
        h.1 += ms;
        let s = sessions.entry(user).or_insert((0, 0, t, t));
        s.0 += 1;
        s.1 += ms;
        s.2 = s.2.min(t);
        s.3 = s.3.max(t);
    }
    (hourly, sessions)
}

async fn windows_actual(client: &Client) -> Windows {
    let n = |r: &[String], i: usize| r[i].parse::<i64>().expect("number");
    let hourly = rows(client, "SELECT user_id, ws, n, total FROM hourly")
        .await
        .iter()
        .map(|r| ((n(r, 0), n(r, 1)), (n(r, 2), n(r, 3))))
        .collect();
    let sessions = rows(client, "SELECT user_id, n, total, ws, we FROM visits")
        .await
        .iter()
        .map(|r| (n(r, 0), (n(r, 1), n(r, 2), n(r, 3), n(r, 4))))
        .collect();
    (hourly, sessions)
}

/// Every row of the stream: (id, user).
async fn stream_rows(client: &Client) -> Vec<(i64, i64)> {
    rows(client, "SELECT ms, user_id FROM pageviews")
        .await
        .into_iter()
        .map(|r| (r[0].parse().expect("id"), r[1].parse().expect("user")))
        .collect()
}

/// The row ids (`ms`) a stream holds, sorted.
async fn ids_in(client: &Client, stream: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = rows(client, &format!("SELECT ms FROM {stream}"))
        .await
        .into_iter()
        .map(|r| r[0].parse().expect("id"))
        .collect();
    ids.sort_unstable();
    ids
}

/// The table: user → (count, sum).
async fn table(client: &Client) -> BTreeMap<i64, (i64, i64)> {
    rows(client, "SELECT user_id, n, total FROM views_per_user")
        .await
        .into_iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<i64>().expect("number");
            (n(0), (n(1), n(2)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_ingest_loses_nothing_and_counts_nothing_twice() {
    let mut seed: u64 = std::env::var("BROOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    server
        .connect()
        .await
        .batch_execute(SETUP)
        .await
        .expect("create");
    server
        .connect()
        .await
        .batch_execute(JOIN_SETUP)
        .await
        .expect("create the join");
    server
        .connect()
        .await
        .batch_execute(WINDOW_SETUP)
        .await
        .expect("create the windows");
    let acked: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let next_id = Arc::new(std::sync::atomic::AtomicI64::new(0));
    for round in 0..20 {
        // Four writers insert until the server dies under them.
        let mut writers = Vec::new();
        for w in 0..4 {
            let client = server.connect().await;
            let (acked, next_id) = (Arc::clone(&acked), Arc::clone(&next_id));
            writers.push(tokio::spawn(async move {
                loop {
                    let ids: Vec<i64> = (0..5)
                        .map(|_| next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
                        .collect();
                    let values: Vec<String> = ids
                        .iter()
                        .map(|id| format!("({}, '/w{w}', {id})", id % 13))
                        .collect();
                    let sql = format!(
                        "INSERT INTO pageviews (user_id, url, ms) VALUES {}",
                        values.join(", ")
                    );
                    if client.simple_query(&sql).await.is_err() {
                        return; // the server is gone: not acknowledged
                    }
                    acked.lock().expect("lock").extend(ids);
                }
            }));
        }
        let ingest_ms = 30 + lcg(&mut seed) % 400;
        tokio::time::sleep(Duration::from_millis(ingest_ms)).await;
        server.kill();
        for w in writers {
            w.await.expect("writer");
        }
        server = Server::start(&data);
        let client = server.connect().await;
        client
            .simple_query("FLUSH")
            .await
            .expect("flush after restart");
        let present = stream_rows(&client).await;
        let ids: BTreeSet<i64> = present.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids.len(),
            present.len(),
            "round {round}: a row is in the log twice"
        );
        let acked_now = acked.lock().expect("lock").clone();
        let missing: Vec<_> = acked_now.difference(&ids).take(5).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged rows lost: {missing:?}"
        );
        // The table counts exactly what the stream holds (acknowledged or not).
        let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for (id, user) in &present {
            let e = expected.entry(*user).or_default();
            e.0 += 1;
            e.1 += id;
        }
        assert_eq!(table(&client).await, expected, "round {round}");
        // The join saw every row exactly once, and so did the query
        // chained on it.
        let in_log: Vec<i64> = ids.iter().copied().collect();
        assert_eq!(
            ids_in(&client, "named").await,
            in_log,
            "round {round}: the join's output"
        );
        assert_eq!(
            ids_in(&client, "tiered").await,
            in_log,
            "round {round}: the three-way join's output"
        );
        let chained: BTreeMap<i64, i64> = rows(&client, "SELECT user_id, n FROM named_counts")
            .await
            .into_iter()
            .map(|r| (r[0].parse().expect("user"), r[1].parse().expect("n")))
            .collect();
        let counts: BTreeMap<i64, i64> = expected.iter().map(|(u, (n, _))| (*u, *n)).collect();
        assert_eq!(chained, counts, "round {round}: the chained query");
        // Windows and sessions (merged across kills) hold exactly the
        // stream's rows.
        assert_eq!(
            windows_actual(&client).await,
            windows_expected(&client).await,
            "round {round}: the windowed tables"
        );
        let queries = rows(&client, "SHOW QUERIES").await;
        assert_eq!(queries.len(), 6);
        assert!(queries.iter().all(|q| q[2] == "RUNNING"), "{queries:?}");
    }
    // The sink topic holds exactly one upsert per input row: no epoch was
    // written twice or skipped across the kills.
    let client = server.connect().await;
    let total = stream_rows(&client).await.len();
    client
        .simple_query("CREATE STREAM sink_log (user_id INT KEY, n BIGINT, total BIGINT) WITH (KAFKA_TOPIC='VIEWS_PER_USER')")
        .await
        .expect("stream over the sink topic");
    let sink = rows(&client, "SELECT COUNT(*) FROM sink_log").await;
    assert_eq!(sink[0][0], total.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_store_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let client = server.connect().await;
    client.batch_execute(SETUP).await.expect("create");
    for batch in 0..20i64 {
        let values: Vec<String> = (0..50i64)
            .map(|i| format!("({}, '/p', {})", (batch * 50 + i) % 17, batch * 50 + i))
            .collect();
        let sql = format!(
            "INSERT INTO pageviews (user_id, url, ms) VALUES {}",
            values.join(", ")
        );
        client.simple_query(&sql).await.expect("insert");
    }
    client.simple_query("FLUSH").await.expect("flush");
    let before = table(&client).await;
    assert_eq!(before.values().map(|v| v.0).sum::<i64>(), 1000);
    drop(client);
    for (round, damage) in ["deleted", "unreadable"].into_iter().enumerate() {
        server.kill();
        let state = data.join("state");
        std::fs::remove_dir_all(&state).expect("remove state store");
        if damage == "unreadable" {
            std::fs::write(&state, b"not a state store").expect("garbage");
        }
        server = Server::start(&data);
        let client = server.connect().await;
        // Before the rebuild finishes, a pull query either says so or is complete.
        let early = client
            .simple_query("SELECT user_id, n, total FROM views_per_user")
            .await;
        match early {
            Err(e) => assert!(
                e.as_db_error()
                    .is_some_and(|d| d.message().contains("not ready")),
                "{e:?}"
            ),
            Ok(msgs) => {
                let early: BTreeMap<i64, (i64, i64)> = msgs
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) => {
                            let n = |i: usize| r.get(i).and_then(|v| v.parse::<i64>().ok());
                            Some((n(0)?, (n(1)?, n(2)?)))
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    early, before,
                    "{damage}: a pull during the rebuild is complete"
                );
            }
        }
        client.simple_query("FLUSH").await.expect("flush");
        assert_eq!(table(&client).await, before, "{damage}");
        if damage == "unreadable" {
            let aside = std::fs::read_dir(&data)
                .expect("data dir")
                .filter_map(|e| e.ok())
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("state.unreadable-")
                });
            assert!(aside, "the unreadable store was moved aside");
        }
        // The sink was not written again: one upsert per input row.
        let name = format!("sink_log_{round}");
        client
            .simple_query(&format!("CREATE STREAM {name} (user_id INT KEY, n BIGINT, total BIGINT) WITH (KAFKA_TOPIC='VIEWS_PER_USER')"))
            .await
            .expect("stream over the sink topic");
        let sink = rows(&client, &format!("SELECT COUNT(*) FROM {name}")).await;
        assert_eq!(sink[0][0], "1000", "{damage}");
    }
}
