//! Ctrl-C in the embedded REPL abandons a running pull query (its
//! execution is dropped) and the REPL goes on with the next statement.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::free_port;

#[test]
fn ctrl_c_abandons_a_pull_query_and_the_repl_goes_on() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_brook"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--pg-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("brook starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |what: &str, within: Duration| {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line with {what:?}; saw:\n{}", seen.join("\n"));
    };

    let rows: Vec<String> = (0..6_000).map(|i| format!("({i}, {i})")).collect();
    writeln!(
        stdin,
        "CREATE STREAM s (id INT KEY, v INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1);\nINSERT INTO s (id, v) VALUES {};\nSELECT 'ready' AS r;",
        rows.join(", ")
    )
    .expect("write");
    wait_for("ready", Duration::from_secs(120));
    // A pull query of some minutes (36 million pairs).
    writeln!(
        stdin,
        "SELECT COUNT(*) FROM s a JOIN s b ON a.v + b.v > a.id * 3 + 7;"
    )
    .expect("write");
    std::thread::sleep(Duration::from_secs(2));
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    wait_for("Query terminated", Duration::from_secs(60));
    writeln!(stdin, "SELECT 'still here' AS r;").expect("write");
    wait_for("still here", Duration::from_secs(60));
    drop(stdin);
    let status = child.wait().expect("brook exits");
    assert!(status.success(), "{status}");
}
