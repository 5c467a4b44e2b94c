//! A `brook server` child process for the tests of this folder, and the
//! helpers they share.
#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Server {
    pub child: Child,
    pub pg_port: u16,
    pub data_dir: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        let log = data_dir.with_extension(format!("log.{}", free_port()));
        let (child, pg_port) = Self::spawn(data_dir, &log);
        Server {
            child,
            pg_port,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// Starts `brook server` on two free ports, its log in `log`.
    fn spawn(data_dir: &Path, log: &Path) -> (Child, u16) {
        let pg_port = free_port();
        let http_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_brook"))
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--pg-listen")
            .arg(format!("127.0.0.1:{pg_port}"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("server log"))
            .spawn()
            .expect("brook server starts");
        (child, pg_port)
    }

    /// Connects, waiting for the server to come up (bounded). A server
    /// that exited because another socket took one of its ports between
    /// `free_port` and its bind is started again on new ones; any other
    /// exit fails the test with the server's log.
    pub async fn connect(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let conn = format!("host=127.0.0.1 port={} user=brook", self.pg_port);
            match tokio_postgres::connect(&conn, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    return client;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    if let Ok(Some(status)) = self.child.try_wait() {
                        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                        assert!(
                            log.contains("could not listen"),
                            "server exited ({status}):\n{log}"
                        );
                        (self.child, self.pg_port) = Self::spawn(&self.data_dir, &self.log);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "server did not come up: {e}\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}
