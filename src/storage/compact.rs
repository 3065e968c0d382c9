//! Log compaction for `cleanup.policy=compact` topics (`__consumer_offsets` among them): keep the
//! latest record of each key, drop the older ones, and drop tombstones once they are older than
//! `delete.retention.ms`.
//!
//! Only closed segments are read and rewritten. The active one is left alone: it may hold
//! records that are not yet fdatasync'd, and dropping a durable record because of a newer one
//! that a power loss then takes would lose the key's value (found by the storage simulation).
//! A cleaned batch keeps its base offset, last offset delta and timestamps, so every kept
//! record keeps its offset; consumers see gaps in the offsets, as with Kafka, and a segment may
//! now end before the next one begins (recovery and reads allow for that). A segment may end up
//! empty; its file stays, so the log start offset does not move. Records without a key, and
//! compressed batches (whose records are not decompressed here yet), are kept, and so are
//! transactional batches and markers (they neither supersede nor are superseded yet).
//!
//! Crash safety: the cleaned copy is written to `<base>.log.cleaned`, fdatasync'd, then renamed
//! over the segment (atomic) and the directory synced; the segment's index files are removed
//! first, so a crash at any point leaves either the old segment or the new one, with an index
//! rebuilt on open. Stray `.cleaned` files are removed on open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::config::limits::{DMA_ALIGNMENT_BYTES, SEGMENT_READ_MAX_BYTES};
use crate::io::file::SegmentFile;
use crate::io::fs;
use crate::protocol::batch::{self, BatchHeader};

/// Suffix of a cleaned copy being written.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// What one pass did to one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub records_dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Reads the whole batches of a segment's first `size` bytes, a bounded chunk at a time.
pub struct BatchReader<'a> {
    file: &'a SegmentFile,
    size: u64,
    pos: u64,
}

impl<'a> BatchReader<'a> {
    pub fn new(file: &'a SegmentFile, size: u64) -> BatchReader<'a> {
        BatchReader { file, size, pos: 0 }
    }

    /// The next chunk of whole batches (at least one), or `None` at the end. Bytes that are not
    /// a batch are an error (recovery has checked every segment before this runs).
    pub async fn next(&mut self) -> std::io::Result<Option<Vec<(Bytes, BatchHeader)>>> {
        let mut want = SEGMENT_READ_MAX_BYTES;
        while self.pos < self.size {
            let chunk = self.file.read(self.pos, ((self.size - self.pos) as usize).min(want)).await?;
            let mut at = 0;
            let mut out = Vec::new();
            while let Some(h) = batch::parse_header(&chunk[at..]) {
                let total = h.total_len();
                if h.batch_length < (batch::HEADER_LEN - batch::LOG_OVERHEAD) as i32 || at + total > chunk.len() {
                    break;
                }
                out.push((chunk.slice(at..at + total), h));
                at += total;
            }
            if at > 0 {
                self.pos += at as u64;
                return Ok(Some(out));
            }
            // Not even one batch fits: read exactly the first one if the file holds it.
            let need = batch::parse_header(&chunk)
                .map(|h| h.total_len())
                .filter(|n| *n > chunk.len() && self.pos + *n as u64 <= self.size);
            match need {
                Some(n) => want = n,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: no record batch at byte {}", self.file.path().display(), self.pos),
                    ))
                }
            }
        }
        Ok(None)
    }
}

/// Adds the offset of every keyed record in `file` to `latest` (later offsets win).
pub async fn note_latest(file: &SegmentFile, size: u64, latest: &mut HashMap<Bytes, i64>) -> std::io::Result<()> {
    let mut reader = BatchReader::new(file, size);
    while let Some(batches) = reader.next().await? {
        // Transactional records and markers are neither superseding nor superseded (see
        // `clean_segment`).
        for (b, h) in batches.iter().filter(|(_, h)| !h.is_transactional() && !h.is_control()) {
            let _ = batch::visit(b, h, |r, _| {
                if let Some(k) = r.key {
                    match latest.get_mut(k) {
                        Some(o) => *o = (*o).max(r.offset),
                        None => {
                            latest.insert(Bytes::copy_from_slice(k), r.offset);
                        }
                    }
                }
            });
        }
    }
    Ok(())
}

/// Rewrites one closed segment without its superseded records (and expired tombstones), if that
/// drops anything. Returns `None` when the segment is already clean.
pub async fn clean_segment(
    dir: &Path,
    log_path: &Path,
    file: &SegmentFile,
    size: u64,
    latest: &HashMap<Bytes, i64>,
    tombstones_before_ms: i64,
) -> std::io::Result<Option<Cleaned>> {
    // First pass: is there anything to drop? (Cheap compared to a rewrite, and most passes over
    // old segments find nothing new.)
    let mut dropped = 0u64;
    // Transactional batches and their markers are kept whole: a committed transaction's record
    // may not supersede an older value until Kafka's rules for aborted data and markers are
    // built (issue 23), and a marker dropped early would leave a read_committed consumer
    // treating its producer's later records as aborted.
    let keep = |r: &batch::RecordView<'_>, h: &BatchHeader| match r.key {
        _ if h.is_transactional() || h.is_control() => true,
        None => true,
        Some(k) => {
            let newest = latest.get(k).is_none_or(|o| *o <= r.offset);
            newest && !(r.tombstone && h.max_timestamp < tombstones_before_ms)
        }
    };
    let mut reader = BatchReader::new(file, size);
    while let Some(chunk) = reader.next().await? {
        for (b, h) in &chunk {
            let _ = batch::visit(b, h, |r, _| dropped += u64::from(!keep(r, h)));
        }
    }
    if dropped == 0 {
        return Ok(None);
    }
    let tmp = PathBuf::from(format!("{}{CLEANED_SUFFIX}", log_path.display()));
    let out_file = SegmentFile::open(&tmp, true).await?;
    out_file.truncate(0).await?;
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0u64;
    let mut records_dropped = 0u64;
    let mut reader = BatchReader::new(file, size);
    while let Some(chunk) = reader.next().await? {
        for (b, h) in &chunk {
            let cleaned = batch::retain(b, h, |r| {
                let k = keep(r, h);
                records_dropped += u64::from(!k);
                k
            });
            match cleaned {
                None => out.extend_from_slice(b),
                Some(Some(c)) => out.extend_from_slice(&c),
                Some(None) => {}
            }
        }
        // Write whole blocks as they fill; the partial tail block waits for more.
        let full = out.len() / DMA_ALIGNMENT_BYTES * DMA_ALIGNMENT_BYTES;
        if full > 0 {
            out_file.write_aligned(written, &out[..full]).await?;
            out.drain(..full);
            written += full as u64;
        }
    }
    out_file.write_aligned(written, &out).await?;
    let new_size = written + out.len() as u64;
    out_file.truncate(new_size).await?;
    out_file.sync().await?;
    let base = log_path.file_stem().and_then(|s| s.to_str()).expect("segment files are named by base offset");
    for ext in ["index", "timeindex"] {
        fs::remove_file(dir.join(format!("{base}.{ext}"))).await?;
    }
    fs::rename(tmp, log_path.to_path_buf()).await?;
    fs::sync_dir(dir.to_path_buf()).await?;
    Ok(Some(Cleaned { records_dropped, bytes_before: size, bytes_after: new_size }))
}
