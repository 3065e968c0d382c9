//! One partition's log: append with group-committed writes and fdatasync, reads for fetch,
//! offset lookups, segment rolls and crash recovery.
//!
//! Write path: an append assigns offsets and patches each batch in place, synchronously (no
//! await, so the core's single thread orders appends); the bytes are usually the produce request's
//! own (see `server::handlers::produce`). It queues them (by reference, the same bytes the batch
//! cache holds) in the active segment's `pending` batches, then waits for a writer. Only one O_DIRECT
//! write per partition is in flight; every append that arrives meanwhile rides on the next one
//! (up to `SEGMENT_WRITE_MAX_BYTES` of batches per write; the rest on the one after). A write
//! covers `tail` (the partial block already on disk, from the aligned `pending_pos`) and then the
//! pending batches it takes, copied once into the DMA buffer, so each write rewrites that block
//! grown. fdatasync is shared the same way: one in
//! flight, all waiters whose data it covers are released by it (group commit). Before a write
//! that would end past what the active segment's file has allocated, the file is grown
//! `segment_preallocate_bytes` ahead (fallocate), so ext4 takes the writes without handing them to
//! a kernel worker thread; closing the segment (a roll, a clean shutdown) trims the file to its
//! data, and recovery after a crash trims the zeros past the last batch as it always trimmed the
//! last block's padding.
//!
//! Offsets: `log_end` (LEO) is the next offset to assign; `write_end` is the end of what is
//! written to the segment file; `durable` is the end of what fdatasync has covered. The high
//! watermark (what consumers may read) is `write_end` for a partition with one replica; for a
//! replicated one it is also at most `replicated`, what every in-sync replica has (set by the
//! leader from its followers' fetches, by a follower from its leader's answers; see
//! `server::replication`).
//!
//! The code, by concern: this file holds the state and the accessors; `append` the write path,
//! `segments` rolls and closes, `read` reads and the read-ahead, `compaction` the compaction
//! pass, `retention` the log start offset (DeleteRecords, retention.ms/bytes) and deleting
//! segments, `recovery` opening a partition, `tests` the unit tests.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::compact;
use super::index::SegmentIndex;
use super::producers::{CompletedTxn, MarkerRefusal, ProducerStates, Verdict};
use super::txn_index::{self, AbortedTxn};
use crate::sync::{Notify, Turns};
use super::now_ms;
use crate::config::limits::{
    DMA_ALIGNMENT_BYTES, PARTITION_CACHE_MAX_BYTES, READ_AHEAD_CORE_MAX_BYTES, RECORDS_DECOMPRESSED_MAX_BYTES,
    SEGMENT_INLINE_WRITE_MAX_BYTES, SEGMENT_READ_MAX_BYTES, SEGMENT_WRITE_MAX_BYTES,
};
use crate::config::{TimestampType, TopicConfig};
use crate::io::file::{copy_from_parts, ReadChunk, SegmentFile};
use crate::io::fs;
use crate::protocol::batch::{self, BatchHeader, LOG_OVERHEAD};

/// Errors a log operation reports; the handlers map them to Kafka error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// OFFSET_OUT_OF_RANGE.
    OffsetOutOfRange { log_start: i64, log_end: i64 },
    /// KAFKA_STORAGE_ERROR: a write or fdatasync failed; the message says which file.
    Storage(String),
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: an idempotent batch skips sequence numbers.
    OutOfOrderSequence(String),
    /// INVALID_PRODUCER_EPOCH: an idempotent batch from an older producer epoch.
    InvalidProducerEpoch(String),
    /// INVALID_RECORD: an idempotent produce with more than one batch for the partition.
    InvalidRecord(String),
    /// FENCED_LEADER_EPOCH: a replicated append from an older leader than this log knows.
    FencedLeaderEpoch(String),
    /// TRANSACTION_COORDINATOR_FENCED: a marker from an older transaction coordinator than one
    /// that has written markers for its producer here.
    CoordinatorFenced(String),
    /// A producer's first transactional batch here was verified with its coordinator, and a
    /// marker was written before the batch could be (Kafka's verification guard): the
    /// verification may no longer hold. NOT_ENOUGH_REPLICAS, which producers retry.
    VerificationStale(String),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::OffsetOutOfRange { log_start, log_end } => {
                write!(f, "offset out of range [{log_start}, {log_end}]")
            }
            LogError::Storage(s) => write!(f, "storage error: {s}"),
            LogError::OutOfOrderSequence(s)
            | LogError::InvalidProducerEpoch(s)
            | LogError::InvalidRecord(s)
            | LogError::FencedLeaderEpoch(s)
            | LogError::CoordinatorFenced(s)
            | LogError::VerificationStale(s) => f.write_str(s),
        }
    }
}

/// What a successful append tells the producer.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: i64,
    /// The offset after the last record appended: acks=all waits for the high watermark to
    /// reach it on a replicated partition.
    pub end: i64,
    /// The broker's append time for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    pub log_start: i64,
}

/// What a read returns: whole batches starting at or before the asked offset, and the offsets.
#[derive(Debug, Clone)]
pub struct ReadInfo {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start: i64,
}

/// A snapshot of the partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
    pub durable: i64,
    /// The end of what is written to the segment files (a follower fetches up to here).
    pub written: i64,
}

struct Segment {
    base: i64,
    file: SegmentFile,
    /// Logical bytes appended (written or pending).
    size: u64,
    /// Bytes known to be in the file (written by a completed write or found on recovery).
    written: u64,
    /// How far the file is known to be allocated (preallocated, or found on recovery); a
    /// preallocation that failed sets it to `u64::MAX` so this segment does not try again.
    allocated: u64,
    /// Next offset after the last batch in this segment.
    next_offset: i64,
    index: SegmentIndex,
    /// Whether the index files on disk hold `index` (loaded at recovery, or written at a roll or
    /// a close). A clean close writes every index that is not.
    index_saved: bool,
    bytes_since_index: u64,
    max_ts: i64,
    created_ms: i64,
    /// The transactions aborted by markers in this segment (its `.txnindex`, see
    /// [`super::txn_index`]), written with its other index files.
    aborted: Vec<AbortedTxn>,
}

struct CachedBatch {
    base: i64,
    last: i64,
    bytes: Bytes,
}

struct State {
    segments: BTreeMap<i64, Segment>,
    /// The first offset a reader may ask for: the first segment's base, or past it after
    /// DeleteRecords or retention (see [`retention`]).
    log_start: i64,
    /// The log start in the `log-start-offset` file (or the first base, when there is none).
    log_start_saved: i64,
    /// A write of the log start offset file is in flight.
    saving_start: bool,
    log_end: i64,
    /// The end of what the segment files hold (written by a completed write).
    write_end: i64,
    /// A replicated partition's high watermark as replication allows it (None: one replica,
    /// nothing to wait for); what readers see is never past `write_end` either ([`State::hw`]).
    replicated: Option<i64>,
    durable: i64,
    /// The leader epochs and where each began (`epochs`); appends are stamped with the latest.
    epochs: epochs::LeaderEpochs,
    /// `epochs` holds an epoch its file does not have yet (its write failed, or is under way):
    /// the next `set_leader_epoch` writes the file even if it adds nothing.
    epochs_unsaved: bool,
    /// The active segment from `pending_pos` (aligned) on: `tail`, the partial block already
    /// written that the next write rewrites, then the `pending` batches not yet written (or being
    /// written: a write takes them out and puts back only what failed).
    tail: Vec<u8>,
    pending: Vec<Bytes>,
    pending_pos: u64,
    writing: bool,
    syncing: bool,
    rolling: bool,
    /// A compaction pass, or the deletion of segments below the log start, is running.
    compacting: bool,
    /// Set when fdatasync failed: the partition refuses writes until restart (as Kafka does).
    failure: Option<String>,
    /// Set by [`PartitionLog::close`]: appends not yet admitted are refused, rolls no longer start.
    closing: bool,
    /// Bumped when a failed write rolls back appended-but-unwritten batches.
    rollback_gen: u64,
    /// For each unwritten batch that raised the active segment's largest timestamp: its base
    /// offset and the timestamp it replaced, so a rollback can put it back.
    max_ts_undo: Vec<(i64, i64)>,
    unflushed_records: i64,
    last_sync_ms: i64,
    cache: VecDeque<CachedBatch>,
    cache_bytes: usize,
    read_ahead: ReadAhead,
    stats: LogStats,
    /// Compaction: the end of the segments the last pass cleaned (the closed ones below the last
    /// stable offset; a pass runs again only once that has moved, or a marker's delete horizon
    /// has come).
    cleaned_through: i64,
    /// The earliest delete horizon of a marker compaction stamped (or found stamped): a pass is
    /// due from then even if no segment closes.
    marker_horizon: Option<i64>,
    /// Markers appended per producer since the log opened (forgotten all at once past
    /// `MARKER_COUNTS_MAX` producers, counted in `marker_resets`): a transactional batch
    /// verified with its coordinator is appended only if no marker of its producer came in
    /// between (see `append_owned_verified`).
    marker_counts: HashMap<i64, u64>,
    marker_resets: u64,
    /// Idempotent producers' recent batches (see [`super::producers`]).
    producers: ProducerStates,
    /// Files of deleted segments kept for the next rolls (`<base>.free`, by the deleted
    /// segment's base, oldest first, with when each was kept); see [`retention`].
    recycled: VecDeque<(i64, i64)>,
}

/// A partition's footprint, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct DiskStats {
    pub segments: usize,
    pub bytes: u64,
    pub cache_bytes: u64,
}

/// Counters of the I/O a log has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub writes: u64,
    pub syncs: u64,
}

/// Producers whose markers a partition counts for verification guards before it forgets them all.
const MARKER_COUNTS_MAX: usize = 10_000;

impl State {
    fn marker_token(&self, producer_id: i64) -> (u64, u64) {
        (self.marker_resets, self.marker_counts.get(&producer_id).copied().unwrap_or(0))
    }

    fn count_marker(&mut self, producer_id: i64) {
        if self.marker_counts.len() >= MARKER_COUNTS_MAX && !self.marker_counts.contains_key(&producer_id) {
            self.marker_counts.clear();
            self.marker_resets += 1;
        }
        *self.marker_counts.entry(producer_id).or_default() += 1;
    }

    /// The high watermark: what consumers may read.
    fn hw(&self) -> i64 {
        match self.replicated {
            None => self.write_end,
            Some(r) => r.min(self.write_end),
        }
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest unstable
    /// transaction if lower, but never below the log start (a transaction whose first records
    /// DeleteRecords or retention removed still holds it there, as in Kafka).
    fn lso(&self) -> i64 {
        let hw = self.hw();
        self.producers.first_unstable_offset(hw).map_or(hw, |f| f.min(hw)).max(self.log_start)
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }
}

/// A partition's log. Owned by the core the shard table assigns the partition to (`!Send`).
pub struct PartitionLog {
    dir: PathBuf,
    config: RefCell<TopicConfig>,
    st: RefCell<State>,
    /// Woken whenever the high watermark moves (long-polling fetches wait on it). Shared by all
    /// partitions of a core, so a fetch over many partitions waits on one signal.
    data_arrived: Rc<Notify>,
    /// Most bytes of recent batches kept in memory (at least one batch is kept): the core's
    /// cache budget shared among its partitions (`Shard::install_image` sets it).
    cache_cap: Cell<usize>,
    /// Most batch bytes one segment write takes: `SEGMENT_WRITE_MAX_BYTES` (tests set less).
    write_max: Cell<usize>,
    /// How far ahead of a write the active segment's file is grown (`segment_preallocate_bytes`;
    /// 0: never). `Shard::install_image` sets it.
    preallocate_step: Cell<u64>,
    /// Woken whenever a write, sync or roll finishes.
    io_done: Notify,
    /// Appends are admitted strictly in arrival order: each takes a ticket before its first await
    /// and holds the turn from offset assignment's wait (a roll) to the end of the synchronous
    /// part; dropping it, even when the append is cancelled, passes the turn on.
    turns: Turns,
    /// Transactional batches' line before their append (see `transactional_ticket`).
    txn_turns: Turns,
}

/// Clears an in-flight flag (`writing`, `syncing`, `rolling`, `compacting`) if the future that
/// set it is dropped before it clears it itself, so a cancelled request cannot wedge the
/// partition.
struct FlagReset<'a> {
    log: &'a PartitionLog,
    flag: fn(&mut State) -> &mut bool,
    armed: bool,
}

impl Drop for FlagReset<'_> {
    fn drop(&mut self) {
        if self.armed {
            *(self.flag)(&mut self.log.st.borrow_mut()) = false;
            self.log.io_done.notify_all();
        }
    }
}

/// Puts the batches a write took out of `pending` back in front of it if the write's future is
/// dropped before it finished, so the next write still covers them.
struct PutBack<'a> {
    log: &'a PartitionLog,
    batches: Option<Vec<Bytes>>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        if let Some(mut batches) = self.batches.take() {
            let mut st = self.log.st.borrow_mut();
            batches.append(&mut st.pending);
            st.pending = batches;
        }
    }
}

fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn storage_err(what: &str, path: &Path, e: std::io::Error) -> LogError {
    LogError::Storage(format!("{what} {}: {e}", path.display()))
}

impl PartitionLog {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Caps the batch bytes of one segment write below `SEGMENT_WRITE_MAX_BYTES`, so tests can
    /// reach the split writes with small batches.
    #[cfg(test)]
    pub(crate) fn set_write_max(&self, bytes: usize) {
        self.write_max.set(bytes.min(SEGMENT_WRITE_MAX_BYTES));
    }

    /// Grows the active segment's file `bytes` ahead of the writes from the next write on (0:
    /// not at all); see [`SegmentFile::preallocate`].
    pub fn set_preallocate_step(&self, bytes: u64) {
        self.preallocate_step.set(bytes);
    }

    /// Caps the recent batches kept in memory at `bytes` (never below one batch); at most
    /// `PARTITION_CACHE_MAX_BYTES`. Takes effect from the next append.
    pub fn set_cache_cap(&self, bytes: usize) {
        self.cache_cap.set(bytes.min(PARTITION_CACHE_MAX_BYTES));
    }

    pub fn offsets(&self) -> Offsets {
        let st = self.st.borrow();
        Offsets {
            log_start: st.log_start,
            high_watermark: st.hw(),
            log_end: st.log_end,
            durable: st.durable,
            written: st.write_end,
        }
    }

    /// The first offset of the oldest transaction open in this partition: the last stable
    /// offset is at most this (see "Transactions' shape" in ARCHITECTURE.md).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let st = self.st.borrow();
        st.producers.first_unstable_offset(st.hw())
    }

    /// The last stable offset: the high watermark, or the first offset of the oldest open
    /// transaction if that is lower. `read_committed` consumers read up to it.
    pub fn last_stable_offset(&self) -> i64 {
        self.st.borrow().lso()
    }

    /// The aborted transactions (producer id, first offset) whose records may lie in
    /// `[from, upper)`: those aborted by a marker at or past `from` that began before `upper`,
    /// as Kafka's Fetch lists them for `read_committed` consumers.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<(i64, i64)> {
        let st = self.st.borrow();
        let first = st.segments.range(..=from).next_back().map_or(i64::MIN, |(&b, _)| b);
        st.segments
            .range(first..)
            .flat_map(|(_, s)| s.aborted.iter())
            .filter(|t| t.last_offset >= from && t.first_offset < upper)
            .map(|t| (t.producer_id, t.first_offset))
            .collect()
    }

    /// Whether producer `producer_id` has a transaction open in this partition at `epoch`
    /// (one left open at an older epoch is about to be closed by its marker, at a newer one).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.st.borrow().producers.in_transaction(producer_id, epoch)
    }

    /// A place in the line of transactional batches on their way to the append: the produce
    /// path holds its turn across its check with the coordinator, until the append has taken
    /// its own place, so one producer's batches stay in request order.
    pub fn transactional_ticket(&self) -> crate::sync::Ticket<'_> {
        self.txn_turns.ticket()
    }

    /// A verification guard's token for producer `producer_id`: it changes whenever a marker
    /// of the producer is appended.
    pub fn marker_token(&self, producer_id: i64) -> (u64, u64) {
        self.st.borrow().marker_token(producer_id)
    }

    /// The idempotent producers this partition remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<super::producers::ActiveProducer> {
        self.st.borrow().producers.active()
    }

    /// Segment files, their bytes, and bytes of recent batches kept in memory.
    pub fn disk_stats(&self) -> DiskStats {
        let st = self.st.borrow();
        DiskStats {
            segments: st.segments.len(),
            bytes: st.segments.values().map(|s| s.size).sum(),
            cache_bytes: st.cache_bytes as u64,
        }
    }

    pub fn stats(&self) -> LogStats {
        self.st.borrow().stats
    }

    pub fn leader_epoch(&self) -> i32 {
        self.st.borrow().epochs.latest()
    }

    /// Where leader epoch `asked` ended: (the epoch that answers, its end offset), or (-1, -1)
    /// for an epoch above the latest (see [`epochs::LeaderEpochs::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, asked: i32) -> (i32, i64) {
        let st = self.st.borrow();
        st.epochs.end_offset_for(asked, st.log_end)
    }

    /// The leader epoch the record at `offset` was written in.
    pub fn epoch_at(&self, offset: i64) -> i32 {
        self.st.borrow().epochs.epoch_at(offset)
    }

    /// This broker leads the partition at leader epoch `epoch` (from the cluster's metadata):
    /// a newer epoch starts at the log end and stamps every batch appended from now on, and is
    /// written to `leader-epoch-checkpoint` durably before this returns (the caller installs
    /// the image that makes this broker the leader only after that). An epoch not above the
    /// current one changes nothing, unless an earlier write of the file failed: then it is
    /// written again. (Recovery does not rebuild the cache from the batches' epochs, as Kafka's
    /// segment recovery does; a crash between a stamp and the file's write would leave the
    /// cache one epoch short, which only makes OffsetForLeaderEpoch answers coarser.)
    pub async fn set_leader_epoch(&self, epoch: i32) -> Result<(), LogError> {
        {
            let mut st = self.st.borrow_mut();
            let start = st.log_end;
            if st.epochs.assign(epoch, start) {
                st.epochs_unsaved = true;
            }
        }
        // A later epoch assigned while this write was under way is written by its own call.
        self.save_epochs().await
    }

    pub fn config(&self) -> TopicConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: TopicConfig) {
        *self.config.borrow_mut() = config;
    }

}

mod append;
mod compaction;
mod epochs;
mod read;
mod recovery;
mod replica;
mod retention;
mod segments;
#[cfg(test)]
mod tests;

pub(crate) use recovery::{index_entry_matches, SegmentScan};
use read::ReadAhead;
use recovery::{recover_segment, write_producer_snapshot};
use segments::new_segment;
use retention::{read_log_start, remove_segment_files, RECYCLED_FILES_MAX};
#[cfg(test)]
use retention::RECYCLED_KEEP_MS;
