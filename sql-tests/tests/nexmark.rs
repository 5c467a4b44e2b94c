//! Nexmark's queries (`bench/nexmark/`) over generated events, each
//! checked against DataFusion computing the same result in batch over the
//! same events. The batch form is written here from the query's
//! definition (as the comments of `bench/nexmark/` state it), not from
//! Brook's SQL: a stream's output is compared as a multiset of rows, a
//! table's as its final contents.
//!
//! The events are generated at 100 per second of event time, so that no
//! two share a millisecond (what a stream-table join sees is then decided
//! by time alone) and 12,000 of them span two minutes (several windows
//! and sessions).

use std::sync::Arc;

use brook_server::nexmark::{self, Event, QUERIES};
use brook_server::{Brook, Output};
use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

const EVENTS: u64 = 12_000;
const RATE: usize = 100;

/// A cell as text; numbers with a fraction to nine significant digits,
/// so that a DECIMAL, a DOUBLE and their sums compare by value.
fn cell(c: &ArrayRef, r: usize) -> String {
    if c.is_null(r) {
        return "NULL".into();
    }
    let s = array_value_to_string(c, r).unwrap_or_default();
    if s.parse::<i64>().is_ok() {
        return s;
    }
    match s.parse::<f64>() {
        Ok(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f:.9e}")
            }
        }
        Err(_) => s,
    }
}

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

/// A Brook with the events loaded and the query's statements run to the end of its input.
async fn brook_running(query: &str) -> (tempfile::TempDir, Arc<Brook>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let brook = Brook::open_with(dir.path(), false)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    nexmark::load(&brook, EVENTS, 1, RATE, |_| {})
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    let sql = QUERIES
        .iter()
        .find(|(n, _)| *n == query)
        .unwrap_or_else(|| panic!("no query {query}"))
        .1;
    let mut session = brook.session();
    session.set_property("auto.offset.reset", "earliest");
    session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    brook
        .engine()
        .flush()
        .await
        .unwrap_or_else(|e| panic!("flush: {e}"));
    (dir, brook)
}

async fn brook_rows(brook: &Arc<Brook>, sql: &str) -> Vec<Vec<String>> {
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

fn strings(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn ints(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

fn table(names: &[(&str, DataType)], columns: Vec<ArrayRef>) -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), false))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(Arc::clone(&schema), columns).unwrap_or_else(|e| panic!("batch: {e}"));
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap_or_else(|e| panic!("{e}")))
}

/// DataFusion with `person`, `auction` and `bid` holding the same events,
/// straight from the generator.
fn oracle_context() -> SessionContext {
    let config =
        SessionConfig::new().set_bool("datafusion.sql_parser.parse_float_as_decimal", true);
    let ctx = SessionContext::new_with_config(config);
    #[derive(Default)]
    struct P {
        id: Vec<i64>,
        name: Vec<String>,
        city: Vec<String>,
        state: Vec<String>,
        t: Vec<i64>,
    }
    #[derive(Default)]
    struct A {
        id: Vec<i64>,
        item: Vec<String>,
        desc: Vec<String>,
        initial: Vec<i64>,
        reserve: Vec<i64>,
        t: Vec<i64>,
        expires: Vec<i64>,
        seller: Vec<i64>,
        category: Vec<i64>,
    }
    #[derive(Default)]
    struct B {
        auction: Vec<i64>,
        bidder: Vec<i64>,
        price: Vec<i64>,
        channel: Vec<String>,
        url: Vec<String>,
        t: Vec<i64>,
        extra: Vec<String>,
    }
    let (mut p, mut a, mut b) = (P::default(), A::default(), B::default());
    for e in nexmark::generator(0, RATE).take(EVENTS as usize) {
        match e {
            Event::Person(x) => {
                p.id.push(x.id as i64);
                p.name.push(x.name);
                p.city.push(x.city);
                p.state.push(x.state);
                p.t.push(x.date_time as i64);
            }
            Event::Auction(x) => {
                a.id.push(x.id as i64);
                a.item.push(x.item_name);
                a.desc.push(x.description);
                a.initial.push(x.initial_bid as i64);
                a.reserve.push(x.reserve as i64);
                a.t.push(x.date_time as i64);
                a.expires.push(x.expires as i64);
                a.seller.push(x.seller as i64);
                a.category.push(x.category as i64);
            }
            Event::Bid(x) => {
                b.auction.push(x.auction as i64);
                b.bidder.push(x.bidder as i64);
                b.price.push(x.price as i64);
                b.channel.push(x.channel);
                b.url.push(x.url);
                b.t.push(x.date_time as i64);
                b.extra.push(x.extra);
            }
        }
    }
    let (i, s) = (DataType::Int64, DataType::Utf8);
    let person = table(
        &[
            ("id", i.clone()),
            ("name", s.clone()),
            ("city", s.clone()),
            ("state", s.clone()),
            ("datetime", i.clone()),
        ],
        vec![
            ints(p.id),
            strings(p.name),
            strings(p.city),
            strings(p.state),
            ints(p.t),
        ],
    );
    let auction = table(
        &[
            ("id", i.clone()),
            ("itemname", s.clone()),
            ("description", s.clone()),
            ("initialbid", i.clone()),
            ("reserve", i.clone()),
            ("datetime", i.clone()),
            ("expires", i.clone()),
            ("seller", i.clone()),
            ("category", i.clone()),
        ],
        vec![
            ints(a.id),
            strings(a.item),
            strings(a.desc),
            ints(a.initial),
            ints(a.reserve),
            ints(a.t),
            ints(a.expires),
            ints(a.seller),
            ints(a.category),
        ],
    );
    let bid = table(
        &[
            ("auction", i.clone()),
            ("bidder", i.clone()),
            ("price", i.clone()),
            ("channel", s.clone()),
            ("url", s.clone()),
            ("datetime", i),
            ("extra", s),
        ],
        vec![
            ints(b.auction),
            ints(b.bidder),
            ints(b.price),
            strings(b.channel),
            strings(b.url),
            ints(b.t),
            strings(b.extra),
        ],
    );
    for (name, t) in [("person", person), ("auction", auction), ("bid", bid)] {
        ctx.register_table(name, t)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    ctx
}

async fn oracle(sql: &str) -> Vec<Vec<String>> {
    let ctx = oracle_context();
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows_as_text(&batches)
}

/// Runs `query`, reads `read` from Brook and `expected` from DataFusion,
/// and compares them.
async fn check(query: &str, read: &str, expected: &str) {
    let (_dir, brook) = brook_running(query).await;
    let got = brook_rows(&brook, read).await;
    let want = oracle(expected).await;
    assert!(
        !want.is_empty(),
        "{query}: the oracle found no rows; a vacuous test"
    );
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        panic!(
            "{query}: Brook has {} rows, DataFusion {}; missing {missing:?}; unexpected {extra:?}",
            got.len(),
            want.len()
        );
    }
    brook.shutdown().await;
}

/// Nine significant digits of a decimal product, as `cell` shows it.
const Q1_PRICE: &str = "CAST(price AS DECIMAL(20, 0)) * CAST(0.908 AS DECIMAL(4, 3))";

#[tokio::test]
async fn q0_passes_bids_through() {
    check(
        "q0",
        "SELECT * FROM nexmark_q0;",
        "SELECT auction, bidder, price, datetime, extra FROM bid",
    )
    .await;
}

#[tokio::test]
async fn q1_converts_prices() {
    check(
        "q1",
        "SELECT * FROM nexmark_q1;",
        &format!("SELECT auction, bidder, {Q1_PRICE}, datetime, extra FROM bid"),
    )
    .await;
}

#[tokio::test]
async fn q2_selects_bids() {
    check(
        "q2",
        "SELECT * FROM nexmark_q2;",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    )
    .await;
}

#[tokio::test]
async fn q3_finds_local_sellers() {
    // The seller's row as a table holds it when the auction arrives: the
    // person came first.
    check(
        "q3",
        "SELECT * FROM nexmark_q3;",
        "SELECT a.seller, p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id \
         WHERE a.category = 10 AND p.state IN ('or', 'id', 'ca') AND p.datetime < a.datetime",
    )
    .await;
}

#[tokio::test]
async fn q4_averages_winning_bids_per_category() {
    check(
        "q4",
        "SELECT * FROM nexmark_q4;",
        "SELECT category, AVG(final) FROM (SELECT a.id, a.category, MAX(b.price) AS final \
         FROM bid b JOIN auction a ON b.auction = a.id \
         WHERE b.datetime >= a.datetime AND b.datetime <= a.expires GROUP BY a.id, a.category) \
         GROUP BY category",
    )
    .await;
}

#[tokio::test]
async fn q5_counts_bids_in_hopping_windows() {
    check(
        "q5",
        "SELECT auction, WINDOWSTART, num FROM nexmark_q5;",
        "SELECT auction, ws, COUNT(*) FROM (SELECT auction, datetime - datetime % 2000 - k * 2000 AS ws \
         FROM bid CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS t(k)) GROUP BY auction, ws",
    )
    .await;
}

#[tokio::test]
async fn q7_finds_the_highest_bid_per_window() {
    check(
        "q7",
        "SELECT WINDOWSTART, maxprice FROM nexmark_q7;",
        "SELECT datetime - datetime % 10000, MAX(price) FROM bid GROUP BY datetime - datetime % 10000",
    )
    .await;
}

#[tokio::test]
async fn q8_finds_new_sellers() {
    check(
        "q8",
        "SELECT * FROM nexmark_q8;",
        "SELECT p.id, p.name, a.id FROM person p JOIN auction a ON p.id = a.seller \
         WHERE a.datetime >= p.datetime - 10000 AND a.datetime <= p.datetime + 10000",
    )
    .await;
}

#[tokio::test]
async fn q9_finds_winning_bids() {
    check(
        "q9",
        "SELECT * FROM nexmark_q9;",
        "SELECT a.id, a.seller, a.category, a.expires, MAX(b.price) FROM bid b JOIN auction a ON b.auction = a.id \
         WHERE b.datetime >= a.datetime AND b.datetime <= a.expires GROUP BY a.id, a.seller, a.category, a.expires",
    )
    .await;
}

#[tokio::test]
async fn q11_counts_bids_per_session() {
    check(
        "q11",
        "SELECT bidder, bid_count FROM nexmark_q11;",
        "SELECT bidder, COUNT(*) FROM (SELECT bidder, SUM(CASE WHEN prev IS NULL OR datetime - prev > 10000 THEN 1 ELSE 0 END) \
         OVER (PARTITION BY bidder ORDER BY datetime ROWS UNBOUNDED PRECEDING) AS s \
         FROM (SELECT bidder, datetime, LAG(datetime) OVER (PARTITION BY bidder ORDER BY datetime) AS prev FROM bid)) \
         GROUP BY bidder, s",
    )
    .await;
}

#[tokio::test]
async fn q14_calculates() {
    check(
        "q14",
        "SELECT * FROM nexmark_q14;",
        &format!(
            "SELECT auction, bidder, {Q1_PRICE}, \
             CASE WHEN h >= 8 AND h <= 18 THEN 'dayTime' WHEN h <= 6 OR h >= 20 THEN 'nightTime' ELSE 'otherTime' END, \
             datetime, extra, character_length(extra) - character_length(replace(extra, 'c', '')) \
             FROM (SELECT *, CAST(date_part('hour', to_timestamp_millis(datetime)) AS INT) AS h FROM bid) \
             WHERE {Q1_PRICE} > 1000000 AND {Q1_PRICE} < 50000000"
        ),
    )
    .await;
}

const DAY: &str = "to_char(to_timestamp_millis(datetime), '%Y-%m-%d')";
const RANKED: &str = "COUNT(*), \
     SUM(CASE WHEN price < 10000 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN price >= 1000000 THEN 1 ELSE 0 END)";
const DISTINCTS: &str = "COUNT(DISTINCT bidder), \
     COUNT(DISTINCT CASE WHEN price < 10000 THEN bidder END), \
     COUNT(DISTINCT CASE WHEN price >= 10000 AND price < 1000000 THEN bidder END), \
     COUNT(DISTINCT CASE WHEN price >= 1000000 THEN bidder END), \
     COUNT(DISTINCT auction), \
     COUNT(DISTINCT CASE WHEN price < 10000 THEN auction END), \
     COUNT(DISTINCT CASE WHEN price >= 10000 AND price < 1000000 THEN auction END), \
     COUNT(DISTINCT CASE WHEN price >= 1000000 THEN auction END)";

#[tokio::test]
async fn q15_counts_per_day() {
    check(
        "q15",
        "SELECT * FROM nexmark_q15;",
        &format!("SELECT {DAY}, {RANKED}, {DISTINCTS} FROM bid GROUP BY {DAY}"),
    )
    .await;
}

#[tokio::test]
async fn q16_counts_per_channel_and_day() {
    check(
        "q16",
        "SELECT * FROM nexmark_q16;",
        &format!(
            "SELECT channel, {DAY}, MAX(to_char(to_timestamp_millis(datetime), '%H:%M')), {RANKED}, {DISTINCTS} \
             FROM bid GROUP BY channel, {DAY}"
        ),
    )
    .await;
}

#[tokio::test]
async fn q17_summarizes_auctions_per_day() {
    check(
        "q17",
        "SELECT * FROM nexmark_q17;",
        &format!(
            "SELECT auction, {DAY}, {RANKED}, MIN(price), MAX(price), AVG(price), SUM(price) \
             FROM bid GROUP BY auction, {DAY}"
        ),
    )
    .await;
}

#[tokio::test]
async fn q18_keeps_the_last_bid() {
    check(
        "q18",
        "SELECT * FROM nexmark_q18;",
        "SELECT bidder, auction, price, channel, url, datetime, extra FROM \
         (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY datetime DESC) AS rn FROM bid) \
         WHERE rn = 1",
    )
    .await;
}

#[tokio::test]
async fn q19_keeps_the_top_ten_prices() {
    check(
        "q19",
        "SELECT * FROM nexmark_q19;",
        "SELECT auction, array_slice(array_agg(price ORDER BY price DESC), 1, 10) FROM bid GROUP BY auction",
    )
    .await;
}

#[tokio::test]
async fn q20_expands_bids_with_their_auction() {
    check(
        "q20",
        "SELECT * FROM nexmark_q20;",
        "SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.datetime, a.itemname, a.description, \
         a.initialbid, a.reserve, a.datetime, a.expires, a.seller, a.category \
         FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10 AND a.datetime < b.datetime",
    )
    .await;
}

#[tokio::test]
async fn q21_adds_channel_ids() {
    check(
        "q21",
        "SELECT * FROM nexmark_q21;",
        "SELECT auction, bidder, price, channel, \
         CASE WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1' \
         WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3' \
         ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] END \
         FROM bid WHERE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] IS NOT NULL \
         OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    )
    .await;
}

#[tokio::test]
async fn q22_splits_urls() {
    check(
        "q22",
        "SELECT * FROM nexmark_q22;",
        "SELECT auction, bidder, price, channel, split_part(url, '/', 4), split_part(url, '/', 5), \
         split_part(url, '/', 6) FROM bid",
    )
    .await;
}

#[tokio::test]
async fn count_counts_bids_per_auction() {
    check(
        "count",
        "SELECT * FROM nexmark_count;",
        "SELECT auction, COUNT(*) FROM bid GROUP BY auction",
    )
    .await;
}
