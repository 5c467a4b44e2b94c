//! `qtt`: runs ksqlDB's query-validation tests against Brook.
//!
//! `qtt [--filter SUBSTRING] [--verbose] [--passing FILE] [--write-passing FILE] PATH...`
//! prints one line per file and a last line `qtt: P passed, F failed, S skipped`.
//! With `--passing FILE`, exits non-zero if a case listed in FILE fails.
//!
//! `qtt --round-trip PATH...` runs nothing: it parses every statement of
//! every case, prints it back ([`brook_planner::printer`]) and parses the
//! text again; it exits non-zero if any statement reads back differently.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use brook_sql_tests::qtt::{json_files, load_file, run_case, Outcome};

fn case_id(file: &Path, name: &str) -> String {
    format!(
        "{}: {name}",
        file.file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    )
}

#[tokio::main]
async fn main() {
    let mut filter = None;
    let mut verbose = false;
    let mut passing_file = None;
    let mut write_passing = None;
    let mut paths = Vec::new();
    let mut round_trip = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => filter = args.next(),
            "--verbose" | "-v" => verbose = true,
            "--passing" => passing_file = args.next().map(PathBuf::from),
            "--write-passing" => write_passing = args.next().map(PathBuf::from),
            "--round-trip" => round_trip = true,
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        eprintln!("usage: qtt [--filter SUBSTRING] [--verbose] [--passing FILE] [--write-passing FILE] PATH...");
        std::process::exit(2);
    }
    if round_trip {
        std::process::exit(round_trip_all(&paths));
    }
    let required: BTreeSet<String> = passing_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut passing_now = BTreeSet::new();
    let mut regressions = Vec::new();
    for file in paths.iter().flat_map(|p| json_files(p)) {
        let cases = match load_file(&file) {
            Ok(c) => c,
            Err(e) => {
                println!("{e}");
                failed += 1;
                continue;
            }
        };
        let (mut p, mut f, mut s) = (0usize, 0usize, 0usize);
        for case in cases {
            if filter
                .as_ref()
                .is_some_and(|flt| !case.name.contains(flt.as_str()))
            {
                continue;
            }
            let id = case_id(&file, &case.name);
            match run_case(&case).await {
                Outcome::Passed => {
                    p += 1;
                    passing_now.insert(id);
                }
                Outcome::Skipped(why) => {
                    s += 1;
                    if verbose {
                        println!("  skipped {id}: {why}");
                    }
                }
                Outcome::Failed(why) => {
                    f += 1;
                    if required.contains(&id) {
                        regressions.push(id.clone());
                    }
                    if verbose {
                        println!(
                            "  FAILED {id}\n    statements: {:?}\n  {why}",
                            case.statements
                        );
                    }
                }
            }
        }
        println!(
            "{}: {p} passed, {f} failed, {s} skipped",
            file.file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        );
        passed += p;
        failed += f;
        skipped += s;
    }
    if let Some(out) = write_passing {
        let text: String = passing_now.iter().map(|l| format!("{l}\n")).collect();
        if let Err(e) = std::fs::write(&out, text) {
            eprintln!("could not write {}: {e}", out.display());
        }
    }
    if filter.is_none() {
        // A listed case that no longer ran (renamed, removed) counts too.
        for id in required.difference(&passing_now) {
            if !regressions.contains(id) {
                regressions.push(id.clone());
            }
        }
    }
    for r in &regressions {
        println!("REGRESSION: {r} is on the passing list but failed");
    }
    println!("qtt: {passed} passed, {failed} failed, {skipped} skipped");
    if !regressions.is_empty() {
        std::process::exit(1);
    }
}

/// Parse → print → parse over every QTT statement; the exit code.
fn round_trip_all(paths: &[PathBuf]) -> i32 {
    use brook_planner::parser::parse;
    let (mut checked, mut unparsed, mut mismatched) = (0usize, 0usize, 0usize);
    for file in paths.iter().flat_map(|p| json_files(p)) {
        let Ok(cases) = load_file(&file) else {
            continue;
        };
        for case in cases {
            for sql in &case.statements {
                let Ok(parsed) = parse(sql) else {
                    unparsed += 1;
                    continue;
                };
                for p in parsed {
                    checked += 1;
                    let printed = p.statement.to_string();
                    match parse(&printed) {
                        Ok(again) if again.len() == 1 && again[0].statement == p.statement => {}
                        Ok(_) => {
                            mismatched += 1;
                            println!(
                                "ROUND TRIP: {}\n  {}\n  printed as {printed}",
                                case_id(&file, &case.name),
                                p.sql
                            );
                        }
                        Err(e) => {
                            mismatched += 1;
                            println!(
                                "ROUND TRIP: {}\n  {}\n  printed as {printed}\n  which fails: {e}",
                                case_id(&file, &case.name),
                                p.sql
                            );
                        }
                    }
                }
            }
        }
    }
    println!(
        "round trip: {checked} statements checked, {mismatched} read back differently \
         ({unparsed} did not parse)"
    );
    i32::from(mismatched > 0)
}
