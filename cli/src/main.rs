//! `brook`: the REPL (embedded or remote), the headless server, and the
//! script runner.
//!
//! - `brook` starts an embedded server on `./brook-data` and opens the REPL;
//! - `brook server` runs headless;
//! - `brook --server http://HOST:PORT` opens the REPL against a server;
//! - `brook run FILE.sql` runs a script and exits.
#![allow(clippy::print_stdout)]

mod remote;
mod render;
mod repl;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use brook_server::Config;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "brook",
    version,
    about = "Brook: a streaming SQL database in the family of ksqlDB"
)]
struct Cli {
    /// Data directory of the embedded or headless server.
    #[arg(long, global = true, default_value = "brook-data")]
    data_dir: PathBuf,
    /// Postgres wire protocol address.
    #[arg(long, global = true, default_value = "127.0.0.1:5434")]
    pg_listen: SocketAddr,
    /// HTTP API address.
    #[arg(long, global = true, default_value = "127.0.0.1:8088")]
    http_listen: SocketAddr,
    /// When log appends are fsynced: `always` (an acknowledged INSERT
    /// survives power loss), `interval:<ms>` (power loss can lose the last
    /// <ms> of acknowledged writes) or `never` (left to the OS).
    #[arg(long, global = true, env = "BROOK_LOG_FLUSH", default_value = "always")]
    log_flush: brook_server::FlushPolicy,
    /// Open the REPL against a running server instead (e.g. http://127.0.0.1:8088).
    #[arg(long)]
    server: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server without a REPL.
    Server,
    /// Execute a script of statements and exit.
    Run {
        /// The script.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let headless = matches!(cli.command, Some(Command::Server));
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if headless {
            "info".into()
        } else {
            "warn".into()
        }
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = Config {
        data_dir: cli.data_dir.clone(),
        pg_listen: Some(cli.pg_listen),
        http_listen: Some(cli.http_listen),
        engine: brook_server::EngineConfig {
            log: brook_server::LogConfig {
                flush: cli.log_flush,
                ..Default::default()
            },
            ..Default::default()
        },
    };
    match cli.command {
        Some(Command::Server) => rt.block_on(run_server(config)),
        Some(Command::Run { file }) => {
            let script = std::fs::read_to_string(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let config = Config {
                pg_listen: None,
                http_listen: None,
                ..config
            };
            let ok = rt.block_on(async {
                let running = brook_server::serve(&config).await?;
                let mut backend = repl::Backend::Embedded(running.brook.session());
                let ok = repl::run_script(&mut backend, &script).await;
                running.brook.shutdown().await;
                anyhow::Ok(ok)
            })?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        None => match cli.server {
            Some(url) => repl::run(&rt, repl::Backend::Remote(remote::Remote::new(&url))),
            None => {
                let running = rt.block_on(start_embedded(config))?;
                let brook = std::sync::Arc::clone(&running.brook);
                let result = repl::run(&rt, repl::Backend::Embedded(running.brook.session()));
                rt.block_on(brook.shutdown());
                result
            }
        },
    }
}

/// Starts the embedded server; listeners that cannot bind are skipped with a warning.
async fn start_embedded(config: Config) -> anyhow::Result<brook_server::Running> {
    match brook_server::serve(&config).await {
        Ok(r) => {
            println!(
                "Brook {} — data in {}; psql -h {} -p {}; HTTP on {}",
                env!("CARGO_PKG_VERSION"),
                config.data_dir.display(),
                config.pg_listen.map_or("-".into(), |a| a.ip().to_string()),
                config.pg_listen.map_or(0, |a| a.port()),
                config.http_listen.map_or("-".into(), |a| a.to_string()),
            );
            Ok(r)
        }
        Err(brook_server::ServerError::Listen { addr, source }) => {
            eprintln!(
                "warning: could not listen on {addr} ({source}); running without network listeners"
            );
            Ok(brook_server::serve(&Config {
                pg_listen: None,
                http_listen: None,
                ..config
            })
            .await?)
        }
        Err(e) => Err(e.into()),
    }
}

async fn run_server(config: Config) -> anyhow::Result<()> {
    let running = brook_server::serve(&config).await?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        pg = ?running.pg_addr,
        http = ?running.http_addr,
        "brook server ready"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.brook.shutdown().await;
    Ok(())
}
