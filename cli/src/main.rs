//! `brook`: the REPL (embedded or remote), the headless server, and the
//! script runner.
//!
//! - `brook` starts an embedded server on `./brook-data` and opens the REPL;
//! - `brook server` runs headless;
//! - `brook --server http://HOST:PORT` opens the REPL against a server;
//! - `brook run FILE.sql` runs a script and exits;
//! - `brook bench log|nexmark` measures the log, or the engine on Nexmark.
#![allow(clippy::print_stdout)]

mod nexmark;
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
    /// survives power loss), `interval:MS` (power loss can lose the last
    /// MS milliseconds of acknowledged writes) or `never` (left to the OS).
    #[arg(long, global = true, env = "BROOK_LOG_FLUSH", default_value = "always")]
    log_flush: brook_server::FlushPolicy,
    /// Origins (scheme://host:port, comma-separated; `*` for any) whose web
    /// pages may call the HTTP API. By default only same-origin pages and
    /// non-browser clients may.
    #[arg(
        long,
        global = true,
        env = "BROOK_HTTP_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    http_allowed_origins: Vec<String>,
    /// The longest SQL text one request may send, in bytes (checked before
    /// parsing; scripts run with `brook run` are split into statements first).
    #[arg(long, global = true, env = "BROOK_MAX_STATEMENT_BYTES", default_value_t = brook_server::Limits::default().max_statement_bytes)]
    max_statement_bytes: usize,
    /// Open connections allowed per front end (pgwire, HTTP).
    #[arg(long, global = true, env = "BROOK_MAX_CONNECTIONS", default_value_t = brook_server::Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a pull query may run before it is cancelled.
    #[arg(long, global = true, env = "BROOK_STATEMENT_TIMEOUT", default_value_t = brook_server::Limits::default().statement_timeout.as_secs_f64())]
    statement_timeout: f64,
    /// Bytes a pull query's operators may keep (sorts, joins, aggregates),
    /// and it may return; scans read as the query goes.
    #[arg(long, global = true, env = "BROOK_MAX_PULL_BYTES", default_value_t = brook_server::Limits::default().max_pull_bytes)]
    max_pull_bytes: usize,
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
    /// Inspect or repair the catalog of a stopped Brook (--data-dir).
    Catalog {
        #[command(subcommand)]
        what: CatalogWhat,
    },
    /// Measure Brook against the machine it runs on.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum CatalogWhat {
    /// Print each catalog record: offset, command number, statement (or
    /// what is wrong with it).
    List,
    /// Keep the records before OFFSET and drop the rest (the damaged record
    /// and the commands after it), after copying the catalog aside to
    /// `DATA_DIR/catalog-backup-<ms>/`. Statements dropped can be run again.
    Truncate {
        /// The offset of the first record to drop.
        #[arg(long)]
        at: u64,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Log appends (log.flush=always; 1, 8 and 64 writers; 100 B and 1 KB
    /// records) beside the raw disk doing the same, and sequential reads.
    Log {
        /// Directory to write in (on the disk to measure); a temporary
        /// directory under it is removed afterwards.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Seconds per append workload.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Megabytes to read back per record size.
        #[arg(long, default_value_t = 1024)]
        read_mb: u64,
    },
    /// The Nexmark queries (bench/nexmark/) over generated events: each
    /// runs as a persistent query from the earliest offset until it has
    /// caught up; prints events per second of wall and of CPU time, peak
    /// memory and disk bytes per event, and the hand-written baselines.
    /// Uses --data-dir if given (it must be empty), else a temporary
    /// directory here.
    Nexmark {
        /// Events to generate (persons, auctions and bids, 1:3:46).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Queries to run, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<String>,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Where query output goes: `discard` (encoded, not stored, as
        /// peers measure) or `log` (appended to the sink topic).
        #[arg(long, default_value = "discard", value_parser = ["discard", "log"])]
        sink: String,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// One phase of `bench nexmark`, in a process of its own so that its
    /// memory is its own: runs QUERY (or the hand-written baseline of it)
    /// over the events in --data-dir and prints what it used as JSON.
    #[command(hide = true)]
    NexmarkOne {
        /// The query.
        query: String,
        /// Run the hand-written baseline instead.
        #[arg(long)]
        baseline: bool,
        /// `discard` or `log`.
        #[arg(long, default_value = "discard")]
        sink: String,
    },
}

/// `brook bench log`: prints one line per workload and the log/raw ratios.
fn bench_log(dir: &std::path::Path, seconds: f64, read_mb: u64) -> anyhow::Result<()> {
    use brook_server::storage_bench as bench;
    let work = tempfile::Builder::new()
        .prefix("brook-bench-")
        .tempdir_in(dir)
        .with_context(|| format!("could not create a directory in {}", dir.display()))?;
    println!(
        "{:<58} {:>10} {:>12} {:>9}",
        "workload", "MB/s", "records/s", "seconds"
    );
    let results = bench::run_all(
        work.path(),
        std::time::Duration::from_secs_f64(seconds),
        read_mb << 20,
        |m| {
            println!(
                "{:<58} {:>10.1} {:>12.0} {:>9.2}",
                m.name,
                m.mb_per_s(),
                m.records_per_s(),
                m.elapsed.as_secs_f64()
            );
        },
    )?;
    println!();
    for pair in results.chunks(2).take(6) {
        if let [log, raw] = pair {
            println!(
                "{:<58} log/raw = {:.2}",
                log.name,
                log.mb_per_s() / raw.mb_per_s()
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let explicit_data_dir = matches!(
        matches.value_source("data_dir"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    ) || matches.subcommand().is_some_and(|(_, m)| {
        m.subcommand().is_some_and(|(_, m)| {
            m.value_source("data_dir") == Some(clap::parser::ValueSource::CommandLine)
        })
    });
    let cli = Cli::from_arg_matches(&matches)?;
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
        http_allowed_origins: cli.http_allowed_origins.clone(),
        limits: brook_server::Limits {
            max_statement_bytes: cli.max_statement_bytes,
            max_connections: cli.max_connections,
            statement_timeout: std::time::Duration::try_from_secs_f64(cli.statement_timeout)
                .context("--statement-timeout must be a number of seconds")?,
            max_pull_bytes: cli.max_pull_bytes,
        },
    };
    match cli.command {
        Some(Command::Server) => rt.block_on(run_server(config)),
        Some(Command::Bench {
            what:
                BenchWhat::Log {
                    dir,
                    seconds,
                    read_mb,
                },
        }) => bench_log(&dir, seconds, read_mb),
        Some(Command::Bench {
            what:
                BenchWhat::Nexmark {
                    events,
                    queries,
                    partitions,
                    sink,
                    json_out,
                },
        }) => nexmark::run(
            &rt,
            nexmark::Options {
                events,
                queries,
                partitions,
                discard: sink == "discard",
                data_dir: explicit_data_dir.then(|| cli.data_dir.clone()),
                json_out,
                log_flush: cli.log_flush,
            },
        ),
        Some(Command::Bench {
            what:
                BenchWhat::NexmarkOne {
                    query,
                    baseline,
                    sink,
                },
        }) => nexmark::run_one(
            &rt,
            &cli.data_dir,
            &query,
            baseline,
            sink == "discard",
            cli.log_flush,
        ),
        Some(Command::Catalog { what }) => catalog(&cli.data_dir, what),
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

/// `brook catalog list|truncate`.
fn catalog(data_dir: &std::path::Path, what: CatalogWhat) -> anyhow::Result<()> {
    match what {
        CatalogWhat::List => {
            for r in brook_server::repair::catalog_records(data_dir)? {
                let seq = r.seq.map_or("-".to_string(), |s| s.to_string());
                match r.statement {
                    Ok(sql) => println!("{:>8} {:>8}  {}", r.offset, seq, sql.trim()),
                    Err(why) => println!("{:>8} {:>8}  DAMAGED: {why}", r.offset, seq),
                }
            }
        }
        CatalogWhat::Truncate { at } => {
            let (backup, kept) = brook_server::repair::truncate_catalog(data_dir, at)?;
            println!(
                "kept {kept} command(s) before offset {at}; the old catalog is in {}",
                backup.display()
            );
        }
    }
    Ok(())
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
