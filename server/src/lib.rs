//! Brook's server: sessions, front ends, catalog persistence, recovery.
//!
//! A [`Brook`] is one instance over a data directory: it opens the engine,
//! replays the catalog's command log, and resumes persistent queries. A
//! [`Session`] turns SQL text into [`Output`]s (command results, rows, or a
//! live change stream). The front ends are thin: [`pg`] speaks the Postgres
//! wire protocol, [`http`] ksqlDB's REST API. Errors become SQLSTATEs and
//! HTTP statuses in one place, [`error`]. [`access`] says which topics
//! statements may use (internal topics are Brook's alone); [`limits`]
//! bounds what one client or statement may use (sizes, connections, time),
//! enforced by the pgwire front door, the HTTP guard and the session;
//! [`repair`] is the offline repair of a damaged catalog; [`nexmark`] is the
//! Nexmark benchmark's events, queries and runner. `fuzz` holds the
//! harnesses the cargo-fuzz targets in `fuzz/` drive (SQL front end,
//! pgwire, HTTP).
//!
//! Start with [`serve`], which binds both listeners for a [`Config`].

pub mod access;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod limits;
pub mod nexmark;
pub mod pg;
pub mod render;
pub mod repair;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use brook_executor::{
    bytes_to_json, json_to_bytes, partition_for, split_window, EngineConfig, EpochBounds,
};
pub use brook_planner::catalog;
pub use brook_planner::parser::split_script;
pub use brook_storage::bench as storage_bench;
pub use brook_storage::{FlushPolicy, LogConfig, Record, StoredRecord};
pub use error::{Result, ServerError};
pub use limits::Limits;
pub use session::{
    split_statements, Brook, Output, Session, StatementKind, KEY_FIELD, PULL_SOURCE_KIND,
};

/// Where Brook keeps its data and listens.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory.
    pub data_dir: PathBuf,
    /// pgwire address (`None`: no pgwire listener).
    pub pg_listen: Option<SocketAddr>,
    /// HTTP address (`None`: no HTTP listener).
    pub http_listen: Option<SocketAddr>,
    /// Storage settings (`log.flush`, segment sizes, maintenance).
    pub engine: EngineConfig,
    /// Origins whose web pages may call the HTTP API (`*`: any).
    pub http_allowed_origins: Vec<String>,
    /// What one client or statement may use.
    pub limits: Limits,
}

/// A running server: the instance and the addresses actually bound.
pub struct Running {
    /// The instance.
    pub brook: Arc<Brook>,
    /// Bound pgwire address.
    pub pg_addr: Option<SocketAddr>,
    /// Bound HTTP address.
    pub http_addr: Option<SocketAddr>,
}

/// Opens the data directory and starts the listeners in the background.
pub async fn serve(config: &Config) -> Result<Running> {
    let brook = Brook::open_with_limits(&config.data_dir, config.engine, config.limits).await?;
    let mut running = Running {
        brook: Arc::clone(&brook),
        pg_addr: None,
        http_addr: None,
    };
    if let Some(addr) = config.pg_listen {
        let listener = pg::bind(addr).await?;
        running.pg_addr = listener.local_addr().ok();
        tokio::spawn(pg::serve(Arc::clone(&brook), listener));
    }
    if let Some(addr) = config.http_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        running.http_addr = listener.local_addr().ok();
        let policy = http::HttpPolicy::for_listener(addr, config.http_allowed_origins.clone());
        let app = http::router_with(Arc::clone(&brook), policy);
        let listener = http::SlottedListener::new(listener, config.limits.max_connections);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
    }
    Ok(running)
}
