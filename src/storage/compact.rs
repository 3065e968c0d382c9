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
//! compressed batches (whose records are not decompressed here yet), are kept.
//!
//! Transactions, by Kafka's cleaner's rules: a pass cleans only segments below the last stable
//! offset, so every transaction it meets is decided. An aborted transaction's batches (known
//! from the aborted-transaction index) are dropped whole and supersede nothing; a committed
//! transaction's records are compacted as any others. A marker stays while any batch of its
//! transaction is in the log (as the pass sees it); once none is, it is stamped with a delete
//! horizon of `delete.retention.ms` (KIP-534), and a later pass past the horizon drops it. An
//! ABORT marker's entry in the aborted-transaction index goes with it (recovery's scan of the
//! rewritten segment drops entries whose marker is gone).
//!
//! Crash safety: the cleaned copy is written to `<base>.log.cleaned`, fdatasync'd, then renamed
//! over the segment (atomic) and the directory synced; the segment's index files are removed
//! first, so a crash at any point leaves either the old segment or the new one, with an index
//! rebuilt on open. Stray `.cleaned` files are removed on open.

use std::collections::{HashMap, HashSet};
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

/// An aborted transaction (from the aborted-transaction index) whose batches may lie in the
/// segments a pass cleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// What becomes of a marker whose transaction has no batch left in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerFate {
    /// Rewritten with this delete horizon (it goes in a pass after it).
    Stamp(i64),
    /// Its delete horizon has passed: dropped.
    Drop,
}

/// What a pass decides from reading the segments it cleans, in offset order (Kafka's offset map
/// and `CleanedTransactionMetadata`).
#[derive(Debug, Default)]
pub struct Plan {
    /// The newest offset of each key among the records that supersede: plain ones and committed
    /// transactions' (not aborted transactions', not markers).
    pub latest: HashMap<Bytes, i64>,
    /// Base offsets of aborted transactions' batches: dropped whole.
    pub aborted_batches: HashSet<i64>,
    /// The markers (by offset) to stamp or drop; any other marker stays as it is.
    pub markers: HashMap<i64, MarkerFate>,
    /// The earliest delete horizon of a marker left in the log (stamped now or before), when the
    /// next pass is due even if no segment closes meanwhile.
    pub next_horizon: Option<i64>,
}

/// Reads `segments` (files and sizes, in offset order; every transaction in them decided) and
/// decides the pass. `aborted`: the aborted transactions that may have batches there, by first
/// offset.
pub async fn plan(segments: &[(SegmentFile, u64)], aborted: &[Aborted], now: i64, delete_retention_ms: i64) -> std::io::Result<Plan> {
    let mut plan = Plan::default();
    let mut pending = aborted.iter().peekable();
    // Producers in an aborted transaction, and whether a batch of it was read in this pass.
    let mut in_aborted: HashMap<i64, bool> = HashMap::new();
    // Producers whose committed transaction had a batch read in this pass.
    let mut in_committed: HashSet<i64> = HashSet::new();
    for (file, size) in segments {
        let mut reader = BatchReader::new(file, *size);
        while let Some(batches) = reader.next().await? {
            for (b, h) in &batches {
                while let Some(a) = pending.next_if(|a| a.first_offset <= h.last_offset()) {
                    in_aborted.insert(a.producer_id, false);
                }
                if h.is_control() {
                    let Some(marker) = batch::parse_marker(b, h) else { continue };
                    let unused = if marker.commit {
                        !in_committed.remove(&h.producer_id)
                    } else {
                        !in_aborted.remove(&h.producer_id).unwrap_or(false)
                    };
                    if !unused {
                        continue;
                    }
                    match h.delete_horizon() {
                        Some(horizon) if horizon <= now => {
                            plan.markers.insert(h.base_offset, MarkerFate::Drop);
                        }
                        Some(horizon) => plan.next_horizon = Some(plan.next_horizon.map_or(horizon, |n| n.min(horizon))),
                        None => {
                            let horizon = now.saturating_add(delete_retention_ms);
                            plan.markers.insert(h.base_offset, MarkerFate::Stamp(horizon));
                            plan.next_horizon = Some(plan.next_horizon.map_or(horizon, |n| n.min(horizon)));
                        }
                    }
                    continue;
                }
                if h.is_transactional() {
                    if let Some(seen) = in_aborted.get_mut(&h.producer_id) {
                        *seen = true;
                        plan.aborted_batches.insert(h.base_offset);
                        continue;
                    }
                    in_committed.insert(h.producer_id);
                }
                let latest = &mut plan.latest;
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
    }
    Ok(plan)
}

/// Rewrites one closed segment as `plan` says (without its superseded records, aborted
/// transactions' batches, markers past their delete horizon; markers stamped; expired
/// tombstones dropped), if that changes anything. Returns `None` when the segment is already
/// clean.
pub async fn clean_segment(
    dir: &Path,
    log_path: &Path,
    file: &SegmentFile,
    size: u64,
    plan: &Plan,
    tombstones_before_ms: i64,
) -> std::io::Result<Option<Cleaned>> {
    let keep = |r: &batch::RecordView<'_>, h: &BatchHeader| match r.key {
        None => true,
        Some(k) => {
            let newest = plan.latest.get(k).is_none_or(|o| *o <= r.offset);
            newest && !(r.tombstone && h.max_timestamp < tombstones_before_ms)
        }
    };
    // What becomes of one batch: `None` kept as it is, `Some(None)` dropped, `Some(Some(b))`
    // rewritten as `b`; and how many records it loses.
    let fate = |b: &Bytes, h: &BatchHeader| -> (Option<Option<Bytes>>, u64) {
        if h.is_control() {
            return match plan.markers.get(&h.base_offset) {
                Some(MarkerFate::Drop) => (Some(None), h.records_count.max(0) as u64),
                // A marker that cannot be rewritten (never one Spate wrote) stays as it is.
                Some(MarkerFate::Stamp(horizon)) => (batch::with_delete_horizon(b, h, *horizon).map(Some), 0),
                None => (None, 0),
            };
        }
        if plan.aborted_batches.contains(&h.base_offset) {
            return (Some(None), h.records_count.max(0) as u64);
        }
        let mut dropped = 0u64;
        let cleaned = batch::retain(b, h, |r| {
            let k = keep(r, h);
            dropped += u64::from(!k);
            k
        });
        (cleaned.filter(|_| dropped > 0), dropped)
    };
    // First pass: is there anything to change? (Cheap compared to a rewrite, and most passes
    // over old segments find nothing new.)
    let mut changes = false;
    let mut reader = BatchReader::new(file, size);
    while let Some(chunk) = reader.next().await? {
        for (b, h) in &chunk {
            if h.is_control() {
                changes |= plan.markers.contains_key(&h.base_offset);
            } else if plan.aborted_batches.contains(&h.base_offset) {
                changes = true;
            } else {
                let _ = batch::visit(b, h, |r, _| changes |= !keep(r, h));
            }
        }
        if changes {
            break;
        }
    }
    if !changes {
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
            let (cleaned, dropped) = fate(b, h);
            records_dropped += dropped;
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
