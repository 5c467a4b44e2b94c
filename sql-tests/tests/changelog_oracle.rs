//! Changelog oracle tests: what a persistent query emits, change by
//! change, when its input lies in several partitions and is read in
//! epochs of a few records each (`EngineConfig::epoch`), not one record per
//! epoch as ksqlDB's tests feed it. The expected changelog is DataFusion's,
//! in batch over the same records: running aggregates over each group's
//! records in the order they were produced (window functions), or each
//! stream record with the table row current at its position.
//!
//! A key's records lie in one partition (its hash), so their order is the
//! order they were produced: that is the order Brook promises, and each
//! key's changelog is compared in it.
//! - Record cache off (`cache.max.bytes.buffering` = 0): every update is
//!   emitted, so a group's changelog is its running aggregate, exactly.
//! - Record cache on (the default): one change per group per epoch, so a
//!   group's changelog is a subsequence of its running aggregate that ends
//!   with the final value.
//!
//! Every input is produced before the query starts, so that the epochs are
//! decided by their bounds alone. A join's inputs have times that grow in
//! the order they were produced: the order a join takes records in (the
//! earliest time first, across inputs and partitions) is then that order,
//! however the epochs cut it.

use std::collections::BTreeMap;

use brook_server::{partition_for, Brook, EngineConfig, EpochBounds, Record};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use serde_json::Value as Json;

mod common;
use common::{cell, runtime, table_sql};

/// One input record: key, time, value (`None`: a tombstone).
#[derive(Debug, Clone)]
struct Rec {
    key: i64,
    ts: i64,
    value: Option<i64>,
}

fn records(tombstones: bool, max: usize) -> impl Strategy<Value = Vec<Rec>> {
    prop::collection::vec(
        (
            0i64..4,
            0i64..40,
            prop::option::weighted(if tombstones { 0.8 } else { 0.999_999 }, -50i64..100),
        )
            .prop_map(|(key, ts, value)| Rec { key, ts, value }),
        0..max,
    )
}

/// How the engine reads: partitions per input topic, records per epoch,
/// and whether the record cache is off.
#[derive(Debug, Clone, Copy)]
struct Reading {
    partitions: u32,
    epoch_records: usize,
    cache_off: bool,
}

fn reading() -> impl Strategy<Value = Reading> {
    (1u32..4, 1usize..6, any::<bool>()).prop_map(|(partitions, epoch_records, cache_off)| Reading {
        partitions,
        epoch_records,
        cache_off,
    })
}

/// A change as compared: the key's group, then the value's fields.
type Change = Vec<String>;

/// Opens Brook with `reading`'s epochs, runs `sources`, produces
/// `inputs` (topic, records) to their keys' partitions, then runs
/// `query` from the earliest offsets to the end of its input, and returns
/// the changelog of `sink`: per group (`group` of each change), its
/// changes in order, each as `fields` of the value.
fn changelog(
    reading: Reading,
    sources: &[String],
    inputs: &[(&str, &[Rec])],
    query: &str,
    sink: &str,
    group: &[&str],
    fields: &[&str],
) -> BTreeMap<Change, Vec<Change>> {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = EngineConfig {
            epoch: EpochBounds {
                records: reading.epoch_records,
                ..EpochBounds::default()
            },
            ..EngineConfig::throwaway()
        };
        let brook = Brook::open_with_config(dir.path(), config)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        let mut session = brook.session();
        for s in sources {
            session
                .execute(s)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        for (topic, records) in inputs {
            for r in *records {
                let key = r.key.to_string().into_bytes();
                let partition = partition_for(Some(&key), reading.partitions);
                let record = Record {
                    timestamp: r.ts,
                    key: Some(key),
                    value: r.value.map(|v| format!("{{\"V\": {v}}}").into_bytes()),
                    headers: vec![],
                };
                brook
                    .engine()
                    .produce(topic, partition, &[record])
                    .unwrap_or_else(|e| panic!("produce: {e}"));
            }
        }
        session.set_property("auto.offset.reset", "earliest");
        if reading.cache_off {
            session.set_property("cache.max.bytes.buffering", "0");
        }
        session
            .execute(query)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        brook
            .engine()
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush: {e}"));
        let log = brook.engine().log();
        let mut out: BTreeMap<Change, Vec<Change>> = BTreeMap::new();
        let parts = log
            .partitions(sink)
            .unwrap_or_else(|e| panic!("{sink}: {e}"));
        for p in 0..parts {
            let read = log
                .read(sink, p, 0, usize::MAX)
                .unwrap_or_else(|e| panic!("read {sink}/{p}: {e}"));
            for r in read {
                let value: Json = r
                    .record
                    .value
                    .as_deref()
                    .map(|v| serde_json::from_slice(v).unwrap_or_else(|e| panic!("value: {e}")))
                    .unwrap_or(Json::Null);
                let text = |f: &str| match &value[f] {
                    Json::Null => "NULL".to_string(),
                    v => v.to_string(),
                };
                out.entry(group.iter().map(|f| text(f)).collect())
                    .or_default()
                    .push(fields.iter().map(|f| text(f)).collect());
            }
        }
        brook.shutdown().await;
        out
    })
}

/// One row of BIGINT values (`None` as NULL) as a VALUES tuple.
fn tuple(values: &[Option<i64>]) -> String {
    let cells: Vec<String> = values
        .iter()
        .map(|v| v.map_or("CAST(NULL AS BIGINT)".to_string(), |v| v.to_string()))
        .collect();
    format!("({})", cells.join(", "))
}

/// A topic's records as `(seq, k, t, v)`: `seq` is the order of production.
fn sequenced(records: &[Rec]) -> String {
    table_sql(
        &["seq", "k", "t", "v"],
        records
            .iter()
            .enumerate()
            .map(|(i, r)| tuple(&[Some(i as i64), Some(r.key), Some(r.ts), r.value]))
            .collect(),
    )
}

/// DataFusion's answer to `sql` over the views `setup` (name, query), as
/// changes: the first `groups` columns are the group, the rest the value;
/// in each group, in the order of `sql`'s rows.
fn oracle(setup: &[(&str, String)], sql: &str, groups: usize) -> BTreeMap<Change, Vec<Change>> {
    let batches: Vec<RecordBatch> = runtime().block_on(async {
        let ctx = SessionContext::new();
        for (name, view) in setup {
            let s = format!("CREATE VIEW {name} AS {view}");
            ctx.sql(&s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        ctx.sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    });
    let mut out: BTreeMap<Change, Vec<Change>> = BTreeMap::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let row: Vec<String> = b.columns().iter().map(|c| cell(c, r)).collect();
            out.entry(row[..groups].to_vec())
                .or_default()
                .push(row[groups..].to_vec());
        }
    }
    out
}

/// With the cache off, the changelog is the running aggregate; with it on,
/// each group's changes are a subsequence of it ending with its last value.
fn check_aggregate(
    reading: Reading,
    actual: &BTreeMap<Change, Vec<Change>>,
    expected: &BTreeMap<Change, Vec<Change>>,
) -> Result<(), TestCaseError> {
    if reading.cache_off {
        prop_assert_eq!(actual, expected);
        return Ok(());
    }
    prop_assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (group, changes) in actual {
        let running = &expected[group];
        prop_assert_eq!(changes.last(), running.last(), "group {:?}", group);
        let mut from = 0;
        for c in changes {
            match running[from..].iter().position(|r| r == c) {
                Some(at) => from += at + 1,
                None => prop_assert!(
                    false,
                    "group {group:?}: {c:?} is not a later state of {running:?}"
                ),
            }
        }
    }
    Ok(())
}

fn stream(name: &str, partitions: u32) -> String {
    format!("CREATE STREAM {name} (k BIGINT KEY, v BIGINT) WITH (kafka_topic='{name}', format='JSON', partitions={partitions});")
}

fn table(name: &str, partitions: u32) -> String {
    format!("CREATE TABLE {name} (k BIGINT PRIMARY KEY, v BIGINT) WITH (kafka_topic='{name}', format='JSON', partitions={partitions});")
}

proptest! {
    #![proptest_config(ProptestConfig {
        // `PROPTEST_CASES` raises it.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(16),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn grouped_aggregation_changelog(input in records(false, 24), reading in reading()) {
        let actual = changelog(
            reading,
            &[stream("l", reading.partitions)],
            &[("l", &input)],
            "CREATE TABLE a AS SELECT k, AS_VALUE(k) AS kv, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM l GROUP BY k;",
            "A",
            &["KV"],
            &["N", "S", "LO", "HI"],
        );
        let expected = oracle(
            &[("l", sequenced(&input))],
            "SELECT k, \
               COUNT(*) OVER w AS n, SUM(v) OVER w AS s, MIN(v) OVER w AS lo, MAX(v) OVER w AS hi \
             FROM l WINDOW w AS (PARTITION BY k ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) \
             ORDER BY seq",
            1,
        );
        check_aggregate(reading, &actual, &expected)?;
    }

    #[test]
    fn windowed_aggregation_changelog(input in records(false, 24), reading in reading(), size in 1i64..20) {
        let actual = changelog(
            reading,
            &[stream("l", reading.partitions)],
            &[("l", &input)],
            &format!("CREATE TABLE w AS SELECT k, AS_VALUE(k) AS kv, WINDOWSTART AS ws, COUNT(*) AS n, SUM(v) AS s FROM l WINDOW TUMBLING (SIZE {size} MILLISECONDS) GROUP BY k;"),
            "W",
            &["KV", "WS"],
            &["N", "S"],
        );
        let expected = oracle(
            &[("l", sequenced(&input))],
            &format!(
                "SELECT k, ws, COUNT(*) OVER w AS n, SUM(v) OVER w AS s \
                 FROM (SELECT seq, k, v, (t / {size}) * {size} AS ws FROM l) \
                 WINDOW w AS (PARTITION BY k, ws ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) \
                 ORDER BY seq"
            ),
            2,
        );
        check_aggregate(reading, &actual, &expected)?;
    }

    #[test]
    fn stream_table_join_changelog(
        input in prop::collection::vec((any::<bool>(), 0i64..4, prop::option::weighted(0.8, 0i64..100)), 0..24),
        reading in reading(),
    ) {
        // Times grow with production: the join takes the records in that
        // order whatever the partitions and epochs, so each stream record
        // meets the table row its key had just before it.
        let (mut l, mut r) = (Vec::new(), Vec::new());
        let mut positions = (Vec::new(), Vec::new());
        for (i, (right, key, value)) in input.into_iter().enumerate() {
            let rec = Rec { key, ts: i as i64, value };
            if right {
                r.push(rec);
                positions.1.push(i as i64);
            } else if rec.value.is_some() {
                l.push(rec);
                positions.0.push(i as i64);
            }
        }
        let at = |recs: &[Rec], pos: &[i64]| {
            table_sql(
                &["seq", "k", "v"],
                recs.iter().zip(pos).map(|(r, p)| tuple(&[Some(*p), Some(r.key), r.value])).collect(),
            )
        };
        let actual = changelog(
            reading,
            &[stream("l", reading.partitions), table("r", reading.partitions)],
            &[("l", &l), ("r", &r)],
            "CREATE STREAM j AS SELECT l.k AS k, AS_VALUE(l.k) AS kv, l.v AS lv, r.v AS rv FROM l LEFT JOIN r ON l.k = r.k;",
            "J",
            &["KV"],
            &["LV", "RV"],
        );
        let expected = oracle(
            &[("l", at(&l, &positions.0)), ("r", at(&r, &positions.1))],
            "SELECT k, lv, rv FROM (\
               SELECT l.k AS k, l.seq AS seq, l.v AS lv, r.v AS rv, \
                 ROW_NUMBER() OVER (PARTITION BY l.seq ORDER BY r.seq DESC NULLS LAST) AS rn \
               FROM l LEFT JOIN r ON l.k = r.k AND r.seq < l.seq) \
             WHERE rn = 1 ORDER BY seq",
            1,
        );
        prop_assert_eq!(actual, expected);
    }
}

/// The changelog's bounds, checked once by hand: a group's every update
/// with the cache off, and one change per epoch with it on.
#[test]
fn cache_on_emits_once_per_group_and_epoch() {
    let input: Vec<Rec> = (0..12)
        .map(|i| Rec {
            key: i % 2,
            ts: i,
            value: Some(1),
        })
        .collect();
    let run = |cache_off| {
        changelog(
            Reading {
                partitions: 1,
                epoch_records: 4,
                cache_off,
            },
            &[stream("l", 1)],
            &[("l", &input)],
            "CREATE TABLE a AS SELECT k, AS_VALUE(k) AS kv, COUNT(*) AS n FROM l GROUP BY k;",
            "A",
            &["KV"],
            &["N"],
        )
    };
    let counts = |changes: &BTreeMap<Change, Vec<Change>>| -> Vec<Vec<String>> {
        changes
            .values()
            .map(|c| c.iter().map(|f| f[0].clone()).collect())
            .collect()
    };
    let every: Vec<Vec<String>> = vec![
        (1..=6).map(|n| n.to_string()).collect(),
        (1..=6).map(|n| n.to_string()).collect(),
    ];
    assert_eq!(counts(&run(true)), every);
    // Three epochs of four records, two of each key in each.
    let per_epoch: Vec<Vec<String>> = vec![
        vec!["2".into(), "4".into(), "6".into()],
        vec!["2".into(), "4".into(), "6".into()],
    ];
    assert_eq!(counts(&run(false)), per_epoch);
}
