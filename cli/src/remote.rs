//! The REPL's remote mode: ksqlDB's HTTP API of a running Brook server.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};
use futures::StreamExt;
use serde_json::{json, Value};

/// A connection to a server's HTTP API.
pub struct Remote {
    base: String,
    client: reqwest::Client,
    /// Properties set with `SET`, sent with every request.
    pub properties: BTreeMap<String, String>,
}

impl Remote {
    /// A client for `url` (e.g. `http://127.0.0.1:8088`).
    pub fn new(url: &str) -> Remote {
        Remote {
            base: url.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            properties: BTreeMap::new(),
        }
    }

    /// Runs a statement on `/ksql`; returns its entities.
    pub async fn ksql(&self, sql: &str) -> anyhow::Result<Vec<Value>> {
        let resp = self
            .client
            .post(format!("{}/ksql", self.base))
            .json(&json!({"ksql": sql, "streamsProperties": self.properties}))
            .send()
            .await
            .with_context(|| format!("could not reach {}", self.base))?;
        let ok = resp.status().is_success();
        let body: Value = resp.json().await.context("invalid response from server")?;
        if !ok {
            return Err(anyhow!(
                "{}",
                body.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed")
            ));
        }
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// Runs a query on `/query-stream`; calls `on_line` with the header and
    /// then each row as they arrive, until the stream ends or `on_line`
    /// returns false.
    pub async fn query(
        &self,
        sql: &str,
        mut on_line: impl FnMut(Value) -> bool,
    ) -> anyhow::Result<()> {
        let resp = self
            .client
            .post(format!("{}/query-stream", self.base))
            .header("Accept", "application/vnd.ksqlapi.delimited.v1")
            .json(&json!({"sql": sql, "properties": self.properties}))
            .send()
            .await
            .with_context(|| format!("could not reach {}", self.base))?;
        if !resp.status().is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(anyhow!(
                "{}",
                body.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("query failed")
            ));
        }
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let v: Value = serde_json::from_slice(&line).context("invalid row from server")?;
                if let Some(msg) = v
                    .get("@type")
                    .and_then(|_| v.get("message"))
                    .and_then(Value::as_str)
                {
                    return Err(anyhow!("{msg}"));
                }
                if !on_line(v) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
