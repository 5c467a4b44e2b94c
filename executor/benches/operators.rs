//! Criterion benchmarks per operator family, over in-memory change batches:
//! one epoch of Nexmark events (16,384 records, as a persistent query reads
//! them from a partition), decoded once, then pushed through a fresh
//! pipeline whose state is in memory. What is timed is the operators and
//! the epoch's state drain, not the log, the commit or the sink.
//!
//! - `decode`: bids' JSON into a change batch.
//! - `filter_project`: q1 (a projection with arithmetic) and q2 (a filter).
//! - `grouped_aggregate`: COUNT, SUM, MIN, MAX per auction, record cache on
//!   and off.
//! - `window_aggregate`: tumbling and hopping COUNT per auction.
//! - `stream_table_join`: bids joined with the auctions table (loaded
//!   before the timed part).
//! - `stream_stream_join`: persons joined with auctions WITHIN 10 seconds.
//!
//! Run: `cargo bench -p brook-executor --bench operators`.

use std::time::Duration;

use brook_executor::bench::{decode, Join};
use brook_executor::{ChangeBatch, Pipeline};
use brook_planner::binder::{plan_create_as_select, plan_create_source, FormatDefaults};
use brook_planner::catalog::{Catalog, Format, SourceDef};
use brook_planner::parser::{parse, Statement};
use brook_planner::plan::StreamPlan;
use brook_storage::{MemoryStateStore, Record, StoredRecord, WriteBatch};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use nexmark::EventGenerator;
use serde_json::json;

/// One epoch's worth of records from one partition.
const EPOCH: usize = 16_384;

const SOURCES: &str = include_str!("../../bench/nexmark/sources.sql");

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    for parsed in parse(&SOURCES.replace("${partitions}", "1")).expect("sources parse") {
        let Statement::CreateSource {
            kind,
            name,
            columns,
            props,
            ..
        } = &parsed.statement
        else {
            panic!("not a source: {}", parsed.sql);
        };
        let columns = catalog.resolve_columns(columns).expect("columns");
        let def = plan_create_source(*kind, name, &columns, props, FormatDefaults::default())
            .expect("source plans");
        catalog.sources.insert(name.clone(), def);
    }
    catalog
}

/// The plan of a `CREATE … AS SELECT`, with the record cache on or off.
fn plan(catalog: &Catalog, sql: &str, consolidate: bool) -> StreamPlan {
    let parsed = parse(sql).expect("query parses").remove(0);
    let Statement::CreateAsSelect {
        kind,
        name,
        props,
        query,
        partition_by,
        ..
    } = &parsed.statement
    else {
        panic!("not a CREATE AS SELECT: {sql}");
    };
    let (_, mut plan) = plan_create_as_select(
        catalog,
        *kind,
        name,
        props,
        query,
        partition_by.as_deref(),
        "BENCH_0",
        false,
    )
    .expect("query plans");
    plan.consolidate = consolidate;
    plan
}

/// The first `n` events of each kind the generator makes (persons,
/// auctions, bids), as records keyed as `brook bench nexmark` keys them.
fn events(n: usize) -> [Vec<StoredRecord>; 3] {
    let config = NexmarkConfig {
        base_time: 1_767_225_600_000,
        ..NexmarkConfig::default()
    };
    let mut out: [Vec<StoredRecord>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for event in EventGenerator::new(config) {
        let (slot, key, ts, value) = match event {
            Event::Person(p) => (
                0,
                Some(p.id as i64),
                p.date_time,
                json!({"id": p.id, "name": p.name, "emailAddress": p.email_address,
                       "creditCard": p.credit_card, "city": p.city, "state": p.state,
                       "dateTime": p.date_time, "extra": p.extra}),
            ),
            Event::Auction(a) => (
                1,
                Some(a.id as i64),
                a.date_time,
                json!({"id": a.id, "itemName": a.item_name, "description": a.description,
                       "initialBid": a.initial_bid, "reserve": a.reserve, "dateTime": a.date_time,
                       "expires": a.expires, "seller": a.seller, "category": a.category,
                       "extra": a.extra}),
            ),
            Event::Bid(b) => (
                2,
                None,
                b.date_time,
                json!({"auction": b.auction, "bidder": b.bidder, "price": b.price,
                       "channel": b.channel, "url": b.url, "dateTime": b.date_time,
                       "extra": b.extra}),
            ),
        };
        if out[slot].len() < n {
            let offset = out[slot].len() as u64;
            out[slot].push(StoredRecord {
                partition: 0,
                offset,
                record: Record {
                    timestamp: ts as i64,
                    key: key.map(|k| k.to_be_bytes().to_vec()),
                    value: Some(serde_json::to_vec(&value).expect("json")),
                    headers: vec![],
                },
            });
        }
        if out.iter().all(|v| v.len() >= n) {
            return out;
        }
    }
    out
}

struct Fixture {
    catalog: Catalog,
    persons: Vec<StoredRecord>,
    auctions: Vec<StoredRecord>,
    bids: Vec<StoredRecord>,
}

impl Fixture {
    fn new() -> Fixture {
        let [persons, auctions, bids] = events(EPOCH);
        Fixture {
            catalog: catalog(),
            persons,
            auctions,
            bids,
        }
    }

    fn def(&self, name: &str) -> &SourceDef {
        &self.catalog.sources[name]
    }

    fn bid_batch(&self) -> ChangeBatch {
        decode(self.def("BID"), &self.bids).expect("bids decode")
    }
}

/// One epoch through a fresh pipeline, then its state drained.
fn run_pipeline(plan: &StreamPlan, input: ChangeBatch) -> usize {
    let state = MemoryStateStore::default();
    let mut pipeline = Pipeline::new(plan, b"a/".to_vec()).expect("pipeline");
    let out = pipeline.process(input, &state).expect("process");
    let mut batch = WriteBatch::default();
    pipeline.checkpoint(&mut batch, &state).expect("checkpoint");
    out.len()
}

fn bench_decode(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(EPOCH as u64));
    group.bench_function("bids_json", |b| {
        b.iter(|| decode(f.def("BID"), &f.bids).expect("decode").len())
    });
    // The same bids as DELIMITED text (no field of theirs holds a comma).
    let mut delimited = f.def("BID").clone();
    delimited.value_format = Format::Delimited(',');
    let fields = [
        "auction", "bidder", "price", "channel", "url", "dateTime", "extra",
    ];
    let bids: Vec<StoredRecord> = f
        .bids
        .iter()
        .map(|r| {
            let v: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().expect("a value")).expect("json");
            let text: Vec<String> = fields
                .iter()
                .map(|k| match &v[*k] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            let mut r = r.clone();
            r.record.value = Some(text.join(",").into_bytes());
            r
        })
        .collect();
    assert_eq!(
        decode(&delimited, &bids).expect("decode").len(),
        bids.len(),
        "every bid decodes"
    );
    group.bench_function("bids_delimited", |b| {
        b.iter(|| decode(&delimited, &bids).expect("decode").len())
    });
    group.finish();
}

fn bench_pipelines(c: &mut Criterion, f: &Fixture, family: &str, queries: &[(&str, &str, bool)]) {
    let mut group = c.benchmark_group(family);
    group.throughput(Throughput::Elements(EPOCH as u64));
    let input = f.bid_batch();
    for (name, sql, consolidate) in queries {
        let plan = plan(&f.catalog, sql, *consolidate);
        group.bench_function(*name, |b| {
            b.iter_batched(
                || input.clone(),
                |input| run_pipeline(&plan, input),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_stream_table_join(c: &mut Criterion, f: &Fixture) {
    let plan = plan(
        &f.catalog,
        "CREATE STREAM j AS SELECT B.auction AS auction, B.price AS price, A.itemName AS itemName, A.category AS category \
         FROM bid B JOIN auction_t A ON B.auction = A.id EMIT CHANGES;",
        true,
    );
    let bids = f.bid_batch();
    let auctions = decode(f.def("AUCTION_T"), &f.auctions).expect("auctions decode");
    let empty_bids = decode(f.def("BID"), &[]).expect("decode");
    let empty_auctions = decode(f.def("AUCTION_T"), &[]).expect("decode");
    let mut group = c.benchmark_group("stream_table_join");
    group.throughput(Throughput::Elements(EPOCH as u64));
    group.bench_function("bid_auction", |b| {
        b.iter_batched(
            || {
                let state = MemoryStateStore::default();
                let mut join = Join::new(&plan, &state).expect("join");
                join.process(&[empty_bids.clone(), auctions.clone()])
                    .expect("table side");
                (state, join, bids.clone())
            },
            |(state, mut join, bids)| {
                let joined = join.process(&[bids, empty_auctions.clone()]).expect("join");
                let mut pipeline = Pipeline::new(&plan, b"a/".to_vec()).expect("pipeline");
                pipeline.process(joined, &state).expect("process").len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_stream_stream_join(c: &mut Criterion, f: &Fixture) {
    let plan = plan(
        &f.catalog,
        "CREATE STREAM j AS SELECT P.id AS id, P.name AS name, A.id AS auction_id \
         FROM person P JOIN auction A WITHIN 10 SECONDS ON P.id = A.seller EMIT CHANGES;",
        true,
    );
    let persons = decode(f.def("PERSON"), &f.persons).expect("persons decode");
    let auctions = decode(f.def("AUCTION"), &f.auctions).expect("auctions decode");
    let mut group = c.benchmark_group("stream_stream_join");
    group.throughput(Throughput::Elements(2 * EPOCH as u64));
    group.bench_function("person_auction", |b| {
        b.iter_batched(
            || (persons.clone(), auctions.clone()),
            |(persons, auctions)| {
                let state = MemoryStateStore::default();
                let mut join = Join::new(&plan, &state).expect("join");
                let joined = join.process(&[persons, auctions]).expect("join");
                let mut pipeline = Pipeline::new(&plan, b"a/".to_vec()).expect("pipeline");
                pipeline.process(joined, &state).expect("process").len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn operators(c: &mut Criterion) {
    let f = Fixture::new();
    bench_decode(c, &f);
    bench_pipelines(
        c,
        &f,
        "filter_project",
        &[
            (
                "q1_project",
                "CREATE STREAM q1 AS SELECT auction, bidder, 0.908 * price AS price, dateTime FROM bid EMIT CHANGES;",
                true,
            ),
            (
                "q2_filter",
                "CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0 EMIT CHANGES;",
                true,
            ),
        ],
    );
    let grouped = "CREATE TABLE g AS SELECT auction, COUNT(*) AS n, SUM(price) AS s, MIN(price) AS lo, MAX(price) AS hi FROM bid GROUP BY auction EMIT CHANGES;";
    bench_pipelines(
        c,
        &f,
        "grouped_aggregate",
        &[("cache_on", grouped, true), ("cache_off", grouped, false)],
    );
    bench_pipelines(
        c,
        &f,
        "window_aggregate",
        &[
            (
                "tumbling_10s",
                "CREATE TABLE t AS SELECT auction, COUNT(*) AS n FROM bid WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY auction EMIT CHANGES;",
                true,
            ),
            (
                "hopping_10s_2s",
                "CREATE TABLE h AS SELECT auction, COUNT(*) AS n FROM bid WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS) GROUP BY auction EMIT CHANGES;",
                true,
            ),
        ],
    );
    bench_stream_table_join(c, &f);
    bench_stream_stream_join(c, &f);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = operators
}
criterion_main!(benches);
