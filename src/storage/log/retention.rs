//! The log start offset and what lies below it: DeleteRecords and the retention limits
//! (`retention.ms`, `retention.bytes`) move the start forward, it is made durable in
//! `log-start-offset` before anyone is told, and closed segments wholly below it are deleted.
//!
//! Order, so that a crash at any point leaves a readable log with a consistent start: the records
//! up to the new start are made durable first (so recovery can never end the log before the
//! start it finds), then the start is written (atomically), then segments go, in-memory first and
//! then their files. A crash after the start is written and before the files are gone leaves
//! segments below it, which `open` deletes. Segment removal waits for a compaction pass to end
//! and holds off the next one, so a cleaned copy is never swapped in for a deleted segment.

use super::*;

/// The file in each partition directory that holds the log start offset.
pub(super) const LOG_START_FILE: &str = "log-start-offset";

/// Most deleted segment files a partition keeps for its next rolls (see
/// [`fs::recycle_file`]); past that, deleted segments' files are removed.
pub(super) const RECYCLED_FILES_MAX: usize = 8;

/// How long a kept segment file waits for a roll before it is removed after all, so a
/// partition that stopped rolling gives its disk back (Kafka keeps deleted segments for
/// `file.delete.delay.ms`, also a minute, before it removes them).
pub(super) const RECYCLED_KEEP_MS: i64 = 60_000;

impl PartitionLog {
    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark), once that
    /// is durable. Returns the durable log start offset after it (the "low watermark"). An offset beyond
    /// the high watermark is OFFSET_OUT_OF_RANGE; one at or below the start changes nothing.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, LogError> {
        let target = {
            let st = self.st.borrow();
            let hw = st.hw();
            let target = if offset == -1 { hw } else { offset };
            if target < 0 || target > hw {
                return Err(LogError::OffsetOutOfRange { log_start: st.log_start, log_end: hw });
            }
            target
        };
        self.advance_log_start(target).await?;
        // The saved start, not the one in memory: a DeleteRecords beside this one may have moved
        // that further without saving it yet (found by the storage simulation).
        Ok(self.st.borrow().log_start_saved)
    }

    /// Deletes the oldest closed segments that `retention.ms` (by each segment's largest record
    /// timestamp, as Kafka does) or `retention.bytes` (the partition's bytes) no longer keeps,
    /// when the topic's `cleanup.policy` includes `delete`. The active segment is never deleted:
    /// `segment.ms` rolls it so that retention reaches a quiet partition's data. Returns the
    /// segments deleted.
    pub async fn enforce_retention(&self, now: i64) -> Result<usize, LogError> {
        self.remove_stale_recycled(now).await?;
        let target = {
            let st = self.st.borrow();
            let c = self.config.borrow();
            if !c.cleanup_policy.split(',').any(|p| p.trim() == "delete") {
                return Ok(0);
            }
            retention_target(&st, c.retention_ms, c.retention_bytes, now)
        };
        match target {
            Some(t) => self.advance_log_start(t).await,
            None => Ok(0),
        }
    }

    /// Rolls the active segment if it is older than `segment.ms` (appends roll it too, but a
    /// quiet partition has none), so retention can reach its data. Takes its turn among appends,
    /// as an append's roll does.
    pub async fn roll_if_due(&self) -> Result<(), LogError> {
        let mut turn = self.turns.ticket();
        turn.turn().await;
        if self.st.borrow().closing {
            return Ok(());
        }
        self.maybe_roll(0).await
    }

    /// Moves the log start to `target` (durably), then deletes the closed segments wholly below
    /// it. Returns the segments deleted.
    async fn advance_log_start(&self, target: i64) -> Result<usize, LogError> {
        let (durable, gen) = {
            let st = self.st.borrow();
            (st.durable, st.rollback_gen)
        };
        if durable < target {
            self.sync_through(target, gen).await?;
        }
        {
            let mut st = self.st.borrow_mut();
            if target > st.log_start {
                st.log_start = target;
                while st.cache.front().is_some_and(|c| c.last < target) {
                    let c = st.cache.pop_front().expect("checked");
                    st.cache_bytes -= c.bytes.len();
                }
            }
        }
        // Saved even when the start was already there: an earlier move may have failed to save
        // it (a full disk), and nobody may be told a start that a crash can take back.
        self.save_log_start().await?;
        self.delete_segments_below_start().await
    }

    /// Writes the log start offset to its file until the file holds the newest start; one write
    /// at a time, so an older start is never written after a newer one.
    async fn save_log_start(&self) -> Result<(), LogError> {
        loop {
            let start = {
                let mut st = self.st.borrow_mut();
                if st.saving_start {
                    drop(st);
                    self.io_done.wait().await;
                    continue;
                }
                if st.log_start_saved >= st.log_start {
                    return Ok(());
                }
                st.saving_start = true;
                st.log_start
            };
            let reset = FlagReset { log: self, flag: |s| &mut s.saving_start, armed: true };
            let path = self.dir.join(LOG_START_FILE);
            let written = fs::write_atomic_in_background(path.clone(), format!("{start}\n").into_bytes()).await;
            tracing::debug!(dir = %self.dir.display(), start, ok = written.is_ok(), "saved the log start offset");
            written.map_err(|e| storage_err("writing the log start offset to", &path, e))?;
            self.st.borrow_mut().log_start_saved = start;
            drop(reset);
        }
    }

    /// Deletes the closed segments that end at or below the log start. Waits for a compaction
    /// pass to end, and holds off the next one meanwhile.
    async fn delete_segments_below_start(&self) -> Result<usize, LogError> {
        loop {
            if !std::mem::replace(&mut self.st.borrow_mut().compacting, true) {
                break;
            }
            self.io_done.wait().await;
        }
        let _reset = FlagReset { log: self, flag: |s| &mut s.compacting, armed: true };
        let gone: Vec<Segment> = {
            let mut st = self.st.borrow_mut();
            let active = *st.segments.keys().next_back().expect("a log always has an active segment");
            let start = st.log_start;
            let bases: Vec<i64> =
                st.segments.values().filter(|s| s.base != active && s.base < start && s.next_offset <= start).map(|s| s.base).collect();
            let gone: Vec<Segment> = bases.iter().filter_map(|b| st.segments.remove(b)).collect();
            if !gone.is_empty() {
                // Chunks read ahead of the deleted files would keep them open.
                st.read_ahead = ReadAhead::default();
            }
            gone
        };
        for seg in gone.iter() {
            tracing::info!(
                dir = %self.dir.display(), base = seg.base, next_offset = seg.next_offset, bytes = seg.size,
                "deleting segment below the log start offset"
            );
            let kept = self.st.borrow().recycled.len() < RECYCLED_FILES_MAX
                // A reader still holding the file would read the zeros.
                && seg.file.is_only_handle()
                && fs::recycle_file(seg.file.path().to_path_buf(), segment_path(&self.dir, seg.base, "free"))
                    .await
                    .map_err(|e| storage_err("recycling", seg.file.path(), e))?;
            if kept {
                self.st.borrow_mut().recycled.push_back((seg.base, now_ms()));
                for ext in ["index", "timeindex", "txnindex"] {
                    let path = segment_path(&self.dir, seg.base, ext);
                    fs::remove_file_in_background(path.clone()).await.map_err(|e| storage_err("deleting", &path, e))?;
                }
            } else {
                remove_segment_files(&self.dir, seg.base).await.map_err(|e| storage_err("deleting", seg.file.path(), e))?;
            }
        }
        Ok(gone.len())
    }

    /// Takes the newest kept segment file (see [`fs::recycle_file`]) and names it `path`, for a
    /// roll; the caller syncs the directory. `false` when none is kept (or the rename failed:
    /// the roll then creates the file, and the kept one is dropped).
    pub(super) async fn take_recycled(&self, path: &Path) -> bool {
        let Some((base, _)) = self.st.borrow_mut().recycled.pop_back() else {
            return false;
        };
        let free = segment_path(&self.dir, base, "free");
        match fs::rename_unsynced(free.clone(), path.to_path_buf()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(file = %free.display(), error = %e, "could not reuse a deleted segment's file; creating a new one");
                let _ = fs::remove_file_in_background(free).await;
                false
            }
        }
    }

    /// Removes the kept segment files no roll took within `RECYCLED_KEEP_MS`.
    async fn remove_stale_recycled(&self, now: i64) -> Result<(), LogError> {
        loop {
            let stale = {
                let mut st = self.st.borrow_mut();
                match st.recycled.front() {
                    Some(&(base, since)) if now.saturating_sub(since) >= RECYCLED_KEEP_MS => {
                        st.recycled.pop_front();
                        base
                    }
                    _ => return Ok(()),
                }
            };
            let path = segment_path(&self.dir, stale, "free");
            fs::remove_file_in_background(path.clone()).await.map_err(|e| storage_err("deleting", &path, e))?;
        }
    }
}

/// Where retention moves the log start: past the oldest closed segments whose largest timestamp
/// is older than `retention_ms` (-1: no time limit), then past more of them while the partition
/// holds more than `retention_bytes` without them (-1: no size limit). A segment with no
/// timestamp (-1) is not judged by time. `None` when nothing is due.
pub(super) fn retention_target(st: &State, retention_ms: i64, retention_bytes: i64, now: i64) -> Option<i64> {
    let all: Vec<&Segment> = st.segments.values().collect();
    let (_active, closed) = all.split_last()?;
    let mut total: u64 = st.segments.values().map(|s| s.size).sum();
    let mut target = None;
    for seg in closed.iter().copied() {
        let too_old = retention_ms >= 0 && seg.max_ts >= 0 && now.saturating_sub(seg.max_ts) > retention_ms;
        let too_big = retention_bytes >= 0 && total as i64 - seg.size as i64 >= retention_bytes;
        if !(too_old || too_big) {
            break;
        }
        total -= seg.size;
        if seg.next_offset > st.log_start {
            target = Some(seg.next_offset);
        }
    }
    target
}

/// Removes a segment's files (its log, then its indexes, which may not exist), on the
/// background file thread: a roll's file work must not queue behind them.
pub(super) async fn remove_segment_files(dir: &Path, base: i64) -> std::io::Result<()> {
    for ext in ["log", "index", "timeindex", "txnindex"] {
        fs::remove_file_in_background(segment_path(dir, base, ext)).await?;
    }
    Ok(())
}

/// The log start offset saved in `dir`, if any. A damaged file is reported and ignored (the
/// start then falls back to the first segment's base).
pub(super) async fn read_log_start(dir: &Path) -> std::io::Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    let Some(bytes) = fs::read(path.clone()).await? else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|v| *v >= 0);
    if parsed.is_none() {
        tracing::warn!(file = %path.display(), "ignoring an unreadable log start offset file");
    }
    Ok(parsed)
}
