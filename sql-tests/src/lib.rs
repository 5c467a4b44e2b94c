//! Brook's SQL test harness: `.slt` files (sqllogictest) run against a
//! fresh Brook per file, in three modes:
//!
//! - [`Mode::InProcess`]: statements go straight to a [`Session`];
//! - [`Mode::Pgwire`]: statements go over the Postgres wire protocol
//!   (tokio-postgres, simple query protocol) to a server on `127.0.0.1:0`;
//! - [`Mode::Restart`]: in process, and the engine is shut down and
//!   reopened from its data directory after every `FLUSH`; results must not
//!   change.
//!
//! Values are rendered as text; NULL is `NULL` and the empty string `(empty)`.
//! A push query (`EMIT CHANGES`) returns its rows once it ends, so tests give
//! it a `LIMIT`; one that has not ended after a generous guard time fails.

pub mod qtt;
pub mod rqtt;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brook_server::render::{cell_text, scalar_text};
use brook_server::{Brook, Config, Output, Session};
use sqllogictest::{DBOutput, DefaultColumnType};

/// How statements reach Brook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Directly through a session.
    InProcess,
    /// Over pgwire.
    Pgwire,
    /// Directly, restarting the engine at every `FLUSH`.
    Restart,
}

/// A harness error: the statement's error text.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Guard against a push query without LIMIT hanging the suite.
const PUSH_GUARD: Duration = Duration::from_secs(60);

fn text(v: Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.is_empty() => "(empty)".into(),
        Some(s) => s,
    }
}

/// An in-process Brook, optionally restarted at every FLUSH.
pub struct InProcessDb {
    data_dir: PathBuf,
    brook: Option<Arc<Brook>>,
    session: Option<Session>,
    properties: Vec<(String, String)>,
    restart: bool,
}

impl InProcessDb {
    /// Opens Brook on `data_dir`.
    pub async fn open(data_dir: &Path, restart: bool) -> Result<Self, HarnessError> {
        let brook = Brook::open(data_dir)
            .await
            .map_err(|e| HarnessError(e.to_string()))?;
        let session = brook.session();
        Ok(InProcessDb {
            data_dir: data_dir.to_path_buf(),
            brook: Some(brook),
            session: Some(session),
            properties: Vec::new(),
            restart,
        })
    }

    async fn reopen(&mut self) -> Result<(), HarnessError> {
        self.session = None;
        if let Some(b) = self.brook.take() {
            b.shutdown().await;
            drop(b);
        }
        let brook = Brook::open(&self.data_dir)
            .await
            .map_err(|e| HarnessError(format!("restart failed: {e}")))?;
        let mut session = brook.session();
        for (k, v) in &self.properties {
            session.set_property(k, v);
        }
        self.brook = Some(brook);
        self.session = Some(session);
        Ok(())
    }

    /// Shuts the engine down.
    pub async fn close(&mut self) {
        self.session = None;
        if let Some(b) = self.brook.take() {
            b.shutdown().await;
        }
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for InProcessDb {
    type Error = HarnessError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, HarnessError> {
        let err = |e: brook_server::ServerError| HarnessError(e.to_string());
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| HarnessError("engine is closed".into()))?;
        let parsed = session.parse(sql).map_err(err)?;
        let mut last = DBOutput::StatementComplete(0);
        let mut flushed = false;
        for p in parsed {
            for (_, kind) in brook_server::split_statements(&p.sql).unwrap_or_default() {
                if let brook_server::StatementKind::Set(name, value) = kind {
                    self.properties.push((name, value));
                }
            }
            flushed |= p.sql.trim().eq_ignore_ascii_case("flush");
            let output = session.execute_parsed(p).await.map_err(err)?;
            last = render(output).await?;
        }
        if flushed && self.restart {
            self.reopen().await?;
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {
        self.close().await;
    }

    fn engine_name(&self) -> &str {
        if self.restart {
            "restart"
        } else {
            "inprocess"
        }
    }
}

async fn render(output: Output) -> Result<DBOutput<DefaultColumnType>, HarnessError> {
    Ok(match output {
        Output::Command { .. } => DBOutput::StatementComplete(0),
        Output::Rows {
            schema, batches, ..
        }
        | Output::Listing {
            schema, batches, ..
        } => {
            let mut rows = Vec::new();
            for b in &batches {
                for r in 0..b.num_rows() {
                    rows.push(
                        b.columns()
                            .iter()
                            .map(|c| text(cell_text(c.as_ref(), r)))
                            .collect(),
                    );
                }
            }
            DBOutput::Rows {
                types: vec![DefaultColumnType::Any; schema.fields().len()],
                rows,
            }
        }
        Output::Stream { mut stream, .. } => {
            let mut rows = Vec::new();
            let collect = async {
                while let Some(row) = stream.rows.recv().await {
                    let row = row.map_err(|e| HarnessError(e.to_string()))?;
                    rows.push(row.iter().map(|v| text(scalar_text(v))).collect());
                }
                Ok::<_, HarnessError>(())
            };
            tokio::time::timeout(PUSH_GUARD, collect)
                .await
                .map_err(|_| {
                    HarnessError("push query did not end (is its LIMIT reached?)".into())
                })??;
            DBOutput::Rows {
                types: vec![DefaultColumnType::Any; stream.schema.fields().len()],
                rows,
            }
        }
    })
}

/// Brook over pgwire.
pub struct PgwireDb {
    brook: Arc<Brook>,
    client: tokio_postgres::Client,
}

impl PgwireDb {
    /// Starts Brook on `data_dir` with a pgwire listener on a free port and connects.
    pub async fn open(data_dir: &Path) -> Result<Self, HarnessError> {
        let config = Config {
            data_dir: data_dir.to_path_buf(),
            pg_listen: Some(([127, 0, 0, 1], 0).into()),
            http_listen: None,
            engine: brook_server::EngineConfig::default(),
            http_allowed_origins: Vec::new(),
            limits: brook_server::Limits::default(),
        };
        let running = brook_server::serve(&config)
            .await
            .map_err(|e| HarnessError(e.to_string()))?;
        let addr = running
            .pg_addr
            .ok_or_else(|| HarnessError("no pgwire address".into()))?;
        let conn = format!("host={} port={} user=brook", addr.ip(), addr.port());
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .map_err(|e| HarnessError(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PgwireDb {
            brook: running.brook,
            client,
        })
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for PgwireDb {
    type Error = HarnessError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, HarnessError> {
        let query = self.client.simple_query(sql);
        let messages = tokio::time::timeout(PUSH_GUARD, query)
            .await
            .map_err(|_| HarnessError("query did not end (is its LIMIT reached?)".into()))?
            .map_err(|e| {
                HarnessError(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string()),
                )
            })?;
        let mut rows = Vec::new();
        let mut width = None;
        for m in messages {
            match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    rows.push(
                        (0..row.len())
                            .map(|i| text(row.get(i).map(str::to_string)))
                            .collect(),
                    );
                }
                tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                    width = Some(cols.len())
                }
                tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {}
                _ => {}
            }
        }
        Ok(match width {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(0),
        })
    }

    async fn shutdown(&mut self) {
        self.brook.shutdown().await;
    }

    fn engine_name(&self) -> &str {
        "pgwire"
    }
}

/// Runs one `.slt` file in one mode against a fresh data directory.
pub async fn run_file(path: &Path, mode: Mode) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data_dir = dir.path().join("data");
    match mode {
        Mode::InProcess | Mode::Restart => {
            let db = InProcessDb::open(&data_dir, mode == Mode::Restart)
                .await
                .map_err(|e| e.to_string())?;
            run_with(db, path).await
        }
        Mode::Pgwire => {
            run_with(
                PgwireDb::open(&data_dir).await.map_err(|e| e.to_string())?,
                path,
            )
            .await
        }
    }
}

/// Runs a file on one connection.
async fn run_with<D>(db: D, path: &Path) -> Result<(), String>
where
    D: sqllogictest::AsyncDB<Error = HarnessError, ColumnType = DefaultColumnType> + Send + 'static,
{
    let mut db = Some(db);
    let mut runner = sqllogictest::Runner::new(move || {
        let db = db.take();
        async move { db.ok_or_else(|| HarnessError("one connection per file".into())) }
    });
    let result = runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(false).to_string());
    runner.shutdown_async().await;
    result
}

/// Every `.slt` file under `root`, sorted.
pub fn slt_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "slt") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
