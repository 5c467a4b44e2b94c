//! Harnesses for `cargo fuzz` (the targets in `fuzz/` call these) and for
//! the test that replays the committed corpus (`tests/fuzz_corpus.rs`).
//!
//! One Brook per process serves all three, on a scratch data directory with
//! a few streams and tables of every column type: [`sql`] parses, binds and
//! plans what it is given against that catalog (and runs pull queries, which
//! change nothing); [`pgwire`] and [`http`] send the bytes to the real
//! listeners on loopback. A harness panics only when Brook misbehaves: a
//! panic anywhere (the fuzzer's panic hook aborts even in a spawned task),
//! a connection that never ends, or a server that stops answering.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use brook_planner::binder::{make_emit_final, plan_insert, plan_pull, plan_stream};
use brook_planner::catalog::Catalog;
use brook_planner::parser::Statement;

use crate::session::apply_ddl;
use crate::{serve, Brook, Config, EngineConfig, Limits};

/// The scratch catalog: streams and tables of every column type, a
/// windowed and an aggregated table, some rows in each.
const SETUP: &str = "
CREATE TYPE ADDRESS AS STRUCT<STREET STRING, ZIP INT>;
CREATE STREAM S (ID INT KEY, NAME STRING, AMOUNT DOUBLE, N BIGINT, OK BOOLEAN,
  TS TIMESTAMP, D DATE, T TIME, PRICE DECIMAL(10, 2), RAW BYTES,
  TAGS ARRAY<STRING>, ATTRS MAP<STRING, INT>, ADDR ADDRESS)
  WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON', PARTITIONS=1, TIMESTAMP='TS');
CREATE STREAM E (K STRING KEY, V STRING) WITH (KAFKA_TOPIC='e', VALUE_FORMAT='DELIMITED', PARTITIONS=1);
CREATE TABLE T (ID INT PRIMARY KEY, NAME STRING, V BIGINT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON', PARTITIONS=1);
CREATE TABLE COUNTS AS SELECT ID, COUNT(*) AS C, SUM(AMOUNT) AS TOTAL FROM S GROUP BY ID;
CREATE TABLE WINDOWED AS SELECT NAME, COUNT(*) AS C FROM S WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY NAME;
CREATE STREAM JOINED AS SELECT S.ID, S.NAME, T.V FROM S JOIN T ON S.ID = T.ID;
INSERT INTO T (ID, NAME, V) VALUES (1, 'one', 10);
INSERT INTO T (ID, NAME, V) VALUES (2, 'two', 20);
INSERT INTO S (ID, NAME, AMOUNT, N, OK, TS, D, T, PRICE, RAW, TAGS, ATTRS, ADDR)
  VALUES (1, 'a', 1.5, 10, true, '2026-01-01T00:00:00', '2026-01-01', '10:00:00', 12.34,
  TO_BYTES('ab', 'utf8'), ARRAY['x', 'y'], MAP('k' := 1), STRUCT(STREET := 'main', ZIP := 1));
INSERT INTO S (ID, NAME, AMOUNT) VALUES (2, 'b', -3.0);
INSERT INTO E (K, V) VALUES ('k', 'v');
";

/// What one input may take before the harness calls it a freeze.
const PATIENCE: Duration = Duration::from_secs(30);

struct Harness {
    runtime: tokio::runtime::Runtime,
    brook: Arc<Brook>,
    catalog: Catalog,
    pg: SocketAddr,
    http: SocketAddr,
}

/// Set by any panic in the process, a spawned task's too (which tokio
/// would otherwise swallow): the corpus replay fails on it as the fuzzer
/// (whose panic hook aborts) does.
static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn no_panic_so_far() {
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "a task of the server panicked while it served this input"
    );
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
        let dir: PathBuf = brook_storage::fuzz::scratch_dir("server");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = Config {
            data_dir: dir,
            pg_listen: Some(loopback),
            http_listen: Some(loopback),
            engine: EngineConfig::throwaway(),
            http_allowed_origins: vec![],
            limits: Limits {
                statement_timeout: Duration::from_secs(5),
                max_pull_bytes: 16 << 20,
                ..Limits::default()
            },
        };
        let running = runtime
            .block_on(serve(&config))
            .expect("the fuzz server starts");
        let brook = running.brook;
        runtime
            .block_on(async {
                let mut session = brook.session();
                session.execute(SETUP).await?;
                brook.engine().flush().await?;
                Ok::<(), crate::ServerError>(())
            })
            .expect("the fuzz catalog sets up");
        let catalog = brook.catalog_snapshot();
        Harness {
            runtime,
            catalog,
            pg: running.pg_addr.expect("a pgwire address"),
            http: running.http_addr.expect("an HTTP address"),
            brook,
        }
    })
}

/// Parses, binds and plans each statement of `data` (UTF-8) against the
/// scratch catalog, as the server would before running it: DDL on a copy of
/// the catalog, `INSERT … VALUES` as far as its rows' values, push queries
/// to their dataflow, pull queries all the way (they change nothing).
pub fn sql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    let Ok(statements) = h.brook.session().parse(text) else {
        return;
    };
    let no_properties = BTreeMap::new();
    for parsed in statements {
        match &parsed.statement {
            Statement::Select { query, emit, .. } | Statement::CopyTo { query, emit } => {
                if emit.is_some() {
                    if let Ok(mut plan) = plan_stream(&h.catalog, query, None, None) {
                        let _ = make_emit_final(&mut plan);
                    }
                } else if let Ok(plan) = plan_pull(&h.catalog, query) {
                    let engine = h.brook.engine();
                    let pull = engine.pull(plan, 1 << 20);
                    let _ = h
                        .runtime
                        .block_on(async { tokio::time::timeout(PATIENCE, pull).await })
                        .expect("a pull query over a few rows ends");
                }
            }
            Statement::InsertValues {
                target,
                columns,
                rows,
            } => {
                let _ = plan_insert(&h.catalog, target, columns, rows);
            }
            s if s.changes_catalog() => {
                let mut catalog = h.catalog.clone();
                let _ = apply_ddl(&mut catalog, &parsed, 1 << 20, &no_properties, None);
            }
            Statement::Show { .. }
            | Statement::Describe { .. }
            | Statement::DescribeFunction { .. }
            | Statement::Explain { .. } => {
                let mut session = h.brook.session();
                let _ = h.runtime.block_on(session.execute_parsed(parsed));
            }
            _ => {}
        }
    }
}

/// Reads what the server sends until it closes the connection. A push
/// query's stream never closes: quiet for `idle`, the reader gives up.
fn drain(stream: &mut TcpStream, idle: Duration) -> Vec<u8> {
    let start = Instant::now();
    let _ = stream.set_read_timeout(Some(idle));
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => {
                if got.len() < 1 << 20 {
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(
                    start.elapsed() < PATIENCE,
                    "the server kept sending for {PATIENCE:?}"
                );
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return got
            }
            Err(_) => return got,
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("the server accepts");
    let _ = stream.set_write_timeout(Some(PATIENCE));
    stream
}

/// A StartupMessage for user `fuzz`, database `brook`.
fn startup() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for s in ["user", "fuzz", "database", "brook", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// `SELECT 1` by the simple query protocol, after a startup: the server
/// must answer it with a DataRow (`D`).
fn pg_alive(addr: SocketAddr) {
    let mut stream = connect(addr);
    let mut msg = startup();
    let query = b"SELECT 1\0";
    msg.push(b'Q');
    msg.extend_from_slice(&((query.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(query);
    msg.extend_from_slice(b"X\0\0\0\x04");
    stream.write_all(&msg).expect("the server reads");
    let got = drain(&mut stream, PATIENCE);
    assert!(
        got.windows(2).any(|w| w == b"D\0"),
        "pgwire stopped answering SELECT 1: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Sends `data` to the pgwire listener (after a StartupMessage when the
/// first byte is even, so that most inputs reach the typed messages) and
/// reads the answer until the server closes the connection. Every 64th
/// input, checks that the server still answers `SELECT 1`.
pub fn pgwire(data: &[u8]) {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let h = harness();
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut msg = if first % 2 == 0 { startup() } else { vec![] };
    msg.extend_from_slice(rest);
    let mut stream = connect(h.pg);
    // The server may close first (a refused header): that is an answer.
    let _ = stream.write_all(&msg);
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream, Duration::from_secs(2));
    no_panic_so_far();
    if INPUTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
        pg_alive(h.pg);
    }
}

const HTTP_PATHS: [(&str, &str); 8] = [
    ("POST", "/ksql"),
    ("POST", "/query"),
    ("POST", "/query-stream"),
    ("POST", "/ksql"),
    ("GET", "/ksql"),
    ("GET", "/info"),
    ("GET", "/healthcheck"),
    ("POST", "/no-such-endpoint"),
];

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/vnd.ksql.v1+json",
    "application/vnd.ksqlapi.delimited.v1",
    "text/plain",
];

/// Sends `data[1..]` as the body of a request to the HTTP listener: the
/// endpoint and content type come from `data[0]`. Every 64th input, checks
/// that `/healthcheck` still answers 200.
pub fn http(data: &[u8]) {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let h = harness();
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let (method, path) = HTTP_PATHS[usize::from(first & 7)];
    let content_type = CONTENT_TYPES[usize::from((first >> 3) & 3)];
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut stream = connect(h.http);
    let _ = stream.write_all(&request);
    drain(&mut stream, Duration::from_millis(500));
    no_panic_so_far();
    if INPUTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
        let mut stream = connect(h.http);
        let _ = stream.write_all(
            b"GET /healthcheck HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        let got = drain(&mut stream, PATIENCE);
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "HTTP stopped answering /healthcheck: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}
