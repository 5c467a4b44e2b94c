//! A seeded random-action test of a `brook server` child process, checked
//! against a model of what it must hold.
//!
//! Each step is one of: ingest a batch of rows (acknowledged rows enter the
//! model), create or drop a derived table or stream, a pull query by key,
//! a push query, a SIGKILL (sometimes during ingest, whose unacknowledged
//! rows may or may not survive) and restart, a torn tail cut off the source
//! topic or off a derived object's sink topic while the server is down.
//! After each restart and at each check, every derived object must equal a
//! recount of the source rows that survive: nothing acknowledged lost (but
//! what a torn tail cut), nothing counted twice, no row invented.
//!
//! - `BROOK_MODEL_SEED` picks the seed (the default is fixed); a failure
//!   names it, and the same seed replays the same actions.
//! - `BROOK_MODEL_STEPS` sets the number of steps (default 40).
//! - `BROOK_SOAK_SECS` turns it into the soak: steps until that many
//!   seconds have passed, a SIGKILL every `BROOK_SOAK_KILL_SECS` (default
//!   180), and a line per minute of the server's RSS, open files and data
//!   directory size, with a summary at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

mod common;
use common::{lcg, rows, Server};

const SOURCE: &str = "CREATE STREAM ev (k INT KEY, id BIGINT, v INT) WITH (KAFKA_TOPIC='ev', VALUE_FORMAT='JSON', PARTITIONS=2);";

/// A row of the source stream: its unique id, key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    id: i64,
    k: i64,
    v: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `k → (COUNT(*), SUM(v))`.
    Counts,
    /// The rows with `v % 3 = 0`.
    Filter,
    /// `(k, window start) → COUNT(*)` over one-second tumbling windows of
    /// the row's id as its time.
    Windowed,
}

#[derive(Debug, Clone)]
struct Derived {
    name: String,
    kind: Kind,
    /// For a stream: rows it emitted from source rows a torn tail took
    /// later (a stream keeps what it published).
    kept: BTreeMap<i64, Row>,
}

impl Derived {
    fn create_sql(&self) -> String {
        let n = &self.name;
        match self.kind {
            Kind::Counts => format!(
                "CREATE TABLE {n} AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev GROUP BY k;"
            ),
            Kind::Filter => {
                format!("CREATE STREAM {n} AS SELECT k, id, v FROM ev WHERE v % 3 = 0;")
            }
            Kind::Windowed => format!(
                "CREATE TABLE {n} AS SELECT k, COUNT(*) AS n, WINDOWSTART AS ws FROM evt WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY k;"
            ),
        }
    }
}

/// What Brook must hold.
#[derive(Default)]
struct Model {
    /// Acknowledged rows that survive.
    rows: BTreeMap<i64, Row>,
    /// Rows whose INSERT was under way at a SIGKILL: either survives.
    maybe: BTreeMap<i64, Row>,
    derived: Vec<Derived>,
    /// The rows of `evt` (which the windowed tables read) that a torn tail
    /// took from `ev` after `evt` had them.
    evt_kept: BTreeMap<i64, Row>,
    next_id: i64,
    next_name: u32,
}

impl Model {
    fn new_rows(&mut self, n: usize, seed: &mut u64) -> Vec<Row> {
        (0..n)
            .map(|_| {
                self.next_id += 1;
                Row {
                    id: self.next_id,
                    k: (lcg(seed) % 7) as i64,
                    v: (lcg(seed) % 100) as i64,
                }
            })
            .collect()
    }
}

fn insert_sql(rows: &[Row]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|r| format!("({}, {}, {})", r.k, r.id, r.v))
        .collect();
    format!("INSERT INTO ev (k, id, v) VALUES {};", values.join(", "))
}

struct Run {
    seed: u64,
    first_seed: u64,
    data: PathBuf,
    server: Option<Server>,
    client: Client,
    model: Model,
    log: Vec<String>,
}

impl Run {
    fn say(&mut self, what: String) {
        eprintln!("[seed {}] {what}", self.first_seed);
        self.log.push(what);
    }

    fn fail(&self, why: &str) -> ! {
        let server_log = self
            .server
            .as_ref()
            .and_then(|s| std::fs::read_to_string(&s.log).ok())
            .unwrap_or_default();
        panic!(
            "seed {}: {why}\nactions:\n  {}\nserver log (tail):\n{}",
            self.first_seed,
            self.log.join("\n  "),
            server_log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    async fn exec(&self, sql: &str) {
        if let Err(e) = self.client.batch_execute(sql).await {
            self.fail(&format!("{sql}: {e}"));
        }
    }

    async fn restart(&mut self) {
        let mut server = Server::start(&self.data);
        self.client = server.connect().await;
        self.server = Some(server);
    }

    fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.child.id())
    }

    async fn ingest(&mut self) {
        let n = 1 + (lcg(&mut self.seed) % 40) as usize;
        let batch = self.model.new_rows(n, &mut self.seed);
        self.exec(&insert_sql(&batch)).await;
        self.model.rows.extend(batch.iter().map(|r| (r.id, *r)));
        self.say(format!("ingest {n} rows"));
    }

    async fn create(&mut self) {
        if self.model.derived.len() >= 3 {
            return self.drop_one().await;
        }
        let kind = [Kind::Counts, Kind::Filter, Kind::Windowed][(lcg(&mut self.seed) % 3) as usize];
        self.model.next_name += 1;
        let d = Derived {
            name: format!("d{}", self.model.next_name),
            kind,
            kept: BTreeMap::new(),
        };
        self.exec(&d.create_sql()).await;
        self.say(format!("create {} ({:?})", d.name, d.kind));
        self.model.derived.push(d);
    }

    async fn drop_one(&mut self) {
        if self.model.derived.is_empty() {
            return self.ingest().await;
        }
        let i = (lcg(&mut self.seed) as usize) % self.model.derived.len();
        let d = self.model.derived.remove(i);
        let kind = if d.kind == Kind::Filter {
            "STREAM"
        } else {
            "TABLE"
        };
        self.exec(&format!("DROP {kind} {} DELETE TOPIC;", d.name))
            .await;
        self.say(format!("drop {}", d.name));
    }

    /// Every source row, as Brook has it: no id twice, none invented.
    async fn source(&self) -> BTreeMap<i64, Row> {
        let mut got = BTreeMap::new();
        for r in rows(&self.client, "SELECT id, k, v FROM ev").await {
            let n = |i: usize| r[i].parse::<i64>().expect("a number");
            let row = Row {
                id: n(0),
                k: n(1),
                v: n(2),
            };
            if got.insert(row.id, row).is_some() {
                self.fail(&format!("row {} is in the source twice", row.id));
            }
        }
        got
    }

    /// Settles the rows under way at the last SIGKILL, then checks the
    /// source and every derived object against the model.
    async fn check(&mut self) {
        self.exec("FLUSH;").await;
        let source = self.source().await;
        for (id, row) in std::mem::take(&mut self.model.maybe) {
            if source.get(&id) == Some(&row) {
                self.model.rows.insert(id, row);
            }
        }
        if source != self.model.rows {
            let lost: Vec<_> = self
                .model
                .rows
                .keys()
                .filter(|id| !source.contains_key(id))
                .take(20)
                .collect();
            let extra: Vec<_> = source
                .keys()
                .filter(|id| !self.model.rows.contains_key(id))
                .take(20)
                .collect();
            self.fail(&format!(
                "the source differs from the model: lost {lost:?}, invented {extra:?}"
            ));
        }
        for d in self.model.derived.clone() {
            self.check_derived(&d).await;
        }
        self.say(format!(
            "check: {} rows, {} derived objects agree",
            source.len(),
            self.model.derived.len()
        ));
    }

    async fn check_derived(&self, d: &Derived) {
        let n = |r: &[String], i: usize| r[i].parse::<i64>().expect("a number");
        let rows_now = self.model.rows.values();
        match d.kind {
            Kind::Counts => {
                let mut want: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
                for r in rows_now {
                    let e = want.entry(r.k).or_default();
                    e.0 += 1;
                    e.1 += r.v;
                }
                let got: BTreeMap<i64, (i64, i64)> =
                    rows(&self.client, &format!("SELECT k, n, s FROM {}", d.name))
                        .await
                        .iter()
                        .map(|r| (n(r, 0), (n(r, 1), n(r, 2))))
                        .collect();
                if got != want {
                    self.fail(&format!(
                        "{} is not the recount: got {got:?}, want {want:?}",
                        d.name
                    ));
                }
            }
            Kind::Filter => {
                let want: Vec<i64> = rows_now
                    .chain(d.kept.values())
                    .filter(|r| r.v % 3 == 0)
                    .map(|r| r.id)
                    .collect::<BTreeSet<i64>>()
                    .into_iter()
                    .collect();
                let mut got: Vec<i64> = rows(&self.client, &format!("SELECT id FROM {}", d.name))
                    .await
                    .iter()
                    .map(|r| n(r, 0))
                    .collect();
                got.sort_unstable();
                if got != want {
                    self.fail(&format!(
                        "{} is not the filtered source: {} rows, want {}",
                        d.name,
                        got.len(),
                        want.len()
                    ));
                }
            }
            Kind::Windowed => {
                let mut want: BTreeMap<(i64, i64), i64> = BTreeMap::new();
                for r in rows_now.chain(self.model.evt_kept.values()) {
                    *want.entry((r.k, r.id - r.id % 1000)).or_default() += 1;
                }
                let got: BTreeMap<(i64, i64), i64> =
                    rows(&self.client, &format!("SELECT k, ws, n FROM {}", d.name))
                        .await
                        .iter()
                        .map(|r| ((n(r, 0), n(r, 1)), n(r, 2)))
                        .collect();
                if got != want {
                    self.fail(&format!(
                        "{} is not the windowed recount: got {} windows, want {}",
                        d.name,
                        got.len(),
                        want.len()
                    ));
                }
            }
        }
    }

    /// A pull query by key on a counts table, against the model.
    async fn pull(&mut self) {
        let Some(d) = self.model.derived.iter().find(|d| d.kind == Kind::Counts) else {
            return self.ingest().await;
        };
        let name = d.name.clone();
        self.exec("FLUSH;").await;
        if !self.model.maybe.is_empty() {
            return self.check().await;
        }
        let k = (lcg(&mut self.seed) % 8) as i64;
        let got = rows(&self.client, &format!("SELECT n FROM {name} WHERE k = {k}")).await;
        let want = self.model.rows.values().filter(|r| r.k == k).count();
        let got_n = got
            .first()
            .map_or(0, |r| r[0].parse::<usize>().unwrap_or(0));
        if got_n != want {
            self.fail(&format!("pull {name} k={k}: {got:?}, want {want}"));
        }
        self.say(format!("pull {name} k={k}: {want}"));
    }

    /// A push query from the latest offset, fed from a second connection:
    /// it sees the rows inserted after it began, each once.
    async fn push(&mut self) {
        let server = self.server.as_mut().expect("a server");
        let feeder = server.connect().await;
        let n = 3;
        let push = {
            let client = server.connect().await;
            tokio::spawn(async move {
                rows(
                    &client,
                    &format!("SELECT id FROM ev EMIT CHANGES LIMIT {n}"),
                )
                .await
            })
        };
        let mut sent = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !push.is_finished() {
            if Instant::now() > deadline {
                self.fail("a push query did not see the rows inserted after it began");
            }
            let batch = self.model.new_rows(1, &mut self.seed);
            if let Err(e) = feeder.batch_execute(&insert_sql(&batch)).await {
                self.fail(&format!("insert while pushing: {e}"));
            }
            self.model.rows.insert(batch[0].id, batch[0]);
            sent.insert(batch[0].id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got: Vec<i64> = push
            .await
            .expect("the push task")
            .iter()
            .map(|r| r[0].parse().expect("an id"))
            .collect();
        let distinct: BTreeSet<i64> = got.iter().copied().collect();
        if got.len() != n || distinct.len() != n || !distinct.is_subset(&sent) {
            self.fail(&format!("push saw {got:?}; inserted meanwhile {sent:?}"));
        }
        self.say(format!("push saw {n} of {} rows", sent.len()));
    }

    /// SIGKILL, sometimes while a second connection inserts; restart.
    async fn sigkill(&mut self) {
        let during_ingest = lcg(&mut self.seed).is_multiple_of(2);
        if during_ingest {
            let server = self.server.as_mut().expect("a server");
            let feeder = server.connect().await;
            let planned = self.model.new_rows(400, &mut self.seed);
            let acked = Arc::new(Mutex::new(Vec::new()));
            let task = {
                let acked = Arc::clone(&acked);
                let planned = planned.clone();
                tokio::spawn(async move {
                    for chunk in planned.chunks(5) {
                        if feeder.batch_execute(&insert_sql(chunk)).await.is_err() {
                            return;
                        }
                        acked.lock().expect("acked").extend_from_slice(chunk);
                    }
                })
            };
            let wait = 50 + lcg(&mut self.seed) % 400;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.kill();
            let _ = task.await;
            let acked = acked.lock().expect("acked").clone();
            let acked_ids: BTreeSet<i64> = acked.iter().map(|r| r.id).collect();
            self.model.rows.extend(acked.iter().map(|r| (r.id, *r)));
            self.model.maybe.extend(
                planned
                    .iter()
                    .filter(|r| !acked_ids.contains(&r.id))
                    .map(|r| (r.id, *r)),
            );
            self.say(format!(
                "SIGKILL after {wait} ms of ingest ({} rows acknowledged)",
                acked.len()
            ));
        } else {
            self.kill();
            self.say("SIGKILL".into());
        }
        self.restart().await;
        self.check().await;
    }

    /// SIGKILL, then cut the tail of a topic's last segment, as a torn
    /// write would leave it; restart. A cut source loses its last rows on
    /// that partition (the model follows, from what Brook reports); a cut
    /// sink must be rebuilt to the same contents, but for a stream's rows
    /// from source rows lost before (nothing can make those again).
    async fn torn_tail(&mut self) {
        // Settle first, so that the model knows each row's place.
        self.check().await;
        let placed = rows(&self.client, "SELECT id, ROWPARTITION, ROWOFFSET FROM ev").await;
        let place: BTreeMap<i64, (i64, i64)> = placed
            .iter()
            .map(|r| {
                let n = |i: usize| r[i].parse::<i64>().expect("a number");
                (n(0), (n(1), n(2)))
            })
            .collect();
        let sinks: Vec<String> = self.model.derived.iter().map(|d| d.name.clone()).collect();
        let pick = (lcg(&mut self.seed) as usize) % (sinks.len() + 2);
        let topic = sinks.get(pick).cloned().unwrap_or_else(|| "ev".into());
        let partition = if topic == "ev" {
            lcg(&mut self.seed) % 2
        } else {
            0
        };
        let bytes = 1 + lcg(&mut self.seed) % 300;
        self.kill();
        let cut = cut_tail(&self.data, &topic, partition, bytes);
        self.say(format!("torn tail: {cut} bytes off {topic}/{partition}"));
        self.restart().await;
        if topic == "ev" {
            self.exec("FLUSH;").await;
            let source = self.source().await;
            // What was lost: the last rows of the cut partition, no others.
            let kept_end = source
                .keys()
                .filter_map(|id| place.get(id))
                .filter(|(p, _)| *p == partition as i64)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap_or(0);
            for (id, row) in &self.model.rows {
                let lost = !source.contains_key(id);
                let Some(&(p, o)) = place.get(id) else {
                    self.fail(&format!("row {id} had no place before the cut"));
                };
                let should_be_lost = p == partition as i64 && o >= kept_end;
                if lost != should_be_lost {
                    self.fail(&format!(
                        "row {id} ({row:?}) at {p}/{o}: lost {lost}, but the cut partition ends at {kept_end}"
                    ));
                }
            }
            let lost: BTreeMap<i64, Row> = self
                .model
                .rows
                .iter()
                .filter(|(id, _)| !source.contains_key(id))
                .map(|(id, r)| (*id, *r))
                .collect();
            // Streams keep what they emitted from the lost rows.
            for d in &mut self.model.derived {
                if d.kind == Kind::Filter {
                    d.kept.extend(lost.iter().map(|(id, r)| (*id, *r)));
                }
            }
            self.model.evt_kept.extend(lost);
            self.model.rows.retain(|id, _| source.contains_key(id));
        } else if let Some(name) = self
            .model
            .derived
            .iter()
            .find(|d| d.name == topic && d.kind == Kind::Filter)
            .map(|d| d.name.clone())
        {
            // A stream's output is stored once, in its sink: rows it kept
            // from source records a torn tail took cannot be made again
            // once a cut takes them from the sink too. Everything else is.
            self.exec("FLUSH;").await;
            let got: BTreeSet<i64> = rows(&self.client, &format!("SELECT id FROM {name}"))
                .await
                .iter()
                .map(|r| r[0].parse::<i64>().expect("a number"))
                .collect();
            let Some(d) = self.model.derived.iter_mut().find(|d| d.name == name) else {
                unreachable!("found above");
            };
            let before = d.kept.len();
            d.kept.retain(|id, _| got.contains(id));
            let gone = before - d.kept.len();
            if gone > 0 {
                self.say(format!(
                    "{name} lost {gone} rows kept from lost source rows"
                ));
            }
        }
        self.check().await;
    }
}

/// Cuts up to `bytes` off the last segment of `topic` (any case) /
/// `partition`; returns how many it cut.
fn cut_tail(data: &Path, topic: &str, partition: u64, bytes: u64) -> u64 {
    let log = data.join("log");
    let dir = std::fs::read_dir(&log)
        .expect("the log folder")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(topic))
        .unwrap_or_else(|| panic!("no topic folder for {topic}"))
        .path()
        .join(partition.to_string());
    let Some(last) = std::fs::read_dir(&dir)
        .expect("the partition folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
    else {
        return 0;
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("the segment opens");
    let len = f.metadata().expect("its length").len();
    let cut = bytes.min(len);
    f.set_len(len - cut).expect("the cut");
    cut
}

/// One sample of the server's resources.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kb: u64,
    fds: u64,
    disk_bytes: u64,
}

fn sample(pid: Option<u32>, data: &Path) -> Sample {
    let mut s = Sample::default();
    if let Some(pid) = pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        s.fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    }
    s.disk_bytes = du(data);
    s
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_actions_agree_with_the_model() {
    let first_seed = env("BROOK_MODEL_SEED").unwrap_or(20261203);
    let steps = env("BROOK_MODEL_STEPS").unwrap_or(40);
    let soak = env("BROOK_SOAK_SECS").map(Duration::from_secs);
    let kill_every = Duration::from_secs(env("BROOK_SOAK_KILL_SECS").unwrap_or(180));
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let client = server.connect().await;
    let mut run = Run {
        seed: first_seed,
        first_seed,
        data,
        server: Some(server),
        client,
        model: Model::default(),
        log: vec![],
    };
    run.exec(SOURCE).await;
    // The windowed objects read the rows with their id as event time.
    run.exec("CREATE STREAM evt WITH (TIMESTAMP='id') AS SELECT k, id, v FROM ev;")
        .await;

    let start = Instant::now();
    let mut last_kill = Instant::now();
    let mut last_sample = Instant::now();
    let mut samples: Vec<(Duration, Sample, usize)> = vec![];
    let mut step = 0u64;
    loop {
        let done = match soak {
            Some(total) => start.elapsed() >= total,
            None => step >= steps,
        };
        if done {
            break;
        }
        step += 1;
        // Keep the log of actions to the recent ones in a soak.
        if run.log.len() > 200 {
            run.log.drain(..100);
        }
        match soak {
            Some(_) if last_kill.elapsed() >= kill_every => {
                last_kill = Instant::now();
                if lcg(&mut run.seed).is_multiple_of(4) {
                    run.torn_tail().await;
                } else {
                    run.sigkill().await;
                }
            }
            Some(_) => match lcg(&mut run.seed) % 20 {
                0..=11 => run.ingest().await,
                12 => run.create().await,
                13 => run.drop_one().await,
                14 | 15 => run.pull().await,
                16 => run.push().await,
                _ => run.check().await,
            },
            None => match lcg(&mut run.seed) % 20 {
                0..=7 => run.ingest().await,
                8 | 9 => run.create().await,
                10 => run.drop_one().await,
                11 => run.pull().await,
                12 => run.push().await,
                13 | 14 => run.sigkill().await,
                15 | 16 => run.torn_tail().await,
                _ => run.check().await,
            },
        }
        if soak.is_some()
            && (last_sample.elapsed() >= Duration::from_secs(60) || samples.is_empty())
        {
            last_sample = Instant::now();
            let s = sample(run.pid(), &run.data);
            let n = run.model.rows.len();
            eprintln!(
                "soak {:>5}s: rss {} MB, {} open files, data {} MB, {} rows",
                start.elapsed().as_secs(),
                s.rss_kb / 1024,
                s.fds,
                s.disk_bytes >> 20,
                n
            );
            samples.push((start.elapsed(), s, n));
        }
    }
    run.check().await;
    if soak.is_some() {
        let max = |f: fn(&Sample) -> u64| samples.iter().map(|(_, s, _)| f(s)).max().unwrap_or(0);
        let last = samples.last().map(|(_, s, n)| (*s, *n)).unwrap_or_default();
        eprintln!(
            "soak summary: {} steps in {:?}; max rss {} MB, max open files {}, data at the end {} MB for {} rows ({} bytes a row)",
            step,
            start.elapsed(),
            max(|s| s.rss_kb) / 1024,
            max(|s| s.fds),
            last.0.disk_bytes >> 20,
            last.1,
            last.0.disk_bytes / (last.1 as u64).max(1)
        );
    }
}
