//! The HTTP API on localhost is safe from web pages: statement endpoints
//! take only JSON content types, the `Host` must be the loopback (DNS
//! rebinding), and cross-origin requests need `--http-allowed-origins`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use brook_server::http::{router_with, HttpPolicy};
use brook_server::Brook;
use tower::ServiceExt;

const SHOW: &str = r#"{"ksql": "SHOW STREAMS;"}"#;

async fn send(
    brook: &Arc<Brook>,
    policy: &HttpPolicy,
    req: Request<Body>,
) -> (StatusCode, String, Option<String>) {
    let response = router_with(Arc::clone(brook), policy.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = response.status();
    let acao = response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), acao)
}

fn post(content_type: Option<&str>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::post("/ksql");
    if let Some(c) = content_type {
        b = b.header("content-type", c);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(SHOW)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cannot_reach_a_loopback_brook() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let local = HttpPolicy::for_listener(([127, 0, 0, 1], 8088).into(), vec![]);

    // A JSON request from a client (curl, a ksqlDB client) works.
    let host = [("host", "localhost:8088")];
    let (s, _, _) = send(&brook, &local, post(Some("application/json"), &host)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(
        &brook,
        &local,
        post(
            Some("application/vnd.ksql.v1+json; charset=utf-8"),
            &[("host", "127.0.0.1:8088")],
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // What a page may send without a preflight is refused.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (s, body, _) = send(&brook, &local, post(ct, &host)).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {body}");
        assert!(body.contains("\"error_code\":41500"), "{body}");
    }

    // DNS rebinding: a page's own name, pointed at 127.0.0.1.
    let (s, body, _) = send(
        &brook,
        &local,
        post(Some("application/json"), &[("host", "evil.example:8088")]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("DNS rebinding"), "{body}");

    // Cross-origin requests are refused unless allowed.
    let evil = [
        ("host", "localhost:8088"),
        ("origin", "http://evil.example"),
    ];
    let (s, body, _) = send(&brook, &local, post(Some("application/json"), &evil)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("--http-allowed-origins"), "{body}");
    let (s, _, _) = send(
        &brook,
        &local,
        post(
            Some("application/json"),
            &[("host", "localhost:8088"), ("origin", "null")],
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Same-origin pages (a console served by Brook itself) pass.
    let same = [
        ("host", "localhost:8088"),
        ("origin", "http://localhost:8088"),
    ];
    let (s, _, acao) = send(&brook, &local, post(Some("application/json"), &same)).await;
    assert_eq!((s, acao), (StatusCode::OK, None));

    // An allowed origin gets its preflight answered and CORS headers.
    let allowed = HttpPolicy::for_listener(
        ([127, 0, 0, 1], 8088).into(),
        vec!["http://localhost:3000".into()],
    );
    let app = [
        ("host", "localhost:8088"),
        ("origin", "http://localhost:3000"),
    ];
    let (s, _, acao) = send(&brook, &allowed, post(Some("application/json"), &app)).await;
    assert_eq!(
        (s, acao.as_deref()),
        (StatusCode::OK, Some("http://localhost:3000"))
    );
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/ksql")
        .header("host", "localhost:8088")
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let (s, _, acao) = send(&brook, &allowed, preflight).await;
    assert_eq!(
        (s, acao.as_deref()),
        (StatusCode::NO_CONTENT, Some("http://localhost:3000"))
    );
    let (s, _, _) = send(&brook, &allowed, post(Some("application/json"), &evil)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A listener on every interface cannot know its names: any Host.
    let wide = HttpPolicy::for_listener(([0, 0, 0, 0], 8088).into(), vec![]);
    let (s, _, _) = send(
        &brook,
        &wide,
        post(Some("application/json"), &[("host", "brook.internal:8088")]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_and_connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let limits = brook_server::Limits {
        max_connections: 1,
        ..brook_server::Limits::default()
    };
    let config = brook_server::Config {
        data_dir: dir.path().to_path_buf(),
        pg_listen: None,
        http_listen: Some(([127, 0, 0, 1], 0).into()),
        engine: brook_server::EngineConfig::throwaway(),
        http_allowed_origins: vec![],
        limits,
    };
    let running = brook_server::serve(&config).await.unwrap();
    let addr = running.http_addr.unwrap();

    // A body over the limit is refused (413) without running anything.
    let big = format!(r#"{{"ksql": "SELECT 1{};"}}"#, " ".repeat(2 << 20));
    let req = Request::post("/ksql")
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    let local = HttpPolicy::for_listener(addr, vec![]);
    let (s, _, _) = send(&running.brook, &local, req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // One connection open: the next one gets 503 and is closed.
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    second.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    running.brook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_get_an_error_response_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    let policy = HttpPolicy::default();
    let mut seed: u64 = 23;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"ksql\"",
        "\"sql\"",
        "\"properties\"",
        "\"streamsProperties\"",
        "\"sessionVariables\"",
        "\"SELECT * FROM x;\"",
        "null",
        "1e999",
        "\"${a}\"",
        "\"SHOW STREAMS;\"",
        "\"\\u0000\"",
        "true",
        "{}",
        "[]",
    ];
    for round in 0..300 {
        let body: Vec<u8> = if round % 3 == 0 {
            (0..next() % 100).map(|_| next() as u8).collect()
        } else {
            (0..next() % 12)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect::<String>()
                .into_bytes()
        };
        let path = ["/ksql", "/query", "/query-stream"][round % 3];
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, _, _) = send(&brook, &policy, req).await;
        assert!(
            status.is_client_error() || status.is_success(),
            "{path}: {status}"
        );
    }
    brook.shutdown().await;
}
