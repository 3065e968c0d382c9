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
//! Offsets: `log_end` (LEO) is the next offset to assign; `high_watermark` is the end of what is
//! written to the segment file (what fetches may see; a single node has no followers to wait
//! for); `durable` is the end of what fdatasync has covered.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::compact;
use super::index::SegmentIndex;
use super::producers::{ProducerStates, Verdict};
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

/// Smallest read of a segment when serving a fetch.
const READ_MIN_BYTES: usize = 64 * 1024;

/// How much of a segment a read for `max_bytes` asks the disk for (and its read-ahead after it).
fn read_len(max_bytes: usize) -> usize {
    max_bytes.clamp(READ_MIN_BYTES, SEGMENT_READ_MAX_BYTES)
}

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
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::OffsetOutOfRange { log_start, log_end } => {
                write!(f, "offset out of range [{log_start}, {log_end}]")
            }
            LogError::Storage(s) => write!(f, "storage error: {s}"),
            LogError::OutOfOrderSequence(s) | LogError::InvalidProducerEpoch(s) | LogError::InvalidRecord(s) => f.write_str(s),
        }
    }
}

/// What a successful append tells the producer.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: i64,
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
}

struct CachedBatch {
    base: i64,
    last: i64,
    bytes: Bytes,
}

/// Segment bytes read ahead of the consumers reading a partition from disk in order, so their next
/// fetches find their bytes read (or on the way) instead of waiting for the device after each
/// request arrives. O_DIRECT bypasses the page cache and its read-ahead; this is both.
///
/// Each consumer reading in order has a [`Cursor`]. Ahead of it, [`READ_AHEAD_CHUNKS`] reads of
/// its read size are issued back to back, so the device is busy while the last fetch's answer
/// travels. The chunks are the partition's, not the cursor's: a consumer finds its bytes in
/// whichever chunk holds them, so consumers reading the same stretch of the log together
/// (consumer groups replaying a topic) read it from the device once. A chunk is kept while it
/// lies in some cursor's window (from the cursor to the end of the reads ahead of it) and dropped
/// once it lies in none, so a consumer a fetch or two behind another finds its bytes read, and
/// consumers farther apart read for themselves.
#[derive(Default)]
struct ReadAhead {
    /// Least recently moved first; at most [`READ_CURSORS_MAX`].
    cursors: VecDeque<Cursor>,
    /// Least recently used first.
    chunks: VecDeque<Rc<AheadChunk>>,
}

/// Where a consumer reading in order stands: the batch at `next_offset` starts at `pos` of `file`.
struct Cursor {
    file: SegmentFile,
    pos: u64,
    next_offset: i64,
    /// The consumer's read size: its window is `READ_AHEAD_CHUNKS` of them.
    want: usize,
    moved_ms: i64,
}

/// Reads in flight or done ahead of one consumer.
const READ_AHEAD_CHUNKS: usize = 4;

/// Consumers of one partition followed at once; the least recently served one is forgotten first.
const READ_CURSORS_MAX: usize = 4;

/// A cursor that has not moved for this long belongs to a consumer that has stopped or caught up.
const READ_CURSOR_IDLE_MS: i64 = 10_000;

struct AheadChunk {
    file: SegmentFile,
    pos: u64,
    /// Counted in this core's [`READ_AHEAD_BYTES`] until dropped.
    len: usize,
    result: RefCell<Option<std::io::Result<ReadChunk>>>,
    done: Notify,
}

impl AheadChunk {
    fn covers(&self, file: &SegmentFile, pos: u64) -> bool {
        self.pos <= pos && pos < self.pos + self.len as u64 && self.file.same_file(file)
    }
}

impl Cursor {
    fn window_holds(&self, c: &AheadChunk) -> bool {
        let end = self.pos + (READ_AHEAD_CHUNKS * self.want) as u64;
        c.pos < end && self.pos < c.pos + c.len as u64 && c.file.same_file(&self.file)
    }
}

impl ReadAhead {
    /// Where a read of `offset`, whose batch the offset index places at or after `pos`, can start:
    /// the position of a consumer's cursor when it stands at or before that batch.
    fn start_for(&self, file: &SegmentFile, offset: i64, pos: u64, limit: u64) -> u64 {
        self.cursors
            .iter()
            .rev()
            .find(|c| c.file.same_file(file) && offset >= c.next_offset && c.pos >= pos && c.pos < limit)
            .map_or(pos, |c| c.pos)
    }

    /// The chunk holding byte `pos` of `file`, marked as just used.
    fn find(&mut self, file: &SegmentFile, pos: u64) -> Option<Rc<AheadChunk>> {
        let i = self.chunks.iter().position(|c| c.covers(file, pos))?;
        let c = self.chunks.remove(i).expect("found");
        self.chunks.push_back(c.clone());
        Some(c)
    }

    /// Drops a chunk whose read failed or came back short: later reads go to the file.
    fn forget(&mut self, c: &Rc<AheadChunk>) {
        self.chunks.retain(|k| !Rc::ptr_eq(k, c));
    }

    /// The cursor that stood at `from` now stands at `pos` (a new cursor when none did).
    fn moved(&mut self, file: &SegmentFile, from: u64, pos: u64, next_offset: i64, want: usize) {
        let now = now_ms();
        // One cursor per consumer: two that stood at the same place each left one there.
        if let Some(i) = self.cursors.iter().position(|c| c.pos == from && c.file.same_file(file)) {
            self.cursors.remove(i);
        }
        self.cursors.retain(|c| now - c.moved_ms < READ_CURSOR_IDLE_MS);
        if self.cursors.len() == READ_CURSORS_MAX {
            self.cursors.pop_front();
        }
        self.cursors.push_back(Cursor { file: file.clone(), pos, next_offset, want, moved_ms: now });
        let cursors = &self.cursors;
        self.chunks.retain(|c| cursors.iter().any(|k| k.window_holds(c)));
    }

    /// Starts reads of up to `want` bytes from `from` on, where no chunk holds them yet, until the
    /// window of [`READ_AHEAD_CHUNKS`] reads is covered, none past `limit` (the bytes written),
    /// while this core holds less than `READ_AHEAD_CORE_MAX_BYTES` of read-ahead.
    fn top_up(&mut self, file: &SegmentFile, from: u64, limit: u64, want: usize) {
        let horizon = limit.min(from + (READ_AHEAD_CHUNKS * want) as u64);
        let mut next = from;
        while next < horizon {
            if let Some(c) = self.find(file, next) {
                if c.result.borrow().as_ref().is_some_and(|r| r.as_ref().map_or(true, |b| b.len() < c.len)) {
                    // Failed or short: the next fetch reads for itself, and tops up again.
                    self.forget(&c);
                    return;
                }
                next = c.pos + c.len as u64;
                continue;
            }
            let len = ((limit - next) as usize).min(want);
            let room = READ_AHEAD_BYTES.with(|b| {
                let ok = b.get() + len <= READ_AHEAD_CORE_MAX_BYTES;
                if ok {
                    b.set(b.get() + len);
                }
                ok
            });
            if !room {
                return;
            }
            #[cfg(test)]
            DISK_READS.with(|n| n.set(n.get() + 1));
            let chunk = Rc::new(AheadChunk { file: file.clone(), pos: next, len, result: RefCell::new(None), done: Notify::default() });
            let task = {
                let chunk = chunk.clone();
                async move {
                    let r = chunk.file.read_raw(chunk.pos, chunk.len).await;
                    *chunk.result.borrow_mut() = Some(r);
                    chunk.done.notify_all();
                }
            };
            crate::io::rt::spawn(task).detach();
            self.chunks.push_back(chunk);
            next += len as u64;
        }
    }
}

/// Up to `want` bytes of `file` from `pos`, copied out of the partition's read-ahead chunks in one
/// buffer (waiting for those still being read); `None` when no chunk holds `pos`. Stops where no
/// chunk holds the next byte, or at a chunk read short.
async fn gather(st: &RefCell<State>, file: &SegmentFile, pos: u64, want: usize) -> Option<Bytes> {
    let mut out = BytesMut::new();
    while out.len() < want {
        let at = pos + out.len() as u64;
        let Some(c) = st.borrow_mut().read_ahead.find(file, at) else { break };
        while c.result.borrow().is_none() {
            c.done.wait().await;
        }
        let result = c.result.borrow();
        let Some(Ok(chunk)) = result.as_ref() else {
            drop(result);
            // The read failed: read from the file as if there were no chunk.
            st.borrow_mut().read_ahead.forget(&c);
            break;
        };
        let from = (at - c.pos) as usize;
        if from >= chunk.len() {
            break;
        }
        let take = (chunk.len() - from).min(want - out.len());
        if out.is_empty() {
            out.reserve(want);
        }
        out.extend_from_slice(&chunk[from..from + take]);
        if chunk.len() < c.len {
            break; // read short: nothing follows on
        }
    }
    (!out.is_empty()).then(|| out.freeze())
}

#[cfg(test)]
thread_local! {
    /// Reads of segment files this thread has started for fetches, read-ahead included.
    static DISK_READS: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// Bytes of read-ahead chunks this core holds or is reading, all partitions together.
    static READ_AHEAD_BYTES: Cell<usize> = const { Cell::new(0) };
}

impl Drop for AheadChunk {
    fn drop(&mut self) {
        READ_AHEAD_BYTES.with(|b| b.set(b.get() - self.len));
    }
}

struct State {
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    log_end: i64,
    high_watermark: i64,
    durable: i64,
    leader_epoch: i32,
    /// The active segment from `pending_pos` (aligned) on: `tail`, the partial block already
    /// written that the next write rewrites, then the `pending` batches not yet written (or being
    /// written: a write takes them out and puts back only what failed).
    tail: Vec<u8>,
    pending: Vec<Bytes>,
    pending_pos: u64,
    writing: bool,
    syncing: bool,
    rolling: bool,
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
    /// Compaction: the end of the closed segments at the last pass (a pass runs again only once
    /// another segment has closed).
    cleaned_through: i64,
    /// Idempotent producers' recent batches (see [`super::producers`]).
    producers: ProducerStates,
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

impl State {
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
    /// Opens the partition in `dir`, creating it if new, recovering it if not.
    pub async fn open(dir: PathBuf, config: TopicConfig, data_arrived: Rc<Notify>) -> std::io::Result<Rc<PartitionLog>> {
        fs::create_dir_all(dir.clone()).await?;
        let names = fs::list_dir(dir.clone()).await?;
        for stray in names.iter().filter(|n| n.ends_with(compact::CLEANED_SUFFIX)) {
            tracing::info!(dir = %dir.display(), file = %stray, "removing an unfinished compaction copy");
            fs::remove_file(dir.join(stray)).await?;
        }
        let mut bases: Vec<i64> = names.iter().filter_map(|n| n.strip_suffix(".log")?.parse().ok()).collect();
        bases.sort();
        let mut segments = BTreeMap::new();
        let mut expected_base: Option<i64> = None;
        let mut drop_rest = false;
        for base in bases {
            // Compaction can leave a gap between segments; an overlap, or anything after a
            // segment recovery had to truncate, is damage.
            let overlaps = expected_base.is_some_and(|e| base < e);
            if overlaps && !drop_rest && SegmentFile::open(&segment_path(&dir, base, "log"), false).await?.size().await? == 0 {
                // A roll that failed after creating the next segment's file (a full disk when
                // writing the producer snapshot, say) leaves it empty while appends go on in
                // the previous segment: a leftover, not damage, and no reason to drop the rest.
                tracing::info!(dir = %dir.display(), base, "removing an empty segment left by a failed roll");
                for ext in ["log", "index", "timeindex"] {
                    fs::remove_file(segment_path(&dir, base, ext)).await?;
                }
                continue;
            }
            if drop_rest || overlaps {
                tracing::warn!(
                    dir = %dir.display(), base,
                    "removing segment after a truncated or overlapping one: its offsets no longer follow on"
                );
                for ext in ["log", "index", "timeindex"] {
                    fs::remove_file(segment_path(&dir, base, ext)).await?;
                }
                drop_rest = true;
                continue;
            }
            let (seg, truncated) = recover_segment(&dir, base, config.index_interval_bytes, true).await?;
            expected_base = Some(seg.next_offset);
            drop_rest = truncated;
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let file = SegmentFile::open(&segment_path(&dir, 0, "log"), true).await?;
            segments.insert(0, new_segment(0, file));
        }
        // Every name kept must be durable before anything written under it is acknowledged: a
        // roll cut short by a crash can leave the active segment's entry not yet fsync'd.
        fs::sync_dir(dir.clone()).await?;
        write_epoch_checkpoint(&dir).await?;
        let (log_start, log_end) = {
            let first = segments.values().next().expect("non-empty");
            let last = segments.values().next_back().expect("non-empty");
            (first.base, last.next_offset)
        };
        let producers = load_producer_state(&dir, &names, &segments, log_end).await?;
        let active = segments.values_mut().next_back().expect("non-empty");
        // Make what recovery kept durable, and load the partial tail block for the appender.
        active.file.sync().await?;
        let pending_pos = active.size / DMA_ALIGNMENT_BYTES as u64 * DMA_ALIGNMENT_BYTES as u64;
        let tail = active.file.read(pending_pos, (active.size - pending_pos) as usize).await?.to_vec();
        assert_eq!(tail.len() as u64, active.size - pending_pos, "tail block shorter than the file");
        let st = State {
            segments,
            log_start,
            log_end,
            high_watermark: log_end,
            durable: log_end,
            leader_epoch: 0,
            tail,
            pending: Vec::new(),
            pending_pos,
            writing: false,
            syncing: false,
            rolling: false,
            compacting: false,
            failure: None,
            closing: false,
            rollback_gen: 0,
            max_ts_undo: Vec::new(),
            unflushed_records: 0,
            last_sync_ms: now_ms(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            read_ahead: ReadAhead::default(),
            stats: LogStats::default(),
            cleaned_through: 0,
            producers,
        };
        Ok(Rc::new(PartitionLog {
            dir,
            config: RefCell::new(config),
            st: RefCell::new(st),
            data_arrived,
            cache_cap: Cell::new(PARTITION_CACHE_MAX_BYTES),
            write_max: Cell::new(SEGMENT_WRITE_MAX_BYTES),
            preallocate_step: Cell::new(0),
            io_done: Notify::default(),
            turns: Turns::default(),
        }))
    }

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
            high_watermark: st.high_watermark,
            log_end: st.log_end,
            durable: st.durable,
        }
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
        self.st.borrow().leader_epoch
    }

    pub fn config(&self) -> TopicConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: TopicConfig) {
        *self.config.borrow_mut() = config;
    }

    /// [`append_owned`](Self::append_owned) of a copy of each batch, for callers that keep theirs.
    pub async fn append(&self, batches: &[(Bytes, BatchHeader)], wait_durable: bool) -> Result<AppendInfo, LogError> {
        self.append_owned(batches.iter().map(|(b, h)| (BytesMut::from(&b[..]), *h)).collect(), wait_durable).await
    }

    /// Appends validated batches, patching each in place (base offset, leader epoch, and for
    /// LogAppendTime topics the timestamp and CRC) and then keeping the same bytes for the write
    /// and the batch cache. Returns once they are written (and, with `wait_durable` and the
    /// default flush policy, fdatasync'd). On a storage error nothing of this call is readable.
    pub async fn append_owned(&self, batches: Vec<(BytesMut, BatchHeader)>, wait_durable: bool) -> Result<AppendInfo, LogError> {
        let incoming: usize = batches.iter().map(|(b, _)| b.len()).sum();
        // Offsets are assigned in arrival order even when a roll makes this append wait.
        let mut turn = self.turns.ticket();
        turn.turn().await;
        if self.st.borrow().closing {
            return Err(LogError::Storage(format!("{} is closed for shutdown", self.dir.display())));
        }
        self.maybe_roll(incoming).await?;
        let config = self.config.borrow().clone();
        let (first, end, gen, append_time) = {
            let mut st = self.st.borrow_mut();
            if let Some(f) = &st.failure {
                return Err(LogError::Storage(f.clone()));
            }
            let idempotent = batches.iter().any(|(_, h)| h.producer_id >= 0);
            if idempotent && batches.len() != 1 {
                return Err(LogError::InvalidRecord(
                    "an idempotent produce request must carry exactly one batch per partition".into(),
                ));
            }
            if idempotent {
                let h = &batches[0].1;
                match st.producers.check(h) {
                    Verdict::Append => {}
                    Verdict::Duplicate(m) => {
                        // A retry of a batch already appended: answer with its offsets once it is
                        // as far along as this request asks, without writing it again.
                        let gen = st.rollback_gen;
                        drop(st);
                        drop(turn);
                        let end = m.last_offset + 1;
                        self.write_through(end, gen).await?;
                        if wait_durable && config.sync_on_ack() {
                            self.sync_through(end, gen).await?;
                        }
                        tracing::debug!(producer = h.producer_id, seq = h.base_sequence, offset = m.first_offset, "duplicate batch");
                        return Ok(AppendInfo { base_offset: m.first_offset, log_append_time: -1, log_start: self.st.borrow().log_start });
                    }
                    Verdict::OutOfOrder { expected } => {
                        return Err(LogError::OutOfOrderSequence(format!(
                            "producer {} epoch {}: sequence {} where {expected} was expected",
                            h.producer_id, h.producer_epoch, h.base_sequence
                        )))
                    }
                    Verdict::StaleEpoch { current } => {
                        return Err(LogError::InvalidProducerEpoch(format!(
                            "producer {} epoch {} is older than its current epoch {current}",
                            h.producer_id, h.producer_epoch
                        )))
                    }
                }
            }
            let append_time = (config.timestamp_type == TimestampType::LogAppendTime).then(now_ms);
            st.stats.appends += 1;
            let first = st.log_end;
            let epoch = st.leader_epoch;
            for (mut m, h) in batches {
                let base = st.log_end;
                batch::patch(&mut m, base, epoch, append_time);
                let bytes = m.freeze();
                let max_ts = append_time.unwrap_or(h.max_timestamp);
                let last = base + h.last_offset_delta as i64;
                let seg = st.active();
                let pos = seg.size;
                if seg.created_ms == 0 {
                    seg.created_ms = now_ms();
                }
                let replaced = (max_ts > seg.max_ts).then_some((base, seg.max_ts));
                seg.max_ts = seg.max_ts.max(max_ts);
                if seg.bytes_since_index >= config.index_interval_bytes as u64 {
                    let max_so_far = seg.max_ts;
                    // Producers choose last_offset_delta: an offset too far from the base for
                    // the index's 32 bits stays out of it rather than wrapping.
                    if let Ok(rel) = u32::try_from(base - seg.base) {
                        seg.index.add(rel, pos as u32, max_so_far);
                    }
                    seg.bytes_since_index = 0;
                }
                seg.bytes_since_index += bytes.len() as u64;
                seg.size += bytes.len() as u64;
                seg.next_offset = last + 1;
                st.max_ts_undo.extend(replaced);
                st.pending.push(bytes.clone());
                st.log_end = last + 1;
                if h.producer_id >= 0 {
                    st.producers.record(&h, base, now_ms());
                }
                st.unflushed_records += h.records_count as i64;
                st.cache_bytes += bytes.len();
                st.cache.push_back(CachedBatch { base, last, bytes });
                while st.cache_bytes > self.cache_cap.get() && st.cache.len() > 1 {
                    let old = st.cache.pop_front().expect("non-empty cache");
                    st.cache_bytes -= old.bytes.len();
                }
            }
            (first, st.log_end, st.rollback_gen, append_time)
        };
        drop(turn);
        self.write_through(end, gen).await?;
        let sync_now = if config.sync_on_ack() {
            wait_durable
        } else {
            self.st.borrow().unflushed_records >= config.flush_messages
        };
        if sync_now {
            self.sync_through(end, gen).await?;
        }
        Ok(AppendInfo {
            base_offset: first,
            log_append_time: append_time.unwrap_or(-1),
            log_start: self.st.borrow().log_start,
        })
    }

    /// Waits until everything before `end` is in the segment file, writing it if no one is.
    async fn write_through(&self, end: i64, gen: u64) -> Result<(), LogError> {
        loop {
            let job = {
                let mut st = self.st.borrow_mut();
                if st.rollback_gen != gen {
                    return Err(LogError::Storage(format!("write to {} failed", self.dir.display())));
                }
                // Offline after a failed fdatasync: nothing not yet durable is acknowledged, and
                // nothing more is written.
                if let Some(f) = st.failure.as_ref().filter(|_| st.durable < end) {
                    return Err(LogError::Storage(f.clone()));
                }
                if st.high_watermark >= end {
                    return Ok(());
                }
                if st.writing {
                    None
                } else {
                    st.writing = true;
                    st.stats.writes += 1;
                    // At most `write_max` bytes of batches (but at least one batch) per write:
                    // what is left waits for the next. One huge buffer per write (tens of MB
                    // with several producers on one partition) cost more than it saved.
                    let mut take = 0;
                    let mut bytes = 0;
                    while take < st.pending.len() && (take == 0 || bytes + st.pending[take].len() <= self.write_max.get()) {
                        bytes += st.pending[take].len();
                        take += 1;
                    }
                    let new_end = if take == st.pending.len() {
                        st.log_end
                    } else {
                        let last = batch::parse_header(&st.pending[take - 1]).expect("a pending batch has a header");
                        last.last_offset() + 1
                    };
                    let rest = st.pending.split_off(take);
                    let batches = std::mem::replace(&mut st.pending, rest);
                    let pos = st.pending_pos;
                    let file = st.active().file.clone();
                    Some((st.tail.clone(), batches, pos, new_end, file))
                }
            };
            let Some((tail, batches, pos, new_end, file)) = job else {
                self.io_done.wait().await;
                continue;
            };
            let mut reset = FlagReset { log: self, flag: |s| &mut s.writing, armed: true };
            let mut put_back = PutBack { log: self, batches: Some(batches) };
            let taken = put_back.batches.as_ref().expect("just put there");
            let parts: Vec<&[u8]> = std::iter::once(&tail[..]).chain(taken.iter().map(|b| &b[..])).collect();
            let len: usize = parts.iter().map(|p| p.len()).sum();
            let full = len / DMA_ALIGNMENT_BYTES * DMA_ALIGNMENT_BYTES;
            let inside = self.preallocate(&file, pos + len.next_multiple_of(DMA_ALIGNMENT_BYTES) as u64).await;
            // The tail block is written, what follows it only allocated: as two writes, one
            // each, ext4 takes a small write without a kernel worker thread.
            let apart = inside && !tail.is_empty() && len <= SEGMENT_INLINE_WRITE_MAX_BYTES;
            let result = file.write_aligned_parts(pos, &parts, apart).await;
            // What this write leaves of its last, partial block: the next write's tail.
            let new_tail = last_bytes(&parts, len - full);
            drop(parts);
            put_back.batches = None;
            reset.armed = false;
            {
                let mut st = self.st.borrow_mut();
                st.writing = false;
                match &result {
                    Ok(()) => {
                        st.tail = new_tail;
                        st.pending_pos += full as u64;
                        st.active().written = pos + len as u64;
                        assert!(new_end >= st.high_watermark, "high watermark would move back");
                        st.high_watermark = new_end;
                        st.max_ts_undo.retain(|&(base, _)| base >= new_end);
                    }
                    Err(e) => {
                        tracing::error!(file = %file.path().display(), error = %e, "segment write failed; rolling back unwritten batches");
                        let hw = st.high_watermark;
                        let seg = st.active();
                        let written = seg.written;
                        seg.size = written;
                        seg.next_offset = hw;
                        seg.index.truncate_to_position(written as u32);
                        // The largest timestamp must not name a batch that is gone.
                        if let Some(&(_, ts)) = st.max_ts_undo.iter().find(|u| u.0 >= hw) {
                            st.active().max_ts = ts;
                        }
                        st.max_ts_undo.clear();
                        // Everything past what is on disk goes: the batches this write took out
                        // and those appended while it ran. The tail is still what is on disk.
                        debug_assert_eq!(written - st.pending_pos, st.tail.len() as u64);
                        st.pending.clear();
                        st.log_end = hw;
                        st.producers.truncate(hw);
                        while st.cache.back().is_some_and(|c| c.base >= hw) {
                            let c = st.cache.pop_back().expect("checked");
                            st.cache_bytes -= c.bytes.len();
                        }
                        st.rollback_gen += 1;
                    }
                }
            }
            self.io_done.notify_all();
            if result.is_ok() {
                self.data_arrived.notify_all();
            }
        }
    }

    /// Grows the active segment's file `preallocate_step` past `end` (no further than the roll
    /// size) before a write that ends at `end` and would otherwise grow it. Best effort: if the
    /// filesystem refuses (no space, no fallocate), that is logged and the segment's writes grow
    /// the file themselves, as they do with preallocation off. Returns whether the write lies in
    /// blocks it preallocated.
    async fn preallocate(&self, file: &SegmentFile, end: u64) -> bool {
        let step = self.preallocate_step.get();
        let target = {
            let mut st = self.st.borrow_mut();
            let roll_at = self.config.borrow().segment_bytes.max(0) as u64;
            let seg = st.active();
            if step == 0 || seg.allocated == u64::MAX || !seg.file.same_file(file) {
                return false;
            }
            if end <= seg.allocated {
                return true;
            }
            let target = end.saturating_add(step).min(roll_at).next_multiple_of(DMA_ALIGNMENT_BYTES as u64);
            if target <= end {
                return false;
            }
            target
        };
        let result = file.preallocate(target).await;
        let mut st = self.st.borrow_mut();
        let seg = st.active();
        if !seg.file.same_file(file) {
            return false;
        }
        match result {
            Ok(()) => {
                seg.allocated = seg.allocated.max(target);
                true
            }
            Err(e) => {
                tracing::warn!(
                    file = %file.path().display(), bytes = target, error = %e,
                    "could not preallocate the segment; its writes grow the file instead"
                );
                seg.allocated = u64::MAX;
                false
            }
        }
    }

    /// Waits until everything before `end` is fdatasync'd, starting a sync if none is running.
    async fn sync_through(&self, end: i64, gen: u64) -> Result<(), LogError> {
        loop {
            let job = {
                let mut st = self.st.borrow_mut();
                if st.rollback_gen != gen {
                    return Err(LogError::Storage(format!("write to {} failed", self.dir.display())));
                }
                if st.durable >= end {
                    return Ok(());
                }
                if let Some(f) = &st.failure {
                    return Err(LogError::Storage(f.clone()));
                }
                if st.syncing {
                    None
                } else {
                    st.syncing = true;
                    st.stats.syncs += 1;
                    Some((st.active().file.clone(), st.high_watermark))
                }
            };
            let Some((file, target)) = job else {
                self.io_done.wait().await;
                continue;
            };
            let mut reset = FlagReset { log: self, flag: |s| &mut s.syncing, armed: true };
            let (started, covered) = (std::time::Instant::now(), target - self.st.borrow().durable);
            let result = file.sync().await;
            reset.armed = false;
            crate::metrics::fsync(started.elapsed().as_secs_f64(), covered.max(0) as u64);
            {
                let mut st = self.st.borrow_mut();
                st.syncing = false;
                if result.is_ok() {
                    st.durable = st.durable.max(target);
                    st.unflushed_records = 0;
                    st.last_sync_ms = now_ms();
                }
            }
            if let Err(e) = result {
                return Err(self.go_offline(&file, e));
            }
            self.io_done.notify_all();
        }
    }

    /// Takes the partition offline for writes after a failed fdatasync of one of its segments,
    /// as Kafka and Redpanda do: what the sync should have covered may not be on disk, and a
    /// later fdatasync that succeeds would not prove it is. Until the log is reopened, appends
    /// are refused and nothing not already durable is acknowledged.
    fn go_offline(&self, file: &SegmentFile, e: std::io::Error) -> LogError {
        let msg = format!("fdatasync of {} failed: {e}; partition offline for writes", file.path().display());
        tracing::error!("{msg}");
        self.st.borrow_mut().failure = Some(msg);
        self.io_done.notify_all();
        storage_err("fdatasync", file.path(), e)
    }

    /// Closes a segment's file: trims the O_DIRECT padding, fdatasyncs (a failure takes the
    /// partition offline), and writes its index files.
    async fn close_segment(&self, file: &SegmentFile, size: u64, index: &SegmentIndex) -> Result<(), LogError> {
        file.truncate(size).await.map_err(|e| storage_err("trimming", file.path(), e))?;
        file.sync().await.map_err(|e| self.go_offline(file, e))?;
        write_index_files(&self.dir, segment_base(file), index)
            .await
            .map_err(|e| storage_err("writing the index of", file.path(), e))
    }

    /// Rolls to a new segment if the active one is full or old enough for `incoming` more bytes.
    async fn maybe_roll(&self, incoming: usize) -> Result<(), LogError> {
        loop {
            let (rolling, need, end, gen) = {
                let mut st = self.st.borrow_mut();
                let c = self.config.borrow();
                let (rolling, end, gen) = (st.rolling, st.log_end, st.rollback_gen);
                let seg = st.active();
                let full = seg.size > 0 && seg.size + incoming as u64 > c.segment_bytes as u64;
                let old = seg.size > 0 && seg.created_ms > 0 && now_ms() - seg.created_ms >= c.segment_ms;
                (rolling, full || old, end, gen)
            };
            if rolling {
                self.io_done.wait().await;
                continue;
            }
            if !need {
                return Ok(());
            }
            self.st.borrow_mut().rolling = true;
            let reset = FlagReset { log: self, flag: |s| &mut s.rolling, armed: true };
            let result = self.roll(end, gen).await;
            drop(reset);
            return result;
        }
    }

    async fn roll(&self, end: i64, gen: u64) -> Result<(), LogError> {
        self.write_through(end, gen).await?;
        self.sync_through(end, gen).await?;
        let (file, size, index) = {
            let mut st = self.st.borrow_mut();
            let seg = st.active();
            (seg.file.clone(), seg.size, seg.index.clone())
        };
        self.close_segment(&file, size, &index).await?;
        self.st.borrow_mut().active().index_saved = true;
        let path = segment_path(&self.dir, end, "log");
        let new_file = SegmentFile::open(&path, true).await.map_err(|e| storage_err("creating", &path, e))?;
        // The new file's directory entry must be durable before acks=all data in it is.
        fs::sync_dir(self.dir.clone()).await.map_err(|e| storage_err("syncing directory", &self.dir, e))?;
        // Producer state as of the roll, so recovery replays at most the new segment.
        let snapshot = self.st.borrow().producers.encode();
        write_producer_snapshot(&self.dir, end, snapshot).await.map_err(|e| storage_err("writing producer state in", &self.dir, e))?;
        let mut st = self.st.borrow_mut();
        assert_eq!(st.log_end, end, "an append slipped in during a roll");
        st.segments.insert(end, new_segment(end, new_file));
        assert!(st.max_ts_undo.is_empty(), "a roll follows a complete write");
        st.pending.clear();
        st.tail.clear();
        st.pending_pos = 0;
        tracing::debug!(dir = %self.dir.display(), base = end, "rolled to a new segment");
        Ok(())
    }

    /// One compaction pass (see [`compact`]) over the closed segments, if one has closed since
    /// the last pass. Returns (segments rewritten, records dropped). Appends and reads go on
    /// meanwhile: only closed segments are rewritten, and each is swapped in whole. One pass at
    /// a time: a call while another runs returns at once, having done nothing (two passes would
    /// write the same `.cleaned` file).
    pub async fn compact(&self, now: i64) -> Result<(usize, u64), LogError> {
        if std::mem::replace(&mut self.st.borrow_mut().compacting, true) {
            return Ok((0, 0));
        }
        let _reset = FlagReset { log: self, flag: |s| &mut s.compacting, armed: true };
        self.compact_pass(now).await
    }

    async fn compact_pass(&self, now: i64) -> Result<(usize, u64), LogError> {
        let (closed, closed_end) = {
            let st = self.st.borrow();
            let all: Vec<(i64, SegmentFile, u64, i64)> =
                st.segments.values().map(|s| (s.base, s.file.clone(), s.written, s.next_offset)).collect();
            let (_active, closed) = all.split_last().expect("a log always has an active segment");
            let closed_end = closed.last().map(|c| c.3).unwrap_or(0);
            if closed.is_empty() || closed_end <= st.cleaned_through {
                return Ok((0, 0));
            }
            (closed.to_vec(), closed_end)
        };
        let (index_interval, delete_retention_ms) = {
            let c = self.config.borrow();
            (c.index_interval_bytes, c.delete_retention_ms)
        };
        // Newest offsets from the closed segments only: they are fdatasync'd, while the active
        // one may hold records a power loss can still take, and a record superseded only by
        // those must stay (as Kafka's cleaner never reads the active segment).
        let mut latest = std::collections::HashMap::new();
        for (_, file, size, _) in &closed {
            compact::note_latest(file, *size, &mut latest).await.map_err(|e| storage_err("compacting", file.path(), e))?;
        }
        let (mut rewritten, mut dropped) = (0, 0);
        for (base, file, size, next_offset) in closed {
            let log_path = segment_path(&self.dir, base, "log");
            let cleaned = compact::clean_segment(&self.dir, &log_path, &file, size, &latest, now.saturating_sub(delete_retention_ms))
                .await
                .map_err(|e| storage_err("compacting", &log_path, e))?;
            let Some(c) = cleaned else { continue };
            let (seg, damaged) =
                recover_segment(&self.dir, base, index_interval, false).await.map_err(|e| storage_err("reopening", &log_path, e))?;
            assert!(!damaged && seg.next_offset <= next_offset, "a cleaned segment must not grow: {}", log_path.display());
            self.st.borrow_mut().segments.insert(base, seg);
            tracing::info!(
                segment = %log_path.display(), records_dropped = c.records_dropped, bytes_before = c.bytes_before,
                bytes_after = c.bytes_after, "compacted segment"
            );
            rewritten += 1;
            dropped += c.records_dropped;
        }
        let mut st = self.st.borrow_mut();
        st.cleaned_through = closed_end;
        // Recent batches of the cleaned segments would still serve the old records: drop them, and
        // the read-ahead of the files they replaced (which would keep those files open).
        if rewritten > 0 {
            st.read_ahead = ReadAhead::default();
            while st.cache.front().is_some_and(|c| c.base < closed_end) {
                let c = st.cache.pop_front().expect("checked");
                st.cache_bytes -= c.bytes.len();
            }
        }
        Ok((rewritten, dropped))
    }

    /// Reads whole batches from `offset` (the batch containing it first), up to `max_bytes` but
    /// always at least one batch when any exists, and never past the high watermark.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        let (file, pos, limit, seg_base) = {
            let st = self.st.borrow();
            let (hw, log_start) = (st.high_watermark, st.log_start);
            if offset < st.log_start || offset > st.log_end {
                return Err(LogError::OffsetOutOfRange { log_start: st.log_start, log_end: st.log_end });
            }
            let empty = ReadInfo { records: Bytes::new(), high_watermark: hw, log_start };
            if offset >= hw {
                return Ok(empty);
            }
            if st.cache.front().is_some_and(|c| c.base <= offset) {
                // One batch goes out by reference; several are joined into one buffer.
                let mut taken: Vec<&Bytes> = Vec::new();
                let mut len = 0;
                for c in st.cache.iter().filter(|c| c.last >= offset && c.base < hw) {
                    if len > 0 && len + c.bytes.len() > max_bytes {
                        break;
                    }
                    len += c.bytes.len();
                    taken.push(&c.bytes);
                }
                let records = match taken[..] {
                    [] => Bytes::new(),
                    [one] => one.clone(),
                    _ => {
                        let mut out = BytesMut::with_capacity(len);
                        taken.iter().for_each(|b| out.extend_from_slice(b));
                        out.freeze()
                    }
                };
                return Ok(ReadInfo { records, ..empty });
            }
            let Some((&first, _)) = st.segments.range(..=offset).next_back() else {
                return Ok(empty);
            };
            // Compaction may leave a segment ending before the next begins, or empty: read from
            // the first segment that holds something at or after the offset.
            let Some(seg) = st.segments.range(first..).map(|(_, s)| s).find(|s| s.written > 0 && s.next_offset > offset) else {
                return Ok(empty);
            };
            let pos = if offset >= seg.base { seg.index.position_for((offset - seg.base) as u32) as u64 } else { 0 };
            let (file, limit, seg_base) = (seg.file.clone(), seg.written, seg.base);
            let start = st.read_ahead.start_for(&file, offset, pos, limit);
            (file, start, limit, seg_base)
        };
        let want = read_len(max_bytes);
        let first = gather(&self.st, &file, pos, want).await;
        let (records, end, next_offset) = read_batches(&file, pos, limit, offset, max_bytes, first)
            .await
            .map_err(|e| storage_err("reading", file.path(), e))?;
        if !records.is_empty() && end < limit {
            let mut st = self.st.borrow_mut();
            st.read_ahead.moved(&file, pos, end, next_offset, want);
            st.read_ahead.top_up(&file, end, limit, want);
        }
        let st = self.st.borrow();
        tracing::trace!(seg_base, offset, bytes = records.len(), "read from segment file");
        Ok(ReadInfo { records, high_watermark: st.high_watermark, log_start: st.log_start })
    }

    /// Waits until the high watermark passes `offset` or `deadline_ms` (wall clock) passes.
    pub async fn wait_for_data(&self, offset: i64, deadline_ms: i64) {
        loop {
            if self.st.borrow().high_watermark > offset {
                return;
            }
            let left = deadline_ms - now_ms();
            if left <= 0 {
                return;
            }
            let d = std::time::Duration::from_millis(left as u64);
            if crate::io::rt::timeout(d, self.data_arrived.wait()).await.is_none() {
                return;
            }
        }
    }

    /// The offset of the first record carrying the largest timestamp in the log, and that
    /// timestamp (ListOffsets -3, KIP-734). `None` for an empty log. The segments know their
    /// largest timestamp; the record holding it is found by reading its batch, compressed or not
    /// (as Kafka does since KAFKA-16310: a batch's last offset is not the answer when its records'
    /// timestamps are not in order).
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let max = self.st.borrow().segments.values().map(|s| s.max_ts).max().filter(|&t| t >= 0);
        match max {
            Some(max) => self.offset_for_timestamp(max).await,
            None => Ok(None),
        }
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp; `None` if none.
    /// Exact, compressed batches included, except for a batch whose records do not decompress
    /// within `RECORDS_DECOMPRESSED_MAX_BYTES` (or LogAppendTime batches, whose records all
    /// carry the batch's time): the batch's base offset and max timestamp.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        let candidates: Vec<(SegmentFile, u64, u64, i64)> = {
            let st = self.st.borrow();
            st.segments
                .values()
                .filter(|s| s.max_ts >= ts)
                .map(|s| {
                    let rel = s.index.offset_for_time(ts);
                    (s.file.clone(), s.index.position_for(rel) as u64, s.written, s.base + rel as i64)
                })
                .collect()
        };
        let hw = self.st.borrow().high_watermark;
        for (file, mut pos, limit, _) in candidates {
            while pos < limit {
                let want = ((limit - pos) as usize).min(SEGMENT_READ_MAX_BYTES);
                let chunk = file.read(pos, want).await.map_err(|e| storage_err("reading", file.path(), e))?;
                let mut found = None;
                let mut consumed = 0;
                batch::scan(&chunk, |at, h| {
                    consumed = at + h.total_len();
                    if found.is_some() || h.base_offset >= hw {
                        return;
                    }
                    let max = h.max_timestamp;
                    if max >= ts {
                        let b = &chunk[at..at + h.total_len()];
                        found = match batch::record_timestamps(b, h, RECORDS_DECOMPRESSED_MAX_BYTES) {
                            Some(recs) => recs.into_iter().find(|&(_, t)| t >= ts),
                            None => Some((h.base_offset, max)),
                        };
                    }
                });
                if found.is_some() {
                    return Ok(found);
                }
                if consumed == 0 {
                    break;
                }
                pos += consumed as u64;
            }
        }
        Ok(None)
    }

    /// fdatasync if the topic's interval flush policy says one is due (called periodically).
    pub async fn flush_if_due(&self) -> Result<(), LogError> {
        let (due, end, gen) = {
            let st = self.st.borrow();
            let c = self.config.borrow();
            let due = !c.sync_on_ack()
                && st.durable < st.high_watermark
                && now_ms().saturating_sub(st.last_sync_ms) >= c.flush_ms;
            (due, st.high_watermark, st.rollback_gen)
        };
        if due {
            self.sync_through(end, gen).await?;
        }
        Ok(())
    }

    /// Closes the log for a clean shutdown: refuses appends from now on, waits for a roll in
    /// progress, writes and fdatasyncs everything appended, trims the active segment's O_DIRECT
    /// padding and writes every index file that is not on disk yet (the active segment's, and
    /// those rebuilt by recovery or compaction), so the next start needs no rebuild and no tail
    /// repair. Appends already admitted are completed (and acknowledged) by it.
    pub async fn close(&self) -> Result<(), LogError> {
        self.st.borrow_mut().closing = true;
        while self.st.borrow().rolling {
            self.io_done.wait().await;
        }
        let (end, gen) = {
            let st = self.st.borrow();
            (st.log_end, st.rollback_gen)
        };
        self.write_through(end, gen).await?;
        self.sync_through(end, gen).await?;
        let (unsaved, active_base) = {
            let st = self.st.borrow();
            let unsaved: Vec<(i64, SegmentFile, u64, SegmentIndex)> = st
                .segments
                .values()
                .filter(|s| !s.index_saved)
                .map(|s| (s.base, s.file.clone(), s.size, s.index.clone()))
                .collect();
            (unsaved, *st.segments.keys().next_back().expect("a log always has an active segment"))
        };
        for (base, file, size, index) in unsaved {
            if base == active_base {
                self.close_segment(&file, size, &index).await?;
            } else {
                write_index_files(&self.dir, base, &index)
                    .await
                    .map_err(|e| storage_err("writing the index of", file.path(), e))?;
            }
            if let Some(s) = self.st.borrow_mut().segments.get_mut(&base) {
                s.index_saved = true;
            }
        }
        Ok(())
    }
}

fn new_segment(base: i64, file: SegmentFile) -> Segment {
    Segment {
        base,
        file,
        size: 0,
        written: 0,
        allocated: 0,
        next_offset: base,
        index: SegmentIndex::default(),
        index_saved: false,
        bytes_since_index: 0,
        max_ts: -1,
        created_ms: 0,
    }
}

/// Writes a closed segment's offset and time index files.
/// A segment file's base offset, from its name.
fn segment_base(file: &SegmentFile) -> i64 {
    file.path()
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment files are named by base offset")
}

/// Writes a segment's offset and time index files, each atomically and durably.
async fn write_index_files(dir: &Path, base: i64, index: &SegmentIndex) -> std::io::Result<()> {
    fs::write_atomic(segment_path(dir, base, "index"), index.encode_offsets()).await?;
    fs::write_atomic(segment_path(dir, base, "timeindex"), index.encode_times()).await
}

const PRODUCER_SNAPSHOT_EXT: &str = "producers";

fn producer_snapshots(names: &[String]) -> Vec<i64> {
    let mut v: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(&format!(".{PRODUCER_SNAPSHOT_EXT}"))?.parse().ok())
        .collect();
    v.sort();
    v
}

/// Writes `<offset>.producers` atomically and removes all but the newest two snapshots.
async fn write_producer_snapshot(dir: &Path, offset: i64, bytes: Vec<u8>) -> std::io::Result<()> {
    fs::write_atomic(segment_path(dir, offset, PRODUCER_SNAPSHOT_EXT), bytes).await?;
    let names = fs::list_dir(dir.to_path_buf()).await?;
    let all = producer_snapshots(&names);
    for old in all.iter().take(all.len().saturating_sub(2)) {
        fs::remove_file(segment_path(dir, *old, PRODUCER_SNAPSHOT_EXT)).await?;
    }
    Ok(())
}

/// Rebuilds the producer state on open: the newest intact snapshot at or before the log end,
/// then every batch written after it. Snapshots past the end (the tail was truncated) are
/// removed. A fresh snapshot at the log end is written, if the disk takes it, so the next open
/// replays nothing.
async fn load_producer_state(
    dir: &Path,
    names: &[String],
    segments: &BTreeMap<i64, Segment>,
    log_end: i64,
) -> std::io::Result<ProducerStates> {
    let mut state = ProducerStates::default();
    let mut from = segments.values().next().map(|s| s.base).unwrap_or(0);
    for offset in producer_snapshots(names).into_iter().rev() {
        let path = segment_path(dir, offset, PRODUCER_SNAPSHOT_EXT);
        if offset > log_end {
            fs::remove_file(path).await?;
            continue;
        }
        match fs::read(path.clone()).await?.as_deref().and_then(ProducerStates::decode) {
            Some(s) => {
                state = s;
                from = offset;
                break;
            }
            None => tracing::warn!(snapshot = %path.display(), "damaged producer-state snapshot ignored"),
        }
    }
    let mut replayed = 0u64;
    for seg in segments.values().filter(|s| s.next_offset > from && s.written > 0) {
        let mut reader = compact::BatchReader::new(&seg.file, seg.written);
        while let Some(batches) = reader.next().await? {
            for (_, h) in batches.iter().filter(|(_, h)| h.base_offset >= from && h.producer_id >= 0) {
                state.record(h, h.base_offset, now_ms());
                replayed += 1;
            }
        }
    }
    if replayed > 0 || !state.is_empty() {
        tracing::debug!(dir = %dir.display(), from, replayed, producers = state.len(), "rebuilt producer state");
    }
    if from < log_end {
        // Only saves the next open a replay: a full disk must not keep the partition closed.
        if let Err(e) = write_producer_snapshot(dir, log_end, state.encode()).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the producer-state snapshot; the next open replays more");
        }
    }
    Ok(state)
}

async fn write_epoch_checkpoint(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("leader-epoch-checkpoint");
    if fs::read(path.clone()).await?.is_none() {
        // Kafka's format: version, entry count, then "epoch start_offset" lines.
        fs::write_atomic(path, b"0\n1\n0 0\n".to_vec()).await?;
    }
    Ok(())
}

/// Reads whole batches covering `offset` onwards from `pos`, up to `limit` bytes of file.
async fn read_batches(
    file: &SegmentFile,
    mut pos: u64,
    limit: u64,
    offset: i64,
    max_bytes: usize,
    mut first: Option<Bytes>,
) -> std::io::Result<(Bytes, u64, i64)> {
    let mut want = read_len(max_bytes);
    let nothing = (Bytes::new(), pos, offset);
    loop {
        if pos >= limit {
            return Ok(nothing);
        }
        let len = ((limit - pos) as usize).min(want);
        let chunk = match first.take() {
            Some(chunk) => chunk,
            None => {
                #[cfg(test)]
                DISK_READS.with(|n| n.set(n.get() + 1));
                file.read(pos, len).await?
            }
        };
        let mut next_offset = offset;
        let mut start = None;
        let mut end = 0;
        let mut skipped = 0;
        let mut first_len = 0;
        let mut at = 0;
        while at + batch::HEADER_LEN <= chunk.len() {
            let Some(h) = batch::parse_header(&chunk[at..]) else { break };
            let total = h.total_len();
            if h.batch_length < 0 || total < batch::HEADER_LEN {
                break;
            }
            if h.last_offset() < offset {
                at += total;
                skipped = at;
                continue;
            }
            if start.is_none() {
                start = Some(at);
                first_len = total;
            }
            if at + total > chunk.len() {
                break;
            }
            if end > 0 && end - start.unwrap_or(0) + total > max_bytes {
                break;
            }
            at += total;
            end = at;
            next_offset = h.last_offset() + 1;
        }
        match start {
            Some(s) if end > s => return Ok((chunk.slice(s..end), pos + end as u64, next_offset)),
            Some(s) => {
                // The first wanted batch does not fit in this chunk: read again sized for it,
                // unless it runs past the written bytes (then there is nothing whole to serve).
                if s as u64 + first_len as u64 > limit - pos {
                    return Ok(nothing);
                }
                pos += s as u64;
                want = first_len.max(want);
            }
            None if skipped > 0 => pos += skipped as u64,
            None => return Ok(nothing),
        }
    }
}

/// The last `n` bytes of the concatenation of `parts`.
fn last_bytes(parts: &[&[u8]], n: usize) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = vec![0; n];
    copy_from_parts(parts, total - n, &mut out);
    out
}

/// Whether the batch header read at the last offset-index entry's position (`head`) is the batch
/// that entry names, so recovery may trust the index up to there.
pub(crate) fn index_entry_matches(base: i64, rel: u32, head: &[u8]) -> bool {
    batch::parse_header(head).is_some_and(|h| base.checked_add(rel as i64) == Some(h.base_offset))
}

/// What recovery learns from a segment's valid batches as it walks them: the sparse index, the
/// largest timestamp and the next offset. Pure, so it runs on any bytes (see `crate::fuzzing`).
pub(crate) struct SegmentScan {
    pub base: i64,
    pub index_interval: i64,
    pub index: SegmentIndex,
    pub bytes_since_index: u64,
    pub max_ts: i64,
    pub next_offset: i64,
}

impl SegmentScan {
    /// Accounts for the CRC-valid batch `h` found at file position `pos`; `Err` (damage: the
    /// scan stops before it) when its offsets cannot follow the batches before it in this
    /// segment. The CRC does not cover the base offset, so a flipped bit there passes it.
    pub fn batch(&mut self, pos: u64, h: &BatchHeader) -> Result<(), String> {
        if h.base_offset < self.next_offset {
            return Err(format!("batch at offset {} where offset {} or later was due", h.base_offset, self.next_offset));
        }
        let Some(last) = h.base_offset.checked_add(h.last_offset_delta as i64).filter(|&l| l < i64::MAX) else {
            return Err(format!("batch at offset {} with last offset delta {} overflows", h.base_offset, h.last_offset_delta));
        };
        if self.bytes_since_index >= self.index_interval as u64 {
            // An offset too far from the base for the index's 32 bits stays out of it.
            if let Ok(rel) = u32::try_from(h.base_offset - self.base) {
                self.index.add(rel, pos as u32, self.max_ts.max(h.max_timestamp));
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len() as u64;
        self.max_ts = self.max_ts.max(h.max_timestamp);
        self.next_offset = last + 1;
        Ok(())
    }
}

/// Opens and validates one segment: loads its index if consistent, scans the tail (or the whole
/// file) by CRC, truncates a torn or corrupt tail with a log line. Returns the segment and
/// whether bytes were cut because of damage. With `log_rebuild`, a segment without usable index
/// files (one that was not closed cleanly) is reported as it is scanned whole; compaction, which
/// removes a rewritten segment's index files on purpose, passes false.
async fn recover_segment(dir: &Path, base: i64, index_interval: i64, log_rebuild: bool) -> std::io::Result<(Segment, bool)> {
    let path = segment_path(dir, base, "log");
    let file = SegmentFile::open(&path, false).await?;
    let size = file.size().await?;
    let loaded = match (fs::read(segment_path(dir, base, "index")).await?, fs::read(segment_path(dir, base, "timeindex")).await?) {
        (Some(o), Some(t)) => SegmentIndex::decode(&o, &t),
        _ => None,
    };
    if loaded.is_none() && log_rebuild && size > 0 {
        tracing::info!(
            segment = %path.display(),
            "no usable index files (segment not closed cleanly): rebuilding its index by scanning it whole"
        );
    }
    let mut seg = new_segment(base, file.clone());
    seg.created_ms = now_ms();
    // Start the scan at the last index entry if that entry points at the batch it names.
    let mut start = 0u64;
    if let Some(idx) = loaded {
        if let Some(&(rel, p)) = idx.offsets.last() {
            let head = file.read(p as u64, batch::HEADER_LEN).await?;
            let ok = index_entry_matches(base, rel, &head);
            if ok && (p as u64) < size {
                start = p as u64;
                seg.index_saved = true;
                seg.max_ts = idx.times.last().map(|&(t, _)| t).unwrap_or(-1);
                seg.index = idx;
            } else {
                tracing::info!(segment = %path.display(), "index does not match the segment; rebuilding it");
            }
        } else {
            seg.index = idx;
            seg.index_saved = true;
        }
    }
    let mut pos = start;
    let mut problem = None;
    let mut need = 0usize;
    let mut walk = SegmentScan {
        base,
        index_interval,
        index: std::mem::take(&mut seg.index),
        bytes_since_index: 0,
        max_ts: seg.max_ts,
        next_offset: base,
    };
    while pos < size {
        let want = ((size - pos) as usize).min(SEGMENT_READ_MAX_BYTES.max(need));
        let chunk = file.read(pos, want).await?;
        let end = batch::scan_while(&chunk, |at, h| walk.batch(pos + at as u64, h));
        pos += end.valid_len as u64;
        if end.valid_len == chunk.len() {
            need = 0;
            continue;
        }
        // A batch cut by the chunk's end is not damage if the file holds the rest of it: read
        // again from its start, sized for it.
        let rest = &chunk[end.valid_len..];
        if end.problem.is_some() && rest.len() >= LOG_OVERHEAD {
            let len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
            let total = LOG_OVERHEAD as u64 + len.max(0) as u64;
            if len > 0 && total > rest.len() as u64 && pos + total <= size && (total as usize) > need {
                need = total as usize;
                continue;
            }
        }
        problem = end.problem;
        break;
    }
    seg.index = walk.index;
    seg.bytes_since_index = walk.bytes_since_index;
    seg.max_ts = walk.max_ts;
    seg.next_offset = walk.next_offset;
    seg.size = pos;
    seg.written = pos;
    seg.allocated = pos;
    let damaged = problem.is_some();
    if pos < size {
        match &problem {
            Some(p) => tracing::warn!(
                segment = %path.display(), kept_bytes = pos, dropped_bytes = size - pos, reason = %p,
                "truncating torn or corrupt segment tail"
            ),
            None => tracing::debug!(segment = %path.display(), padding = size - pos, "trimming zero padding"),
        }
        seg.index.truncate_to_position(pos as u32);
        seg.index_saved = false;
        file.truncate(pos).await?;
        file.sync().await?;
    }
    Ok((seg, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ServeArgs};
    use crate::io::rt;
    use crate::io::sim_disk::{FaultPlan, OpKind, SimDisk};

    fn config() -> TopicConfig {
        let c = Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).unwrap();
        TopicConfig::resolve(&c.topic_defaults, &Default::default()).unwrap()
    }

    /// A valid uncompressed batch of `n` records.
    fn batch(n: i32) -> (Bytes, BatchHeader) {
        let b = crate::protocol::batch::tests::make_batch(n, 1_000);
        let h = batch::validate(&b).unwrap();
        (b, h)
    }

    /// Found by fuzzing: recovery trusted base offsets, which the CRC does not cover, so one
    /// flipped bit could move a segment's end backwards. Such a batch is now damage.
    #[test]
    fn recovery_refuses_batches_whose_offsets_go_back_or_overflow() {
        let mut walk = SegmentScan {
            base: 100,
            index_interval: 0,
            index: SegmentIndex::default(),
            bytes_since_index: 0,
            max_ts: -1,
            next_offset: 100,
        };
        let at = |base: i64| {
            let mut m = crate::protocol::batch::tests::make_batch(3, 1_000).to_vec();
            batch::patch(&mut m, base, 0, None);
            batch::validate(&m).unwrap()
        };
        assert!(walk.batch(0, &at(99)).is_err(), "before the segment's base");
        walk.batch(0, &at(100)).unwrap();
        assert_eq!(walk.next_offset, 103);
        assert!(walk.batch(200, &at(101)).is_err(), "overlaps the batch before");
        walk.batch(200, &at(110)).unwrap();
        assert_eq!(walk.next_offset, 113, "a gap (compaction) is fine");
        assert!(walk.batch(400, &at(i64::MAX - 1)).is_err(), "last offset overflows");
        walk.batch(400, &at(100 + (1 << 33))).unwrap();
        assert_eq!(walk.index.offsets, vec![(0, 0), (10, 200)], "too far for a 32-bit relative offset: not indexed");
    }

    #[test]
    fn the_batch_cache_keeps_to_its_cap_and_serves_the_newest_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
            let one = batch(10);
            let size = one.0.len();
            log.set_cache_cap(5 * size);
            for _ in 0..50 {
                log.append(std::slice::from_ref(&one), false).await.unwrap();
            }
            assert_eq!(log.disk_stats().cache_bytes, 5 * size as u64, "the cap holds");
            // The newest batches come from memory, older ones from the segment: both the same.
            let newest = log.read(490, usize::MAX).await.unwrap();
            let oldest = log.read(0, size).await.unwrap();
            assert_eq!(newest.records.len(), size);
            assert_eq!(oldest.records.len(), size);
            assert_eq!(&newest.records[12..], &oldest.records[12..], "same records after the base offset");
            log.set_cache_cap(0);
            log.append(std::slice::from_ref(&one), false).await.unwrap();
            assert_eq!(log.disk_stats().cache_bytes, size as u64, "at least one batch is kept");
            log.close().await.unwrap();
        });
    }

    /// A log of 400 batches of 100 records, about 1.2 KiB each (offsets 0 to 39,999), with no
    /// batch cache: every read but the newest batch's goes to the segment file, and there is room
    /// for every read ahead (64 KiB each) to be in flight.
    async fn log_read_from_disk(path: &Path) -> Rc<PartitionLog> {
        io_probe(path).await;
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        log.set_cache_cap(0);
        let one = batch(100);
        for _ in 0..400 {
            log.append(std::slice::from_ref(&one), false).await.unwrap();
        }
        log
    }

    /// Drops the log's read-ahead and checks its chunks give their bytes back (reads still in
    /// flight hold theirs until they end).
    async fn drop_read_ahead(log: &PartitionLog) {
        log.st.borrow_mut().read_ahead = ReadAhead::default();
        for _ in 0..1000 {
            if READ_AHEAD_BYTES.with(Cell::get) == 0 {
                break;
            }
            rt::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(READ_AHEAD_BYTES.with(Cell::get), 0, "dropped chunks give their bytes back");
    }

    #[test]
    fn a_consumer_reading_from_disk_in_order_is_served_by_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            let log = log_read_from_disk(&path).await;
            let (mut offset, mut served_ahead, mut deepest) = (0i64, 0, 0);
            while offset < 39_900 {
                let ahead_before = log.st.borrow().read_ahead.cursors.back().map(|c| c.next_offset);
                deepest = deepest.max(log.st.borrow().read_ahead.chunks.len());
                let r = log.read(offset, 2048).await.unwrap();
                let mut next = offset;
                batch::scan(&r.records, |_, h| {
                    assert_eq!(h.base_offset, next, "batches follow each other from the asked offset");
                    next = h.last_offset() + 1;
                });
                assert!(next > offset, "a read returns something");
                if ahead_before == Some(offset) {
                    served_ahead += 1;
                }
                offset = next;
            }
            assert!(served_ahead >= 5, "only {served_ahead} reads found a read-ahead waiting");
            // The chunk the consumer stands in, and the reads ahead of it.
            assert!((READ_AHEAD_CHUNKS..=READ_AHEAD_CHUNKS + 1).contains(&deepest), "reads ahead are issued back to back: {deepest}");
            // A read elsewhere ignores the read-ahead and still reads the right batch.
            let r = log.read(115, 1).await.unwrap();
            assert_eq!(batch::parse_header(&r.records).unwrap().base_offset, 100);
            drop_read_ahead(&log).await;
            log.close().await.unwrap();
        });
    }

    #[test]
    fn consumers_reading_the_same_stretch_together_read_it_from_disk_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            let log = log_read_from_disk(&path).await;
            let bytes = log.st.borrow().segments.values().map(|s| s.written).sum::<u64>() as usize;
            // Reads the next batches after `offset` and checks they follow on from it.
            let fetch = |offset: i64| {
                let log = &log;
                async move {
                    let r = log.read(offset, 8192).await.unwrap();
                    let mut next = offset;
                    batch::scan(&r.records, |_, h| {
                        assert_eq!(h.base_offset, next, "batches follow each other from the asked offset");
                        next = h.last_offset() + 1;
                    });
                    assert!(next > offset, "a read returns something");
                    next
                }
            };
            DISK_READS.with(|n| n.set(0));
            // Two consumers from the start, their fetches at once, one a fetch behind the other.
            let (mut a, mut b) = (fetch(0).await, 0);
            while b < 39_900 {
                let ahead = async { if a < 39_900 { fetch(a).await } else { a } };
                (a, b) = futures_lite::future::zip(ahead, fetch(b)).await;
            }
            let reads = DISK_READS.with(Cell::get);
            let once = bytes.div_ceil(read_len(8192));
            assert!(reads <= once + READ_AHEAD_CHUNKS, "{reads} reads for {once} reads' worth of log: the second consumer read its own");
            // A third, far behind, reads for itself and still reads the right batches.
            let mut c = 0;
            while c < 39_900 {
                c = fetch(c).await;
            }
            assert!(DISK_READS.with(Cell::get) > reads, "a consumer outside every window reads for itself");
            // Two in step: each fetch of one, answered, then the same fetch of the other.
            log.st.borrow_mut().read_ahead = ReadAhead::default();
            DISK_READS.with(|n| n.set(0));
            let mut a = 0;
            while a < 39_900 {
                let next = fetch(a).await;
                assert_eq!(fetch(a).await, next, "the same fetch reads the same batches");
                a = next;
            }
            let in_step = DISK_READS.with(Cell::get);
            assert!(in_step <= once + READ_AHEAD_CHUNKS, "{in_step} reads for {once} reads' worth of log by consumers in step");
            drop_read_ahead(&log).await;
            log.close().await.unwrap();
        });
    }

    /// Reads the log from offset 0 to `end` from the segment file (the cache turned off),
    /// checking that every batch follows the one before.
    async fn read_back_in_order(log: &PartitionLog, end: i64) {
        log.set_cache_cap(0);
        let (mut next, mut offset) = (0, 0);
        while offset < end {
            let r = log.read(offset, 1 << 20).await.unwrap();
            batch::scan(&r.records, |_, h| {
                assert_eq!(h.base_offset, next);
                next = h.last_offset() + 1;
            });
            assert!(next > offset, "a read at {offset} found nothing");
            offset = next;
        }
    }

    #[test]
    fn appends_beyond_the_write_cap_are_written_in_turns_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
            let one = batch(3).0.len();
            log.set_write_max(2 * one); // two batches per write
            let tasks: Vec<_> = (0..40)
                .map(|i| {
                    let log = log.clone();
                    rt::spawn(async move { log.append(&[batch(3)], i % 2 == 0).await.unwrap().base_offset })
                })
                .collect();
            let mut bases = Vec::new();
            for t in tasks {
                bases.push(t.await);
            }
            assert_eq!(bases, (0..40).map(|i| i * 3).collect::<Vec<_>>(), "offsets in append order");
            let o = log.offsets();
            assert_eq!((o.log_end, o.high_watermark), (120, 120));
            let writes = log.stats().writes;
            assert!(writes >= 20, "40 batches, at most two per write, in {writes} writes");
            // Everything reads back in order, from the segment file too.
            read_back_in_order(&log, 120).await;
            log.close().await.unwrap();
            let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.offsets().log_end, 120, "all of it is in the segment after a reopen");
            log.close().await.unwrap();
        });
    }

    #[test]
    fn a_preallocated_segment_is_trimmed_at_close_and_by_recovery_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let seg_path = segment_path(&path.join("p"), 0, "log");
            let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
            log.set_preallocate_step(1 << 20);
            let one = batch(300).0.len() as u64;
            // One batch (about 3.4 KiB) per write, so most writes rewrite a tail block and
            // cross into the next: they go as two, the tail block apart.
            for i in 0..50 {
                log.append(&[batch(300)], i % 5 == 0).await.unwrap();
            }
            let on_disk = SegmentFile::open(&seg_path, false).await.unwrap().size().await.unwrap();
            assert!(on_disk >= 1 << 20 && on_disk > 50 * one, "grown ahead of the data: {on_disk} bytes for {}", 50 * one);
            // A crash: no close, so the zeros past the data stay in the file.
            drop(log);
            let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.offsets().log_end, 15_000, "every batch is found again");
            let on_disk = SegmentFile::open(&seg_path, false).await.unwrap().size().await.unwrap();
            assert_eq!(on_disk, 50 * one, "recovery trims the preallocated zeros");
            log.set_preallocate_step(1 << 20);
            for _ in 0..30 {
                log.append(&[batch(300)], false).await.unwrap();
            }
            // Everything reads back in order from the segment file.
            read_back_in_order(&log, 24_000).await;
            log.close().await.unwrap();
            let on_disk = SegmentFile::open(&seg_path, false).await.unwrap().size().await.unwrap();
            assert_eq!(on_disk, 80 * one, "a clean close trims the file to its data");
        });
    }

    #[test]
    fn concurrent_durable_appends_share_writes_and_fdatasyncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let log = log.clone();
                    rt::spawn(async move { log.append(&[batch(3)], true).await.unwrap().base_offset })
                })
                .collect();
            let mut bases = Vec::new();
            for t in tasks {
                bases.push(t.await);
            }
            bases.sort();
            assert_eq!(bases, (0..64).map(|i| i * 3).collect::<Vec<_>>());
            let o = log.offsets();
            assert_eq!((o.log_end, o.high_watermark, o.durable), (192, 192, 192));
            let s = log.stats();
            assert_eq!(s.appends, 64);
            // Group commit: 64 durable appends rode on a handful of writes and fdatasyncs.
            assert!(s.writes < 8, "{s:?}");
            assert!(s.syncs < 8, "{s:?}");
        });
    }

    #[test]
    fn reopen_recovers_offsets_and_reads_across_the_tail_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let p = path.join("p");
            {
                let log = PartitionLog::open(p.clone(), config(), Rc::new(Notify::default())).await.unwrap();
                for _ in 0..100 {
                    log.append(&[batch(5)], false).await.unwrap();
                }
            }
            let log = PartitionLog::open(p, config(), Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.offsets().log_end, 500);
            // Appends after recovery continue in the partial tail block.
            log.append(&[batch(1)], true).await.unwrap();
            let r = log.read(0, 1 << 20).await.unwrap();
            let mut n = 0;
            let mut next = 0;
            batch::scan(&r.records, |_, h| {
                assert_eq!(h.base_offset, next);
                next = h.last_offset() + 1;
                n += 1;
            });
            assert_eq!((n, next), (101, 501));
            let r = log.read(497, 1).await.unwrap();
            assert_eq!(batch::parse_header(&r.records).unwrap().base_offset, 495);
            assert!(matches!(log.read(502, 1).await, Err(LogError::OffsetOutOfRange { .. })));
        });
    }

    fn small_segments() -> TopicConfig {
        let mut c = config();
        c.segment_bytes = 1000;
        c
    }

    #[test]
    fn appends_keep_arrival_order_across_segment_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let log = PartitionLog::open(path.join("p"), small_segments(), Rc::new(Notify::default())).await.unwrap();
            // ~130-byte batches into 1000-byte segments: a roll every few appends, while later
            // appends are already waiting.
            // Arrivals are staggered so that new appends come in while earlier ones wait out a
            // roll's write and fdatasync, as pipelined produce requests do.
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let log = log.clone();
                tasks.push(rt::spawn(async move { log.append(&[batch(10)], true).await.unwrap().base_offset }));
                rt::sleep(std::time::Duration::from_micros(20)).await;
            }
            let mut bases = Vec::new();
            for t in tasks {
                bases.push(t.await);
            }
            assert_eq!(bases, (0..200).map(|i| i * 10).collect::<Vec<_>>(), "offsets out of arrival order");
            assert!(log.st.borrow().segments.len() > 20);
        });
    }

    /// Every record from offset 0: (offset, key, value).
    async fn read_all(log: &PartitionLog) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < log.offsets().high_watermark {
            let r = log.read(at, 1 << 20).await.unwrap();
            assert!(!r.records.is_empty(), "no progress at offset {at}");
            batch::scan(&r.records, |pos, h| {
                let b = &r.records[pos..pos + h.total_len()];
                let mut offsets = Vec::new();
                batch::visit(b, h, |rec, _| offsets.push(rec.offset)).unwrap();
                for (o, (k, v)) in offsets.into_iter().zip(batch::key_values(b, h).unwrap()) {
                    if o >= at {
                        out.push((o, k, v));
                    }
                }
                at = at.max(h.last_offset() + 1);
            });
        }
        out
    }

    #[test]
    fn compaction_keeps_each_keys_latest_record_at_its_offset_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let mut c = small_segments();
            c.cleanup_policy = "compact".into();
            c.delete_retention_ms = 60_000;
            let p = path.join("p");
            let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
            let now = now_ms();
            let key = |i: usize| Some(Bytes::from(format!("k{i}")));
            // (key, value or tombstone, timestamp)
            let mut writes: Vec<(Option<Bytes>, Option<Bytes>, i64)> = Vec::new();
            for i in 0..60 {
                writes.push((key(i % 6), Some(Bytes::from(format!("v{i}"))), now));
            }
            writes.push((key(0), None, 1_000)); // a tombstone older than delete.retention.ms
            writes.push((key(1), None, now)); // a fresh one
            writes.push((None, Some(Bytes::from("unkeyed")), now));
            for i in 60..90 {
                writes.push((key(i % 4 + 2), Some(Bytes::from(format!("v{i}"))), now));
            }
            for (k, v, ts) in &writes {
                let b = batch::build(&[(k.clone(), v.clone())], *ts);
                let h = batch::validate(&b).unwrap();
                log.append(&[(b, h)], false).await.unwrap();
            }
            let end = log.offsets().log_end;
            assert_eq!(end, writes.len() as i64);
            assert!(log.st.borrow().segments.len() > 5);
            let before = read_all(&log).await;
            assert_eq!(before.len(), writes.len());

            let (rewritten, dropped) = log.compact(now).await.unwrap();
            assert!(rewritten > 0 && dropped > 0, "{rewritten} {dropped}");
            assert_eq!(log.compact(now).await.unwrap(), (0, 0), "nothing new to clean");
            let after = read_all(&log).await;
            // Every surviving record is one of the originals, at its own offset.
            for (o, k, v) in &after {
                assert_eq!((k, v), (&writes[*o as usize].0, &writes[*o as usize].1), "offset {o} changed");
            }
            assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
            // Replaying what is left gives the same table as replaying everything.
            let table = |recs: &[(i64, Option<Bytes>, Option<Bytes>)]| {
                let mut t = BTreeMap::new();
                for (_, k, v) in recs {
                    match (k, v) {
                        (Some(k), Some(v)) => t.insert(k.clone(), v.clone()),
                        (Some(k), None) => t.remove(k),
                        (None, _) => None,
                    };
                }
                t
            };
            assert_eq!(table(&after), table(&before));
            let keys: Vec<&Option<Bytes>> = after.iter().map(|(_, k, _)| k).collect();
            assert!(!keys.contains(&&key(0)), "the old tombstone and everything it deleted are gone: {after:?}");
            assert!(after.iter().any(|(_, k, v)| *k == key(1) && v.is_none()), "the fresh tombstone stays");
            assert!(after.iter().any(|(_, k, _)| k.is_none()), "records without a key stay");
            assert!(after.len() < 25, "{} records left of {}", after.len(), writes.len());
            assert_eq!(log.offsets().log_end, end);
            drop(log);

            let log = PartitionLog::open(p, c, Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.offsets().log_end, end, "recovery keeps every segment despite the gaps");
            let reopened = read_all(&log).await;
            assert_eq!(reopened, after);
            let next = log.append(&[batch(1)], true).await.unwrap().base_offset;
            assert_eq!(next, end);
        });
    }

    /// An idempotent batch of `n` records from producer `pid`, epoch `epoch`, first sequence `seq`.
    fn idem(pid: i64, epoch: i16, seq: i32, n: usize) -> (Bytes, BatchHeader) {
        let recs: Vec<_> = (0..n).map(|i| (None, Some(Bytes::from(format!("r{}", seq as usize + i))))).collect();
        let mut b = batch::build(&recs, 1_000).to_vec();
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let b = Bytes::from(b);
        let h = batch::validate(&b).unwrap();
        (b, h)
    }

    #[test]
    fn idempotent_retries_get_their_first_offsets_even_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let p = path.join("p");
            let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
            let mut firsts = Vec::new();
            for i in 0..30 {
                firsts.push(log.append(&[idem(5, 0, i * 3, 3)], true).await.unwrap().base_offset);
                log.append(&[batch(2)], true).await.unwrap(); // a non-idempotent producer in between
            }
            let end = log.offsets().log_end;
            assert!(log.st.borrow().segments.len() > 3, "rolls wrote producer snapshots");
            // The last five batches are recognised; the log does not grow.
            for i in 25..30 {
                let again = log.append(&[idem(5, 0, i * 3, 3)], true).await.unwrap();
                assert_eq!(again.base_offset, firsts[i as usize]);
            }
            assert_eq!(log.offsets().log_end, end);
            let gap = log.append(&[idem(5, 0, 95, 1)], true).await;
            assert!(matches!(gap, Err(LogError::OutOfOrderSequence(_))), "{gap:?}");
            let two = log.append(&[idem(6, 0, 0, 1), idem(6, 0, 1, 1)], true).await;
            assert!(matches!(two, Err(LogError::InvalidRecord(_))), "{two:?}");
            drop(log);
            for reopen in 0..2 {
                // Once from the roll snapshot plus a replay, then from the snapshot open wrote.
                let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
                let again = log.append(&[idem(5, 0, 87, 3)], true).await.unwrap();
                assert_eq!(again.base_offset, firsts[29], "reopen {reopen}: the retry is still a duplicate");
                assert_eq!(log.offsets().log_end, end);
                drop(log);
            }
            let log = PartitionLog::open(p, small_segments(), Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.append(&[idem(5, 0, 90, 1)], true).await.unwrap().base_offset, end, "the sequence goes on");
            assert_eq!(log.append(&[idem(5, 1, 0, 1)], true).await.unwrap().base_offset, end + 1, "a new epoch starts at 0");
            let stale = log.append(&[idem(5, 0, 91, 1)], true).await;
            assert!(matches!(stale, Err(LogError::InvalidProducerEpoch(_))), "{stale:?}");
        });
    }

    #[test]
    fn a_cancelled_append_does_not_wedge_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let log = PartitionLog::open(path.join("p"), small_segments(), Rc::new(Notify::default())).await.unwrap();
            for _ in 0..7 {
                log.append(&[batch(10)], false).await.unwrap();
            }
            // The next append rolls; two more queue behind it; the middle one is cancelled while
            // waiting for its turn, and the first is cancelled during its I/O.
            let spawn = |log: Rc<PartitionLog>| rt::spawn(async move { log.append(&[batch(10)], true).await.map(|a| a.base_offset) });
            let a = spawn(log.clone());
            let b = spawn(log.clone());
            let c = spawn(log.clone());
            rt::sleep(std::time::Duration::from_micros(50)).await;
            drop(b);
            drop(a);
            let c = c.await.unwrap();
            let d = log.append(&[batch(10)], true).await.unwrap().base_offset;
            assert_eq!(d, c + 10);
            let o = log.offsets();
            assert_eq!((o.log_end, o.high_watermark, o.durable), (d + 10, d + 10, d + 10));
            let st = log.st.borrow();
            assert!(!st.writing && !st.syncing && !st.rolling);
            drop(st);
            assert!(log.turns.idle());
        });
    }

    #[test]
    fn close_leaves_every_index_on_disk_and_refuses_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        rt::run_local(async move {
            io_probe(&path).await;
            let p = path.join("p");
            let mut c = small_segments();
            c.index_interval_bytes = 200;
            let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
            for _ in 0..30 {
                log.append(&[batch(4)], false).await.unwrap();
            }
            // Appends in flight when the close starts are completed by it; later ones are refused.
            let tasks: Vec<_> = (0..40)
                .map(|_| {
                    let log = log.clone();
                    rt::spawn(async move { log.append(&[batch(4)], false).await.map(|a| a.base_offset) })
                })
                .collect();
            rt::sleep(std::time::Duration::from_micros(50)).await;
            log.close().await.unwrap();
            let mut done = 30;
            for t in tasks {
                if t.await.is_ok() {
                    done += 1;
                }
            }
            let end = log.offsets().log_end;
            assert_eq!(end, done * 4);
            assert_eq!(log.offsets().durable, end);
            assert!(matches!(log.append(&[batch(1)], true).await, Err(LogError::Storage(_))));
            let (segments, active_size) = {
                let st = log.st.borrow();
                assert!(st.segments.values().all(|s| s.index_saved));
                (st.segments.keys().copied().collect::<Vec<_>>(), st.segments.values().next_back().unwrap().size)
            };
            assert!(segments.len() > 1, "{segments:?}");
            drop(log);
            let names = fs::list_dir(p.clone()).await.unwrap();
            for base in &segments {
                for ext in ["index", "timeindex"] {
                    assert!(names.contains(&format!("{base:020}.{ext}")), "{base}.{ext} missing: {names:?}");
                }
            }
            let last = SegmentFile::open(&segment_path(&p, *segments.last().unwrap(), "log"), false).await.unwrap();
            assert_eq!(last.size().await.unwrap(), active_size, "O_DIRECT padding trimmed");

            let log = PartitionLog::open(p, c, Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.offsets().log_end, end);
            assert!(log.st.borrow().segments.values().all(|s| s.index_saved), "nothing rebuilt");
            assert_eq!(log.append(&[batch(1)], true).await.unwrap().base_offset, end);
            assert_eq!(read_all(&log).await.len() as i64, end + 1);
        });
    }

    async fn io_probe(dir: &Path) {
        SegmentFile::prime_device_probe(dir, 0).await.unwrap();
    }

    // Regression tests for what the storage simulation (`super::super::simulation`) found, each
    // on the simulated disk with one targeted fault.

    /// Runs `f` with a simulated disk installed on this thread.
    fn on_sim_disk<Fut: std::future::Future<Output = ()> + 'static>(plan: FaultPlan, f: impl FnOnce(Rc<SimDisk>) -> Fut) {
        let disk = SimDisk::new(1, plan);
        let _installed = disk.install();
        rt::run_local(f(disk));
    }

    async fn open_sim(c: TopicConfig) -> Rc<PartitionLog> {
        PartitionLog::open(PathBuf::from("/sim/p"), c, Rc::new(Notify::default())).await.unwrap()
    }

    fn segments_of(bytes: i64) -> TopicConfig {
        let mut c = config();
        c.segment_bytes = bytes;
        c
    }

    fn record(key: &str, value: &str, ts: i64) -> (Bytes, BatchHeader) {
        let b = batch::build(&[(Some(Bytes::from(key.to_string())), Some(Bytes::from(value.to_string())))], ts);
        let h = batch::validate(&b).unwrap();
        (b, h)
    }

    fn is_storage_error<T: std::fmt::Debug>(r: &Result<T, LogError>) -> bool {
        matches!(r, Err(LogError::Storage(_)))
    }

    /// ListOffsets MAX_TIMESTAMP names the first record holding the log's largest timestamp,
    /// inside a compressed batch whose timestamps are out of order too (KIP-734, KAFKA-16310).
    #[test]
    fn max_timestamp_names_the_record_holding_it() {
        use crate::protocol::batch::tests::make_batch_with;
        use crate::protocol::codec;
        on_sim_disk(FaultPlan::default(), |_disk| async move {
            let log = open_sim(config()).await;
            let batch = |deltas: &[i64], base_ts: i64| {
                let b = make_batch_with(deltas, base_ts, codec::GZIP);
                let h = batch::validate(&b).unwrap();
                (b, h)
            };
            assert_eq!(log.max_timestamp().await.unwrap(), None, "an empty log has none");
            log.append(&[batch(&[100, 400, 250], 1_000)], true).await.unwrap();
            assert_eq!(log.max_timestamp().await.unwrap(), Some((1, 1_400)));
            log.append(&[batch(&[0, 50], 1_400)], true).await.unwrap();
            assert_eq!(log.max_timestamp().await.unwrap(), Some((4, 1_450)));
            // A tie keeps the first record that reached it.
            log.append(&[batch(&[0], 1_450)], true).await.unwrap();
            assert_eq!(log.max_timestamp().await.unwrap(), Some((4, 1_450)));
        });
    }

    #[test]
    fn a_rolled_back_append_is_not_left_as_the_largest_timestamp() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let log = open_sim(config()).await;
            log.append(&[record("a", "1", 5_000)], true).await.unwrap();
            disk.fail_after(OpKind::Write, 0);
            assert!(is_storage_error(&log.append(&[record("a", "2", 9_000)], true).await));
            assert_eq!(log.max_timestamp().await.unwrap(), Some((0, 5_000)), "offset 1 was rolled back");
            assert_eq!(log.append(&[record("a", "3", 7_000)], true).await.unwrap().base_offset, 1);
            assert_eq!(log.max_timestamp().await.unwrap(), Some((1, 7_000)));
        });
    }

    #[test]
    fn after_a_failed_fdatasync_an_acks_1_append_already_in_flight_is_refused() {
        // Every I/O takes two yields: the acks=1 append's write completes after the fdatasync of
        // the acks=all append before it has failed.
        let plan = FaultPlan { delay_yields_min: 2, delay_yields_max: 2, ..FaultPlan::default() };
        on_sim_disk(plan, |disk| async move {
            let log = open_sim(config()).await;
            disk.fail_after(OpKind::Sync, 0);
            let (l1, l2) = (log.clone(), log.clone());
            let all = rt::spawn(async move { l1.append(&[batch(1)], true).await });
            let one = rt::spawn(async move { l2.append(&[batch(1)], false).await });
            assert!(is_storage_error(&all.await));
            let one = one.await;
            assert!(is_storage_error(&one), "acknowledged after a failed fdatasync: {one:?}");
            assert!(is_storage_error(&log.append(&[batch(1)], false).await), "offline until reopened");
            assert_eq!(log.offsets().durable, 0);
        });
    }

    #[test]
    fn a_failed_fdatasync_while_closing_a_segment_takes_the_partition_offline() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let log = open_sim(segments_of(1000)).await;
            for _ in 0..6 {
                log.append(&[batch(10)], false).await.unwrap();
            }
            // The next append rolls: the roll's own fdatasync passes, the one closing the
            // segment (after trimming its padding) fails.
            disk.fail_after(OpKind::Sync, 1);
            assert!(is_storage_error(&log.append(&[batch(10)], true).await));
            let again = log.append(&[batch(10)], true).await;
            assert!(is_storage_error(&again), "acknowledged after a failed fdatasync: {again:?}");
        });
    }

    #[test]
    fn a_roll_that_fails_after_creating_the_next_segment_loses_nothing_on_reopen() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let c = segments_of(1100);
            let log = open_sim(c.clone()).await;
            for _ in 0..6 {
                log.append(&[batch(10)], true).await.unwrap();
            }
            // The roll writes the two index files, creates the next segment (at offset 60),
            // then fails writing the producer snapshot.
            disk.fail_after(OpKind::WriteAtomic, 2);
            assert!(is_storage_error(&log.append(&[batch(10)], true).await));
            // A smaller batch still fits in the old segment: offset 60 now lives there.
            assert_eq!(log.append(&[batch(1)], true).await.unwrap().base_offset, 60);
            assert_eq!(log.st.borrow().segments.len(), 1);
            for _ in 0..20 {
                log.append(&[batch(10)], true).await.unwrap();
            }
            let end = log.offsets().log_end;
            assert!(log.st.borrow().segments.len() > 2);
            drop(log);
            disk.kill();
            let log = open_sim(c).await;
            assert_eq!(log.offsets().log_end, end, "recovery dropped the segments after the empty one");
            assert_eq!(read_all(&log).await.len() as i64, end);
        });
    }

    #[test]
    fn compaction_never_drops_a_durable_record_for_one_a_power_loss_can_take() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let mut c = segments_of(1000);
            c.cleanup_policy = "compact".into();
            let log = open_sim(c.clone()).await;
            log.append(&[record("k", "durable", 1_000)], true).await.unwrap();
            while log.st.borrow().segments.len() < 2 {
                log.append(&[record("other", "x", 1_000)], true).await.unwrap();
            }
            // A newer value of k, written but not fdatasync'd (acks=1), in the active segment.
            log.append(&[record("k", "volatile", 1_000)], false).await.unwrap();
            let (rewritten, _) = log.compact(now_ms()).await.unwrap();
            assert_eq!(rewritten, 1, "the closed segment's older `other` records go");
            drop(log);
            disk.power_loss();
            let log = open_sim(c).await;
            let k: Vec<_> = read_all(&log).await.into_iter().filter(|r| r.1.as_deref() == Some(&b"k"[..])).collect();
            assert_eq!(k.first().map(|r| r.2.clone()), Some(Some(Bytes::from("durable"))), "{k:?}");
        });
    }

    #[test]
    fn a_segment_left_by_a_roll_cut_short_is_made_durable_before_it_takes_writes() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let c = segments_of(1000);
            let log = open_sim(c.clone()).await;
            for _ in 0..6 {
                log.append(&[batch(10)], true).await.unwrap();
            }
            drop(log);
            disk.kill();
            // This open leaves a producer snapshot at 60, so the next one writes none (whose
            // directory fsync would hide the bug).
            let log = open_sim(c.clone()).await;
            // The roll creates the next segment's file; the directory fsync after it fails.
            disk.fail_after(OpKind::SyncDir, 0);
            assert!(is_storage_error(&log.append(&[batch(10)], true).await));
            drop(log);
            disk.kill();
            let log = open_sim(c.clone()).await;
            assert_eq!(log.st.borrow().segments.len(), 2, "the empty new segment is the active one");
            assert_eq!(log.append(&[batch(10)], true).await.unwrap().base_offset, 60);
            drop(log);
            disk.power_loss();
            let log = open_sim(c).await;
            assert_eq!(log.offsets().log_end, 70, "an acknowledged acks=all batch was lost");
        });
    }

    #[test]
    fn recovery_cuts_a_batch_whose_base_offset_does_not_follow() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let log = open_sim(config()).await;
            for _ in 0..3 {
                log.append(&[batch(1)], true).await.unwrap();
            }
            drop(log);
            disk.kill();
            // What a power loss leaves when the block holding the last batch's first bytes is
            // lost and the next block is not: its base offset (outside the CRC) reads as zeros.
            let file = SegmentFile::open(Path::new("/sim/p/00000000000000000000.log"), false).await.unwrap();
            let len = file.size().await.unwrap();
            let mut bytes = file.read(0, len as usize).await.unwrap().to_vec();
            let mut last = 0;
            batch::scan(&bytes, |pos, _| last = pos);
            bytes[last..last + 8].fill(0);
            file.write_aligned(0, &bytes).await.unwrap();
            file.truncate(len).await.unwrap();
            disk.kill();
            let log = open_sim(config()).await;
            assert_eq!(log.offsets().log_end, 2, "the batch claiming offset 0 after offset 1 is damage");
            assert_eq!(read_all(&log).await.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1]);
        });
    }

    #[test]
    fn a_partition_opens_on_a_full_disk_and_takes_writes_again_once_there_is_room() {
        on_sim_disk(FaultPlan::default(), |disk| async move {
            let log = open_sim(config()).await;
            for seq in 0..3 {
                log.append(&[idem(9, 0, seq, 1)], true).await.unwrap();
            }
            drop(log);
            disk.kill();
            disk.set_full(true);
            // Recovery wants to write a producer snapshot; without room it does without.
            let log = open_sim(config()).await;
            assert_eq!(log.offsets().log_end, 3);
            assert!(is_storage_error(&log.append(&[batch(1)], true).await));
            assert_eq!(log.append(&[idem(9, 0, 2, 1)], true).await.unwrap().base_offset, 2, "a retry needs no room");
            disk.set_full(false);
            assert_eq!(log.append(&[batch(1)], true).await.unwrap().base_offset, 3);
            assert_eq!(log.append(&[idem(9, 0, 3, 1)], true).await.unwrap().base_offset, 4);
        });
    }

    #[test]
    fn two_compaction_passes_at_once_do_not_share_the_cleaned_file() {
        let plan = FaultPlan { delay_yields_min: 1, delay_yields_max: 1, ..FaultPlan::default() };
        on_sim_disk(plan, |disk| async move {
            let mut c = segments_of(1000);
            c.cleanup_policy = "compact".into();
            let log = open_sim(c.clone()).await;
            for i in 0..40 {
                log.append(&[record(&format!("k{}", i % 3), &format!("v{i}"), 1_000)], true).await.unwrap();
            }
            let (a, b) = futures_lite::future::zip(log.compact(now_ms()), log.compact(now_ms())).await;
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(a.0 > 0 && b == (0, 0), "one pass ran, the other found one running: {a:?} {b:?}");
            let after = read_all(&log).await;
            drop(log);
            disk.kill();
            let log = open_sim(c).await;
            assert_eq!(log.offsets().log_end, 40);
            assert_eq!(read_all(&log).await, after);
        });
    }
}
