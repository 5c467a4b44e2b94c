//! Sparse index files of a closed segment.
//!
//! `<base>.index` maps offsets to byte positions and `<base>.timeindex`
//! maps timestamps to offsets, one entry per `index_interval` bytes of log
//! (the first batch always has one). Both are written once, when the segment
//! is closed (rolled, compacted or cleanly shut down), and carry the length
//! of the segment they describe and a CRC32C: an index that is missing,
//! damaged or describes another length is rebuilt by scanning the segment.
//! The active segment's index lives in memory and is rebuilt by the scan
//! that recovery does anyway.
//!
//! Layout (little-endian): `.index` is `"BRKIDX01"`, `segment_len: u64`,
//! `end_offset: u64`, `max_ts: i64`, `n: u32`, `n × (offset: u64, pos: u64)`,
//! `crc32c: u32` of everything before it. `.timeindex` is `"BRKTIX01"`,
//! `segment_len: u64`, `n: u32`, `n × (max_ts_before: i64, offset: u64)`,
//! `crc32c: u32`.

/// One sparse index entry: the batch starting at `offset` begins at byte
/// `pos`, and every record of the segment before it has a timestamp of at
/// most `max_ts_before` (`i64::MIN` if there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    pub max_ts_before: i64,
}

/// What the index files of a segment say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFiles {
    pub segment_len: u64,
    pub end_offset: u64,
    pub max_ts: i64,
    pub entries: Vec<IndexEntry>,
}

const OFFSET_MAGIC: &[u8; 8] = b"BRKIDX01";
const TIME_MAGIC: &[u8; 8] = b"BRKTIX01";

impl IndexFiles {
    /// Encodes the offset index and the time index.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut off = Vec::with_capacity(40 + self.entries.len() * 16);
        off.extend_from_slice(OFFSET_MAGIC);
        off.extend_from_slice(&self.segment_len.to_le_bytes());
        off.extend_from_slice(&self.end_offset.to_le_bytes());
        off.extend_from_slice(&self.max_ts.to_le_bytes());
        off.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            off.extend_from_slice(&e.offset.to_le_bytes());
            off.extend_from_slice(&e.pos.to_le_bytes());
        }
        off.extend_from_slice(&crc32c::crc32c(&off).to_le_bytes());
        let mut time = Vec::with_capacity(24 + self.entries.len() * 16);
        time.extend_from_slice(TIME_MAGIC);
        time.extend_from_slice(&self.segment_len.to_le_bytes());
        time.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            time.extend_from_slice(&e.max_ts_before.to_le_bytes());
            time.extend_from_slice(&e.offset.to_le_bytes());
        }
        time.extend_from_slice(&crc32c::crc32c(&time).to_le_bytes());
        (off, time)
    }

    /// Decodes both files; `None` if either is damaged or they disagree.
    pub fn decode(off: &[u8], time: &[u8]) -> Option<IndexFiles> {
        let off = checked(off, OFFSET_MAGIC)?;
        let time = checked(time, TIME_MAGIC)?;
        let mut o = Reader(off);
        let segment_len = o.u64()?;
        let end_offset = o.u64()?;
        let max_ts = o.u64()? as i64;
        let n = o.u32()? as usize;
        let mut t = Reader(time);
        if t.u64()? != segment_len || t.u32()? as usize != n {
            return None;
        }
        if o.0.len() != n * 16 || t.0.len() != n * 16 {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = o.u64()?;
            let pos = o.u64()?;
            let max_ts_before = t.u64()? as i64;
            if t.u64()? != offset {
                return None;
            }
            entries.push(IndexEntry {
                offset,
                pos,
                max_ts_before,
            });
        }
        let sorted = entries
            .windows(2)
            .all(|w| w[0].offset < w[1].offset && w[0].pos < w[1].pos);
        let in_bounds = entries
            .iter()
            .all(|e| e.pos < segment_len && e.offset < end_offset);
        (sorted && in_bounds).then_some(IndexFiles {
            segment_len,
            end_offset,
            max_ts,
            entries,
        })
    }
}

/// The body of a file whose magic and trailing CRC check out.
fn checked<'a>(bytes: &'a [u8], magic: &[u8; 8]) -> Option<&'a [u8]> {
    if bytes.len() < 12 || &bytes[..8] != magic {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    (crc32c::crc32c(body) == crc).then_some(&body[8..])
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some(u64::from_le_bytes(head.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_le_bytes(head.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_round_trip_and_reject_damage() {
        let idx = IndexFiles {
            segment_len: 9000,
            end_offset: 300,
            max_ts: 77,
            entries: vec![
                IndexEntry {
                    offset: 100,
                    pos: 0,
                    max_ts_before: i64::MIN,
                },
                IndexEntry {
                    offset: 200,
                    pos: 4100,
                    max_ts_before: 50,
                },
            ],
        };
        let (off, time) = idx.encode();
        assert_eq!(IndexFiles::decode(&off, &time), Some(idx));
        for i in 0..off.len() {
            let mut bad = off.clone();
            bad[i] ^= 0x10;
            assert_eq!(IndexFiles::decode(&bad, &time), None, "byte {i}");
        }
        assert_eq!(IndexFiles::decode(&off[..off.len() - 1], &time), None);
        assert_eq!(IndexFiles::decode(&off, &time[..10]), None);
    }
}
