//! Statements past Brook's limits get a clear error, and the server lives:
//! an expression as deep as the limit runs everywhere (pull, push,
//! persistent) on ordinary worker threads; a deeper one is "statement too
//! complex" (SQLSTATE 54001).

use std::sync::Arc;

mod common;

use brook_server::{Brook, Output, ServerError};
use common::rows;

fn chain(n: usize) -> String {
    let mut s = String::from("v");
    for _ in 1..n {
        s.push_str(" + 1");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expression_at_the_depth_limit_runs_and_a_deeper_one_is_too_complex() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let mut s = brook.session();
    s.execute("CREATE STREAM s (id INT KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);")
        .await
        .unwrap();
    s.execute("SET 'auto.offset.reset' = 'earliest';")
        .await
        .unwrap();
    let n = brook_planner::parser::MAX_EXPR_DEPTH;
    let deep = chain(n);
    // Inside SUM(…) and `… > 0` the chain is one level deeper.
    let inner = chain(n - 1);
    s.execute(&format!(
        "CREATE TABLE t AS SELECT id, SUM({inner}) AS x FROM s WHERE {inner} > 0 GROUP BY id;"
    ))
    .await
    .unwrap();
    s.execute("INSERT INTO s (id, v) VALUES (1, 1), (1, 2); FLUSH;")
        .await
        .unwrap();
    // v + (n - 2) summed over v = 1 and 2.
    let expected = format!("1 {}", 3 + 2 * (n - 2));
    assert_eq!(rows(&brook, "SELECT id, x FROM t;").await, vec![expected]);
    assert_eq!(
        rows(&brook, &format!("SELECT {deep} AS y FROM s WHERE id = 1;"))
            .await
            .len(),
        2
    );
    let push = s
        .execute(&format!("SELECT {deep} AS y FROM s EMIT CHANGES LIMIT 2;"))
        .await
        .unwrap();
    assert!(matches!(push.last(), Some(Output::Stream { .. })));

    for sql in [
        format!("SELECT {} FROM s;", chain(n + 1)),
        format!("SELECT {} FROM s;", chain(100_000)),
    ] {
        let e: ServerError = brook.session().execute(&sql).await.err().unwrap();
        assert_eq!(e.sqlstate(), "54001", "{e}");
        assert!(e.to_string().starts_with("statement too complex"), "{e}");
    }
    // The server lives and answers.
    assert_eq!(
        rows(&brook, "SELECT 1 + 1 AS two;").await,
        vec!["2".to_string()]
    );
    brook.shutdown().await;
}

/// The peak resident memory of this process so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_cannot_build_a_value_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let before = peak_rss();
    for sql in [
        "SELECT LPAD('a', 2000000000, 'b') AS x;",
        "SELECT RPAD('a', 2000000000, 'b') AS x;",
        "SELECT REPLACE(LPAD('a', 10000, 'b'), '', LPAD('c', 10000, 'c')) AS x;",
        "SELECT REGEXP_REPLACE(LPAD('a', 10000, 'b'), 'b', LPAD('c', 10000, 'c')) AS x;",
        "SELECT GENERATE_SERIES(1, 2000000000) AS x;",
    ] {
        let e: ServerError = brook.session().execute(sql).await.err().unwrap();
        assert_eq!(e.sqlstate(), "54000", "{sql}: {e}");
        assert!(e.to_string().contains("more than the limit of"), "{e}");
    }
    // Nothing near the sizes asked for was allocated.
    let grew = peak_rss().saturating_sub(before);
    assert!(grew < 200 << 20, "peak RSS grew by {grew} bytes");

    // Below the limit, the functions work as before.
    assert_eq!(
        rows(&brook, "SELECT REPLACE('abc', '', '-') AS x;").await,
        vec!["-a-b-c-".to_string()]
    );
    assert_eq!(
        rows(&brook, "SELECT LPAD('a', 3, 'xy') AS x;").await,
        vec!["xya".to_string()]
    );

    // In a persistent query the row gets NULL and the processing log says why.
    let mut s = brook.session();
    s.execute("CREATE STREAM s (id INT KEY, n INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);")
        .await
        .unwrap();
    s.execute("CREATE STREAM padded AS SELECT id, LPAD('a', n, 'b') AS p FROM s;")
        .await
        .unwrap();
    s.execute("INSERT INTO s (id, n) VALUES (1, 2000000000), (2, 3); FLUSH;")
        .await
        .unwrap();
    let mut got = rows(&brook, "SELECT id, p FROM padded;").await;
    got.sort();
    assert_eq!(got, vec!["1 ".to_string(), "2 bba".to_string()]);
    let logged = rows(
        &brook,
        "SELECT message->recordprocessingerror->errormessage AS m FROM KSQL_PROCESSING_LOG;",
    )
    .await;
    assert!(
        logged
            .iter()
            .any(|m| m.contains("LPAD would build a value")),
        "{logged:?}"
    );
    assert!(peak_rss().saturating_sub(before) < 200 << 20);
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_size_limit_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let before = peak_rss();
    let huge = format!("SELECT 1{};", " ".repeat(50 << 20));
    let e: ServerError = brook.session().execute(&huge).await.err().unwrap();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    assert!(e.to_string().starts_with("statement too large"), "{e}");
    // Only the text itself was held (tokenizing it took ~60 bytes a space).
    assert!(peak_rss().saturating_sub(before) < 200 << 20);
    // Variables cannot grow a statement past the limit either.
    let mut s = brook.session();
    s.define("big", &"x".repeat(600 << 10));
    let e: ServerError = s
        .execute("SELECT '${big}${big}' AS x;")
        .await
        .err()
        .unwrap();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_query_reads_and_returns_at_most_its_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = brook_server::Limits {
        max_pull_bytes: 1 << 20,
        ..brook_server::Limits::default()
    };
    let brook =
        Brook::open_with_limits(dir.path(), brook_server::EngineConfig::throwaway(), limits)
            .await
            .unwrap();
    let mut s = brook.session();
    s.execute(
        "CREATE STREAM big (id INT KEY, v STRING) WITH (KAFKA_TOPIC='big', PARTITIONS=1);
         CREATE STREAM small (id INT KEY, v STRING) WITH (KAFKA_TOPIC='small', PARTITIONS=1);",
    )
    .await
    .unwrap();
    let pad = "x".repeat(1000);
    let rows = |ids: std::ops::Range<usize>| -> String {
        ids.map(|i| format!("({i}, '{pad}')"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for part in 0..10 {
        let ids = part * 300..(part + 1) * 300;
        s.execute(&format!("INSERT INTO big (id, v) VALUES {};", rows(ids)))
            .await
            .unwrap();
    }
    s.execute(&format!(
        "INSERT INTO small (id, v) VALUES {};",
        rows(0..300)
    ))
    .await
    .unwrap();

    // 3,000 rows of 1,000 bytes are past 1 MiB, but a scan is read as the
    // query goes: counting them keeps nothing.
    assert_eq!(
        rows_count(&brook, "SELECT COUNT(*) FROM big;").await,
        "3000"
    );
    assert_eq!(
        rows_count(&brook, "SELECT id FROM big ORDER BY v, id LIMIT 1;").await,
        "0"
    );
    // An operator that keeps them all is refused, though its result is small.
    let e: ServerError = s
        .execute("SELECT id, v, COUNT(*) FROM big GROUP BY id, v ORDER BY id LIMIT 1;")
        .await
        .err()
        .unwrap();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    // A table no query writes is its topic's latest row per key, all held
    // before the query runs: refused while reading.
    s.execute("CREATE TABLE big_t (id INT PRIMARY KEY, v STRING) WITH (KAFKA_TOPIC='big');")
        .await
        .unwrap();
    let e: ServerError = s
        .execute("SELECT COUNT(*) FROM big_t;")
        .await
        .err()
        .unwrap();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    assert!(
        e.to_string().contains("pull query would read more than"),
        "{e}"
    );
    // A small source is read; a result past the limit is refused.
    assert_eq!(
        rows_count(&brook, "SELECT COUNT(*) AS n FROM small;").await,
        "300"
    );
    let e: ServerError = s
        .execute("SELECT a.v, b.v FROM small a JOIN small b ON a.id >= 0;")
        .await
        .err()
        .unwrap();
    assert_eq!(e.sqlstate(), "54000", "{e}");
    assert!(
        e.to_string().contains("pull query result is larger than"),
        "{e}"
    );
    brook.shutdown().await;
}

async fn rows_count(brook: &Arc<Brook>, sql: &str) -> String {
    rows(brook, sql).await.concat()
}
