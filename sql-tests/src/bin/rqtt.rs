//! `rqtt`: runs ksqlDB's REST query-validation tests against Brook's HTTP API.
//!
//! `rqtt [--filter SUBSTRING] [--verbose] PATH...` prints one line per file
//! and a last line `rqtt: P passed, F failed, S skipped`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use brook_sql_tests::qtt::{json_files, Outcome};
use brook_sql_tests::rqtt::{load_file, run_case};

#[tokio::main]
async fn main() {
    let mut filter = None;
    let mut verbose = false;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => filter = args.next(),
            "--verbose" | "-v" => verbose = true,
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        eprintln!("usage: rqtt [--filter SUBSTRING] [--verbose] PATH...");
        std::process::exit(2);
    }
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for file in paths.iter().flat_map(|p| json_files(p)) {
        let name = file
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let cases = match load_file(&file) {
            Ok(c) => c,
            Err(e) => {
                println!("{e}");
                println!("{name}: 0 passed, 1 failed, 0 skipped");
                failed += 1;
                continue;
            }
        };
        let (mut p, mut f, mut s) = (0usize, 0usize, 0usize);
        for case in cases {
            if filter
                .as_ref()
                .is_some_and(|flt| !case.base.name.contains(flt.as_str()))
            {
                continue;
            }
            match run_case(&case).await {
                Outcome::Passed => p += 1,
                Outcome::Skipped(why) => {
                    s += 1;
                    if verbose {
                        println!("  skipped {name}: {}: {why}", case.base.name);
                    }
                }
                Outcome::Failed(why) => {
                    f += 1;
                    if verbose {
                        println!(
                            "  FAILED {name}: {}\n    statements: {:?}\n  {why}",
                            case.base.name, case.base.statements
                        );
                    }
                }
            }
        }
        println!("{name}: {p} passed, {f} failed, {s} skipped");
        passed += p;
        failed += f;
        skipped += s;
    }
    println!("rqtt: {passed} passed, {failed} failed, {skipped} skipped");
}
