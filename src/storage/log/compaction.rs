//! Compaction of the closed segments (`cleanup.policy=compact`), one pass at a time; the
//! record-level rules are in `storage::compact`.

use super::*;

impl PartitionLog {
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

    pub(super) async fn compact_pass(&self, now: i64) -> Result<(usize, u64), LogError> {
        // The closed segments below the last stable offset: every transaction in them is
        // decided (Kafka's cleaner stops at the first unstable offset too).
        let (closed, closed_end, aborted) = {
            let st = self.st.borrow();
            let lso = st.lso();
            let all: Vec<(i64, SegmentFile, u64, i64)> =
                st.segments.values().map(|s| (s.base, s.file.clone(), s.written, s.next_offset)).collect();
            let (_active, closed) = all.split_last().expect("a log always has an active segment");
            let cleanable: Vec<_> = closed.iter().take_while(|c| c.3 <= lso).cloned().collect();
            let closed_end = cleanable.last().map(|c| c.3).unwrap_or(0);
            let horizon_due = st.marker_horizon.is_some_and(|h| h <= now);
            if cleanable.is_empty() || (closed_end <= st.cleaned_through && !horizon_due) {
                return Ok((0, 0));
            }
            // The aborted transactions that may have batches there (their entries sit with
            // their markers, perhaps in later segments).
            let mut aborted: Vec<compact::Aborted> = st
                .segments
                .values()
                .flat_map(|s| s.aborted.iter())
                .filter(|t| t.first_offset < closed_end)
                .map(|t| compact::Aborted { producer_id: t.producer_id, first_offset: t.first_offset })
                .collect();
            aborted.sort_by_key(|a| a.first_offset);
            (cleanable, closed_end, aborted)
        };
        let (index_interval, delete_retention_ms) = {
            let c = self.config.borrow();
            (c.index_interval_bytes, c.delete_retention_ms)
        };
        // Newest offsets from the closed segments only: they are fdatasync'd, while the active
        // one may hold records a power loss can still take, and a record superseded only by
        // those must stay (as Kafka's cleaner never reads the active segment).
        let files: Vec<(SegmentFile, u64)> = closed.iter().map(|(_, file, size, _)| (file.clone(), *size)).collect();
        let plan = compact::plan(&files, &aborted, now, delete_retention_ms)
            .await
            .map_err(|e| storage_err("compacting", files[0].0.path(), e))?;
        let (mut rewritten, mut dropped) = (0, 0);
        for (base, file, size, next_offset) in closed {
            let log_path = segment_path(&self.dir, base, "log");
            let cleaned = compact::clean_segment(&self.dir, &log_path, &file, size, &plan, now.saturating_sub(delete_retention_ms))
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
        st.marker_horizon = plan.next_horizon;
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
}
