//! `POST /close-query` ends a push query that `/query-stream` streams (the
//! ksqlDB HTTP API's way to cancel one), and says so when there is none.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use brook_server::http::router;
use brook_server::Brook;
use futures::StreamExt;
use tower::ServiceExt;

fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_query_ends_a_push_query_stream() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::open_with(dir.path(), false).await.unwrap();
    brook
        .session()
        .execute("CREATE STREAM s (id INT KEY, v STRING) WITH (KAFKA_TOPIC='s', PARTITIONS=1);")
        .await
        .unwrap();
    let app = router(Arc::clone(&brook));

    let response = app
        .clone()
        .oneshot(post(
            "/query-stream",
            r#"{"sql": "SELECT * FROM s EMIT CHANGES;"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let head = body.next().await.unwrap().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&head).unwrap();
    let id = head["queryId"].as_str().unwrap().to_string();

    let closed = app
        .clone()
        .oneshot(post("/close-query", &format!(r#"{{"queryId": "{id}"}}"#)))
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::OK);
    // The stream ends (rather than waiting for rows forever).
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(rest.is_ok(), "the push query's response did not end");

    // Closed already, or never there: a 400 that names the id.
    let again = app
        .clone()
        .oneshot(post("/close-query", &format!(r#"{{"queryId": "{id}"}}"#)))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let text = axum::body::to_bytes(again.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains(&format!("No query with id {id}")),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let bad = app
        .oneshot(post("/close-query", r#"{"id": 1}"#))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
