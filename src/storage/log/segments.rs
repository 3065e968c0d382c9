//! Segments: rolling to a new one, closing one (trim, fdatasync, index files), and the clean
//! close of the whole log at shutdown.

use super::*;

pub(super) fn new_segment(base: i64, file: SegmentFile) -> Segment {
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
        aborted: Vec::new(),
    }
}

/// Writes a closed segment's offset and time index files.
/// A segment file's base offset, from its name.
pub(super) fn segment_base(file: &SegmentFile) -> i64 {
    file.path()
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment files are named by base offset")
}

/// Writes a segment's offset and time index files, each atomically and durably, and its
/// aborted-transaction index when it has aborted transactions (Kafka, too, leaves the file out
/// when it would be empty).
pub(super) async fn write_index_files(dir: &Path, base: i64, index: &SegmentIndex, aborted: &[AbortedTxn]) -> std::io::Result<()> {
    if !aborted.is_empty() {
        fs::write_atomic(segment_path(dir, base, "txnindex"), txn_index::encode(aborted)).await?;
    }
    fs::write_atomic(segment_path(dir, base, "index"), index.encode_offsets()).await?;
    fs::write_atomic(segment_path(dir, base, "timeindex"), index.encode_times()).await
}

impl PartitionLog {
    /// Closes a segment's file: trims the O_DIRECT padding, fdatasyncs (a failure takes the
    /// partition offline), and writes its index files.
    pub(super) async fn close_segment(&self, file: &SegmentFile, size: u64, index: &SegmentIndex, aborted: &[AbortedTxn]) -> Result<(), LogError> {
        file.truncate(size).await.map_err(|e| storage_err("trimming", file.path(), e))?;
        file.sync().await.map_err(|e| self.go_offline(file, e))?;
        write_index_files(&self.dir, segment_base(file), index, aborted)
            .await
            .map_err(|e| storage_err("writing the index of", file.path(), e))
    }

    /// Rolls to a new segment if the active one is full or old enough for `incoming` more bytes.
    pub(super) async fn maybe_roll(&self, incoming: usize) -> Result<(), LogError> {
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

    pub(super) async fn roll(&self, end: i64, gen: u64) -> Result<(), LogError> {
        self.write_through(end, gen).await?;
        self.sync_through(end, gen).await?;
        let (file, size, index, aborted) = {
            let mut st = self.st.borrow_mut();
            let seg = st.active();
            (seg.file.clone(), seg.size, seg.index.clone(), seg.aborted.clone())
        };
        // The aborted-transaction index is written before the producer snapshot at the new
        // base: recovery replays (and so rebuilds the entries of) every segment after the newest
        // snapshot, and trusts the file for those before it.
        self.close_segment(&file, size, &index, &aborted).await?;
        self.st.borrow_mut().active().index_saved = true;
        let path = segment_path(&self.dir, end, "log");
        // A deleted segment's file, when one is kept: its blocks are already allocated.
        let recycled = self.take_recycled(&path).await;
        let new_file = SegmentFile::open(&path, true).await.map_err(|e| storage_err("creating", &path, e))?;
        if recycled {
            tracing::debug!(dir = %self.dir.display(), base = end, "the new segment reuses a deleted segment's file");
        }
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
            let unsaved: Vec<(i64, SegmentFile, u64, SegmentIndex, Vec<AbortedTxn>)> = st
                .segments
                .values()
                .filter(|s| !s.index_saved)
                .map(|s| (s.base, s.file.clone(), s.size, s.index.clone(), s.aborted.clone()))
                .collect();
            (unsaved, *st.segments.keys().next_back().expect("a log always has an active segment"))
        };
        for (base, file, size, index, aborted) in unsaved {
            if base == active_base {
                self.close_segment(&file, size, &index, &aborted).await?;
            } else {
                write_index_files(&self.dir, base, &index, &aborted)
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
