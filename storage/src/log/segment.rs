//! One segment file of a partition: framed batches, appended in order.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{decode_payload, frame_header, Record, FRAME_HEADER, MAX_PAYLOAD};
use crate::error::{io_err, Result, StorageError};

/// Where a batch sits in its segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPos {
    pub base_offset: u64,
    pub count: u32,
    pub pos: u64,
    pub len: u32,
}

/// What scanning a segment found past its last valid batch.
#[derive(Debug)]
pub(crate) struct Damage {
    pub position: u64,
    pub bytes: u64,
    pub reason: String,
}

pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    file: File,
    pub len: u64,
    /// Every batch of the segment, in offset order (issue #4 makes this a
    /// sparse on-disk index).
    pub batches: Vec<BatchPos>,
}

pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

impl Segment {
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment> {
        let path = dir.join(segment_file_name(base_offset));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        super::sync_dir(dir)?;
        Ok(Segment {
            base_offset,
            path,
            file,
            len: 0,
            batches: Vec::new(),
        })
    }

    /// Opens and scans a segment. Damage after the last valid batch is
    /// returned to the caller, who decides whether it is a torn tail (active
    /// segment: cut back) or corruption (older segment: an error).
    pub fn open(path: PathBuf, base_offset: u64) -> Result<(Segment, Option<Damage>)> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let file_len = file.metadata().map_err(io_err("stat", &path))?.len();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut batches = Vec::new();
        let mut pos = 0u64;
        let mut expected = base_offset;
        let mut damage = None;
        while pos < file_len {
            match read_frame(&mut reader, file_len - pos) {
                Ok((base, count, frame_len)) if base == expected => {
                    batches.push(BatchPos {
                        base_offset: base,
                        count,
                        pos,
                        len: frame_len as u32,
                    });
                    pos += frame_len as u64;
                    expected = base + u64::from(count);
                }
                Ok((base, _, _)) => {
                    damage = Some(Damage {
                        position: pos,
                        bytes: file_len - pos,
                        reason: format!("batch has base offset {base}, expected {expected}"),
                    });
                    break;
                }
                Err(reason) => {
                    damage = Some(Damage {
                        position: pos,
                        bytes: file_len - pos,
                        reason,
                    });
                    break;
                }
            }
        }
        drop(reader);
        Ok((
            Segment {
                base_offset,
                path,
                file,
                len: pos,
                batches,
            },
            damage,
        ))
    }

    /// Whether a valid batch (correct CRC, a base offset at or after
    /// `min_offset`) starts anywhere after byte `from`. A torn write only
    /// damages the last batch, so damage followed by a valid batch is
    /// corruption, not a torn tail.
    pub fn valid_batch_after(&self, from: u64, min_offset: u64) -> Result<bool> {
        let len = self
            .file
            .metadata()
            .map_err(io_err("stat", &self.path))?
            .len();
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
    pub fn truncate_to_valid(&mut self) -> Result<()> {
        self.file
            .set_len(self.len)
            .map_err(io_err("truncate", &self.path))?;
        self.file.sync_all().map_err(io_err("fsync", &self.path))
    }

    pub fn next_offset(&self) -> u64 {
        self.batches
            .last()
            .map_or(self.base_offset, |b| b.base_offset + u64::from(b.count))
    }

    /// Appends one framed batch. The caller decides about fsync.
    pub fn append(&mut self, base_offset: u64, count: u32, framed: &[u8]) -> Result<()> {
        self.file
            .write_all(framed)
            .map_err(io_err("write", &self.path))?;
        self.batches.push(BatchPos {
            base_offset,
            count,
            pos: self.len,
            len: framed.len() as u32,
        });
        self.len += framed.len() as u64;
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_err("fsync", &self.path))
    }

    /// Reads and decodes the batch at `at`.
    pub fn read_batch(&self, at: &BatchPos) -> Result<Vec<Record>> {
        let mut buf = vec![0u8; at.len as usize];
        self.file
            .read_exact_at(&mut buf, at.pos)
            .map_err(io_err("read", &self.path))?;
        let corrupt = |reason: String| StorageError::Corrupt {
            path: self.path.clone(),
            position: at.pos,
            reason,
        };
        let mut hdr = [0u8; FRAME_HEADER];
        hdr.copy_from_slice(&buf[..FRAME_HEADER]);
        let (_, crc) = frame_header(&hdr);
        let payload = &buf[FRAME_HEADER..];
        if crc32c::crc32c(payload) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        let (_, records) = decode_payload(payload).map_err(corrupt)?;
        Ok(records)
    }
}

/// Reads one frame; returns (base offset, record count, frame length).
fn read_frame(reader: &mut impl Read, remaining: u64) -> Result<(u64, u32, usize), String> {
    if remaining < FRAME_HEADER as u64 {
        return Err(format!(
            "{remaining} trailing bytes, shorter than a frame header"
        ));
    }
    let mut hdr = [0u8; FRAME_HEADER];
    reader.read_exact(&mut hdr).map_err(|e| e.to_string())?;
    let (len, crc) = frame_header(&hdr);
    if !(12..=MAX_PAYLOAD).contains(&len) || (len + FRAME_HEADER) as u64 > remaining {
        return Err(format!(
            "frame length {len} does not fit the {remaining} bytes left"
        ));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(|e| e.to_string())?;
    if crc32c::crc32c(&payload) != crc {
        return Err("checksum mismatch".into());
    }
    let (base, records) = decode_payload(&payload)?;
    Ok((base, records.len() as u32, len + FRAME_HEADER))
}
