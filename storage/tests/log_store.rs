//! The log store's behaviour on the real file system: reads by offset and
//! time, segment rolling, index files, retention and compaction.

use std::fs;
use std::path::Path;

use brook_storage::{
    CleanupPolicy, FlushPolicy, LogConfig, LogStore, Record, RecoveryAction, StorageError,
    TaggedBatch, TopicConfig,
};

fn rec(i: i64) -> Record {
    Record {
        timestamp: i,
        key: Some(i.to_le_bytes().to_vec()),
        value: Some(format!("v{i}").into_bytes()),
        headers: vec![],
    }
}

fn small(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn offsets(log: &LogStore, topic: &str, from: u64, max: usize) -> Vec<u64> {
    log.read(topic, 0, from, max)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect()
}

/// Pseudo-random numbers for repeatable test data.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LogStore::open(dir.path(), small(200)).unwrap();
        log.create_topic("t", 2).unwrap();
        for i in 0..20 {
            assert_eq!(log.append("t", 0, &[rec(i)]).unwrap(), i as u64);
        }
        assert_eq!(log.append("t", 1, &[rec(1), rec(2)]).unwrap(), 0);
        let got = log.read("t", 0, 5, 3).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(got[0].record, rec(5));
        assert!(
            log.stats("t").unwrap()[0].segments > 3,
            "200-byte segments roll"
        );
    }
    let log = LogStore::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offsets("t").unwrap(), vec![20, 2]);
    let all = log.read("t", 0, 0, 100).unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(all[19].record, rec(19));
    assert!(log.recovery_reports().is_empty());
    assert!(matches!(
        log.create_topic("t", 1),
        Err(StorageError::TopicExists(_))
    ));
    assert!(matches!(
        log.read("nope", 0, 0, 1),
        Err(StorageError::TopicNotFound(_))
    ));
    assert!(log.create_topic("../evil", 1).is_err());
}

#[test]
fn tagged_batches_are_found_again_after_a_reopen_and_reads_do_not_see_tags() {
    let dir = tempfile::tempdir().unwrap();
    let tagged = |base, count, tag: &str| TaggedBatch {
        base_offset: base,
        count,
        tag: tag.as_bytes().to_vec(),
    };
    {
        // Small segments: the batches land in several.
        let log = LogStore::open(dir.path(), small(200)).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append("t", 0, &[rec(0), rec(1)]).unwrap();
        log.append_tagged("t", 0, &[rec(2), rec(3), rec(4)], b"e1")
            .unwrap();
        log.append("t", 0, &[rec(5)]).unwrap();
        log.append_tagged("t", 0, &[rec(6)], b"e2").unwrap();
        log.append_tagged("t", 0, &[rec(7), rec(8)], b"").unwrap();
        assert_eq!(
            log.tagged_batches("t", 0, 0).unwrap(),
            vec![tagged(2, 3, "e1"), tagged(6, 1, "e2"), tagged(7, 2, "")]
        );
    }
    let log = LogStore::open(dir.path(), small(200)).unwrap();
    assert_eq!(offsets(&log, "t", 0, 100), (0..9).collect::<Vec<_>>());
    let read = log.read("t", 0, 2, 3).unwrap();
    assert_eq!(
        read.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
        vec![rec(2), rec(3), rec(4)]
    );
    // A batch counts from `from` on if any of its records is at or after it.
    assert_eq!(
        log.tagged_batches("t", 0, 4).unwrap(),
        vec![tagged(2, 3, "e1"), tagged(6, 1, "e2"), tagged(7, 2, "")]
    );
    assert_eq!(
        log.tagged_batches("t", 0, 5).unwrap(),
        vec![tagged(6, 1, "e2"), tagged(7, 2, "")]
    );
    assert_eq!(log.tagged_batches("t", 0, 9).unwrap(), vec![]);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 0,
        ..LogConfig::default()
    };
    let log = LogStore::open(dir.path(), config).unwrap();
    log.create_topic("t", 1).unwrap();
    for i in 0..5 {
        log.append("t", 0, &[rec(i)]).unwrap();
    }
    assert_eq!(log.stats("t").unwrap()[0].segments, 5);
    assert_eq!(offsets(&log, "t", 0, 100), [0, 1, 2, 3, 4]);
}

#[test]
fn reads_by_time_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path(), small(1000)).unwrap();
    log.create_topic("t", 1).unwrap();
    // Timestamps mostly rising, with records out of order.
    let mut seed = 42;
    let mut stamps = Vec::new();
    for i in 0..400i64 {
        let ts = i * 10 - (lcg(&mut seed) % 50) as i64;
        stamps.push(ts);
        let batch: Vec<Record> = (0..1 + lcg(&mut seed) % 3)
            .map(|_| Record {
                timestamp: ts,
                ..rec(i)
            })
            .collect();
        for _ in 1..batch.len() {
            stamps.push(ts);
        }
        log.append("t", 0, &batch).unwrap();
    }
    for target in (-100..4100).step_by(37) {
        let want = stamps.iter().position(|t| *t >= target).map(|o| o as u64);
        assert_eq!(
            log.offset_for_time("t", 0, target).unwrap(),
            want,
            "ts {target}"
        );
    }
}

#[test]
fn deleted_or_damaged_index_files_are_rebuilt_with_identical_reads() {
    let dir = tempfile::tempdir().unwrap();
    let probe = |log: &LogStore| {
        let by_offset: Vec<_> = (0..300)
            .step_by(7)
            .map(|from| log.read("t", 0, from, 13).unwrap())
            .collect();
        let by_time: Vec<_> = (0..300)
            .step_by(11)
            .map(|ts| log.offset_for_time("t", 0, ts).unwrap())
            .collect();
        (by_offset, by_time)
    };
    let before = {
        let log = LogStore::open(dir.path(), small(800)).unwrap();
        log.create_topic("t", 1).unwrap();
        for i in 0..300 {
            log.append("t", 0, &[rec(i)]).unwrap();
        }
        probe(&log)
    };
    let pdir = dir.path().join("t/0");
    let mut indexes: Vec<_> = fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 6, "closed segments have index files");
    fs::remove_file(&indexes[0]).unwrap();
    fs::remove_file(&indexes[3]).unwrap();
    let mut damaged = fs::read(&indexes[4]).unwrap();
    damaged[20] ^= 0xff;
    fs::write(&indexes[4], damaged).unwrap();
    let log = LogStore::open(dir.path(), small(800)).unwrap();
    let rebuilt = log
        .recovery_reports()
        .iter()
        .filter(|r| r.action == RecoveryAction::IndexRebuilt)
        .count();
    assert_eq!(rebuilt, 3, "{:?}", log.recovery_reports());
    assert!(
        indexes.iter().all(|p| p.exists()),
        "index files are rewritten"
    );
    assert_eq!(probe(&log), before);
}

#[test]
fn a_flipped_bit_in_an_old_segment_is_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LogStore::open(dir.path(), small(300)).unwrap();
        log.create_topic("t", 1).unwrap();
        for i in 0..40 {
            log.append("t", 0, &[rec(i)]).unwrap();
        }
    }
    let seg = dir.path().join("t/0/00000000000000000000.log");
    let mut bytes = fs::read(&seg).unwrap();
    let len = bytes.len();
    bytes[len - 5] ^= 0x08;
    fs::write(&seg, &bytes).unwrap();
    // With its index intact the segment opens; reading the batch fails.
    {
        let log = LogStore::open(dir.path(), small(300)).unwrap();
        assert_eq!(
            offsets(&log, "t", 0, 2),
            [0, 1],
            "batches before it read fine"
        );
        match log.read("t", 0, 0, 1000) {
            Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, seg),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
    // Without its index, opening scans the segment and refuses.
    fs::remove_file(seg.with_extension("index")).unwrap();
    match LogStore::open(dir.path(), small(300)) {
        Err(StorageError::Corrupt { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("corruption went unnoticed"),
    }
    assert_eq!(fs::read(&seg).unwrap().len(), len, "nothing was truncated");
}

fn tail_case(damage: impl FnOnce(&Path)) -> (LogStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LogStore::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append("t", 0, &[rec(1), rec(2)]).unwrap();
        log.append("t", 0, &[rec(3)]).unwrap();
    }
    damage(&dir.path().join("t/0/00000000000000000000.log"));
    (
        LogStore::open(dir.path(), LogConfig::default()).unwrap(),
        dir,
    )
}

#[test]
fn a_truncated_tail_is_cut_back_and_reported() {
    let (log, _dir) = tail_case(|seg| {
        let full = fs::metadata(seg).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(seg).unwrap();
        f.set_len(full - 3).unwrap();
    });
    assert_eq!(log.end_offset("t", 0).unwrap(), 2);
    match log.recovery_reports().as_slice() {
        [r] => assert!(matches!(r.action, RecoveryAction::TailCut { .. })),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.append("t", 0, &[rec(9)]).unwrap(), 2);
    let ts: Vec<i64> = log
        .read("t", 0, 0, 10)
        .unwrap()
        .iter()
        .map(|r| r.record.timestamp)
        .collect();
    assert_eq!(ts, [1, 2, 9]);
}

#[test]
fn a_garbage_tail_is_cut_back_and_reported() {
    use std::io::Write;
    let (log, _dir) = tail_case(|seg| {
        let mut f = fs::OpenOptions::new().append(true).open(seg).unwrap();
        f.write_all(b"\x10\x00\x00\x00garbage-garbage-garbage")
            .unwrap();
    });
    assert_eq!(log.end_offset("t", 0).unwrap(), 3, "nothing valid was cut");
    match log.recovery_reports().as_slice() {
        [r] => match &r.action {
            RecoveryAction::TailCut { bytes_dropped, .. } => assert_eq!(*bytes_dropped, 27),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn damage_followed_by_valid_batches_is_an_error_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = LogStore::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        for i in 0..5 {
            log.append("t", 0, &[rec(i)]).unwrap();
        }
    }
    let seg = dir.path().join("t/0/00000000000000000000.log");
    let mut bytes = fs::read(&seg).unwrap();
    let len = bytes.len();
    bytes[len / 3] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        LogStore::open(dir.path(), LogConfig::default()),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(fs::read(&seg).unwrap().len(), len, "nothing was truncated");
}

#[test]
fn retention_deletes_old_and_excess_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path(), small(200)).unwrap();
    let mut by_time = TopicConfig::new(1);
    by_time.retention_ms = Some(1000);
    log.create_topic_with("old", by_time).unwrap();
    let mut by_size = TopicConfig::new(1);
    by_size.retention_bytes = Some(500);
    log.create_topic_with("big", by_size).unwrap();
    log.create_topic("kept", 1).unwrap();
    for i in 0..100 {
        for t in ["old", "big", "kept"] {
            log.append(t, 0, &[rec(i * 100)]).unwrap();
        }
    }
    // "now" is 10 s: records older than 9 s go, whole segments at a time.
    assert!(log.maintain(10_000).unwrap() > 0);
    let old = &log.stats("old").unwrap()[0];
    let first = log.read("old", 0, 0, 1).unwrap()[0].clone();
    assert_eq!(first.offset, old.start_offset);
    assert!(old.start_offset > 60 && old.start_offset <= 90, "{old:?}");
    let big = &log.stats("big").unwrap()[0];
    assert!(big.bytes >= 500 && big.bytes < 700, "{big:?}");
    assert_eq!(log.stats("kept").unwrap()[0].start_offset, 0);
    assert_eq!(log.end_offsets("big").unwrap(), [100]);
    drop(log);
    let log = LogStore::open(dir.path(), small(200)).unwrap();
    assert_eq!(log.stats("big").unwrap()[0], *big);
    assert_eq!(log.read("old", 0, 0, 1).unwrap()[0], first);
}

#[test]
fn compaction_keeps_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(300);
    let log = LogStore::open(dir.path(), config).unwrap();
    let mut t = TopicConfig::new(1);
    t.cleanup_policy = CleanupPolicy::Compact;
    t.delete_retention_ms = 1000;
    log.create_topic_with("tbl", t).unwrap();
    let put = |k: u8, v: Option<&str>, ts: i64| Record {
        timestamp: ts,
        key: Some(vec![k]),
        value: v.map(|v| v.as_bytes().to_vec()),
        headers: vec![],
    };
    let mut expected = std::collections::BTreeMap::new();
    let mut seed = 7;
    for i in 0..200i64 {
        let k = (lcg(&mut seed) % 10) as u8;
        let v = (!lcg(&mut seed).is_multiple_of(5)).then(|| format!("v{i}"));
        log.append("tbl", 0, &[put(k, v.as_deref(), i)]).unwrap();
        expected.insert(k, v);
    }
    let before = log.stats("tbl").unwrap()[0].clone();
    // Tombstones stay while younger than delete_retention_ms ...
    assert!(log.maintain(500).unwrap() > 0);
    let latest = |log: &LogStore| {
        let mut m = std::collections::BTreeMap::new();
        for r in log.read("tbl", 0, 0, 10_000).unwrap() {
            let v = r.record.value.map(|v| String::from_utf8(v).unwrap());
            m.insert(r.record.key.unwrap()[0], v);
        }
        m
    };
    assert_eq!(latest(&log), expected);
    let after = log.stats("tbl").unwrap()[0].clone();
    assert!(after.bytes < before.bytes / 2, "{before:?} → {after:?}");
    assert_eq!(after.end_offset, 200);
    // ... and go after it (those in closed segments).
    log.maintain(1_000_000).unwrap();
    let n = log.read("tbl", 0, 0, 10_000).unwrap().len();
    assert!(
        n <= 10 + 10,
        "at most one record per key plus the active segment: {n}"
    );
    // Reopening a compacted partition works, offsets and all.
    let reads = log.read("tbl", 0, 0, 10_000).unwrap();
    drop(log);
    let log = LogStore::open(dir.path(), config).unwrap();
    assert_eq!(log.read("tbl", 0, 0, 10_000).unwrap(), reads);
    assert_eq!(log.append("tbl", 0, &[put(1, Some("x"), 0)]).unwrap(), 200);
}

#[test]
fn flush_policies_parse() {
    assert_eq!("always".parse(), Ok(FlushPolicy::Always));
    assert_eq!("interval:250".parse(), Ok(FlushPolicy::Interval(250)));
    assert_eq!("NEVER".parse(), Ok(FlushPolicy::Never));
    assert!("interval:".parse::<FlushPolicy>().is_err());
    assert!("sometimes".parse::<FlushPolicy>().is_err());
    assert_eq!(FlushPolicy::Interval(5).to_string(), "interval:5");
}

#[test]
fn compaction_splits_large_runs_into_readable_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(2 << 20);
    let log = LogStore::open(dir.path(), config).unwrap();
    let mut t = TopicConfig::new(1);
    t.cleanup_policy = CleanupPolicy::Compact;
    log.create_topic_with("big", t).unwrap();
    // 300 KB values: consecutive survivors would make one oversized batch.
    for i in 0..40u8 {
        let r = Record {
            timestamp: i64::from(i),
            key: Some(vec![i % 20]),
            value: Some(vec![i; 300 * 1024]),
            headers: vec![],
        };
        log.append("big", 0, &[r]).unwrap();
    }
    assert!(log.maintain(0).unwrap() > 0);
    let after: Vec<_> = log.read("big", 0, 0, 100).unwrap();
    drop(log);
    let log = LogStore::open(dir.path(), config).unwrap();
    assert_eq!(log.read("big", 0, 0, 100).unwrap(), after);
    let keys: std::collections::BTreeSet<u8> = after
        .iter()
        .map(|r| r.record.key.as_ref().unwrap()[0])
        .collect();
    assert_eq!(keys.len(), 20);
}

#[test]
fn compaction_runs_again_only_when_there_is_something_new() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path(), small(200)).unwrap();
    let mut t = TopicConfig::new(1);
    t.cleanup_policy = CleanupPolicy::Compact;
    t.delete_retention_ms = 1000;
    log.create_topic_with("tbl", t).unwrap();
    let put = |k: u8, v: Option<&[u8]>, ts: i64| Record {
        timestamp: ts,
        key: Some(vec![k]),
        value: v.map(<[u8]>::to_vec),
        headers: vec![],
    };
    for i in 0..30 {
        log.append("tbl", 0, &[put(i % 3, Some(b"v"), 0)]).unwrap();
    }
    log.append("tbl", 0, &[put(0, None, 100)]).unwrap();
    for i in 0..10 {
        log.append("tbl", 0, &[put(5 + i, Some(b"w"), 0)]).unwrap();
    }
    assert!(log.maintain(0).unwrap() > 0);
    assert_eq!(
        log.maintain(0).unwrap(),
        0,
        "nothing closed, nothing expired"
    );
    // The tombstone (timestamp 100) expires once the horizon passes it.
    assert_eq!(log.maintain(1100).unwrap(), 0, "horizon 100: kept");
    assert!(log.maintain(1101).unwrap() > 0, "horizon 101: dropped");
    let keys: Vec<u8> = log
        .read("tbl", 0, 0, 1000)
        .unwrap()
        .iter()
        .map(|r| r.record.key.as_ref().unwrap()[0])
        .collect();
    assert!(!keys.contains(&0), "{keys:?}");
    // A newly closed segment makes the next run look again.
    for i in 0..10 {
        log.append("tbl", 0, &[put(1, Some(b"x"), i)]).unwrap();
    }
    assert!(log.maintain(1101).unwrap() > 0);
}

/// After a torn tail took offsets a reader had seen, `advance_end` moves
/// the end past them: new records get fresh offsets, reads pass over the
/// hole, and it survives a restart.
#[test]
fn advance_end_leaves_a_gap_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let log = LogStore::open(dir.path(), config).unwrap();
    log.create_topic("t", 1).unwrap();
    let one = |v: &str| Record {
        timestamp: 1,
        key: None,
        value: Some(v.as_bytes().to_vec()),
        headers: vec![],
    };
    log.append("t", 0, &[one("a"), one("b")]).unwrap();
    assert!(!log.advance_end("t", 0, 1).unwrap(), "never backwards");
    assert!(log.advance_end("t", 0, 5).unwrap());
    assert_eq!(log.end_offset("t", 0).unwrap(), 5);
    assert_eq!(log.append("t", 0, &[one("c")]).unwrap(), 5);
    drop(log);
    let log = LogStore::open(dir.path(), config).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), 6);
    let got: Vec<(u64, Vec<u8>)> = log
        .read("t", 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, r.record.value.unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (5, b"c".to_vec())]
    );
    assert_eq!(log.read("t", 0, 3, 10).unwrap()[0].offset, 5);
}

/// A damaged topic.json must not make the log create partitions: one that
/// names more partitions than there are folders, or more than any topic
/// may have, is reported. (Found by the `log_files` fuzz target: a
/// damaged count made the open create and fsync twenty thousand folders.)
#[test]
fn a_topic_json_naming_missing_partitions_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", 2).unwrap();
    drop(log);
    let meta = dir.path().join("t/topic.json");
    let text = fs::read_to_string(&meta).unwrap();
    for count in ["3", "20000"] {
        fs::write(
            &meta,
            text.replace("\"partitions\":2", &format!("\"partitions\":{count}")),
        )
        .unwrap();
        let err = LogStore::open(dir.path(), LogConfig::default())
            .err()
            .unwrap_or_else(|| panic!("{count} partitions opened"));
        assert!(matches!(err, StorageError::Metadata { .. }), "{err}");
        assert!(!dir.path().join("t/2").exists(), "a partition was made up");
    }
    fs::write(&meta, text).unwrap();
    assert_eq!(
        LogStore::open(dir.path(), LogConfig::default())
            .unwrap()
            .partitions("t")
            .unwrap(),
        2
    );
}
