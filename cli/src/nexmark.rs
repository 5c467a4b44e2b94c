//! `brook bench nexmark`: loads generated Nexmark events into a fresh data
//! directory, runs each query as a persistent query from the earliest
//! offset until it has caught up, runs the hand-written baselines, and
//! prints what each used (see `brook_server::nexmark`).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use brook_server::nexmark::{self, Usage};

/// What to run.
pub struct Options {
    pub events: u64,
    pub queries: Vec<String>,
    pub partitions: u32,
    pub discard: bool,
    pub data_dir: Option<PathBuf>,
    pub json_out: Option<PathBuf>,
    pub log_flush: brook_server::FlushPolicy,
}

/// A progress bar on stderr, when it is a terminal.
fn bar(phase: &str, fraction: f64) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let width = 30;
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64) as usize;
    eprint!(
        "\r{phase:<10} [{}{}] {:>5.1}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        fraction * 100.0
    );
}

fn clear_bar() {
    if std::io::stderr().is_terminal() {
        eprint!("\r{:<60}\r", "");
    }
}

struct Row {
    name: String,
    usage: Usage,
    /// Rows produced (baselines only).
    rows: Option<u64>,
}

fn per_s(events: u64, d: std::time::Duration) -> f64 {
    if d.is_zero() {
        f64::NAN
    } else {
        events as f64 / d.as_secs_f64()
    }
}

fn print_row(events: u64, row: &Row) {
    let u = &row.usage;
    let mb = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1e6));
    let per_event = u.disk_written.map_or("-".to_string(), |b| {
        format!("{:.1}", b as f64 / events as f64)
    });
    println!(
        "{:<14} {:>8.2} {:>8.2} {:>12.0} {:>14.0} {:>10} {:>12}",
        row.name,
        u.wall.as_secs_f64(),
        u.cpu.as_secs_f64(),
        per_s(events, u.wall),
        per_s(events, u.cpu),
        mb(u.peak_rss),
        per_event,
    );
}

fn json_row(events: u64, row: &Row) -> serde_json::Value {
    let u = &row.usage;
    serde_json::json!({
        "name": row.name,
        "wall_s": u.wall.as_secs_f64(),
        "cpu_s": u.cpu.as_secs_f64(),
        "events_per_s": per_s(events, u.wall),
        "events_per_cpu_s": per_s(events, u.cpu),
        "peak_rss_bytes": u.peak_rss,
        "disk_written_bytes": u.disk_written,
        "disk_bytes_per_event": u.disk_written.map(|b| b as f64 / events as f64),
        "rows": row.rows,
    })
}

fn engine_config(
    discard: bool,
    log_flush: brook_server::FlushPolicy,
) -> brook_server::EngineConfig {
    brook_server::EngineConfig {
        log: brook_server::LogConfig {
            flush: log_flush,
            ..Default::default()
        },
        maintenance_ms: 0,
        discard_sink_output: discard,
        ..Default::default()
    }
}

fn usage_json(usage: &Usage, rows: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "wall_s": usage.wall.as_secs_f64(),
        "cpu_s": usage.cpu.as_secs_f64(),
        "peak_rss_bytes": usage.peak_rss,
        "disk_written_bytes": usage.disk_written,
        "rows": rows,
    })
}

fn usage_from_json(v: &serde_json::Value) -> (Usage, Option<u64>) {
    let secs = |k: &str| std::time::Duration::from_secs_f64(v[k].as_f64().unwrap_or(0.0).max(0.0));
    (
        Usage {
            wall: secs("wall_s"),
            cpu: secs("cpu_s"),
            peak_rss: v["peak_rss_bytes"].as_u64(),
            disk_written: v["disk_written_bytes"].as_u64(),
        },
        v["rows"].as_u64(),
    )
}

/// `brook bench nexmark-one`: one query (or baseline) over the events in
/// `data_dir`, in this process; prints its usage as one JSON line.
pub fn run_one(
    rt: &tokio::runtime::Runtime,
    data_dir: &std::path::Path,
    query: &str,
    baseline: bool,
    discard: bool,
    log_flush: brook_server::FlushPolicy,
) -> anyhow::Result<()> {
    let Some((_, sql)) = nexmark::QUERIES.iter().find(|(n, _)| *n == query) else {
        bail!("unknown query {query}");
    };
    let (usage, rows) = rt.block_on(async {
        let brook =
            brook_server::Brook::open_with_config(data_dir, engine_config(discard, log_flush))
                .await?;
        let result = if baseline {
            let engine = Arc::clone(brook.engine());
            let name = query.to_string();
            tokio::task::spawn_blocking(move || nexmark::baseline(engine.log(), &name))
                .await?
                .map(|(u, rows)| (u, Some(rows)))
                .map_err(anyhow::Error::from)
        } else {
            let phase = query.to_string();
            nexmark::run_query(&brook, sql, move |f| bar(&phase, f))
                .await
                .map(|u| (u, None))
                .map_err(anyhow::Error::from)
        };
        brook.shutdown().await;
        clear_bar();
        result
    })?;
    println!("{}", usage_json(&usage, rows));
    Ok(())
}

/// Runs `brook bench nexmark-one` in a child process.
fn run_child(
    dir: &std::path::Path,
    query: &str,
    baseline: bool,
    opts: &Options,
) -> anyhow::Result<(Usage, Option<u64>)> {
    let exe = std::env::current_exe().context("could not find the brook executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--log-flush")
        .arg(opts.log_flush.to_string())
        .args(["bench", "nexmark-one", query, "--sink"])
        .arg(if opts.discard { "discard" } else { "log" });
    if baseline {
        cmd.arg("--baseline");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not run a bench phase")?;
    if !out.status.success() {
        bail!("{query}: the bench phase failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{query}: unreadable figures {line:?}"))?;
    Ok(usage_from_json(&v))
}

pub fn run(rt: &tokio::runtime::Runtime, opts: Options) -> anyhow::Result<()> {
    let known: Vec<&str> = nexmark::QUERIES.iter().map(|(n, _)| *n).collect();
    for q in &opts.queries {
        if !known.contains(&q.as_str()) {
            bail!("unknown query {q}; known: {}", known.join(", "));
        }
    }
    let selected: Vec<&str> = known
        .iter()
        .filter(|n| opts.queries.is_empty() || opts.queries.iter().any(|q| q == *n))
        .copied()
        .collect();
    let (_temp, dir) = match &opts.data_dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .with_context(|| format!("could not read {}", d.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "{} is not empty: the bench loads its events into an empty data directory",
                    d.display()
                );
            }
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("brook-nexmark-")
                .tempdir_in(".")
                .context("could not create a data directory here")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let events = opts.events;
    let sink = if opts.discard { "discard" } else { "log" };
    println!(
        "Nexmark: {events} events, {} partition(s), sink {sink}, log.flush {}, data in {}",
        opts.partitions,
        opts.log_flush,
        dir.display()
    );
    println!("Each query runs in a process of its own; events per second count every event.");
    println!(
        "{:<14} {:>8} {:>8} {:>12} {:>14} {:>10} {:>12}",
        "phase", "wall s", "CPU s", "events/s", "events/CPU-s", "peak MB", "disk B/event"
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut baselines: Vec<Row> = Vec::new();
    let (usage, bytes) = rt.block_on(async {
        let brook = brook_server::Brook::open_with_config(
            &dir,
            engine_config(opts.discard, opts.log_flush),
        )
        .await?;
        let loaded = nexmark::load(
            &brook,
            events,
            opts.partitions,
            nexmark::DEFAULT_RATE,
            move |n| bar("load", n as f64 / events.max(1) as f64),
        )
        .await;
        brook.shutdown().await;
        anyhow::Ok(loaded?)
    })?;
    clear_bar();
    let load = Row {
        name: "load".into(),
        usage,
        rows: None,
    };
    print_row(events, &load);
    println!(
        "{:<14} {:.0} bytes per event (key + value)",
        "",
        bytes as f64 / events.max(1) as f64
    );
    rows.push(load);
    for name in &selected {
        let (usage, _) = run_child(&dir, name, false, &opts)?;
        let row = Row {
            name: name.to_string(),
            usage,
            rows: None,
        };
        print_row(events, &row);
        rows.push(row);
    }
    for name in nexmark::BASELINES {
        if !selected.contains(name) {
            continue;
        }
        let (usage, produced) = run_child(&dir, name, true, &opts)?;
        let row = Row {
            name: format!("baseline {name}"),
            usage,
            rows: produced,
        };
        print_row(events, &row);
        baselines.push(row);
    }
    if !baselines.is_empty() {
        println!("\nBrook / hand-written baseline, events per CPU-second:");
        for b in &baselines {
            let name = b.name.trim_start_matches("baseline ");
            if let Some(r) = rows.iter().find(|r| r.name == name) {
                println!(
                    "  {name:<10} {:.2}",
                    per_s(events, r.usage.cpu) / per_s(events, b.usage.cpu)
                );
            }
        }
    }
    if let Some(path) = &opts.json_out {
        let doc = serde_json::json!({
            "events": events,
            "partitions": opts.partitions,
            "sink": sink,
            "log_flush": opts.log_flush.to_string(),
            "phases": rows.iter().map(|r| json_row(events, r)).collect::<Vec<_>>(),
            "baselines": baselines.iter().map(|r| json_row(events, r)).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}
