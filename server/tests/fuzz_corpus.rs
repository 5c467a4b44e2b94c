//! Replays the fuzz corpus committed under `fuzz/corpus/<target>/` (seeds,
//! a minimized corpus and every crasher found, kept as regressions)
//! through the same harnesses `cargo fuzz` runs: each input must pass on
//! every test run, not only while someone fuzzes.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).expect("a corpus file");
            (f, bytes)
        })
        .collect()
}

fn replay(target: &str, harness: fn(&[u8])) {
    for (file, bytes) in inputs(target) {
        eprintln!("{target}: {}", file.display());
        harness(&bytes);
    }
}

#[test]
fn sql_corpus() {
    replay("sql", brook_server::fuzz::sql);
}

#[test]
fn pgwire_corpus() {
    replay("pgwire", brook_server::fuzz::pgwire);
}

#[test]
fn http_corpus() {
    replay("http", brook_server::fuzz::http);
}

#[test]
fn log_files_corpus() {
    replay("log_files", brook_storage::fuzz::log_files);
}

#[test]
fn record_decoders_corpus() {
    replay("record_decoders", brook_executor::fuzz::record_decoders);
}
