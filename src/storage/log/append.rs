//! The write path: offsets assigned in arrival order, group-committed O_DIRECT writes, fdatasync
//! shared by every waiter it covers, preallocation ahead of the writes, and the interval flush.

use super::*;

/// The last `n` bytes of the concatenation of `parts`.
pub(super) fn last_bytes(parts: &[&[u8]], n: usize) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = vec![0; n];
    copy_from_parts(parts, total - n, &mut out);
    out
}

/// The aborted-transaction index entry of a transaction a marker just closed (the marker is the
/// last batch `producers` has seen), or `None` if it was committed. Appends and recovery's
/// replay both build theirs here.
pub(super) fn aborted_entry(producers: &ProducerStates, t: &CompletedTxn) -> Option<AbortedTxn> {
    let lso = producers.first_open_offset().unwrap_or(t.last_offset + 1);
    t.aborted.then_some(AbortedTxn { producer_id: t.producer_id, first_offset: t.first_offset, last_offset: t.last_offset, last_stable_offset: lso })
}

/// Adds a transaction a marker just closed to the active segment's aborted-transaction index,
/// if it was aborted.
pub(super) fn note_aborted(st: &mut State, t: CompletedTxn) {
    if let Some(entry) = aborted_entry(&st.producers, &t) {
        txn_index::insert(&mut st.active().aborted, entry);
    }
}

impl PartitionLog {
    /// [`append_owned`](Self::append_owned) of a copy of each batch, for callers that keep theirs.
    pub async fn append(&self, batches: &[(Bytes, BatchHeader)], wait_durable: bool) -> Result<AppendInfo, LogError> {
        self.append_owned(batches.iter().map(|(b, h)| (BytesMut::from(&b[..]), *h)).collect(), wait_durable).await
    }

    /// Appends validated batches, patching each in place (base offset, leader epoch, and for
    /// LogAppendTime topics the timestamp and CRC) and then keeping the same bytes for the write
    /// and the batch cache. Returns once they are written (and, with `wait_durable` and the
    /// default flush policy, fdatasync'd). On a storage error nothing of this call is readable.
    pub async fn append_owned(&self, batches: Vec<(BytesMut, BatchHeader)>, wait_durable: bool) -> Result<AppendInfo, LogError> {
        self.append_owned_verified(batches, wait_durable, None).await
    }

    /// [`append_owned`](Self::append_owned) of a producer's transactional batch that its
    /// coordinator verified when the producer's [`marker_token`](Self::marker_token) was
    /// `verified_at` (Kafka's verification guard): refused with [`LogError::VerificationStale`]
    /// if a marker of the producer came since and it has no transaction open here at the
    /// batch's epoch, for that marker may have ended the transaction the verification saw.
    pub async fn append_owned_verified(
        &self,
        batches: Vec<(BytesMut, BatchHeader)>,
        wait_durable: bool,
        verified_at: Option<(u64, u64)>,
    ) -> Result<AppendInfo, LogError> {
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
            if let Some((b, h)) = batches.first().filter(|(_, h)| h.is_control()) {
                // A transaction marker (the coordinator's; clients' are refused before this):
                // no sequence, checked against the producer's and the coordinator's epochs.
                let marker = batch::parse_marker(b, h).ok_or_else(|| LogError::InvalidRecord("a control batch that is not a transaction marker".into()))?;
                match st.producers.check_marker(h.producer_id, h.producer_epoch, marker.coordinator_epoch) {
                    Ok(()) => st.count_marker(h.producer_id),
                    Err(MarkerRefusal::StaleProducerEpoch { current }) => {
                        return Err(LogError::InvalidProducerEpoch(format!(
                            "marker for producer {} epoch {} older than its current epoch {current}",
                            h.producer_id, h.producer_epoch
                        )))
                    }
                    Err(MarkerRefusal::StaleCoordinatorEpoch { current }) => {
                        return Err(LogError::CoordinatorFenced(format!(
                            "marker for producer {} from coordinator epoch {} older than {current}",
                            h.producer_id, marker.coordinator_epoch
                        )))
                    }
                }
            } else if idempotent {
                let h = &batches[0].1;
                if verified_at.is_some_and(|at| at != st.marker_token(h.producer_id))
                    && h.is_transactional()
                    && !st.producers.in_transaction(h.producer_id, h.producer_epoch)
                {
                    return Err(LogError::VerificationStale(format!(
                        "producer {} epoch {}: a marker of it was written here since its transaction was verified",
                        h.producer_id, h.producer_epoch
                    )));
                }
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
                        return Ok(AppendInfo {
                            base_offset: m.first_offset,
                            end,
                            log_append_time: -1,
                            log_start: self.st.borrow().log_start,
                        });
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
            let epoch = st.epochs.latest();
            for (mut m, h) in batches {
                let base = st.log_end;
                batch::patch(&mut m, base, epoch, append_time);
                let max_ts = append_time.unwrap_or(h.max_timestamp);
                self.queue_batch(&mut st, m.freeze(), &h, base, max_ts, config.index_interval_bytes);
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
            end,
            log_append_time: append_time.unwrap_or(-1),
            log_start: self.st.borrow().log_start,
        })
    }

    /// Queues one batch whose offsets are settled (`base`, and `h`'s last offset delta) on the
    /// active segment: its index entry, sizes, the pending write, the producer state and the
    /// batch cache. Synchronous, inside an admitted append.
    pub(super) fn queue_batch(&self, st: &mut State, bytes: Bytes, h: &BatchHeader, base: i64, max_ts: i64, index_interval: i64) {
        let last = base + h.last_offset_delta as i64;
        let seg = st.active();
        let pos = seg.size;
        if seg.created_ms == 0 {
            seg.created_ms = now_ms();
        }
        let replaced = (max_ts > seg.max_ts).then_some((base, seg.max_ts));
        seg.max_ts = seg.max_ts.max(max_ts);
        if seg.bytes_since_index >= index_interval as u64 {
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
            st.producers.record(h, base, max_ts, now_ms());
            if let Some(marker) = h.is_control().then(|| batch::parse_marker(&bytes, h)).flatten() {
                if let Some(t) = st.producers.end_transaction(h, marker, base, now_ms()) {
                    note_aborted(st, t);
                }
            }
        }
        st.unflushed_records += h.records_count as i64;
        st.cache_bytes += bytes.len();
        st.cache.push_back(CachedBatch { base, last, bytes });
        while st.cache_bytes > self.cache_cap.get() && st.cache.len() > 1 {
            let old = st.cache.pop_front().expect("non-empty cache");
            st.cache_bytes -= old.bytes.len();
        }
    }

    /// Waits until everything before `end` is in the segment file, writing it if no one is.
    pub(super) async fn write_through(&self, end: i64, gen: u64) -> Result<(), LogError> {
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
                if st.write_end >= end {
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
                        assert!(new_end >= st.write_end, "high watermark would move back");
                        st.write_end = new_end;
                        let hw = st.hw();
                        st.producers.high_watermark_moved(hw);
                        st.max_ts_undo.retain(|&(base, _)| base >= new_end);
                    }
                    Err(e) => {
                        tracing::error!(file = %file.path().display(), error = %e, "segment write failed; rolling back unwritten batches");
                        let hw = st.write_end;
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
                        st.active().aborted.retain(|t| t.last_offset < hw);
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
    pub(super) async fn preallocate(&self, file: &SegmentFile, end: u64) -> bool {
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
    pub(super) async fn sync_through(&self, end: i64, gen: u64) -> Result<(), LogError> {
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
                    Some((st.active().file.clone(), st.write_end))
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
    pub(super) fn go_offline(&self, file: &SegmentFile, e: std::io::Error) -> LogError {
        let msg = format!("fdatasync of {} failed: {e}; partition offline for writes", file.path().display());
        tracing::error!("{msg}");
        self.st.borrow_mut().failure = Some(msg);
        self.io_done.notify_all();
        storage_err("fdatasync", file.path(), e)
    }

    /// fdatasync if the topic's interval flush policy says one is due (called periodically).
    pub async fn flush_if_due(&self) -> Result<(), LogError> {
        let (due, end, gen) = {
            let st = self.st.borrow();
            let c = self.config.borrow();
            let due = !c.sync_on_ack()
                && st.durable < st.write_end
                && now_ms().saturating_sub(st.last_sync_ms) >= c.flush_ms;
            (due, st.write_end, st.rollback_gen)
        };
        if due {
            self.sync_through(end, gen).await?;
        }
        Ok(())
    }
}
