//! Harness for `cargo fuzz` (`fuzz/fuzz_targets/log_files.rs`) and for the
//! test that replays the committed corpus: whatever bytes a segment, index
//! or topic file holds, opening and reading the log returns records or an
//! error, never a panic, and never more records than were written.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::{LogConfig, LogStore, Record};

/// Records in the healthy log each input damages.
pub const WRITTEN: u64 = 80;

/// Small segments and a dense index, so that a few records make several
/// segment and index files.
pub fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

/// Record `i` of the healthy log: keys and values of varied sizes, some
/// missing.
pub fn rec(i: u64) -> Record {
    Record {
        timestamp: i as i64,
        key: (!i.is_multiple_of(3)).then(|| i.to_be_bytes().to_vec()),
        value: (!i.is_multiple_of(5)).then(|| vec![b'v'; (i % 40) as usize]),
        headers: vec![],
    }
}

/// A fresh scratch folder `brook-fuzz-<kind>-<pid>` for a fuzz harness of
/// this process, in the temporary directory. A harness lives as long as
/// its process, which exits without dropping it: the folders of processes
/// no longer running are removed here (on Linux, where `/proc` says).
pub fn scratch_dir(kind: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    let prefix = format!("brook-fuzz-{kind}-");
    if Path::new("/proc/self").exists() {
        for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tmp.join(format!("{prefix}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// A scratch folder of this process, made anew at first use.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("log");
        let template = dir.join("template");
        let log = LogStore::open(&template, config()).expect("a healthy log opens");
        log.create_topic("t", 1).expect("a topic");
        for i in 0..WRITTEN / 2 {
            log.append("t", 0, &[rec(i), rec(i + 1000)])
                .expect("an append");
        }
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The files of the log's one partition and its topic, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("t/0"))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.push(dir.join("t/topic.json"));
    files.sort();
    files
}

/// `data[0]` picks a file, `data[1]` the damage (overwrite at `data[2..4]`,
/// cut there, append, replace the whole file), the rest is the bytes.
pub fn log_files(data: &[u8]) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let (Some(&which), Some(&how)) = (data.first(), data.get(1)) else {
        return;
    };
    let at = data
        .get(2..4)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]])) as usize;
    let bytes = data.get(4..).unwrap_or_default();
    let dir = scratch().join(format!("run-{}", RUN.fetch_add(1, Ordering::Relaxed)));
    copy_dir(&scratch().join("template"), &dir).expect("the template copies");
    let targets = files(&dir);
    let file = &targets[usize::from(which) % targets.len()];
    let mut content = fs::read(file).expect("the file reads");
    match how % 4 {
        0 => {
            let start = at.min(content.len());
            for (i, b) in bytes.iter().enumerate() {
                match content.get_mut(start + i) {
                    Some(c) => *c = *b,
                    None => content.push(*b),
                }
            }
        }
        1 => content.truncate(at),
        2 => content.extend_from_slice(bytes),
        _ => content = bytes.to_vec(),
    }
    fs::write(file, content).expect("the file writes");
    read_all(&dir);
    let _ = fs::remove_dir_all(&dir);
}

fn read_all(dir: &Path) {
    let Ok(log) = LogStore::open(dir, config()) else {
        return;
    };
    let Ok(end) = log.end_offset("t", 0) else {
        return;
    };
    assert!(end <= WRITTEN, "more records than were written: {end}");
    let mut from = 0;
    while from < end {
        match log.read("t", 0, from, 7) {
            Ok(records) if !records.is_empty() => {
                let last = records.last().map_or(from, |r| r.offset);
                assert!(last >= from, "read went backwards: {last} < {from}");
                from = last + 1;
            }
            _ => break,
        }
    }
    // A damaged log still takes appends, or refuses them cleanly.
    let _ = log.append("t", 0, &[rec(7)]);
}
