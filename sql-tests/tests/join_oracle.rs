//! Oracle property tests for joins: for random inputs (out-of-order
//! times, updates, deletes), what a persistent join query produces equals
//! DataFusion computing the same join in batch over the same input.
//!
//! - Stream-stream INNER joins: the sink holds exactly the pairs with equal
//!   keys and `r.t` in `[l.t − before, l.t + after]`, each at the later time.
//! - Table-table joins (all four kinds): the materialized result equals the
//!   join of the two tables' final contents; so do foreign-key joins
//!   (INNER, LEFT) whose left rows point at right rows by an expression.
//! - Stream-stream LEFT, RIGHT and FULL joins: the inner pairs, plus a NULL
//!   row for each record of an outer side that no record of the other side
//!   processed before it matched; with a GRACE PERIOD, once every window
//!   has closed, a NULL row for exactly the records nothing matched.
//! - Stream-table LEFT joins: each stream record with the table row current
//!   when it was processed (the latest change before it, unless a delete).
//! - N-way joins, left-deep: three tables on their key (every kind of the
//!   two joins but a FULL first one) equal the batch join of their final
//!   contents; a stream with two tables (INNER or LEFT each) joins each
//!   record with both rows current when it was processed.
//! - Grouped, tumbling-windowed and session-windowed aggregations of a
//!   stream equal DataFusion's GROUP BY over the records (sessions as
//!   gaps-and-islands: a window function numbers them); an aggregation of a table whose
//!   rows change group and are deleted equals the aggregation of the
//!   table's final contents.
//!
//! A bounded number of cases runs on every test run (`PROPTEST_CASES`
//! raises it); failures shrink, and proptest keeps them in
//! `join_oracle.proptest-regressions` beside this file, run first next time.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_server::{Brook, Output, Record};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

mod common;
use common::{cell, runtime, table_sql};

/// One input record: which side, key, time, value (`None`: a tombstone).
#[derive(Debug, Clone)]
struct Input {
    right: bool,
    key: i64,
    ts: i64,
    value: Option<i64>,
}

fn inputs(tombstones: bool) -> impl Strategy<Value = Vec<Input>> {
    three_way_inputs(tombstones, 2).prop_map(|input| {
        input
            .into_iter()
            .map(|(side, i)| Input {
                right: side == 1,
                ..i
            })
            .collect()
    })
}

/// Records for `sides` inputs (`l`, `r`, then `m`), each with its side.
fn three_way_inputs(tombstones: bool, sides: usize) -> impl Strategy<Value = Vec<(usize, Input)>> {
    prop::collection::vec(
        (
            0..sides,
            0i64..3,
            0i64..40,
            prop::option::weighted(if tombstones { 0.8 } else { 0.999_999 }, 0i64..100),
        )
            .prop_map(|(side, key, ts, value)| {
                (
                    side,
                    Input {
                        right: side == 1,
                        key,
                        ts,
                        value,
                    },
                )
            }),
        0..16,
    )
}

/// The topics of the sides.
const TOPICS: [&str; 3] = ["l", "r", "m"];

fn rows_as_text(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(b.columns().iter().map(|c| cell(c, r)).collect());
        }
    }
    out.sort();
    out
}

async fn rows(brook: &Arc<Brook>, sql: &str) -> Vec<Vec<String>> {
    let mut session = brook.session();
    let out = session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    match out.into_iter().next() {
        Some(Output::Rows { batches, .. }) => rows_as_text(&batches),
        _ => panic!("{sql}: not rows"),
    }
}

async fn oracle(setup: &[String], sql: &str) -> Vec<Vec<String>> {
    let ctx = SessionContext::new();
    for s in setup {
        ctx.sql(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows_as_text(&batches)
}

/// Runs `statements`, then feeds `input` one record at a time (as ksqlDB's
/// tests do), each to its side's topic.
async fn run(statements: &[&str], input: &[(usize, Input)]) -> (tempfile::TempDir, Arc<Brook>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let brook = Brook::open_with(dir.path(), false)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let mut session = brook.session();
    for s in statements {
        session
            .execute(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    for (side, i) in input {
        let record = Record {
            timestamp: i.ts,
            key: Some(i.key.to_string().into_bytes()),
            value: i.value.map(|v| format!("{{\"V\": {v}}}").into_bytes()),
            headers: vec![],
        };
        let topic = TOPICS[*side];
        brook
            .engine()
            .produce(topic, 0, &[record])
            .unwrap_or_else(|e| panic!("produce: {e}"));
        brook
            .engine()
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
    }
    (dir, brook)
}

/// Every record of one side with a value: (k, t, v).
fn values(input: &[Input], right: bool) -> String {
    let rows = input
        .iter()
        .filter(|i| i.right == right)
        .filter_map(|i| i.value.map(|v| format!("({}, {}, {v})", i.key, i.ts)))
        .collect();
    table_sql(&["k", "t", "v"], rows)
}

/// The final rows of a table fed `input` (the last value per key; a
/// tombstone deletes): (k, t, v).
fn final_table(input: &[Input], right: bool) -> String {
    let mut last: BTreeMap<i64, Option<(i64, i64)>> = BTreeMap::new();
    for i in input.iter().filter(|i| i.right == right) {
        last.insert(i.key, i.value.map(|v| (i.ts, v)));
    }
    let rows = last
        .into_iter()
        .filter_map(|(k, v)| v.map(|(t, v)| format!("({k}, {t}, {v})")))
        .collect();
    table_sql(&["k", "t", "v"], rows)
}

/// The records of one side with their position in the input (the order
/// they are processed in): (seq, k, t, v), tombstones with v NULL.
fn sequenced(input: &[Input], right: bool) -> String {
    let rows = input
        .iter()
        .enumerate()
        .filter(|(_, i)| i.right == right)
        .map(|(n, i)| {
            let v = i
                .value
                .map_or("CAST(NULL AS BIGINT)".to_string(), |v| v.to_string());
            format!("({n}, {}, {}, {v})", i.key, i.ts)
        })
        .collect();
    table_sql(&["seq", "k", "t", "v"], rows)
}

/// The records of one side with their position in the input and the
/// stream time once each was processed (the latest time of either side up
/// to it): (seq, k, t, v, st).
fn with_stream_time(input: &[Input], right: bool) -> String {
    let mut st = i64::MIN;
    let mut rows = Vec::new();
    for (n, i) in input.iter().enumerate() {
        st = st.max(i.ts);
        if let (true, Some(v)) = (i.right == right, i.value) {
            rows.push(format!("({n}, {}, {}, {v}, {st})", i.key, i.ts));
        }
    }
    table_sql(&["seq", "k", "t", "v", "st"], rows)
}

/// The records of side `side` of a three-way input, as [`final_table`]
/// (`last`: the final table) or [`sequenced`] otherwise.
fn side_view(input: &[(usize, Input)], side: usize, last: bool) -> String {
    let sided: Vec<Input> = input
        .iter()
        .map(|(s, i)| Input {
            right: *s == side,
            ..i.clone()
        })
        .collect();
    if last {
        final_table(&sided, true)
    } else {
        sequenced(&sided, true)
    }
}

/// Runs `statements` over `input` in Brook and reads `brook_sql`; runs
/// `oracle_sql` in DataFusion over the views `l` and `r`. Both results,
/// rows sorted.
fn compare(
    statements: &[String],
    input: &[Input],
    brook_sql: &str,
    views: [String; 2],
    oracle_sql: &str,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let sided: Vec<(usize, Input)> = input
        .iter()
        .map(|i| (usize::from(i.right), i.clone()))
        .collect();
    compare_sided(statements, &sided, brook_sql, &views, oracle_sql)
}

/// [`compare`] for inputs on any of the sides: `l`, `r` and `m`, with
/// one view per side.
fn compare_sided(
    statements: &[String],
    input: &[(usize, Input)],
    brook_sql: &str,
    views: &[String],
    oracle_sql: &str,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let rt = runtime();
    rt.block_on(async {
        let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
        let (_dir, brook) = run(&refs, input).await;
        let actual = rows(&brook, brook_sql).await;
        let setup: Vec<String> = TOPICS
            .iter()
            .zip(views)
            .map(|(name, view)| format!("CREATE VIEW {name} AS {view}"))
            .collect();
        let expected = oracle(&setup, oracle_sql).await;
        brook.shutdown().await;
        (actual, expected)
    })
}

/// `CREATE STREAM|TABLE l` and `r` (BIGINT key k, value v).
fn sources(left: &str, right: &str) -> Vec<String> {
    let key = |kind: &str| {
        if kind == "TABLE" {
            "PRIMARY KEY"
        } else {
            "KEY"
        }
    };
    vec![
        format!(
            "CREATE {left} l (k BIGINT {}, v BIGINT) WITH (kafka_topic='l', format='JSON');",
            key(left)
        ),
        format!(
            "CREATE {right} r (k BIGINT {}, v BIGINT) WITH (kafka_topic='r', format='JSON');",
            key(right)
        ),
    ]
}

/// A stream-stream outer join of `l` and `r` as `j`, for the oracle tests.
struct OuterJoin {
    statements: Vec<String>,
    /// The column of `j` holding the join value.
    read: &'static str,
    /// The window as an oracle condition.
    window: String,
    /// The oracle's inner pairs (k, lv, rv), to add the NULL rows to.
    oracle: String,
}

/// `kind`: 0 LEFT, 1 RIGHT, 2 FULL; `grace` is written after the window.
fn outer_join(kind: usize, before: i64, after: i64, grace: &str) -> OuterJoin {
    let join = ["LEFT JOIN", "RIGHT JOIN", "FULL OUTER JOIN"][kind];
    let key = ["l.k", "l.k", "ROWKEY AS k"][kind];
    let mut statements = sources("STREAM", "STREAM");
    statements.push(format!("CREATE STREAM j AS SELECT {key}, l.v AS lv, r.v AS rv FROM l {join} r WITHIN ({before} MILLISECONDS, {after} MILLISECONDS) {grace} ON l.k = r.k;"));
    let window = format!("r.t BETWEEN l.t - {before} AND l.t + {after}");
    let oracle =
        format!("SELECT l.k AS k, l.v AS lv, r.v AS rv FROM l JOIN r ON l.k = r.k AND {window}");
    OuterJoin {
        statements,
        read: ["l_k", "l_k", "k"][kind],
        window,
        oracle,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // `PROPTEST_CASES` raises it.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(12),
        // Failing inputs are kept beside this file and run first next time.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn stream_stream_inner_join_matches_batch(input in inputs(false), before in 0i64..10, after in 0i64..10) {
        let mut statements = sources("STREAM", "STREAM");
        statements.push(format!("CREATE STREAM j AS SELECT l.k, l.v AS lv, r.v AS rv FROM l JOIN r WITHIN ({before} MILLISECONDS, {after} MILLISECONDS) ON l.k = r.k;"));
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT l_k, lv, rv, ROWTIME FROM j;",
            [values(&input, false), values(&input, true)],
            &format!(
                "SELECT l.k, l.v, r.v, GREATEST(l.t, r.t) FROM l JOIN r ON l.k = r.k \
                 AND r.t BETWEEN l.t - {before} AND l.t + {after}"
            ),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn stream_stream_outer_joins_match_batch(
        input in inputs(false),
        before in 0i64..10,
        after in 0i64..10,
        kind in 0usize..3,
    ) {
        // Without a grace period, an outer side's record that finds no
        // record of the other side processed before it (in its window) gets
        // a NULL row at once; LEFT, RIGHT and FULL.
        let OuterJoin { statements, read, window, mut oracle } =
            outer_join(kind, before, after, "");
        if kind != 1 {
            oracle += &format!(
                " UNION ALL \
                 SELECT l.k AS k, l.v AS lv, CAST(NULL AS BIGINT) AS rv FROM l LEFT JOIN r \
                   ON l.k = r.k AND {window} AND r.seq < l.seq \
                 WHERE r.seq IS NULL"
            );
        }
        if kind != 0 {
            oracle += &format!(
                " UNION ALL \
                 SELECT r.k AS k, CAST(NULL AS BIGINT) AS lv, r.v AS rv FROM r LEFT JOIN l \
                   ON l.k = r.k AND {window} AND l.seq < r.seq \
                 WHERE l.seq IS NULL"
            );
        }
        let (actual, expected) = compare(
            &statements,
            &input,
            &format!("SELECT {read}, lv, rv FROM j;"),
            [sequenced(&input, false), sequenced(&input, true)],
            &oracle,
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn stream_stream_grace_joins_match_batch(
        input in inputs(false),
        before in 0i64..10,
        after in 0i64..10,
        kind in 0usize..3,
    ) {
        // With a GRACE PERIOD an unmatched record's NULL row waits for its
        // window to close, and a match in time cancels it; a record whose
        // window already ended when it came (out of order: its time plus
        // the window's reach is before stream time) gets it at once unless
        // a match came before it, as in Kafka Streams. A last record far
        // ahead closes every window.
        let OuterJoin { statements, read, window, mut oracle } =
            outer_join(kind, before, after, "GRACE PERIOD 50 MILLISECONDS");
        let mut fed = input.clone();
        fed.push(Input { right: kind == 1, key: 99, ts: 1000, value: Some(0) });
        // The NULL rows of side `a` (its window reaching `reach` ahead).
        let unmatched = |a: &str, b: &str, reach: i64, cols: &str| {
            format!(
                " UNION ALL SELECT {cols} FROM ( \
                   SELECT {a}.seq, {a}.k, {a}.v, {a}.t, {a}.st, \
                     SUM(CASE WHEN {b}.seq < {a}.seq THEN 1 ELSE 0 END) AS earlier, \
                     SUM(CASE WHEN {b}.seq > {a}.seq THEN 1 ELSE 0 END) AS later \
                   FROM {a} LEFT JOIN {b} ON l.k = r.k AND {window} \
                   GROUP BY {a}.seq, {a}.k, {a}.v, {a}.t, {a}.st) x \
                 WHERE x.earlier = 0 AND (x.t + {reach} < x.st OR x.later = 0)"
            )
        };
        if kind != 1 {
            oracle += &unmatched("l", "r", after, "x.k, x.v, CAST(NULL AS BIGINT)");
        }
        if kind != 0 {
            oracle += &unmatched("r", "l", before, "x.k, CAST(NULL AS BIGINT), x.v");
        }
        let (actual, expected) = compare(
            &statements,
            &fed,
            &format!("SELECT {read}, lv, rv FROM j WHERE {read} <> 99;"),
            [with_stream_time(&input, false), with_stream_time(&input, true)],
            &oracle,
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn stream_table_left_join_matches_batch(input in inputs(true)) {
        // Each stream record joins the table row current when it is
        // processed: the latest change before it, unless that is a delete.
        // (Stream records without a value do not join.)
        let input: Vec<Input> = input
            .into_iter()
            .filter(|i| i.right || i.value.is_some())
            .collect();
        let mut statements = sources("STREAM", "TABLE");
        statements.push("CREATE STREAM j AS SELECT l.k, l.v AS lv, r.v AS rv FROM l LEFT JOIN r ON l.k = r.k;".into());
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT l_k, lv, rv FROM j;",
            [sequenced(&input, false), sequenced(&input, true)],
            "SELECT k, lv, rv FROM ( \
               SELECT l.seq, l.k, l.v AS lv, r.v AS rv, \
                 ROW_NUMBER() OVER (PARTITION BY l.seq ORDER BY r.seq DESC) AS n \
               FROM l LEFT JOIN r ON l.k = r.k AND r.seq < l.seq \
             ) WHERE n = 1",
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn table_table_joins_match_batch(input in inputs(true), kind in 0usize..4) {
        let join = ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL OUTER JOIN"][kind];
        let key = ["l.k", "l.k", "r.k", "ROWKEY AS k"][kind];
        let mut statements = sources("TABLE", "TABLE");
        statements.push(format!("CREATE TABLE j AS SELECT {key}, l.v AS lv, r.v AS rv FROM l {join} r ON l.k = r.k;"));
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT lv, rv FROM j;",
            [final_table(&input, false), final_table(&input, true)],
            &format!("SELECT l.v, r.v FROM l {join} r ON l.k = r.k"),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn foreign_key_joins_match_batch(input in inputs(true), left in any::<bool>()) {
        // Each left row names a right row by its value mod 3; rows of
        // both tables change and are deleted.
        let join = if left { "LEFT JOIN" } else { "JOIN" };
        let mut statements = sources("TABLE", "TABLE");
        statements.push(format!("CREATE TABLE j AS SELECT l.k, l.v AS lv, r.v AS rv FROM l {join} r ON l.v % 3 = r.k;"));
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT l_k, lv, rv FROM j;",
            [final_table(&input, false), final_table(&input, true)],
            &format!("SELECT l.k, l.v, r.v FROM l {join} r ON l.v % 3 = r.k"),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn three_way_table_joins_match_batch(
        input in three_way_inputs(true, 3),
        first in 0usize..3,
        second in 0usize..4,
    ) {
        // `l ⋈ r ⋈ m` on the key, left-deep: the result equals the join of
        // the three tables' final contents. The second join is on the first
        // one's key, which a RIGHT first join takes from r.
        let kinds = ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL OUTER JOIN"];
        let (j1, j2) = (kinds[first], kinds[second]);
        let key = if second == 3 { "ROWKEY AS k" } else { "l.k" };
        let mut statements = sources("TABLE", "TABLE");
        statements.push("CREATE TABLE m (k BIGINT PRIMARY KEY, v BIGINT) WITH (kafka_topic='m', format='JSON');".into());
        statements.push(format!("CREATE TABLE j AS SELECT {key}, l.v AS lv, r.v AS rv, m.v AS mv FROM l {j1} r ON l.k = r.k {j2} m ON l.k = m.k;"));
        let (actual, expected) = compare_sided(
            &statements,
            &input,
            "SELECT lv, rv, mv FROM j;",
            &[side_view(&input, 0, true), side_view(&input, 1, true), side_view(&input, 2, true)],
            &format!("SELECT l.v, r.v, m.v FROM l {j1} r ON l.k = r.k {j2} m ON COALESCE(l.k, r.k) = m.k"),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn stream_table_table_joins_match_batch(
        input in three_way_inputs(true, 3),
        first_left in any::<bool>(),
        second_left in any::<bool>(),
    ) {
        // Each stream record joins the rows of r and m current when it is
        // processed (the latest change of each before it, unless a delete).
        let input: Vec<(usize, Input)> = input
            .into_iter()
            .filter(|(side, i)| *side != 0 || i.value.is_some())
            .collect();
        let kind = |left: bool| if left { "LEFT JOIN" } else { "JOIN" };
        let (j1, j2) = (kind(first_left), kind(second_left));
        let mut statements = sources("STREAM", "TABLE");
        statements.push("CREATE TABLE m (k BIGINT PRIMARY KEY, v BIGINT) WITH (kafka_topic='m', format='JSON');".into());
        statements.push(format!("CREATE STREAM j AS SELECT l.k, l.v AS lv, r.v AS rv, m.v AS mv FROM l {j1} r ON l.k = r.k {j2} m ON l.k = m.k;"));
        // The row of `t` current for each stream record: NULL when none or
        // deleted; `inner` drops the record then.
        let current = |t: &str| {
            format!(
                "SELECT seq, v FROM (SELECT l.seq, {t}.v,                    ROW_NUMBER() OVER (PARTITION BY l.seq ORDER BY {t}.seq DESC) AS n                    FROM l JOIN {t} ON l.k = {t}.k AND {t}.seq < l.seq) WHERE n = 1"
            )
        };
        let filter = |left: bool, col: &str| if left { String::new() } else { format!(" AND {col} IS NOT NULL") };
        let (actual, expected) = compare_sided(
            &statements,
            &input,
            "SELECT l_k, lv, rv, mv FROM j;",
            &[side_view(&input, 0, false), side_view(&input, 1, false), side_view(&input, 2, false)],
            &format!(
                "SELECT l.k, l.v, cr.v, cm.v FROM l                  LEFT JOIN ({}) cr ON cr.seq = l.seq                  LEFT JOIN ({}) cm ON cm.seq = l.seq                  WHERE true{}{}",
                current("r"),
                current("m"),
                filter(first_left, "cr.v"),
                filter(second_left, "cm.v"),
            ),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn grouped_aggregation_matches_batch(input in inputs(false)) {
        let mut statements = sources("STREAM", "STREAM");
        statements.push("CREATE TABLE a AS SELECT k, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM l GROUP BY k;".into());
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT k, n, s, lo, hi FROM a;",
            [values(&input, false), values(&input, true)],
            "SELECT k, COUNT(*), SUM(v), MIN(v), MAX(v) FROM l GROUP BY k",
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn windowed_aggregation_matches_batch(input in inputs(false), size in 1i64..20) {
        let mut statements = sources("STREAM", "STREAM");
        statements.push(format!("CREATE TABLE w AS SELECT k, COUNT(*) AS n, SUM(v) AS s, WINDOWSTART AS ws FROM l WINDOW TUMBLING (SIZE {size} MILLISECONDS) GROUP BY k;"));
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT k, ws, n, s FROM w;",
            [values(&input, false), values(&input, true)],
            &format!(
                "SELECT k, (t / {size}) * {size} AS ws, COUNT(*), SUM(v) FROM l GROUP BY k, (t / {size}) * {size}"
            ),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn session_aggregation_matches_batch(input in inputs(false), gap in 1i64..8) {
        // Records of a key whose times are at most the gap apart, through
        // any chain of them, make one session: merging on arrival (out of
        // order too) must end with the batch's gaps-and-islands answer.
        let mut statements = sources("STREAM", "STREAM");
        statements.push(format!("CREATE TABLE w AS SELECT k, COUNT(*) AS n, SUM(v) AS s, MAX(v) AS m, WINDOWSTART AS ws, WINDOWEND AS we FROM l WINDOW SESSION ({gap} MILLISECONDS) GROUP BY k;"));
        let (actual, expected) = compare(
            &statements,
            &input,
            "SELECT k, ws, we, n, s, m FROM w;",
            [values(&input, false), values(&input, true)],
            &format!(
                "SELECT k, MIN(t), MAX(t), COUNT(*), SUM(v), MAX(v) FROM (\
                   SELECT k, t, v, SUM(brk) OVER (PARTITION BY k ORDER BY t, v ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM (\
                     SELECT k, t, v, CASE WHEN t - LAG(t) OVER (PARTITION BY k ORDER BY t, v) > {gap} THEN 1 ELSE 0 END AS brk FROM l)) \
                 GROUP BY k, sid"
            ),
        );
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn table_aggregation_follows_retractions(input in inputs(true)) {
        // Rows move between groups (the group is the value mod 3) and are
        // deleted: the result is the aggregation of the final table.
        let mut statements = sources("TABLE", "TABLE");
        statements.push("CREATE TABLE g AS SELECT v % 3 AS grp, COUNT(*) AS n, SUM(v) AS s FROM l GROUP BY v % 3;".into());
        let (actual, expected) = compare(
            &statements,
            &input,
            // Groups whose rows all left stay with COUNT 0, as in ksqlDB.
            "SELECT grp, n, s FROM g WHERE n > 0;",
            [final_table(&input, false), final_table(&input, true)],
            "SELECT v % 3, COUNT(*), SUM(v) FROM l GROUP BY v % 3",
        );
        prop_assert_eq!(actual, expected);
    }
}
