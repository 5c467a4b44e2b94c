//! The pgwire front door: a message announcing more than the limit is
//! refused from its header (nothing of it buffered), connections past the
//! limit get "too many clients", and other clients are served throughout.

use std::time::Duration;

use brook_server::{Config, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(
    dir: &std::path::Path,
    limits: Limits,
) -> (brook_server::Running, std::net::SocketAddr) {
    let config = Config {
        data_dir: dir.to_path_buf(),
        pg_listen: Some(([127, 0, 0, 1], 0).into()),
        http_listen: None,
        engine: brook_server::EngineConfig::throwaway(),
        http_allowed_origins: vec![],
        limits,
    };
    let running = brook_server::serve(&config).await.unwrap();
    let addr = running.pg_addr.unwrap();
    (running, addr)
}

fn startup_message() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    body.extend_from_slice(b"user\0brook\0\0");
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Reads backend messages until one of type `until`; returns every type
/// seen and the bodies of error responses.
async fn read_until(s: &mut TcpStream, until: u8) -> (Vec<u8>, String) {
    let (mut types, mut errors) = (Vec::new(), String::new());
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).await.is_err() {
            return (types, errors);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        types.push(head[0]);
        if head[0] == b'E' {
            errors.push_str(&String::from_utf8_lossy(&body));
        }
        if head[0] == until {
            return (types, errors);
        }
    }
}

async fn select_one(addr: std::net::SocketAddr) -> Result<i64, tokio_postgres::Error> {
    let url = format!("host={} port={} user=brook", addr.ip(), addr.port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = client.simple_query("SELECT 1 AS one;").await?;
    let one = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    Ok(one.parse().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, addr) = start(dir.path(), Limits::default()).await;

    let mut raw = TcpStream::connect(addr).await.unwrap();
    // sslmode=prefer: the request is declined, the session goes on in the clear.
    raw.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    raw.write_all(&startup_message()).await.unwrap();
    let (types, _) = read_until(&mut raw, b'Z').await;
    assert!(types.contains(&b'R'), "{types:?}");

    // A Query announcing 1 GiB, of which a few bytes follow.
    let mut q = vec![b'Q'];
    q.extend_from_slice(&(1u32 << 30).to_be_bytes());
    q.extend_from_slice(b"SELECT 1");
    raw.write_all(&q).await.unwrap();
    let (types, errors) = tokio::time::timeout(Duration::from_secs(30), read_until(&mut raw, b'E'))
        .await
        .unwrap();
    assert_eq!(types, vec![b'E']);
    assert!(errors.contains("54000"), "{errors}");
    assert!(errors.contains("message too large"), "{errors}");
    // … and the connection is closed.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), raw.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Other clients are served.
    assert_eq!(select_one(addr).await.unwrap(), 1);
}

/// Found by the `pgwire` fuzz target: pgwire's decoders trust the counts
/// in messages, read on into the next message, and panicked past the end
/// of what had arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_short_of_what_it_announces_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, addr) = start(dir.path(), Limits::default()).await;
    let msg = |t: u8, body: &[u8]| {
        let mut m = vec![t];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    for bad in [
        // Parse announcing one parameter type, holding three bytes of it.
        msg(b'P', b"\0SELECT 1\0\0\x01\0\0\0"),
        // Bind announcing a 100-byte parameter, holding three.
        msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x64abc"),
        msg(b'E', b"\0\0"),
        msg(b'D', b""),
        // A Parse with bytes after its fields, shaped as a Parse header:
        // pgwire would read them as the next message.
        msg(b'P', b"\0SELECT 1\0\0\0P\0\0\0\x09\0\0\0\x05"),
    ] {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&startup_message()).await.unwrap();
        read_until(&mut raw, b'Z').await;
        raw.write_all(&bad).await.unwrap();
        let (types, errors) =
            tokio::time::timeout(Duration::from_secs(30), read_until(&mut raw, b'E'))
                .await
                .unwrap();
        assert_eq!(types, vec![b'E']);
        assert!(errors.contains("08P01"), "{errors}");
        assert!(
            errors.contains("insufficient data left in message")
                || errors.contains("invalid message format"),
            "{errors}"
        );
    }
    assert_eq!(select_one(addr).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_startups_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, addr) = start(dir.path(), Limits::default()).await;
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0][..],
        &[0, 0, 0, 2][..],
    ] {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(junk).await.unwrap();
        let _ = raw.shutdown().await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), raw.read_to_end(&mut rest)).await;
    }
    assert_eq!(select_one(addr).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_as_postgres_does() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (_running, addr) = start(dir.path(), limits).await;
    // Two slots: a driver's connection and a raw one.
    let url = format!("host={} port={} user=brook", addr.ip(), addr.port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&startup_message()).await.unwrap();
    read_until(&mut raw, b'Z').await;

    let e = select_one(addr).await.unwrap_err();
    let db = e
        .as_db_error()
        .map(|d| (d.code().code().to_string(), d.message().to_string()));
    assert_eq!(
        db,
        Some((
            "53300".to_string(),
            "sorry, too many clients already".to_string()
        ))
    );
    // A slot is free again before its client sees the connection close.
    raw.shutdown().await.unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.unwrap();
    assert_eq!(select_one(addr).await.unwrap(), 1);
    drop(client);
}

/// A pull query over the 6,000 rows of `client_with_rows`: 36 million
/// pairs, seconds of work for a debug build.
const LONG_QUERY: &str = "SELECT COUNT(*) FROM s a JOIN s b ON a.v + b.v > a.id * 3 + 7;";

/// A client connected to `addr`, with a stream `s` of 6,000 rows.
async fn client_with_rows(addr: std::net::SocketAddr) -> tokio_postgres::Client {
    let url = format!("host={} port={} user=brook", addr.ip(), addr.port());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE STREAM s (id INT KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);")
        .await
        .unwrap();
    let rows: Vec<String> = (0..6_000).map(|i| format!("({i}, {i})")).collect();
    client
        .batch_execute(&format!(
            "INSERT INTO s (id, v) VALUES {};",
            rows.join(", ")
        ))
        .await
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pull_query_holds_up_no_one_and_ctrl_c_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, addr) = start(dir.path(), Limits::default()).await;
    let client = client_with_rows(addr).await;
    let cancel = client.cancel_token();
    let long = tokio::spawn(async move { client.simple_query(LONG_QUERY).await });
    // Another client is answered while it runs…
    assert_eq!(select_one(addr).await.unwrap(), 1);
    assert!(!long.is_finished(), "the long query ended too soon to test");
    // … and Ctrl-C (a CancelRequest) ends it.
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = long.await.unwrap().unwrap_err();
    let code = e.as_db_error().map(|d| d.code().code().to_string());
    assert_eq!(code.as_deref(), Some("57014"), "{e}");
    assert_eq!(select_one(addr).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_query_past_the_statement_timeout_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        statement_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (_running, addr) = start(dir.path(), limits).await;
    let client = client_with_rows(addr).await;
    let e = client.simple_query(LONG_QUERY).await.unwrap_err();
    let db = e
        .as_db_error()
        .map(|d| (d.code().code().to_string(), d.message().to_string()));
    assert_eq!(
        db,
        Some((
            "57014".to_string(),
            "canceling statement due to statement timeout".to_string()
        ))
    );
    // The connection goes on.
    assert_eq!(
        rows_of(&client, "SELECT COUNT(*) AS n FROM s;").await,
        "6000"
    );
}

async fn rows_of(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// Pseudo-random numbers for repeatable hostile input.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, addr) = start(dir.path(), Limits::default()).await;
    let mut seed: u64 = std::env::var("BROOK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17);
    for round in 0..200 {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        if round % 2 == 1 {
            // Past the startup: garbage where typed messages should be.
            raw.write_all(&startup_message()).await.unwrap();
            read_until(&mut raw, b'Z').await;
        }
        let n = (lcg(&mut seed) % 200) as usize;
        let mut junk: Vec<u8> = (0..n).map(|_| lcg(&mut seed) as u8).collect();
        if round % 4 == 3 && junk.len() > 5 {
            // A plausible message type with a random length.
            junk[0] = [b'Q', b'P', b'B', b'E', b'D', b'S', b'X', b'd', b'c'][round % 9];
        }
        let _ = raw.write_all(&junk).await;
        let _ = raw.shutdown().await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), raw.read_to_end(&mut rest)).await;
    }
    assert_eq!(select_one(addr).await.unwrap(), 1);
}
