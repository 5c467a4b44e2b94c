//! Bytes on disk are untrusted: whatever a segment, index or topic file
//! holds (flipped bytes, garbage, truncation, files of another kind),
//! opening and reading the log returns records or an error, never a panic,
//! and never more than was acknowledged.

use std::fs;
use std::path::{Path, PathBuf};

use brook_storage::fuzz::{config, rec};
use brook_storage::LogStore;
use proptest::prelude::*;

/// A log of several closed segments (with index files) and an active one.
fn healthy(dir: &Path) -> Vec<PathBuf> {
    let log = LogStore::open(dir, config()).unwrap();
    log.create_topic("t", 1).unwrap();
    for i in 0..40 {
        log.append("t", 0, &[rec(i), rec(i + 1000)]).unwrap();
    }
    drop(log);
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("t/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(dir.join("t/topic.json"));
    files.sort();
    files
}

#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite bytes at a fraction of the file's length.
    Overwrite { at: f64, bytes: Vec<u8> },
    /// Cut the file to a fraction of its length.
    Truncate { at: f64 },
    /// Append garbage.
    Append { bytes: Vec<u8> },
    /// Replace the whole file.
    Replace { bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..64);
    prop_oneof![
        (0.0..1.0f64, bytes.clone()).prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
        (0.0..1.0f64).prop_map(|at| Damage::Truncate { at }),
        bytes.clone().prop_map(|bytes| Damage::Append { bytes }),
        bytes.prop_map(|bytes| Damage::Replace { bytes }),
    ]
}

fn apply(path: &Path, d: &Damage) {
    let mut content = fs::read(path).unwrap();
    let at = |f: f64| ((content.len() as f64) * f) as usize;
    match d {
        Damage::Overwrite { at: f, bytes } => {
            let start = at(*f).min(content.len());
            for (i, b) in bytes.iter().enumerate() {
                match content.get_mut(start + i) {
                    Some(c) => *c = *b,
                    None => content.push(*b),
                }
            }
        }
        Damage::Truncate { at: f } => {
            let len = at(*f);
            content.truncate(len);
        }
        Damage::Append { bytes } => content.extend_from_slice(bytes),
        Damage::Replace { bytes } => content = bytes.clone(),
    }
    fs::write(path, content).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn damaged_files_give_records_or_errors_never_a_panic(
        which in any::<prop::sample::Index>(),
        hurts in proptest::collection::vec(damage(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let files = healthy(dir.path());
        let file = which.get(&files);
        for d in &hurts {
            apply(file, d);
        }
        if let Ok(log) = LogStore::open(dir.path(), config()) {
            if let Ok(end) = log.end_offset("t", 0) {
                prop_assert!(end <= 80, "more records than were written: {end}");
                let mut from = 0;
                while from < end {
                    match log.read("t", 0, from, 7) {
                        Ok(records) if !records.is_empty() => {
                            let last = records.last().map_or(from, |r| r.offset);
                            prop_assert!(last >= from);
                            from = last + 1;
                        }
                        _ => break,
                    }
                }
                // A damaged log still takes appends, or refuses them cleanly.
                let _ = log.append("t", 0, &[rec(7)]);
            }
        }
    }
}
