//! Runs every `sql-tests/slt/**/*.slt` in process, over pgwire, and with a
//! restart at every FLUSH. `cargo test -p brook-sql-tests --test slt -- FILTER`
//! runs the files whose path contains FILTER.
#![allow(clippy::print_stdout)]

use std::path::Path;

use brook_sql_tests::{run_file, slt_files, Mode};

#[tokio::main]
async fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let files: Vec<_> = slt_files(&root)
        .into_iter()
        .filter(|f| {
            filter
                .as_ref()
                .is_none_or(|s| f.to_string_lossy().contains(s.as_str()))
        })
        .collect();
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for mode in [Mode::InProcess, Mode::Pgwire, Mode::Restart] {
            match run_file(file, mode).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok     {name} [{mode:?}]");
                }
                Err(e) => {
                    failed += 1;
                    println!("FAILED {name} [{mode:?}]\n{e}");
                }
            }
        }
    }
    println!("slt: {passed} passed, {failed} failed");
    if failed > 0 || files.is_empty() {
        std::process::exit(1);
    }
}
