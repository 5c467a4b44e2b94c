//! Log benchmarks shared by `brook bench log` and the criterion bench:
//! appends under `log.flush = always` with concurrent writers, beside the
//! raw speed of the same disk for the same write pattern, and sequential
//! reads.
//!
//! The raw baseline is what a program without a log store would get: every
//! writer appends its record to one plain file (`O_APPEND`) and calls
//! `fdatasync` before counting it written — the same bytes, the same
//! durability per write, no framing, no index, no group commit.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::error::{io_err, Result};
use crate::log::{FlushPolicy, LogConfig, LogStore, Record};

/// One measured workload.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// Records written or read.
    pub records: u64,
    /// Payload bytes written or read (record values).
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Measurement {
    /// Megabytes (10^6) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    /// Records per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

fn record(size: usize, i: u64) -> Record {
    let mut value = vec![b'x'; size];
    let tag = i.to_le_bytes();
    value[..tag.len().min(size)].copy_from_slice(&tag[..tag.len().min(size)]);
    Record {
        timestamp: i as i64,
        key: None,
        value: Some(value),
        headers: vec![],
    }
}

/// Runs `writers` threads, each calling `op(writer, i)` until `duration`
/// has passed; returns the number of calls and the wall time.
fn run_writers(
    writers: usize,
    duration: Duration,
    op: impl Fn(usize, u64) -> Result<()> + Send + Sync + 'static,
) -> Result<(u64, Duration)> {
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (op, done, barrier) = (Arc::clone(&op), Arc::clone(&done), Arc::clone(&barrier));
            std::thread::spawn(move || -> Result<()> {
                barrier.wait();
                let start = Instant::now();
                let mut i = 0;
                while start.elapsed() < duration {
                    op(w, i)?;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join()
            .map_err(|_| crate::StorageError::Io {
                action: "run",
                path: "benchmark writer".into(),
                source: std::io::Error::other("a benchmark thread panicked"),
            })
            .and_then(|r| r)?;
    }
    Ok((done.load(Ordering::Relaxed), start.elapsed()))
}

/// Appends single-record batches of `size` bytes from `writers` threads
/// for `duration`, with `log.flush = always`.
pub fn log_append(
    dir: &Path,
    writers: usize,
    size: usize,
    duration: Duration,
) -> Result<Measurement> {
    let root = dir.join(format!("log-{writers}-{size}"));
    let log = Arc::new(LogStore::open(&root, LogConfig::default())?);
    log.create_topic("bench", 1)?;
    let l = Arc::clone(&log);
    let (n, elapsed) = run_writers(writers, duration, move |w, i| {
        l.append("bench", 0, &[record(size, (w as u64) << 32 | i)])
            .map(|_| ())
    })?;
    drop(log);
    let _ = std::fs::remove_dir_all(&root);
    Ok(Measurement {
        name: format!("log append always, {writers} writers, {size} B"),
        records: n,
        bytes: n * size as u64,
        elapsed,
    })
}

/// The raw disk for the same pattern: `writers` threads appending `size`
/// bytes to one file, each followed by `fdatasync`.
pub fn raw_append(
    dir: &Path,
    writers: usize,
    size: usize,
    duration: Duration,
) -> Result<Measurement> {
    let path = dir.join(format!("raw-{writers}-{size}"));
    let file = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?,
    );
    let (f, p) = (Arc::clone(&file), path.clone());
    let (n, elapsed) = run_writers(writers, duration, move |_, _| {
        let buf = vec![b'x'; size];
        (&*f).write_all(&buf).map_err(io_err("write", &p))?;
        f.sync_data().map_err(io_err("fsync", &p))
    })?;
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Measurement {
        name: format!("raw write+fdatasync, {writers} writers, {size} B"),
        records: n,
        bytes: n * size as u64,
        elapsed,
    })
}

/// Writes `total_bytes` of `size`-byte records (batches of 1000, no fsync)
/// into a log under `dir` and returns it, ready for [`log_read`].
pub fn prepare_read(dir: &Path, size: usize, total_bytes: u64) -> Result<LogStore> {
    let root = dir.join(format!("read-{size}"));
    let _ = std::fs::remove_dir_all(&root);
    let config = LogConfig {
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    let log = LogStore::open(&root, config)?;
    log.create_topic("bench", 1)?;
    let batch: Vec<Record> = (0..1000).map(|i| record(size, i)).collect();
    let mut written = 0;
    while written < total_bytes {
        log.append("bench", 0, &batch)?;
        written += (size * batch.len()) as u64;
    }
    Ok(log)
}

/// Reads the whole partition sequentially, 10,000 records per call.
pub fn log_read(log: &LogStore) -> Result<Measurement> {
    let start = Instant::now();
    let (mut records, mut bytes, mut from) = (0u64, 0u64, 0u64);
    loop {
        let chunk = log.read("bench", 0, from, 10_000)?;
        let Some(last) = chunk.last() else { break };
        from = last.offset + 1;
        records += chunk.len() as u64;
        bytes += chunk
            .iter()
            .map(|r| r.record.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum::<u64>();
    }
    Ok(Measurement {
        name: "log sequential read".into(),
        records,
        bytes,
        elapsed: start.elapsed(),
    })
}

/// Reads the prepared log's segment files with plain 1 MiB `read` calls.
pub fn raw_read(dir: &Path, size: usize) -> Result<Measurement> {
    let pdir = dir.join(format!("read-{size}")).join("bench").join("0");
    let mut files: Vec<_> = std::fs::read_dir(&pdir)
        .map_err(io_err("list", &pdir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let mut f = std::fs::File::open(&path).map_err(io_err("open", &path))?;
        loop {
            let n = f.read(&mut buf).map_err(io_err("read", &path))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok(Measurement {
        name: "raw sequential read".into(),
        records: 0,
        bytes,
        elapsed: start.elapsed(),
    })
}

/// The whole `brook bench log` suite: for 100 B and 1 KB records, appends
/// with 1, 8 and 64 writers beside the raw pattern, then sequential reads
/// of `read_bytes` from the page cache.
pub fn run_all(
    dir: &Path,
    duration: Duration,
    read_bytes: u64,
    mut report: impl FnMut(&Measurement),
) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for size in [100, 1024] {
        for writers in [1, 8, 64] {
            for m in [
                log_append(dir, writers, size, duration)?,
                raw_append(dir, writers, size, duration)?,
            ] {
                report(&m);
                out.push(m);
            }
        }
    }
    for size in [100, 1024] {
        let log = prepare_read(dir, size, read_bytes)?;
        // The first pass warms the page cache.
        log_read(&log)?;
        let mut m = log_read(&log)?;
        m.name = format!("log sequential read, {size} B records");
        report(&m);
        out.push(m);
        drop(log);
        let mut raw = raw_read(dir, size)?;
        raw.name = format!("raw sequential read of the same files ({size} B records)");
        report(&raw);
        out.push(raw);
        let _ = std::fs::remove_dir_all(dir.join(format!("read-{size}")));
    }
    Ok(out)
}
