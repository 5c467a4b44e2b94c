//! ksqlDB's HTTP API: `POST /ksql`, `POST /query-stream`, `GET /info`,
//! `GET /healthcheck`. Every request passes the guard (`http/guard.rs`) first (Host, Origin
//! and content-type checks that keep web pages out).

mod guard;
mod slots;

pub use guard::HttpPolicy;
pub use slots::SlottedListener;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ServerError;
use crate::render::{scalar_json, type_name};
use crate::session::{Brook, Output, Session};

/// The router of the HTTP API, with the default policy (a loopback
/// listener, no cross-origin callers).
pub fn router(brook: Arc<Brook>) -> Router {
    router_with(brook, HttpPolicy::default())
}

/// The router of the HTTP API under `policy`. Request bodies are bounded
/// by the statement limit (plus room for the JSON around it).
pub fn router_with(brook: Arc<Brook>, policy: HttpPolicy) -> Router {
    let max_body = brook.limits().max_request_bytes();
    Router::new()
        .route("/ksql", post(ksql))
        .route("/query-stream", post(query_stream))
        .route("/query", post(query))
        .route("/close-query", post(close_query))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .with_state(brook)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(policy),
            guard::guard,
        ))
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let body = json!({
            "@type": "generic_error",
            "error_code": self.ksql_error_code(),
            "message": self.to_string(),
            "code": self.code(),
            "sqlstate": self.sqlstate(),
        });
        (self.http_status(), Json(body)).into_response()
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

async fn info() -> Json<Value> {
    Json(json!({"KsqlServerInfo": {
        "version": VERSION, "kafkaClusterId": "brook", "ksqlServiceId": "brook_", "serverStatus": "RUNNING",
    }}))
}

async fn healthcheck() -> Json<Value> {
    Json(json!({"isHealthy": true, "details": {
        "metastore": {"isHealthy": true}, "kafka": {"isHealthy": true}, "commandRunner": {"isHealthy": true},
    }}))
}

#[derive(Deserialize)]
struct KsqlRequest {
    ksql: String,
    #[serde(default, rename = "streamsProperties")]
    streams_properties: serde_json::Map<String, Value>,
    #[serde(default, rename = "sessionVariables")]
    session_variables: serde_json::Map<String, Value>,
}

fn session_with(
    brook: &Arc<Brook>,
    props: &serde_json::Map<String, Value>,
    variables: &serde_json::Map<String, Value>,
) -> Session {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut session = brook.session();
    for (k, v) in props {
        session.set_property(k, &text(v));
    }
    for (k, v) in variables {
        session.define(k, &text(v));
    }
    session
}

async fn ksql(State(brook): State<Arc<Brook>>, body: Bytes) -> Response {
    let req: KsqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ServerError::BadRequest(format!("invalid request body: {e}")).into_response()
        }
    };
    let mut session = session_with(&brook, &req.streams_properties, &req.session_variables);
    let statements = match session.parse(&req.ksql) {
        Ok(s) => s,
        Err(e) => return statement_error(&e, &req.ksql, Vec::new()),
    };
    let mut entities = Vec::new();
    for parsed in statements {
        let sql = parsed.sql.clone();
        if matches!(
            parsed.statement,
            brook_planner::parser::Statement::Select { .. }
                | brook_planner::parser::Statement::CopyTo { .. }
        ) {
            let e = ServerError::BadRequest(
                "The following statement types should be issued to the websocket endpoint '/query': SELECT".into(),
            );
            return statement_error(&e, &sql, entities);
        }
        match session.execute_parsed(parsed).await {
            Ok(Output::Command {
                message,
                query_id,
                tag,
            }) => {
                if tag.starts_with("INSERT") || tag == "SET" || tag == "UNSET" || tag == "FLUSH" {
                    continue;
                }
                entities.push(json!({
                    "@type": "currentStatus", "statementText": sql, "commandId": format!("{}/{}", tag.to_lowercase().replace(' ', "/"), entities.len()),
                    "commandStatus": {"status": "SUCCESS", "message": message, "queryId": query_id},
                    "commandSequenceNumber": entities.len(), "warnings": [],
                }));
            }
            Ok(Output::Listing { entity, .. }) => entities.push(entity),
            Ok(Output::Rows { .. } | Output::Stream { .. }) => {}
            Err(e) => return statement_error(&e, &sql, entities),
        }
    }
    (StatusCode::OK, Json(Value::Array(entities))).into_response()
}

fn statement_error(e: &ServerError, sql: &str, entities: Vec<Value>) -> Response {
    let body = json!({
        "@type": "statement_error", "error_code": e.ksql_error_code(), "message": e.to_string(),
        "statementText": sql, "entities": entities, "code": e.code(), "sqlstate": e.sqlstate(),
    });
    (e.http_status(), Json(body)).into_response()
}

#[derive(Deserialize)]
struct QueryRequest {
    #[serde(alias = "ksql")]
    sql: String,
    #[serde(default, alias = "streamsProperties")]
    properties: serde_json::Map<String, Value>,
    #[serde(default, rename = "sessionVariables")]
    session_variables: serde_json::Map<String, Value>,
}

fn header_json(query_id: &str, schema: &SchemaRef) -> Value {
    json!({
        "queryId": query_id,
        "columnNames": schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
        "columnTypes": schema.fields().iter().map(|f| type_name(f.data_type())).collect::<Vec<_>>(),
    })
}

fn batch_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .map(|c| {
                    datafusion::common::ScalarValue::try_from_array(c, row)
                        .map_or(Value::Null, |v| scalar_json(&v))
                })
                .collect();
            out.push(Value::Array(cells));
        }
    }
    out
}

/// Rows are newline-delimited JSON (ksqlDB's `application/vnd.ksqlapi.delimited.v1`)
/// unless the client asks for `application/json`, which gets one JSON array.
async fn query_stream(
    State(brook): State<Arc<Brook>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ServerError::BadRequest(format!("invalid request body: {e}")).into_response()
        }
    };
    let json_array = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("delimited"));
    let mut session = session_with(&brook, &req.properties, &req.session_variables);
    let mut statements = match session.parse(&req.sql) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if statements.len() != 1 {
        return ServerError::BadRequest("expected exactly one query".into()).into_response();
    }
    let parsed = statements.remove(0);
    let content_type = if json_array {
        "application/json"
    } else {
        "application/vnd.ksqlapi.delimited.v1"
    };
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let query_id = format!(
        "transient_{}",
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    match session.execute_parsed(parsed).await {
        Ok(
            Output::Rows {
                schema, batches, ..
            }
            | Output::Listing {
                schema, batches, ..
            },
        ) => {
            let mut items = vec![header_json(&query_id, &schema)];
            items.extend(batch_rows(&batches));
            let text = if json_array {
                Value::Array(items).to_string()
            } else {
                items.iter().map(|v| format!("{v}\n")).collect()
            };
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Ok(Output::Stream { stream, .. }) => {
            let head = header_json(&query_id, &stream.schema);
            let first = if json_array {
                format!("[{head}")
            } else {
                format!("{head}\n")
            };
            let (closed, registered) = brook.push_queries.register(&query_id);
            let rows = futures::stream::unfold(
                (stream.rows, false, registered),
                move |(mut rx, done, registered)| {
                    let closed = closed.clone();
                    async move {
                        if done {
                            return None;
                        }
                        let next = tokio::select! {
                            next = rx.recv() => next,
                            () = closed.cancelled() => None,
                        };
                        match next {
                            Some(Ok(row)) => {
                                let v = Value::Array(row.iter().map(scalar_json).collect());
                                let text = if json_array {
                                    format!(",\n{v}")
                                } else {
                                    format!("{v}\n")
                                };
                                Some((
                                    Ok::<_, Infallible>(Bytes::from(text)),
                                    (rx, false, registered),
                                ))
                            }
                            Some(Err(e)) => {
                                let v = json!({"@type": "generic_error", "error_code": 50000, "message": e.to_string()});
                                let text = if json_array {
                                    format!(",\n{v}]")
                                } else {
                                    format!("{v}\n")
                                };
                                Some((Ok(Bytes::from(text)), (rx, true, registered)))
                            }
                            None => {
                                json_array.then(|| (Ok(Bytes::from("]")), (rx, true, registered)))
                            }
                        }
                    }
                },
            );
            let body =
                futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(first)) })
                    .chain_rows(rows);
            (
                [(header::CONTENT_TYPE, content_type)],
                Body::from_stream(body),
            )
                .into_response()
        }
        Ok(Output::Command { message, .. }) => {
            (StatusCode::OK, Json(json!({"message": message}))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// ksqlDB's schema string: "`ID` STRING KEY, `N` BIGINT".
fn schema_string(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let key = if f.metadata().get(crate::KEY_FIELD).is_some() {
                " KEY"
            } else {
                ""
            };
            format!("`{}` {}{key}", f.name(), type_name(f.data_type()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `POST /query`: ksqlDB's original query endpoint. The response is one
/// JSON array, streamed: a header with the schema, one `row` per result,
/// and a `finalMessage` when the query ends.
async fn query(State(brook): State<Arc<Brook>>, body: Bytes) -> Response {
    let req: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ServerError::BadRequest(format!("invalid request body: {e}")).into_response()
        }
    };
    let mut session = session_with(&brook, &req.properties, &req.session_variables);
    let mut statements = match session.parse(&req.sql) {
        Ok(s) => s,
        Err(e) => return statement_error(&e, &req.sql, Vec::new()),
    };
    if statements.len() != 1 {
        let e = ServerError::BadRequest("expected exactly one query".into());
        return statement_error(&e, &req.sql, Vec::new());
    }
    let parsed = statements.remove(0);
    let sql = parsed.sql.clone();
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let query_id = format!(
        "transient_query_{}",
        NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let json = [(header::CONTENT_TYPE, "application/json")];
    match session.execute_parsed(parsed).await {
        Ok(Output::Rows {
            schema, batches, ..
        }) => {
            let mut items =
                vec![json!({"header": {"queryId": query_id, "schema": schema_string(&schema)}})];
            items.extend(
                batch_rows(&batches)
                    .into_iter()
                    .map(|r| json!({"row": {"columns": r}})),
            );
            if schema
                .metadata()
                .get(crate::PULL_SOURCE_KIND)
                .map(String::as_str)
                != Some("table")
            {
                items.push(json!({"finalMessage": "Query Completed"}));
            }
            (json, Value::Array(items).to_string()).into_response()
        }
        Ok(Output::Stream { stream, .. }) => {
            let head =
                json!({"header": {"queryId": query_id, "schema": schema_string(&stream.schema)}});
            let first = format!("[{head}");
            let rows = futures::stream::unfold(
                (stream.rows, false),
                move |(mut rx, done)| async move {
                    if done {
                        return None;
                    }
                    let text = match rx.recv().await {
                        Some(Ok(row)) => {
                            let v = json!({"row": {"columns": row.iter().map(scalar_json).collect::<Vec<_>>()}});
                            return Some((
                                Ok::<_, Infallible>(Bytes::from(format!(",\n{v}"))),
                                (rx, false),
                            ));
                        }
                        Some(Err(e)) => format!(
                            ",\n{}]",
                            json!({"errorMessage": {"message": e.to_string()}})
                        ),
                        None => format!(",\n{}]", json!({"finalMessage": "Limit Reached"})),
                    };
                    Some((Ok(Bytes::from(text)), (rx, true)))
                },
            );
            let body =
                futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(first)) })
                    .chain_rows(rows);
            (json, Body::from_stream(body)).into_response()
        }
        Ok(_) => {
            let e =
                ServerError::BadRequest("only queries can be issued to /query; use /ksql".into());
            statement_error(&e, &sql, Vec::new())
        }
        Err(e) => statement_error(&e, &sql, Vec::new()),
    }
}

/// The push queries `/query-stream` is streaming, by query id: what
/// `/close-query` ends.
#[derive(Default)]
pub struct PushQueries(std::sync::Mutex<HashMap<String, tokio_util::sync::CancellationToken>>);

impl PushQueries {
    /// Registers a push query; it is closed when the token is cancelled,
    /// and forgotten when the returned guard drops (its stream ended).
    fn register(self: &Arc<Self>, id: &str) -> (tokio_util::sync::CancellationToken, Registered) {
        let token = tokio_util::sync::CancellationToken::new();
        self.lock().insert(id.to_string(), token.clone());
        (
            token,
            Registered {
                queries: Arc::clone(self),
                id: id.to_string(),
            },
        )
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio_util::sync::CancellationToken>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the push query `id`; whether there was one.
    fn close(&self, id: &str) -> bool {
        match self.lock().remove(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes a push query from [`PushQueries`] when its stream is dropped.
struct Registered {
    queries: Arc<PushQueries>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.queries.lock().remove(&self.id);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    #[serde(rename = "queryId")]
    query_id: String,
}

/// `POST /close-query {"queryId": …}`: ends a push query that
/// `/query-stream` is streaming; its response then ends as at a LIMIT.
async fn close_query(State(brook): State<Arc<Brook>>, body: Bytes) -> Response {
    let req: CloseRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ServerError::BadRequest(format!("invalid request body: {e}")).into_response()
        }
    };
    if brook.push_queries.close(&req.query_id) {
        StatusCode::OK.into_response()
    } else {
        ServerError::BadRequest(format!("No query with id {}", req.query_id)).into_response()
    }
}

trait ChainRows: futures::Stream + Sized {
    fn chain_rows<S: futures::Stream<Item = Self::Item>>(
        self,
        other: S,
    ) -> futures::stream::Chain<Self, S> {
        futures::StreamExt::chain(self, other)
    }
}

impl<T: futures::Stream> ChainRows for T {}
