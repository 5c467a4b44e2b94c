//! Record batch framing.
//!
//! A batch on disk is `[len: u32 LE][crc32c: u32 LE][payload: len bytes]`;
//! the CRC covers the payload. The payload is
//! `[base_offset: u64][count: u32]`, then, when the count's top bit
//! ([`TAGGED`]) is set, the batch's writer tag `[tag: bytes]`, followed by
//! `count` records, each
//! `[timestamp: i64][key: bytes?][value: bytes?][n_headers: u32]
//! ([name: bytes][value: bytes?])*`, where `bytes?` is an `i32` length
//! (`-1` for null) and the bytes. All integers are little-endian. Batches
//! written before tags existed never have the top bit set.

/// One record as appended by a producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Event time in milliseconds since the epoch.
    pub timestamp: i64,
    /// Key bytes; `None` is a null key.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A record read back from the log, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Partition the record is in.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// The record itself.
    pub record: Record,
}

/// Size of the frame header (length + CRC).
pub(crate) const FRAME_HEADER: usize = 8;
/// Largest payload we accept, to bound allocations from damaged bytes.
pub(crate) const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// The count's top bit: a writer tag follows it.
const TAGGED: u32 = 1 << 31;

/// A decoded batch payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    pub base_offset: u64,
    pub records: Vec<Record>,
    /// What the writer tagged the batch with (see `LogStore::append_tagged`).
    pub tag: Option<Vec<u8>>,
}

/// Encodes records as one framed batch starting at `base_offset`, with the
/// writer's tag if any. The count must stay below [`TAGGED`] (a frame's
/// size limit keeps it far below).
pub(crate) fn encode_batch(base_offset: u64, records: &[Record], tag: Option<&[u8]>) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64 + records.len() * 64);
    payload.extend_from_slice(&base_offset.to_le_bytes());
    let count = records.len() as u32;
    match tag {
        Some(tag) => {
            payload.extend_from_slice(&(count | TAGGED).to_le_bytes());
            put_opt_bytes(&mut payload, Some(tag));
        }
        None => payload.extend_from_slice(&count.to_le_bytes()),
    }
    for r in records {
        payload.extend_from_slice(&r.timestamp.to_le_bytes());
        put_opt_bytes(&mut payload, r.key.as_deref());
        put_opt_bytes(&mut payload, r.value.as_deref());
        payload.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for (name, value) in &r.headers {
            put_opt_bytes(&mut payload, Some(name.as_bytes()));
            put_opt_bytes(&mut payload, value.as_deref());
        }
    }
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn put_opt_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// Reads the frame header: payload length and expected CRC.
pub(crate) fn frame_header(bytes: &[u8; FRAME_HEADER]) -> (usize, u32) {
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (len, crc)
}

/// Decodes a payload whose CRC has been checked, or says what is
/// malformed.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Batch, String> {
    let mut cur = Cursor {
        buf: payload,
        pos: 0,
    };
    let base = cur.u64()?;
    let count = cur.u32()?;
    let tag = if count & TAGGED != 0 {
        Some(cur.opt_bytes()?.ok_or("null batch tag")?)
    } else {
        None
    };
    let count = (count & !TAGGED) as usize;
    // Each record takes at least 20 bytes; do not trust `count` beyond that.
    if count > payload.len() / 20 + 1 {
        return Err(format!("record count {count} exceeds batch size"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let timestamp = cur.u64()? as i64;
        let key = cur.opt_bytes()?;
        let value = cur.opt_bytes()?;
        let n_headers = cur.u32()? as usize;
        let mut headers = Vec::with_capacity(n_headers.min(1024));
        for _ in 0..n_headers {
            let name = cur.opt_bytes()?.ok_or("null header name")?;
            let name = String::from_utf8(name).map_err(|_| "header name is not UTF-8")?;
            headers.push((name, cur.opt_bytes()?));
        }
        records.push(Record {
            timestamp,
            key,
            value,
            headers,
        });
    }
    if cur.pos != payload.len() {
        return Err("trailing bytes after the last record".into());
    }
    Ok(Batch {
        base_offset: base,
        records,
        tag,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| "truncated record".to_string())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn opt_bytes(&mut self) -> Result<Option<Vec<u8>>, String> {
        let len = self.u32()? as i32;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize)?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let records = vec![
            Record {
                timestamp: 5,
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![],
            },
            Record {
                timestamp: -1,
                key: None,
                value: Some(b"{\"a\":1}".to_vec()),
                headers: vec![("h".into(), Some(vec![1, 2])), ("n".into(), None)],
            },
        ];
        for tag in [None, Some(&b""[..]), Some(&b"query 7, epoch 3"[..])] {
            let framed = encode_batch(42, &records, tag);
            let mut hdr = [0u8; FRAME_HEADER];
            hdr.copy_from_slice(&framed[..FRAME_HEADER]);
            let (len, crc) = frame_header(&hdr);
            let payload = &framed[FRAME_HEADER..];
            assert_eq!(len, payload.len());
            assert_eq!(crc, crc32c::crc32c(payload));
            assert_eq!(
                decode_payload(payload),
                Ok(Batch {
                    base_offset: 42,
                    records: records.clone(),
                    tag: tag.map(<[u8]>::to_vec),
                })
            );
        }
    }

    #[test]
    fn an_untagged_batch_reads_as_before_tags_existed() {
        // Bytes as the format without tags wrote them: base 9, one record.
        let mut payload = Vec::new();
        payload.extend_from_slice(&9u64.to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(&5i64.to_le_bytes());
        payload.extend_from_slice(&(-1i32).to_le_bytes());
        payload.extend_from_slice(&1i32.to_le_bytes());
        payload.push(b'v');
        payload.extend_from_slice(&0u32.to_le_bytes());
        let framed = encode_batch(
            9,
            &[Record {
                timestamp: 5,
                key: None,
                value: Some(b"v".to_vec()),
                headers: vec![],
            }],
            None,
        );
        assert_eq!(&framed[FRAME_HEADER..], &payload[..]);
        assert_eq!(decode_payload(&payload).unwrap().tag, None);
    }

    #[test]
    fn damaged_payload_is_an_error_not_a_panic() {
        let framed = encode_batch(
            0,
            &[Record {
                timestamp: 1,
                ..Default::default()
            }],
            Some(b"tag"),
        );
        let payload = &framed[FRAME_HEADER..];
        for cut in 0..payload.len() {
            assert!(decode_payload(&payload[..cut]).is_err());
        }
        let mut huge = payload.to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_payload(&huge).is_err());
    }
}
