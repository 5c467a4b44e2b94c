//! One segment file of a partition: framed batches in offset order, with a
//! sparse in-memory index (see [`super::index`] for its files).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::index::{IndexEntry, IndexFiles};
use super::record::{decode_payload, frame_header, Record, FRAME_HEADER, MAX_PAYLOAD};
use super::StoredRecord;
use crate::error::{io_err, Result, StorageError};
use crate::vfs::{VFile, Vfs};

/// What scanning a segment found past its last valid batch.
#[derive(Debug)]
pub(crate) struct Damage {
    pub position: u64,
    pub bytes: u64,
    pub reason: String,
}

/// The mutable part of a segment: only the active segment grows.
#[derive(Debug, Clone)]
struct SegState {
    /// Bytes of valid batches.
    len: u64,
    /// The offset after the segment's last batch (or its end before
    /// compaction removed records from the end).
    end_offset: u64,
    /// Largest record timestamp, `i64::MIN` if empty.
    max_ts: i64,
    entries: Vec<IndexEntry>,
    bytes_since_entry: u64,
}

impl SegState {
    fn empty(base_offset: u64) -> SegState {
        SegState {
            len: 0,
            end_offset: base_offset,
            max_ts: i64::MIN,
            entries: Vec::new(),
            bytes_since_entry: 0,
        }
    }
}

pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    file: Arc<dyn VFile>,
    state: RwLock<SegState>,
    /// Wall-clock milliseconds when this segment was created or opened
    /// (rolling by age counts from here).
    pub opened_ms: i64,
}

pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// Paths of a segment's offset index and time index.
pub(crate) fn index_paths(segment: &Path) -> (PathBuf, PathBuf) {
    (
        segment.with_extension("index"),
        segment.with_extension("timeindex"),
    )
}

/// A batch its writer tagged (see `LogStore::append_tagged`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedBatch {
    /// Offset of its first record.
    pub base_offset: u64,
    /// How many records it holds.
    pub count: u64,
    /// The writer's tag.
    pub tag: Vec<u8>,
}

/// One batch found while scanning.
pub(crate) struct ScannedBatch {
    pub pos: u64,
    pub len: u64,
    pub base_offset: u64,
    pub records: Vec<Record>,
    pub tag: Option<Vec<u8>>,
}

/// What a read may still return: records, and bytes of keys and values.
#[derive(Debug, Clone, Copy)]
pub struct ReadBudget {
    /// Records.
    pub records: usize,
    /// Bytes of keys and values.
    pub bytes: usize,
}

impl ReadBudget {
    /// No limit.
    pub fn unlimited() -> ReadBudget {
        ReadBudget {
            records: usize::MAX,
            bytes: usize::MAX,
        }
    }

    /// Whether nothing more may be read.
    pub fn spent(&self) -> bool {
        self.records == 0 || self.bytes == 0
    }
}

impl Segment {
    pub fn create(vfs: &dyn Vfs, dir: &Path, base_offset: u64, now_ms: i64) -> Result<Segment> {
        let path = dir.join(segment_file_name(base_offset));
        let file = vfs.open(&path, true).map_err(io_err("create", &path))?;
        file.sync_data().map_err(io_err("fsync", &path))?;
        vfs.sync_dir(dir).map_err(io_err("fsync", dir))?;
        Ok(Segment {
            base_offset,
            path,
            file,
            state: RwLock::new(SegState::empty(base_offset)),
            opened_ms: now_ms,
        })
    }

    /// Opens a closed segment from its index files, if they are present,
    /// intact and describe the file as it is. `None` means: scan it.
    pub fn open_indexed(
        vfs: &dyn Vfs,
        path: PathBuf,
        base_offset: u64,
        now_ms: i64,
    ) -> Result<Option<Segment>> {
        let (ip, tp) = index_paths(&path);
        let (Ok(off), Ok(time)) = (vfs.read(&ip), vfs.read(&tp)) else {
            return Ok(None);
        };
        let Some(idx) = IndexFiles::decode(&off, &time) else {
            return Ok(None);
        };
        let file = vfs.open(&path, false).map_err(io_err("open", &path))?;
        let len = file.len().map_err(io_err("stat", &path))?;
        let plausible = idx.segment_len == len
            && idx.end_offset >= base_offset
            && idx.entries.first().is_none_or(|e| e.pos == 0);
        if !plausible {
            return Ok(None);
        }
        Ok(Some(Segment {
            base_offset,
            path,
            file,
            state: RwLock::new(SegState {
                len,
                end_offset: idx.end_offset,
                max_ts: idx.max_ts,
                entries: idx.entries,
                bytes_since_entry: 0,
            }),
            opened_ms: now_ms,
        }))
    }

    /// Opens and scans a segment, building its index. Damage after the last
    /// valid batch is returned to the caller, who decides whether it is a
    /// torn tail (active segment: cut back) or corruption (an error).
    /// Batches must have increasing base offsets at or after `base_offset`
    /// (compaction leaves gaps).
    pub fn open_scan(
        vfs: &dyn Vfs,
        path: PathBuf,
        base_offset: u64,
        index_interval: u64,
        now_ms: i64,
    ) -> Result<(Segment, Option<Damage>)> {
        let file = vfs.open(&path, false).map_err(io_err("open", &path))?;
        let seg = Segment {
            base_offset,
            path,
            file,
            state: RwLock::new(SegState::empty(base_offset)),
            opened_ms: now_ms,
        };
        let damage = seg.scan(0, |b| {
            let max_ts = b.records.iter().map(|r| r.timestamp).max();
            seg.note_batch(
                b.base_offset,
                b.records.len() as u32,
                max_ts.unwrap_or(i64::MIN),
                b.len,
                index_interval,
            );
            true
        })?;
        Ok((seg, damage))
    }

    /// Scans valid batches from byte `from`, calling `f` for each until it
    /// returns false. Returns the damage that stopped the scan, if any.
    pub fn scan(
        &self,
        from: u64,
        mut f: impl FnMut(ScannedBatch) -> bool,
    ) -> Result<Option<Damage>> {
        let file_len = self.file.len().map_err(io_err("stat", &self.path))?;
        let mut pos = from;
        let mut expected = self.base_offset;
        let mut buf = Vec::new();
        let mut buf_start = pos;
        while pos < file_len {
            // Keep at least a frame header buffered; refill at `pos`.
            let have = (buf_start + buf.len() as u64).saturating_sub(pos);
            if pos < buf_start || have < FRAME_HEADER as u64 {
                buf = self.read_chunk(pos, file_len, FRAME_HEADER as u64)?;
                buf_start = pos;
            }
            let at = (pos - buf_start) as usize;
            if buf.len() - at < FRAME_HEADER {
                return Ok(Some(Damage {
                    position: pos,
                    bytes: file_len - pos,
                    reason: format!(
                        "{} trailing bytes, shorter than a frame header",
                        file_len - pos
                    ),
                }));
            }
            let mut hdr = [0u8; FRAME_HEADER];
            hdr.copy_from_slice(&buf[at..at + FRAME_HEADER]);
            let (len, crc) = frame_header(&hdr);
            let frame_len = (len + FRAME_HEADER) as u64;
            if !(12..=MAX_PAYLOAD).contains(&len) || pos + frame_len > file_len {
                return Ok(Some(Damage {
                    position: pos,
                    bytes: file_len - pos,
                    reason: format!(
                        "frame length {len} does not fit the {} bytes left",
                        file_len - pos
                    ),
                }));
            }
            if buf.len() - at < frame_len as usize {
                buf = self.read_chunk(pos, file_len, frame_len)?;
                buf_start = pos;
            }
            let at = (pos - buf_start) as usize;
            let payload = &buf[at + FRAME_HEADER..at + frame_len as usize];
            let damage = |reason: String| Damage {
                position: pos,
                bytes: file_len - pos,
                reason,
            };
            if crc32c::crc32c(payload) != crc {
                return Ok(Some(damage("checksum mismatch".into())));
            }
            let super::record::Batch {
                base_offset: base,
                records,
                tag,
            } = match decode_payload(payload) {
                Ok(d) => d,
                Err(reason) => return Ok(Some(damage(reason))),
            };
            if base < expected {
                return Ok(Some(damage(format!(
                    "batch has base offset {base}, expected at least {expected}"
                ))));
            }
            let Some(end) = base.checked_add(records.len() as u64) else {
                return Ok(Some(damage(format!("batch base offset {base} overflows"))));
            };
            expected = end;
            let go_on = f(ScannedBatch {
                pos,
                len: frame_len,
                base_offset: base,
                records,
                tag,
            });
            pos += frame_len;
            if !go_on {
                break;
            }
        }
        Ok(None)
    }

    /// Reads `[pos, pos + max(want, 1 MiB))`, clipped to `file_len`.
    fn read_chunk(&self, pos: u64, file_len: u64, want: u64) -> Result<Vec<u8>> {
        let n = want.max(1 << 20).min(file_len - pos) as usize;
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(io_err("read", &self.path))?;
        Ok(buf)
    }

    fn note_batch(&self, base: u64, count: u32, max_ts: i64, frame_len: u64, interval: u64) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.entries.is_empty() || s.bytes_since_entry >= interval {
            let entry = IndexEntry {
                offset: base,
                pos: s.len,
                max_ts_before: s.max_ts,
            };
            s.entries.push(entry);
            s.bytes_since_entry = 0;
        }
        s.len += frame_len;
        s.bytes_since_entry += frame_len;
        s.end_offset = base + u64::from(count);
        s.max_ts = s.max_ts.max(max_ts);
    }

    /// Whether a valid batch (correct CRC, a base offset at or after
    /// `min_offset`) starts anywhere after byte `from`. A torn write only
    /// damages the last batch, so damage followed by a valid batch is
    /// corruption, not a torn tail.
    pub fn valid_batch_after(&self, from: u64, min_offset: u64) -> Result<bool> {
        let len = self.file.len().map_err(io_err("stat", &self.path))?;
        let mut buf = vec![0u8; len.saturating_sub(from) as usize];
        self.file
            .read_exact_at(&mut buf, from)
            .map_err(io_err("read", &self.path))?;
        for start in 1..buf.len() {
            let rest = &buf[start..];
            if rest.len() < FRAME_HEADER + 12 {
                break;
            }
            let mut hdr = [0u8; FRAME_HEADER];
            hdr.copy_from_slice(&rest[..FRAME_HEADER]);
            let (payload_len, crc) = frame_header(&hdr);
            if payload_len < 12 || payload_len > rest.len() - FRAME_HEADER {
                continue;
            }
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + payload_len];
            let mut base = [0u8; 8];
            base.copy_from_slice(&payload[..8]);
            // Cheap filters first: garbage rarely has a plausible base offset.
            let base = u64::from_le_bytes(base);
            if base < min_offset || base - min_offset > u64::from(u32::MAX) {
                continue;
            }
            if crc32c::crc32c(payload) == crc && decode_payload(payload).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Cuts the file back to its last valid batch and makes that durable.
    pub fn truncate_to_valid(&self) -> Result<()> {
        let len = self.len();
        self.file
            .set_len(len)
            .map_err(io_err("truncate", &self.path))?;
        self.file.sync_data().map_err(io_err("fsync", &self.path))
    }

    pub fn len(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).len
    }

    pub fn end_offset(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .end_offset
    }

    /// Keeps the end offset a segment had before compaction emptied its end.
    pub fn set_end_offset(&self, end: u64) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.end_offset = s.end_offset.max(end);
    }

    pub fn max_ts(&self) -> i64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).max_ts
    }

    /// Appends one framed batch and indexes it. The caller decides about
    /// fsync. On error the segment's bookkeeping is unchanged (the file may
    /// hold a partial batch past `len`, which recovery cuts).
    pub fn append(
        &self,
        base_offset: u64,
        count: u32,
        max_ts: i64,
        framed: &[u8],
        index_interval: u64,
    ) -> Result<()> {
        self.file
            .append(framed)
            .map_err(io_err("write", &self.path))?;
        self.note_batch(
            base_offset,
            count,
            max_ts,
            framed.len() as u64,
            index_interval,
        );
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_err("fsync", &self.path))
    }

    /// Writes the index files (synced) for the segment as it is now.
    pub fn write_index(&self, vfs: &dyn Vfs) -> Result<()> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (off, time) = IndexFiles {
            segment_len: s.len,
            end_offset: s.end_offset,
            max_ts: s.max_ts,
            entries: s.entries,
        }
        .encode();
        let (ip, tp) = index_paths(&self.path);
        vfs.write_synced(&ip, &off).map_err(io_err("write", &ip))?;
        vfs.write_synced(&tp, &time).map_err(io_err("write", &tp))?;
        Ok(())
    }

    /// Byte position to start reading at for offset `from`.
    fn position_for(&self, from: u64) -> u64 {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let i = s.entries.partition_point(|e| e.offset <= from);
        i.checked_sub(1).map_or(0, |i| s.entries[i].pos)
    }

    /// Appends to `out` the records at offsets in `[from, visible_end)`
    /// until `out` holds `max`. Only bytes below `len_limit` are read.
    pub fn read_into(
        &self,
        partition: u32,
        from: u64,
        visible_end: u64,
        len_limit: u64,
        budget: &mut ReadBudget,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        let start = self.position_for(from);
        self.scan_until(start, len_limit, |b| {
            let end = b.base_offset + b.records.len() as u64;
            if end <= from {
                return true;
            }
            for (i, record) in b.records.into_iter().enumerate() {
                let offset = b.base_offset + i as u64;
                if offset >= visible_end {
                    return false;
                }
                if offset < from {
                    continue;
                }
                let size = record.key.as_ref().map_or(0, Vec::len)
                    + record.value.as_ref().map_or(0, Vec::len);
                out.push(StoredRecord {
                    partition,
                    offset,
                    record,
                });
                budget.records = budget.records.saturating_sub(1);
                budget.bytes = budget.bytes.saturating_sub(size);
                if budget.spent() {
                    return false;
                }
            }
            true
        })
    }

    /// Appends to `out` the tagged batches that end after `from` and start
    /// below `visible_end`. Only bytes below `len_limit` are read.
    pub fn tags_into(
        &self,
        from: u64,
        visible_end: u64,
        len_limit: u64,
        out: &mut Vec<TaggedBatch>,
    ) -> Result<()> {
        let start = self.position_for(from);
        self.scan_until(start, len_limit, |b| {
            if b.base_offset >= visible_end {
                return false;
            }
            let count = b.records.len() as u64;
            if let (Some(tag), true) = (b.tag, b.base_offset + count > from) {
                out.push(TaggedBatch {
                    base_offset: b.base_offset,
                    count,
                    tag,
                });
            }
            true
        })
    }

    /// The first offset whose record has a timestamp at or after `ts`.
    pub fn offset_for_time(&self, ts: i64, len_limit: u64) -> Result<Option<u64>> {
        let start = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.max_ts < ts {
                return Ok(None);
            }
            let i = s.entries.partition_point(|e| e.max_ts_before < ts);
            i.checked_sub(1).map_or(0, |i| s.entries[i].pos)
        };
        let mut found = None;
        self.scan_until(start, len_limit, |b| {
            if let Some(i) = b.records.iter().position(|r| r.timestamp >= ts) {
                found = Some(b.base_offset + i as u64);
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Like [`Segment::scan`] over `[from, len_limit)`, but damage there is
    /// corruption: those bytes were acknowledged.
    fn scan_until(
        &self,
        from: u64,
        len_limit: u64,
        mut f: impl FnMut(ScannedBatch) -> bool,
    ) -> Result<()> {
        let damage = self.scan(from, |b| b.pos < len_limit && f(b))?;
        match damage {
            Some(d) if d.position < len_limit => Err(StorageError::Corrupt {
                path: self.path.clone(),
                position: d.position,
                reason: d.reason,
            }),
            _ => Ok(()),
        }
    }
}
