//! Crash test: a `brook server` child process is SIGKILLed after inserts
//! (with and without a FLUSH), restarted on the same data directory, and the
//! materialized counts must be exact — nothing acknowledged lost, nothing
//! counted twice — with the persistent query running again.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Server {
    child: Child,
    pg_port: u16,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
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
            .stderr(Stdio::null())
            .spawn()
            .expect("brook server starts");
        Server { child, pg_port }
    }

    /// Connects, waiting for the server to come up (bounded).
    async fn connect(&self) -> Client {
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
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("server did not come up: {e}"),
            }
        }
    }

    fn kill(mut self) {
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

async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
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

async fn counts(client: &Client) -> BTreeMap<i64, i64> {
    rows(client, "SELECT user_id, n, total FROM views_per_user")
        .await
        .into_iter()
        .map(|r| (r[0].parse().expect("key"), r[1].parse().expect("count")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    let mut server = Server::start(&data);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE STREAM pageviews (user_id INT KEY, url STRING, ms BIGINT) WITH (PARTITIONS=3);
             CREATE TABLE views_per_user AS SELECT user_id, COUNT(*) AS n, SUM(ms) AS total FROM pageviews GROUP BY user_id;",
        )
        .await
        .expect("create");
    drop(client);
    for round in 0..6i64 {
        let client = server.connect().await;
        for batch in 0..10i64 {
            let values: Vec<String> = (0..20i64)
                .map(|i| {
                    let user = (round * 7 + batch * 3 + i) % 11;
                    *expected.entry(user).or_default() += 1;
                    format!("({user}, '/p{i}', {})", batch * 100 + i)
                })
                .collect();
            let sql = format!(
                "INSERT INTO pageviews (user_id, url, ms) VALUES {}",
                values.join(", ")
            );
            client
                .simple_query(&sql)
                .await
                .expect("insert acknowledged");
        }
        // Half the rounds kill a server that has processed everything, half
        // one that is still processing what it acknowledged.
        if round % 2 == 0 {
            client.simple_query("FLUSH").await.expect("flush");
            assert_eq!(
                counts(&client).await,
                expected,
                "before kill, round {round}"
            );
        }
        drop(client);
        server.kill();
        server = Server::start(&data);
        let client = server.connect().await;
        client
            .simple_query("FLUSH")
            .await
            .expect("flush after restart");
        assert_eq!(
            counts(&client).await,
            expected,
            "after restart, round {round}"
        );
        let queries = rows(&client, "SHOW QUERIES").await;
        assert_eq!(queries.len(), 1);
        assert_eq!(queries[0][2], "RUNNING");
    }
    // The sink topic holds exactly one upsert per input row (1200): no epoch
    // was written twice or skipped across the kills.
    let client = server.connect().await;
    client
        .simple_query("CREATE STREAM sink_log (user_id INT KEY, n BIGINT, total BIGINT) WITH (KAFKA_TOPIC='VIEWS_PER_USER')")
        .await
        .expect("stream over the sink topic");
    let sink = rows(
        &client,
        "SELECT COUNT(*), COUNT(DISTINCT user_id), MAX(n) FROM sink_log",
    )
    .await;
    assert_eq!(sink[0][0], (6 * 10 * 20).to_string());
    assert_eq!(sink[0][1], expected.len().to_string());
    assert_eq!(
        sink[0][2],
        expected.values().max().expect("counts").to_string()
    );
}
