//! Opening a partition: recovery of each segment (CRC-checked walk, torn tails cut), the
//! producer-state snapshots, and the epoch checkpoint.

use super::*;
use super::epochs::LeaderEpochs;

pub(super) const PRODUCER_SNAPSHOT_EXT: &str = "producers";

pub(super) fn producer_snapshots(names: &[String]) -> Vec<i64> {
    let mut v: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(&format!(".{PRODUCER_SNAPSHOT_EXT}"))?.parse().ok())
        .collect();
    v.sort();
    v
}

/// Writes `<offset>.producers` atomically and removes all but the newest two snapshots.
pub(super) async fn write_producer_snapshot(dir: &Path, offset: i64, bytes: Vec<u8>) -> std::io::Result<()> {
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
pub(super) async fn load_producer_state(
    dir: &Path,
    names: &[String],
    segments: &mut BTreeMap<i64, Segment>,
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
    let mut rebuilt: Vec<i64> = Vec::new();
    for seg in segments.values_mut().filter(|s| s.next_offset > from && s.written > 0) {
        let mut reader = compact::BatchReader::new(&seg.file, seg.written);
        while let Some(batches) = reader.next().await? {
            for (bytes, h) in batches.iter().filter(|(_, h)| h.base_offset >= from && h.producer_id >= 0) {
                state.record(h, h.base_offset, h.max_timestamp, now_ms());
                if let Some(marker) = h.is_control().then(|| crate::protocol::batch::parse_marker(bytes, h)).flatten() {
                    // The aborted-transaction index of what is replayed is rebuilt here (the
                    // entries a `.txnindex` file gave are kept once).
                    let closed = state.end_transaction(h, marker, h.base_offset, now_ms());
                    if let Some(entry) = closed.and_then(|t| super::append::aborted_entry(&state, &t)) {
                        txn_index::insert(&mut seg.aborted, entry);
                        if rebuilt.last() != Some(&seg.base) {
                            rebuilt.push(seg.base);
                        }
                    }
                }
                replayed += 1;
            }
        }
    }
    if replayed > 0 || !state.is_empty() {
        tracing::debug!(dir = %dir.display(), from, replayed, producers = state.len(), "rebuilt producer state");
    }
    if from < log_end {
        // The snapshot ends the replay of what it covers, so the aborted transactions the
        // replay found go to their segments' `.txnindex` first (the active segment's too: the
        // next recovery reads it, then replays from the snapshot). If they cannot be written,
        // neither is the snapshot.
        for base in &rebuilt {
            let path = segment_path(dir, *base, "txnindex");
            let entries = &segments.get(base).expect("a replayed segment").aborted;
            if let Err(e) = fs::write_atomic(path, txn_index::encode(entries)).await {
                tracing::warn!(dir = %dir.display(), error = %e, "could not write a rebuilt aborted-transaction index; the next open replays more");
                return Ok(state);
            }
        }
        // Only saves the next open a replay: a full disk must not keep the partition closed.
        if let Err(e) = write_producer_snapshot(dir, log_end, state.encode()).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the producer-state snapshot; the next open replays more");
        }
    }
    Ok(state)
}

/// The leader-epoch cache's file (Kafka's name and format, see `epochs`).
pub(super) const EPOCHS_FILE: &str = "leader-epoch-checkpoint";

/// Reads the leader-epoch cache, dropping epochs that start past the recovered log end (their
/// records were lost with a torn tail); writes it when it is missing, damaged or changed. A
/// damaged file starts over at epoch 0 with a warning: a newer epoch comes with the next
/// metadata image, and only OffsetForLeaderEpoch answers for older epochs lose precision.
pub(super) async fn load_epochs(dir: &Path, log_end: i64) -> std::io::Result<LeaderEpochs> {
    let path = dir.join(EPOCHS_FILE);
    let text = fs::read(path.clone()).await?;
    let (mut epochs, mut dirty) = match text.as_deref().map(|t| LeaderEpochs::decode(&String::from_utf8_lossy(t))) {
        None => (LeaderEpochs::default(), true),
        Some(Some(e)) => (e, false),
        Some(None) => {
            tracing::warn!(file = %path.display(), "damaged leader-epoch checkpoint; starting again at epoch 0");
            (LeaderEpochs::default(), true)
        }
    };
    dirty |= epochs.truncate_to(log_end);
    if dirty {
        fs::write_atomic(path, epochs.encode()).await?;
    }
    Ok(epochs)
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
    /// Offsets of the control batches (markers) scanned.
    pub controls: Vec<i64>,
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
        if h.is_control() {
            self.controls.push(h.base_offset);
        }
        Ok(())
    }
}

/// Opens and validates one segment: loads its index if consistent, scans the tail (or the whole
/// file) by CRC, truncates a torn or corrupt tail with a log line. Returns the segment and
/// whether bytes were cut because of damage. With `log_rebuild`, a segment without usable index
/// files (one that was not closed cleanly) is reported as it is scanned whole; compaction, which
/// removes a rewritten segment's index files on purpose, passes false.
pub(super) async fn recover_segment(dir: &Path, base: i64, index_interval: i64, log_rebuild: bool) -> std::io::Result<(Segment, bool)> {
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
        controls: Vec::new(),
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
    // The aborted transactions of a segment closed before (those of the batches the producer
    // state replays are rebuilt by it), without entries past what recovery kept.
    if let Some(bytes) = fs::read(segment_path(dir, base, "txnindex")).await? {
        match txn_index::decode(&bytes) {
            Some(mut entries) => {
                entries.retain(|t| t.last_offset < walk.next_offset);
                // Scanned whole (as after compaction, which removes the index files): an entry
                // whose ABORT marker compaction dropped goes too, and the file is written
                // again, so that no read_committed consumer is told of a transaction whose end
                // it will never read.
                if start == 0 {
                    let before = entries.len();
                    entries.retain(|t| walk.controls.binary_search(&t.last_offset).is_ok());
                    if entries.len() < before {
                        tracing::info!(segment = %path.display(), dropped = before - entries.len(), "aborted-transaction index entries without their marker dropped");
                        fs::write_atomic(segment_path(dir, base, "txnindex"), txn_index::encode(&entries)).await?;
                    }
                }
                seg.aborted = entries;
            }
            None => tracing::warn!(
                segment = %path.display(),
                "damaged aborted-transaction index ignored; read_committed consumers may see aborted records of this segment unless its batches are replayed"
            ),
        }
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

/// Whether a segment file holds none of its own batches: it is empty, starts with a zero batch
/// length (a recycled file is zeros until written), or its first batch lies below its base
/// (bytes of an older segment, which recycling never leaves, but a disk might).
async fn holds_no_batch(file: &SegmentFile, base: i64) -> std::io::Result<bool> {
    let size = file.size().await?;
    if size < LOG_OVERHEAD as u64 {
        return Ok(true);
    }
    let head = file.read(0, LOG_OVERHEAD).await?;
    Ok(head.len() < LOG_OVERHEAD || head[8..12] == [0; 4] || i64::from_be_bytes(head[..8].try_into().expect("8 bytes")) < base)
}

/// The recycled segment files (`<base>.free`) a previous run kept, oldest first, at most
/// `RECYCLED_FILES_MAX`; any more are deleted.
async fn adopt_recycled(dir: &Path, names: &[String]) -> std::io::Result<VecDeque<(i64, i64)>> {
    let mut bases: Vec<i64> = names.iter().filter_map(|n| n.strip_suffix(".free")?.parse().ok()).collect();
    bases.sort();
    let extra = bases.len().saturating_sub(RECYCLED_FILES_MAX);
    for base in bases.drain(..extra) {
        fs::remove_file(segment_path(dir, base, "free")).await?;
    }
    let now = now_ms();
    Ok(bases.into_iter().map(|b| (b, now)).collect())
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
        let recycled = adopt_recycled(&dir, &names).await?;
        let mut bases: Vec<i64> = names.iter().filter_map(|n| n.strip_suffix(".log")?.parse().ok()).collect();
        bases.sort();
        let mut segments = BTreeMap::new();
        let mut expected_base: Option<i64> = None;
        let mut drop_rest = false;
        for base in bases {
            // Compaction can leave a gap between segments; an overlap, or anything after a
            // segment recovery had to truncate, is damage.
            let overlaps = expected_base.is_some_and(|e| base < e);
            if overlaps && !drop_rest && holds_no_batch(&SegmentFile::open(&segment_path(&dir, base, "log"), false).await?, base).await? {
                // A roll that failed after creating the next segment's file (a full disk when
                // writing the producer snapshot, say) leaves it empty (or, recycled, zeros)
                // while appends go on in the previous segment: a leftover, not damage, and no
                // reason to drop the rest.
                tracing::info!(dir = %dir.display(), base, "removing an empty segment left by a failed roll");
                for ext in ["log", "index", "timeindex", "txnindex"] {
                    fs::remove_file(segment_path(&dir, base, ext)).await?;
                }
                continue;
            }
            if drop_rest || overlaps {
                tracing::warn!(
                    dir = %dir.display(), base,
                    "removing segment after a truncated or overlapping one: its offsets no longer follow on"
                );
                for ext in ["log", "index", "timeindex", "txnindex"] {
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
        let (mut log_start, log_end) = {
            let first = segments.values().next().expect("non-empty");
            let last = segments.values().next_back().expect("non-empty");
            (first.base, last.next_offset)
        };
        // The start DeleteRecords or retention moved the log to (see `retention`), and the
        // closed segments below it that a crash left undeleted.
        match read_log_start(&dir).await? {
            // Only made durable after the records below it: past the end, the file is damaged
            // (or the disk lost data). Keeping the records is the lesser harm.
            Some(saved) if saved > log_end => tracing::error!(
                dir = %dir.display(), saved, log_end,
                "ignoring the saved log start offset: it is past the recovered log end"
            ),
            Some(saved) => log_start = log_start.max(saved),
            None => {}
        }
        let active_base = *segments.keys().next_back().expect("non-empty");
        let below: Vec<i64> = segments.values().filter(|s| s.base != active_base && s.base < log_start && s.next_offset <= log_start).map(|s| s.base).collect();
        for base in below {
            tracing::info!(dir = %dir.display(), base, log_start, "deleting segment below the log start offset");
            segments.remove(&base);
            remove_segment_files(&dir, base).await?;
        }
        // Every name kept must be durable before anything written under it is acknowledged: a
        // roll cut short by a crash can leave the active segment's entry not yet fsync'd.
        fs::sync_dir(dir.clone()).await?;
        let epochs = load_epochs(&dir, log_end).await?;
        let producers = load_producer_state(&dir, &names, &mut segments, log_end).await?;
        let active = segments.values_mut().next_back().expect("non-empty");
        // Make what recovery kept durable, and load the partial tail block for the appender.
        active.file.sync().await?;
        let pending_pos = active.size / DMA_ALIGNMENT_BYTES as u64 * DMA_ALIGNMENT_BYTES as u64;
        let tail = active.file.read(pending_pos, (active.size - pending_pos) as usize).await?.to_vec();
        assert_eq!(tail.len() as u64, active.size - pending_pos, "tail block shorter than the file");
        let st = State {
            segments,
            log_start,
            log_start_saved: log_start,
            saving_start: false,
            log_end,
            write_end: log_end,
            replicated: None,
            durable: log_end,
            epochs,
            epochs_unsaved: false,
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
            marker_horizon: None,
            marker_counts: HashMap::new(),
            marker_resets: 0,
            producers,
            recycled,
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
            txn_turns: Turns::default(),
        }))
    }
}
