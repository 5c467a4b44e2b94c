//! Nexmark, the benchmark streaming systems publish their figures on: its
//! events as records in Brook's log, its queries in Brook's SQL (the files
//! in `bench/nexmark/`), and the runner behind `brook bench nexmark`.
//!
//! Events come from the `nexmark` crate's generator, written as a Kafka
//! producer would write them: JSON values with the generator's field names,
//! persons and auctions keyed by their id (KAFKA BIGINT), bids without a
//! key. Throughput is counted as the field counts it: all generated events
//! (persons, auctions and bids) over the query's time, whichever of them
//! the query reads.
//!
//! What is measured, per phase, comes from `/proc/self`: wall time, the
//! process's CPU time (user + system), its peak resident set (reset before
//! each phase), and the bytes it caused to be written to storage.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_storage::{LogStore, Record};
use nexmark::config::NexmarkConfig;
pub use nexmark::event::Event;
pub use nexmark::EventGenerator;
use serde::Deserialize;

use crate::error::{Result, ServerError};
use crate::session::{Brook, Output};

/// The sources: `person`, `auction` and `bid` as streams, `person_t` and
/// `auction_t` as tables over the same topics. `${partitions}` is the
/// partition count.
pub const SOURCES: &str = include_str!("../../bench/nexmark/sources.sql");

/// Every query, by name, in the order the bench runs them. Each file says
/// where it differs from Flink's form of the query.
pub const QUERIES: &[(&str, &str)] = &[
    ("q0", include_str!("../../bench/nexmark/q0.sql")),
    ("q1", include_str!("../../bench/nexmark/q1.sql")),
    ("q2", include_str!("../../bench/nexmark/q2.sql")),
    ("q3", include_str!("../../bench/nexmark/q3.sql")),
    ("q4", include_str!("../../bench/nexmark/q4.sql")),
    ("q5", include_str!("../../bench/nexmark/q5.sql")),
    ("q7", include_str!("../../bench/nexmark/q7.sql")),
    ("q8", include_str!("../../bench/nexmark/q8.sql")),
    ("q9", include_str!("../../bench/nexmark/q9.sql")),
    ("q11", include_str!("../../bench/nexmark/q11.sql")),
    ("q14", include_str!("../../bench/nexmark/q14.sql")),
    ("q15", include_str!("../../bench/nexmark/q15.sql")),
    ("q16", include_str!("../../bench/nexmark/q16.sql")),
    ("q17", include_str!("../../bench/nexmark/q17.sql")),
    ("q18", include_str!("../../bench/nexmark/q18.sql")),
    ("q19", include_str!("../../bench/nexmark/q19.sql")),
    ("q20", include_str!("../../bench/nexmark/q20.sql")),
    ("q21", include_str!("../../bench/nexmark/q21.sql")),
    ("q22", include_str!("../../bench/nexmark/q22.sql")),
    ("count", include_str!("../../bench/nexmark/count.sql")),
];

/// The generator's clock starts here (2026-01-01T00:00:00Z), not at the
/// wall clock, so that the same `--events` give the same records.
pub const BASE_TIME_MS: u64 = 1_767_225_600_000;

/// The generator's default rate: events per second of event time.
pub const DEFAULT_RATE: usize = 10_000;

/// The generator, positioned at event `first`, at `rate` events per
/// second of event time (the default, [`DEFAULT_RATE`], gives several
/// events the same millisecond; tests that need one event per timestamp
/// use 1,000).
pub fn generator(first: u64, rate: usize) -> EventGenerator {
    let config = NexmarkConfig {
        base_time: BASE_TIME_MS,
        first_rate: rate.max(1),
        next_rate: rate.max(1),
        ..NexmarkConfig::default()
    };
    EventGenerator::new(config).with_offset(first)
}

/// The topic an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topic {
    /// `person`
    Person,
    /// `auction`
    Auction,
    /// `bid`
    Bid,
}

impl Topic {
    /// The topic's name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Person => "person",
            Topic::Auction => "auction",
            Topic::Bid => "bid",
        }
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_field(out: &mut Vec<u8>, first: bool, name: &str) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn json_num(out: &mut Vec<u8>, first: bool, name: &str, v: u64) {
    json_field(out, first, name);
    let _ = write!(out, "{v}");
}

fn json_text(out: &mut Vec<u8>, first: bool, name: &str, v: &str) {
    json_field(out, first, name);
    json_str(out, v);
}

/// An event as the record a producer would write: its topic, and a JSON
/// value (persons and auctions keyed by id, 8 bytes big-endian).
pub fn event_record(event: &Event) -> (Topic, Record) {
    let mut v = Vec::with_capacity(256);
    v.push(b'{');
    let (topic, key, timestamp) = match event {
        Event::Person(p) => {
            json_num(&mut v, true, "id", p.id as u64);
            json_text(&mut v, false, "name", &p.name);
            json_text(&mut v, false, "emailAddress", &p.email_address);
            json_text(&mut v, false, "creditCard", &p.credit_card);
            json_text(&mut v, false, "city", &p.city);
            json_text(&mut v, false, "state", &p.state);
            json_num(&mut v, false, "dateTime", p.date_time);
            json_text(&mut v, false, "extra", &p.extra);
            (Topic::Person, Some(p.id as u64), p.date_time)
        }
        Event::Auction(a) => {
            json_num(&mut v, true, "id", a.id as u64);
            json_text(&mut v, false, "itemName", &a.item_name);
            json_text(&mut v, false, "description", &a.description);
            json_num(&mut v, false, "initialBid", a.initial_bid as u64);
            json_num(&mut v, false, "reserve", a.reserve as u64);
            json_num(&mut v, false, "dateTime", a.date_time);
            json_num(&mut v, false, "expires", a.expires);
            json_num(&mut v, false, "seller", a.seller as u64);
            json_num(&mut v, false, "category", a.category as u64);
            json_text(&mut v, false, "extra", &a.extra);
            (Topic::Auction, Some(a.id as u64), a.date_time)
        }
        Event::Bid(b) => {
            json_num(&mut v, true, "auction", b.auction as u64);
            json_num(&mut v, false, "bidder", b.bidder as u64);
            json_num(&mut v, false, "price", b.price as u64);
            json_text(&mut v, false, "channel", &b.channel);
            json_text(&mut v, false, "url", &b.url);
            json_num(&mut v, false, "dateTime", b.date_time);
            json_text(&mut v, false, "extra", &b.extra);
            (Topic::Bid, None, b.date_time)
        }
    };
    v.push(b'}');
    let record = Record {
        timestamp: i64::try_from(timestamp).unwrap_or(i64::MAX),
        key: key.map(|k| (k as i64).to_be_bytes().to_vec()),
        value: Some(v),
        headers: vec![],
    };
    (topic, record)
}

/// What one phase used.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Wall time.
    pub wall: Duration,
    /// The process's CPU time (user + system).
    pub cpu: Duration,
    /// Peak resident set during the phase, bytes (`None`: unknown here).
    pub peak_rss: Option<u64>,
    /// Bytes the process caused to be written to storage (`None`: unknown).
    pub disk_written: Option<u64>,
}

/// The process's counters at the start of a phase.
struct Probe {
    start: Instant,
    cpu: Duration,
    written: Option<u64>,
}

impl Probe {
    fn start() -> Probe {
        // Writing 5 to clear_refs resets the peak resident set (Linux ≥ 4.0).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Probe {
            start: Instant::now(),
            cpu: cpu_time(),
            written: disk_written(),
        }
    }

    fn finish(self) -> Usage {
        Usage {
            wall: self.start.elapsed(),
            cpu: cpu_time().saturating_sub(self.cpu),
            peak_rss: peak_rss(),
            disk_written: disk_written()
                .zip(self.written)
                .map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// User + system CPU time of this process (`/proc/self/stat`, in clock
/// ticks of 1/100 s, Linux's value on every architecture Brook runs on).
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Duration::from_millis((user + system) * 10),
        _ => Duration::ZERO,
    }
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb = line[field.len()..].trim().trim_end_matches("kB").trim();
    kb.parse::<u64>().ok().map(|k| k * 1024)
}

/// Peak resident set of this process since the last reset, bytes.
pub fn peak_rss() -> Option<u64> {
    status_kb("VmHWM:")
}

fn disk_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line["write_bytes:".len()..].trim().parse().ok()
}

/// Creates the sources and writes `events` generated events into them,
/// through the log's own append path, in batches; `progress` is called
/// with the events written so far. Returns the payload bytes written.
pub async fn load(
    brook: &Arc<Brook>,
    events: u64,
    partitions: u32,
    rate: usize,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<(Usage, u64)> {
    let mut session = brook.session();
    session.define("partitions", &partitions.max(1).to_string());
    session.execute(SOURCES).await?;
    let engine = Arc::clone(brook.engine());
    let probe = Probe::start();
    let bytes = tokio::task::spawn_blocking(move || -> Result<u64> {
        const BATCH: u64 = 10_000;
        let partitions = partitions.max(1);
        let mut gen = generator(0, rate);
        let mut bytes = 0u64;
        let mut n = 0u64;
        while n < events {
            let count = BATCH.min(events - n);
            let mut by_part: std::collections::BTreeMap<(Topic, u32), Vec<Record>> =
                Default::default();
            for i in 0..count {
                let Some(event) = gen.next() else { break };
                let (topic, record) = event_record(&event);
                let partition = match &record.key {
                    Some(k) => brook_executor::partition_for(Some(k), partitions),
                    None => ((n + i) % u64::from(partitions)) as u32,
                };
                bytes += record.value.as_ref().map_or(0, Vec::len) as u64
                    + record.key.as_ref().map_or(0, Vec::len) as u64;
                by_part.entry((topic, partition)).or_default().push(record);
            }
            for ((topic, partition), records) in by_part {
                engine.produce(topic.name(), partition, &records)?;
            }
            n += count;
            progress(n);
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| ServerError::Exec(brook_executor::ExecError::Internal(e.to_string())))??;
    Ok((probe.finish(), bytes))
}

/// Runs one query's statements as persistent queries from the earliest
/// offset and waits until they have caught up with their sources;
/// `progress` is called with the fraction of their input consumed. The
/// queries are terminated and their sinks dropped afterwards.
pub async fn run_query(
    brook: &Arc<Brook>,
    sql: &str,
    progress: impl Fn(f64) + Send + 'static,
) -> Result<Usage> {
    let mut session = brook.session();
    session.set_property("auto.offset.reset", "earliest");
    let before: BTreeSet<String> = brook.catalog_snapshot().sources.into_keys().collect();
    let probe = Probe::start();
    let mut ids = Vec::new();
    for out in session.execute(sql).await? {
        if let Output::Command {
            query_id: Some(id), ..
        } = out
        {
            ids.push(id);
        }
    }
    let engine = Arc::clone(brook.engine());
    let watcher = {
        let engine = Arc::clone(&engine);
        let ids = ids.clone();
        tokio::spawn(async move {
            loop {
                let (mut done, mut total) = (0u64, 0u64);
                for id in &ids {
                    if let Ok(Some((d, t))) = engine.query_progress(id) {
                        done += d;
                        total += t;
                    }
                }
                if total > 0 {
                    progress(done as f64 / total as f64);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let flushed = engine.flush().await;
    watcher.abort();
    let usage = probe.finish();
    flushed?;
    session.execute("TERMINATE ALL;").await?;
    let after = brook.catalog_snapshot();
    for (name, def) in after.sources.iter().rev() {
        if before.contains(name) {
            continue;
        }
        let kind = match def.kind {
            brook_planner::catalog::SourceKind::Stream => "STREAM",
            brook_planner::catalog::SourceKind::Table => "TABLE",
        };
        session
            .execute(&format!("DROP {kind} `{name}` DELETE TOPIC;"))
            .await?;
    }
    Ok(usage)
}

/// A bid, as the hand-written baseline decodes it.
#[derive(Deserialize)]
struct BaselineBid<'a> {
    auction: i64,
    bidder: i64,
    price: i64,
    // Decoded as Brook decodes them, though no baseline reads them.
    #[serde(borrow, rename = "channel")]
    _channel: std::borrow::Cow<'a, str>,
    #[serde(borrow, rename = "url")]
    _url: std::borrow::Cow<'a, str>,
    #[serde(rename = "dateTime")]
    date_time: i64,
    #[serde(borrow)]
    extra: std::borrow::Cow<'a, str>,
}

/// The hand-written baselines: what a program that knows its query gets
/// from the same records, read from the same log.
pub const BASELINES: &[&str] = &["q0", "q1", "q2", "count"];

/// Runs the hand-written baseline for `name` (one of [`BASELINES`]) over
/// the `bid` topic: reads every record, decodes it with serde into a
/// struct, and computes the query, encoding each output row as JSON
/// (discarded) or counting bids per auction in a hash map. Returns what it
/// used and the rows it produced.
pub fn baseline(log: &LogStore, name: &str) -> Result<(Usage, u64)> {
    let probe = Probe::start();
    let partitions = log.partitions("bid")?;
    let mut out = Vec::with_capacity(256);
    let mut rows = 0u64;
    let mut counts: std::collections::HashMap<i64, u64> = Default::default();
    for p in 0..partitions {
        let mut offset = 0;
        loop {
            let records = log.read("bid", p, offset, 4096)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for r in &records {
                let Some(value) = r.record.value.as_deref() else {
                    continue;
                };
                let Ok(b) = serde_json::from_slice::<BaselineBid>(value) else {
                    continue;
                };
                out.clear();
                match name {
                    "q0" => {
                        let _ = write!(
                            out,
                            "{{\"AUCTION\":{},\"BIDDER\":{},\"PRICE\":{},\"DATETIME\":{},\"EXTRA\":",
                            b.auction, b.bidder, b.price, b.date_time
                        );
                        json_str(&mut out, &b.extra);
                        out.push(b'}');
                    }
                    "q1" => {
                        let euros = i128::from(b.price) * 908;
                        let _ = write!(
                            out,
                            "{{\"AUCTION\":{},\"BIDDER\":{},\"PRICE\":{}.{:03},\"DATETIME\":{},\"EXTRA\":",
                            b.auction,
                            b.bidder,
                            euros / 1000,
                            (euros % 1000).abs(),
                            b.date_time
                        );
                        json_str(&mut out, &b.extra);
                        out.push(b'}');
                    }
                    "q2" => {
                        if b.auction % 123 != 0 {
                            continue;
                        }
                        let _ = write!(out, "{{\"AUCTION\":{},\"PRICE\":{}}}", b.auction, b.price);
                    }
                    "count" => {
                        *counts.entry(b.auction).or_default() += 1;
                        continue;
                    }
                    other => {
                        return Err(ServerError::BadRequest(format!(
                            "no hand-written baseline for {other}"
                        )))
                    }
                }
                std::hint::black_box(&out);
                rows += 1;
            }
        }
    }
    if name == "count" {
        rows = counts.len() as u64;
    }
    Ok((probe.finish(), rows))
}
