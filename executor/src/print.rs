//! `PRINT 'topic'`: a topic's records as text lines, the way ksqlDB shows
//! them. Formats are guessed from the bytes (ksqlDB does the same): JSON if
//! it parses, a 4- or 8-byte big-endian integer for KAFKA keys, UTF-8 text,
//! and hex for anything else.

use std::sync::Arc;

use brook_storage::StoredRecord;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use tokio::sync::mpsc;

use crate::engine::{Engine, PushStream};
use crate::error::Result;

/// The format guessed for keys or values.
fn guess(bytes: Option<&[u8]>, is_key: bool) -> &'static str {
    match bytes {
        None => "¯\\_(ツ)_/¯ - no data processed",
        Some(b) if serde_json::from_slice::<serde_json::Value>(b).is_ok() && !b.is_empty() => {
            if is_key
                && std::str::from_utf8(b).is_ok_and(|s| !s.trim_start().starts_with(['{', '[']))
            {
                "KAFKA_STRING"
            } else {
                "JSON or KAFKA_STRING"
            }
        }
        Some(b) if is_key && b.len() == 4 && !printable(b) => "KAFKA_INT or KAFKA_STRING",
        Some(b) if is_key && b.len() == 8 && !printable(b) => {
            "KAFKA_BIGINT or KAFKA_DOUBLE or KAFKA_STRING"
        }
        Some(b) if printable(b) => "KAFKA_STRING",
        Some(_) => "KAFKA_BYTES",
    }
}

/// UTF-8 text without control characters.
fn printable(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok_and(|s| s.chars().all(|c| !c.is_control() || c == '\t'))
}

fn render(bytes: Option<&[u8]>, is_key: bool) -> String {
    match bytes {
        None => "<null>".into(),
        Some(b) if is_key && b.len() == 4 && !printable(b) => {
            i32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string()
        }
        Some(b) if is_key && b.len() == 8 && !printable(b) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            i64::from_be_bytes(a).to_string()
        }
        Some(b) if printable(b) => String::from_utf8_lossy(b).into_owned(),
        Some(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// `yyyy/MM/dd HH:mm:ss.SSS Z` in UTC.
pub(crate) fn format_rowtime(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}.{:03} Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// One record as a PRINT line.
pub(crate) fn print_line(r: &StoredRecord) -> String {
    format!(
        "rowtime: {}, key: {}, value: {}, partition: {}",
        format_rowtime(r.record.timestamp),
        render(r.record.key.as_deref(), true),
        render(r.record.value.as_deref(), false),
        r.partition
    )
}

impl Engine {
    /// Streams a topic's records as PRINT lines: a key-format and a
    /// value-format line before the first record, then one line per
    /// `interval`-th record, until `limit` records are printed.
    pub fn print(
        self: &Arc<Self>,
        topic: &str,
        from_beginning: bool,
        interval: u64,
        limit: Option<u64>,
    ) -> Result<PushStream> {
        let partitions = self.log().partitions(topic)?;
        let mut offsets = if from_beginning {
            vec![0; partitions as usize]
        } else {
            self.log().end_offsets(topic)?
        };
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "PRINT",
            DataType::Utf8,
            false,
        )]));
        let (tx, rx) = mpsc::channel(1024);
        let engine = Arc::clone(self);
        let topic = topic.to_string();
        tokio::spawn(async move {
            let line = |s: String| Ok(vec![ScalarValue::Utf8(Some(s))]);
            let mut appended = engine.subscribe_appended();
            let (mut seen, mut printed, mut header) = (0u64, 0u64, false);
            if limit == Some(0) {
                return;
            }
            loop {
                appended.borrow_and_update();
                let mut records = Vec::new();
                for p in 0..partitions {
                    match engine.log().read(&topic, p, offsets[p as usize], 1000) {
                        Ok(r) => records.extend(r),
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
                if records.is_empty() {
                    tokio::select! {
                        r = appended.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                    }
                    continue;
                }
                for r in records {
                    offsets[r.partition as usize] = r.offset + 1;
                    if !header {
                        header = true;
                        let k = guess(r.record.key.as_deref(), true);
                        let v = guess(r.record.value.as_deref(), false);
                        for l in [format!("Key format: {k}"), format!("Value format: {v}")] {
                            if tx.send(line(l)).await.is_err() {
                                return;
                            }
                        }
                    }
                    seen += 1;
                    if (seen - 1) % interval.max(1) != 0 {
                        continue;
                    }
                    if tx.send(line(print_line(&r))).await.is_err() {
                        return;
                    }
                    printed += 1;
                    if limit.is_some_and(|l| printed >= l) {
                        return;
                    }
                }
            }
        });
        Ok(PushStream { schema, rows: rx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_storage::Record;

    #[test]
    fn lines_look_like_ksqldb() {
        assert_eq!(format_rowtime(0), "1970/01/01 00:00:00.000 Z");
        assert_eq!(
            format_rowtime(1_589_290_132_123),
            "2020/05/12 13:28:52.123 Z"
        );
        assert_eq!(format_rowtime(-1), "1969/12/31 23:59:59.999 Z");
        let r = StoredRecord {
            partition: 1,
            offset: 0,
            record: Record {
                timestamp: 0,
                key: Some(7i32.to_be_bytes().to_vec()),
                value: Some(br#"{"A":1}"#.to_vec()),
                headers: vec![],
            },
        };
        assert_eq!(
            print_line(&r),
            r#"rowtime: 1970/01/01 00:00:00.000 Z, key: 7, value: {"A":1}, partition: 1"#
        );
        assert_eq!(guess(Some(br#"{"A":1}"#), false), "JSON or KAFKA_STRING");
        assert_eq!(
            guess(Some(&[0, 0, 0, 7]), true),
            "KAFKA_INT or KAFKA_STRING"
        );
        assert_eq!(render(None, false), "<null>");
    }
}
