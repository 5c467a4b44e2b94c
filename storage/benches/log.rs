//! Criterion benchmarks of the log store: appends under `log.flush=always`
//! with 1, 8 and 64 writers beside the raw disk doing the same pattern, and
//! sequential reads from the page cache. `brook bench log` runs the same
//! workloads (from `brook_storage::bench`) as a one-shot report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_storage::bench;
use brook_storage::{LogConfig, LogStore, Record};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Appends `total` single-record batches from `writers` threads sharing a
/// counter; returns the wall time.
fn appends(writers: usize, total: u64, op: Arc<dyn Fn(u64) + Send + Sync>) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (next, op) = (Arc::clone(&next), Arc::clone(&op));
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                op(i);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("append_always");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for size in [100usize, 1024] {
        for writers in [1usize, 8, 64] {
            group.throughput(Throughput::Bytes(size as u64));
            let log = Arc::new(
                LogStore::open(
                    dir.path().join(format!("l{size}-{writers}")),
                    LogConfig::default(),
                )
                .expect("log"),
            );
            log.create_topic("b", 1).expect("topic");
            let value = vec![b'x'; size];
            group.bench_function(BenchmarkId::new(format!("log/{size}B"), writers), |b| {
                b.iter_custom(|iters| {
                    let (log, value) = (Arc::clone(&log), value.clone());
                    appends(
                        writers,
                        iters,
                        Arc::new(move |i| {
                            let r = Record {
                                timestamp: i as i64,
                                key: None,
                                value: Some(value.clone()),
                                headers: vec![],
                            };
                            log.append("b", 0, &[r]).expect("append");
                        }),
                    )
                })
            });
            let path = dir.path().join(format!("raw{size}-{writers}"));
            let file = Arc::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .expect("raw file"),
            );
            group.bench_function(BenchmarkId::new(format!("raw/{size}B"), writers), |b| {
                b.iter_custom(|iters| {
                    let (file, value) = (Arc::clone(&file), value.clone());
                    appends(
                        writers,
                        iters,
                        Arc::new(move |_| {
                            use std::io::Write;
                            (&*file).write_all(&value).expect("write");
                            file.sync_data().expect("fdatasync");
                        }),
                    )
                })
            });
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("sequential_read");
    group.sample_size(10);
    for size in [100usize, 1024] {
        let total = 256 << 20;
        let log = bench::prepare_read(dir.path(), size, total).expect("prepare");
        let bytes = bench::log_read(&log).expect("warm up").bytes;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(BenchmarkId::new("log", format!("{size}B")), |b| {
            b.iter(|| bench::log_read(&log).expect("read"))
        });
    }
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
