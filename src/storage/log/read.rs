//! Reads for fetch: whole batches from the batch cache or the segment files, the read-ahead that
//! keeps catch-up consumers off the device's latency, waiting for data, and timestamp lookups.

use super::*;

/// Smallest read of a segment when serving a fetch.
pub(super) const READ_MIN_BYTES: usize = 64 * 1024;

/// How much of a segment a read for `max_bytes` asks the disk for (and its read-ahead after it).
pub(super) fn read_len(max_bytes: usize) -> usize {
    max_bytes.clamp(READ_MIN_BYTES, SEGMENT_READ_MAX_BYTES)
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
pub(super) struct ReadAhead {
    /// Least recently moved first; at most [`READ_CURSORS_MAX`].
    pub(super) cursors: VecDeque<Cursor>,
    /// Least recently used first.
    pub(super) chunks: VecDeque<Rc<AheadChunk>>,
}

/// Where a consumer reading in order stands: the batch at `next_offset` starts at `pos` of `file`.
pub(super) struct Cursor {
    file: SegmentFile,
    pos: u64,
    pub(super) next_offset: i64,
    /// The consumer's read size: its window is `READ_AHEAD_CHUNKS` of them.
    want: usize,
    moved_ms: i64,
}

/// Reads in flight or done ahead of one consumer.
pub(super) const READ_AHEAD_CHUNKS: usize = 4;

/// Consumers of one partition followed at once; the least recently served one is forgotten first.
pub(super) const READ_CURSORS_MAX: usize = 4;

/// A cursor that has not moved for this long belongs to a consumer that has stopped or caught up.
pub(super) const READ_CURSOR_IDLE_MS: i64 = 10_000;

pub(super) struct AheadChunk {
    file: SegmentFile,
    pos: u64,
    /// Counted in this core's [`READ_AHEAD_BYTES`] until dropped.
    len: usize,
    result: RefCell<Option<std::io::Result<ReadChunk>>>,
    done: Notify,
}

impl AheadChunk {
    pub(super) fn covers(&self, file: &SegmentFile, pos: u64) -> bool {
        self.pos <= pos && pos < self.pos + self.len as u64 && self.file.same_file(file)
    }
}

impl Cursor {
    pub(super) fn window_holds(&self, c: &AheadChunk) -> bool {
        let end = self.pos + (READ_AHEAD_CHUNKS * self.want) as u64;
        c.pos < end && self.pos < c.pos + c.len as u64 && c.file.same_file(&self.file)
    }
}

impl ReadAhead {
    /// Where a read of `offset`, whose batch the offset index places at or after `pos`, can start:
    /// the position of a consumer's cursor when it stands at or before that batch.
    pub(super) fn start_for(&self, file: &SegmentFile, offset: i64, pos: u64, limit: u64) -> u64 {
        self.cursors
            .iter()
            .rev()
            .find(|c| c.file.same_file(file) && offset >= c.next_offset && c.pos >= pos && c.pos < limit)
            .map_or(pos, |c| c.pos)
    }

    /// The chunk holding byte `pos` of `file`, marked as just used.
    pub(super) fn find(&mut self, file: &SegmentFile, pos: u64) -> Option<Rc<AheadChunk>> {
        let i = self.chunks.iter().position(|c| c.covers(file, pos))?;
        let c = self.chunks.remove(i).expect("found");
        self.chunks.push_back(c.clone());
        Some(c)
    }

    /// Drops a chunk whose read failed or came back short: later reads go to the file.
    pub(super) fn forget(&mut self, c: &Rc<AheadChunk>) {
        self.chunks.retain(|k| !Rc::ptr_eq(k, c));
    }

    /// The cursor that stood at `from` now stands at `pos` (a new cursor when none did).
    pub(super) fn moved(&mut self, file: &SegmentFile, from: u64, pos: u64, next_offset: i64, want: usize) {
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
    pub(super) fn top_up(&mut self, file: &SegmentFile, from: u64, limit: u64, want: usize) {
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
pub(super) async fn gather(st: &RefCell<State>, file: &SegmentFile, pos: u64, want: usize) -> Option<Bytes> {
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
    pub(super) static DISK_READS: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// Bytes of read-ahead chunks this core holds or is reading, all partitions together.
    pub(super) static READ_AHEAD_BYTES: Cell<usize> = const { Cell::new(0) };
}

impl Drop for AheadChunk {
    fn drop(&mut self) {
        READ_AHEAD_BYTES.with(|b| b.set(b.get() - self.len));
    }
}

/// Reads whole batches covering `offset` onwards from `pos`, up to `limit` bytes of file.
pub(super) async fn read_batches(
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

/// The batches of `records` that start below `end`.
fn below(records: Bytes, end: i64) -> Bytes {
    let mut cut = 0;
    batch::scan(&records, |at, h| {
        if h.base_offset < end && cut == at {
            cut = at + h.total_len();
        }
    });
    records.slice(..cut)
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upto {
    /// A follower: what is written.
    Written,
    /// A consumer: the high watermark.
    HighWatermark,
    /// A `read_committed` consumer: the last stable offset.
    Stable,
}

impl PartitionLog {
    /// Reads whole batches from `offset` (the batch containing it first), up to `max_bytes` but
    /// always at least one batch when any exists, and never past the high watermark.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        self.read_upto(offset, max_bytes, Upto::HighWatermark).await
    }

    /// [`read`](Self::read) for a `read_committed` consumer: up to the last stable offset.
    pub async fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        self.read_upto(offset, max_bytes, Upto::Stable).await
    }

    /// [`read`](Self::read) for a follower: up to the end of what is written, past the high
    /// watermark (which the follower's copy is what moves). `high_watermark` is still the
    /// high watermark.
    pub async fn read_for_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        self.read_upto(offset, max_bytes, Upto::Written).await
    }

    async fn read_upto(&self, offset: i64, max_bytes: usize, bound: Upto) -> Result<ReadInfo, LogError> {
        let (file, pos, limit, seg_base, upto) = {
            let st = self.st.borrow();
            let (hw, log_start) = (st.hw(), st.log_start);
            let upto = match bound {
                Upto::Written => st.write_end,
                Upto::HighWatermark => hw,
                Upto::Stable => st.lso(),
            };
            if offset < st.log_start || offset > st.log_end {
                return Err(LogError::OffsetOutOfRange { log_start: st.log_start, log_end: st.log_end });
            }
            let empty = ReadInfo { records: Bytes::new(), high_watermark: hw, log_start };
            if offset >= upto {
                return Ok(empty);
            }
            if st.cache.front().is_some_and(|c| c.base <= offset) {
                // One batch goes out by reference; several are joined into one buffer.
                let mut taken: Vec<&Bytes> = Vec::new();
                let mut len = 0;
                for c in st.cache.iter().filter(|c| c.last >= offset && c.base < upto) {
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
            // The first segment may begin past the log start: segments compaction emptied, or
            // left ending early, are deleted once the start passes them.
            let Some((&first, _)) = st.segments.range(..=offset).next_back().or_else(|| st.segments.iter().next()) else {
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
            (file, start, limit, seg_base, upto)
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
        // The file holds what is written, which on a replicated partition may run past the
        // high watermark: batches from there on are not the reader's yet.
        let records = if next_offset > upto { below(records, upto) } else { records };
        let st = self.st.borrow();
        tracing::trace!(seg_base, offset, bytes = records.len(), "read from segment file");
        Ok(ReadInfo { records, high_watermark: st.hw(), log_start: st.log_start })
    }

    /// Waits until the high watermark passes `offset` or `deadline_ms` (wall clock) passes.
    pub async fn wait_for_data(&self, offset: i64, deadline_ms: i64) {
        loop {
            if self.st.borrow().hw() > offset {
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
                .filter(|s| s.max_ts >= ts && s.next_offset > st.log_start)
                .map(|s| {
                    let rel = s.index.offset_for_time(ts);
                    (s.file.clone(), s.index.position_for(rel) as u64, s.written, s.base + rel as i64)
                })
                .collect()
        };
        // Records below the log start (DeleteRecords, retention) are not found, as in Kafka.
        let (hw, start) = {
            let st = self.st.borrow();
            (st.hw(), st.log_start)
        };
        for (file, mut pos, limit, _) in candidates {
            while pos < limit {
                let want = ((limit - pos) as usize).min(SEGMENT_READ_MAX_BYTES);
                let chunk = file.read(pos, want).await.map_err(|e| storage_err("reading", file.path(), e))?;
                let mut found = None;
                let mut consumed = 0;
                batch::scan(&chunk, |at, h| {
                    consumed = at + h.total_len();
                    if found.is_some() || h.base_offset >= hw || h.last_offset() < start {
                        return;
                    }
                    let max = h.max_timestamp;
                    if max >= ts {
                        let b = &chunk[at..at + h.total_len()];
                        found = match batch::record_timestamps(b, h, RECORDS_DECOMPRESSED_MAX_BYTES) {
                            Some(recs) => recs.into_iter().find(|&(o, t)| t >= ts && o >= start),
                            None => Some((h.base_offset.max(start), max)),
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
}
