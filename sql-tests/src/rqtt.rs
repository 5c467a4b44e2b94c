//! ksqlDB's REST query-validation tests (RQTT): statements go through
//! Brook's HTTP API (`/ksql` for statements, `/query` for queries), driven
//! in process through the axum router; responses, errors and output topics
//! are compared with ksqlDB's.
//!
//! Order of events, as ksqlDB's REST test executor: statements run in
//! order; before the first query, every input record is produced and
//! processed (queries read from the earliest offset).

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use brook_server::{Brook, StatementKind};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::qtt::{
    compare_outputs, fresh_brook, json_matches, produce, read_test_file, strings, test_array, Case,
    Outcome,
};

/// One REST case.
#[derive(Debug, Clone)]
pub struct RestCase {
    /// The inputs, outputs and statements, as for QTT.
    pub base: Case,
    /// Expected responses, one per statement that answers.
    pub responses: Vec<Value>,
    /// Expected error: message substring and HTTP status.
    pub expected_error: Option<(String, Option<u16>)>,
    /// Properties sent with every request.
    pub properties: serde_json::Map<String, Value>,
}

/// Loads an RQTT file.
pub fn load_file(path: &Path) -> Result<Vec<RestCase>, String> {
    let doc = read_test_file(path)?;
    let tests = test_array(&doc, path)?;
    let mut out = Vec::new();
    for t in tests {
        let statements = strings(t.get("statements"));
        let upper = statements.join("\n").to_ascii_uppercase();
        let skip = ["'AVRO'", "'PROTOBUF'", "'PROTOBUF_NOSR'", "'JSON_SR'"]
            .iter()
            .find(|f| upper.contains(*f))
            .map(|f| format!("format {f} needs a schema registry"));
        let expected_error = t.get("expectedError").map(|e| {
            (
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                e.get("status").and_then(Value::as_u64).map(|s| s as u16),
            )
        });
        out.push(RestCase {
            base: Case {
                file: PathBuf::from(path),
                name: t
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("unnamed")
                    .to_string(),
                statements,
                inputs: t
                    .get("inputs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                outputs: t
                    .get("outputs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                expected_error: None,
                skip,
                properties: Vec::new(),
            },
            responses: t
                .get("responses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            expected_error,
            properties: t
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Guard against a push query without LIMIT hanging the run.
const QUERY_GUARD: Duration = Duration::from_secs(20);

async fn post(
    router: &axum::Router,
    path: &str,
    body: Value,
) -> Result<(StatusCode, Value), String> {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| e.to_string())?;
    let call = async {
        let response = router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON from {path}: {e}"))?;
        Ok::<_, String>((status, value))
    };
    tokio::time::timeout(QUERY_GUARD, call)
        .await
        .map_err(|_| format!("{path} did not answer (push query without LIMIT?)"))?
}

/// Runs one REST case on a fresh Brook.
pub async fn run_case(case: &RestCase) -> Outcome {
    if let Some(reason) = &case.base.skip {
        return Outcome::Skipped(reason.clone());
    }
    let (_dir, brook) = match fresh_brook().await {
        Ok(b) => b,
        Err(o) => return o,
    };
    let outcome = run_on(&brook, case).await;
    brook.shutdown().await;
    outcome
}

fn error_outcome(case: &RestCase, status: StatusCode, body: &Value) -> Outcome {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match &case.expected_error {
        Some((expected, want_status)) => {
            if !message.contains(expected.as_str()) {
                Outcome::Failed(format!(
                    "expected error containing {expected:?}, got {status}: {message}"
                ))
            } else if want_status.is_some_and(|s| s != status.as_u16()) {
                Outcome::Failed(format!(
                    "expected status {want_status:?}, got {status}: {message}"
                ))
            } else {
                Outcome::Passed
            }
        }
        None => Outcome::Failed(format!("statement failed with {status}: {message}")),
    }
}

async fn run_on(brook: &std::sync::Arc<Brook>, case: &RestCase) -> Outcome {
    let router = brook_server::http::router(std::sync::Arc::clone(brook));
    let mut props = case.properties.clone();
    props
        .entry("ksql.persistence.default.format.value")
        .or_insert(json!(""));
    // ksqlDB's tests run without the record cache: every update is emitted.
    props
        .entry("cache.max.bytes.buffering")
        .or_insert(json!("0"));
    let mut query_props = props.clone();
    query_props.insert("auto.offset.reset".into(), json!("earliest"));
    let mut produced = false;
    let mut actual = Vec::new();
    let script = case.base.statements.join("\n");
    let statements = match brook_server::split_statements(&script) {
        Ok(s) => s,
        Err(e) => {
            let body = json!({"message": e.to_string()});
            return error_outcome(case, e.http_status(), &body);
        }
    };
    for (sql, kind) in statements {
        if kind == StatementKind::Query {
            if !produced {
                produced = true;
                if let Err(o) = produce_all(brook, case).await {
                    return o;
                }
            }
            let (status, body) = match post(
                &router,
                "/query",
                json!({"ksql": sql, "streamsProperties": query_props}),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return Outcome::Failed(e),
            };
            if !status.is_success() {
                return error_outcome(case, status, &body);
            }
            actual.push(json!({"query": body}));
        } else {
            let (status, body) = match post(
                &router,
                "/ksql",
                json!({"ksql": sql, "streamsProperties": props}),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return Outcome::Failed(e),
            };
            if !status.is_success() {
                return error_outcome(case, status, &body);
            }
            for entity in body.as_array().into_iter().flatten() {
                actual.push(json!({"admin": {"@type": entity.get("@type").cloned().unwrap_or(Value::Null)}}));
            }
        }
    }
    if !produced {
        if let Err(o) = produce_all(brook, case).await {
            return o;
        }
    }
    if let Some((expected, _)) = &case.expected_error {
        return Outcome::Failed(format!(
            "expected an error containing {expected:?}, but everything succeeded"
        ));
    }
    if let Err(why) = compare_responses(&case.responses, &actual) {
        return Outcome::Failed(why);
    }
    compare_outputs(brook, &case.base)
}

async fn produce_all(brook: &Brook, case: &RestCase) -> Result<(), Outcome> {
    for (i, input) in case.base.inputs.iter().enumerate() {
        produce(brook, input).map_err(|e| Outcome::Failed(format!("input {i}: {e}")))?;
        brook
            .engine()
            .flush()
            .await
            .map_err(|e| Outcome::Failed(format!("processing input {i}: {e}")))?;
    }
    Ok(())
}

/// Compares responses: admin entities by type; queries by header schema,
/// rows (in order for push queries, as a multiset for pull queries) and
/// final message.
fn compare_responses(expected: &[Value], actual: &[Value]) -> Result<(), String> {
    let show = || {
        format!(
            "expected responses:\n  {}\nactual responses:\n  {}",
            Value::Array(expected.to_vec()),
            Value::Array(actual.to_vec())
        )
    };
    if expected.is_empty() {
        return Ok(()); // the case checks outputs only
    }
    if expected.len() != actual.len() {
        return Err(show());
    }
    for (e, a) in expected.iter().zip(actual) {
        if let Some(admin) = e.get("admin") {
            if a.pointer("/admin/@type") != admin.get("@type") {
                return Err(show());
            }
            continue;
        }
        let (Some(eq), Some(aq)) = (
            e.get("query").and_then(Value::as_array),
            a.get("query").and_then(Value::as_array),
        ) else {
            return Err(show());
        };
        let schema = |items: &[Value]| {
            items
                .iter()
                .find_map(|i| i.pointer("/header/schema").cloned())
        };
        if schema(eq) != schema(aq) {
            return Err(show());
        }
        let rows = |items: &[Value]| -> Vec<Value> {
            items
                .iter()
                .filter_map(|i| i.pointer("/row/columns").cloned())
                .collect()
        };
        let (mut er, mut ar) = (rows(eq), rows(aq));
        let final_message =
            |items: &[Value]| items.iter().find_map(|i| i.get("finalMessage").cloned());
        let push = final_message(eq).is_some_and(|m| m == "Limit Reached");
        if !push {
            er.sort_by_key(|v| v.to_string());
            ar.sort_by_key(|v| v.to_string());
        }
        let rows_ok = er.len() == ar.len() && er.iter().zip(&ar).all(|(e, a)| json_matches(e, a));
        let final_ok = final_message(eq).is_none_or(|m| final_message(aq) == Some(m));
        if !rows_ok || !final_ok {
            return Err(show());
        }
    }
    Ok(())
}
