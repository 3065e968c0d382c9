//! A follower's side of replication (see `server::replication`): appending the leader's batches
//! as they are (offsets, leader epochs and timestamps already the leader's), learning the
//! leader epochs from them, taking the high watermark the leader reports, and cutting the log
//! back to where it agrees with the leader's (KIP-101/279) before fetching again.

use super::*;

impl PartitionLog {
    /// Appends batches fetched from the leader of `leader_epoch`. They must follow on from this
    /// log's end (one a previous fetch already brought is skipped); nothing in them is patched.
    /// A batch of a newer leader epoch starts that epoch in the epoch cache, written durably
    /// before the batch is. Refused once this log has taken a leader epoch above
    /// `leader_epoch` (`set_leader_epoch`: this broker leads it now): a fetch answered by the
    /// old leader and appended after the new leadership began would put the old epoch's
    /// records after the new epoch's start. The check and the queueing are one synchronous
    /// step, as `set_leader_epoch`'s assignment is, so the two cannot interleave. Returns the
    /// new log end once the batches are written and, with `wait_durable` and the sync-on-ack
    /// flush policy, fdatasync'd: the follower's next fetch names that end, which is what tells
    /// the leader the batches are safe here.
    pub async fn append_replica(&self, batches: Vec<(Bytes, BatchHeader)>, leader_epoch: i32, wait_durable: bool) -> Result<i64, LogError> {
        let incoming: usize = batches.iter().map(|(b, _)| b.len()).sum();
        let mut turn = self.turns.ticket();
        turn.turn().await;
        if self.st.borrow().closing {
            return Err(LogError::Storage(format!("{} is closed", self.dir.display())));
        }
        self.maybe_roll(incoming).await?;
        let config = self.config.borrow().clone();
        let (end, gen, new_epoch) = {
            let mut st = self.st.borrow_mut();
            if let Some(f) = &st.failure {
                return Err(LogError::Storage(f.clone()));
            }
            if st.epochs.latest() > leader_epoch {
                return Err(LogError::FencedLeaderEpoch(format!(
                    "{}: leader epoch {} began here; a fetch from the leader of epoch {leader_epoch} is not appended",
                    self.dir.display(),
                    st.epochs.latest()
                )));
            }
            let mut new_epoch = false;
            for (bytes, h) in batches {
                if h.last_offset() < st.log_end {
                    continue;
                }
                if h.base_offset != st.log_end {
                    return Err(LogError::InvalidRecord(format!(
                        "replicated batch at offset {} where offset {} was due",
                        h.base_offset, st.log_end
                    )));
                }
                if h.leader_epoch > st.epochs.latest() {
                    st.epochs.assign(h.leader_epoch, h.base_offset);
                    st.epochs_unsaved = true;
                    new_epoch = true;
                }
                st.stats.appends += 1;
                self.queue_batch(&mut st, bytes, &h, h.base_offset, h.max_timestamp, config.index_interval_bytes);
            }
            (st.log_end, st.rollback_gen, new_epoch)
        };
        drop(turn);
        if new_epoch {
            self.save_epochs().await?;
        }
        self.write_through(end, gen).await?;
        let sync_now = if config.sync_on_ack() { wait_durable } else { self.st.borrow().unflushed_records >= config.flush_messages };
        if sync_now {
            self.sync_through(end, gen).await?;
        }
        Ok(end)
    }

    /// Writes the epoch cache to `leader-epoch-checkpoint` if it holds what the file does not.
    pub(super) async fn save_epochs(&self) -> Result<(), LogError> {
        let (encoded, latest) = {
            let st = self.st.borrow();
            if !st.epochs_unsaved {
                return Ok(());
            }
            (st.epochs.encode(), st.epochs.latest())
        };
        let path = self.dir.join(recovery::EPOCHS_FILE);
        fs::write_atomic(path.clone(), encoded).await.map_err(|e| LogError::Storage(format!("writing {}: {e}", path.display())))?;
        let mut st = self.st.borrow_mut();
        if st.epochs.latest() == latest {
            st.epochs_unsaved = false;
        }
        Ok(())
    }

    /// Sets the high watermark replication allows: `Some` on a partition with more than one
    /// replica (a leader's from its in-sync followers' log ends, a follower's from its leader's
    /// answers), `None` on one with a single replica. It never moves back while the partition
    /// stays replicated, and is never past what is written here ([`State::hw`]).
    pub fn set_replicated_high_watermark(&self, hw: Option<i64>) {
        let moved = {
            let mut st = self.st.borrow_mut();
            let before = st.hw();
            st.replicated = match (st.replicated, hw) {
                (Some(old), Some(new)) => Some(old.max(new)),
                (_, new) => new,
            };
            let now = st.hw();
            st.producers.high_watermark_moved(now);
            st.hw() != before
        };
        if moved {
            self.data_arrived.notify_all();
        }
    }

    /// Whether the high watermark is held by replication ([`Self::set_replicated_high_watermark`]).
    pub fn has_replicated_high_watermark(&self) -> bool {
        self.st.borrow().replicated.is_some()
    }

    /// The follower's `last_fetched_epoch`: the latest epoch in its cache, as Kafka's followers
    /// send (an epoch this broker began as leader and wrote nothing in is then checked too, and
    /// cut back if the new leader never had it), or -1 for an empty log.
    pub fn last_fetched_epoch(&self) -> i32 {
        let st = self.st.borrow();
        if st.log_end <= st.log_start {
            return -1;
        }
        st.epochs.latest()
    }

    /// Cuts the log back to end at `offset` (a follower holding records its new leader does
    /// not: KIP-101/279), or, with `start_over`, empties it to begin again at `offset` (the
    /// leader no longer has what this replica would fetch next). Closes the log first (the
    /// partition takes no more appends), then on disk: removes the segments starting past
    /// `offset`, cuts the one holding it at its batch starting there and removes that
    /// segment's index files, and drops the epochs starting at or past it. The caller drops
    /// this log and opens the directory again, whose recovery rebuilds the indexes and the
    /// producer state (snapshots past the end are removed there).
    pub async fn cut_for_reopen(&self, offset: i64, start_over: bool) -> Result<(), LogError> {
        self.close().await?;
        let (remove, cut, epochs) = {
            let mut st = self.st.borrow_mut();
            let remove: Vec<i64> = st.segments.keys().copied().filter(|&b| start_over || b > offset).collect();
            let cut = if start_over {
                None
            } else {
                st.segments.range(..=offset).next_back().map(|(&b, s)| {
                    let from = if offset > b { s.index.position_for(u32::try_from(offset - b).unwrap_or(u32::MAX)) as u64 } else { 0 };
                    (b, s.file.clone(), from, s.written)
                })
            };
            if start_over {
                st.epochs = epochs::LeaderEpochs::default();
            } else {
                st.epochs.truncate_to(offset - 1);
            }
            (remove, cut, st.epochs.encode())
        };
        let io = |what: &str, e: std::io::Error| LogError::Storage(format!("{what} in {}: {e}", self.dir.display()));
        for base in remove {
            for ext in ["log", "index", "timeindex", "txnindex"] {
                fs::remove_file(segment_path(&self.dir, base, ext)).await.map_err(|e| io("removing a segment", e))?;
            }
        }
        if let Some((base, file, mut pos, size)) = cut {
            while pos < size {
                let head = file.read(pos, batch::HEADER_LEN).await.map_err(|e| io("reading", e))?;
                match batch::parse_header(&head) {
                    Some(h) if h.base_offset < offset => pos += h.total_len() as u64,
                    _ => break,
                }
            }
            if pos < size {
                file.truncate(pos).await.map_err(|e| io("cutting a segment", e))?;
                file.sync().await.map_err(|e| io("syncing a cut segment", e))?;
            }
            for ext in ["index", "timeindex"] {
                fs::remove_file(segment_path(&self.dir, base, ext)).await.map_err(|e| io("removing an index", e))?;
            }
        }
        if start_over {
            let file = SegmentFile::open(&segment_path(&self.dir, offset, "log"), true).await.map_err(|e| io("creating a segment", e))?;
            file.sync().await.map_err(|e| io("syncing a new segment", e))?;
            let start = self.dir.join(retention::LOG_START_FILE);
            fs::write_atomic(start, offset.to_string().into_bytes()).await.map_err(|e| io("writing the log start", e))?;
        }
        fs::write_atomic(self.dir.join(recovery::EPOCHS_FILE), epochs).await.map_err(|e| io("writing the epoch checkpoint", e))?;
        fs::sync_dir(self.dir.clone()).await.map_err(|e| io("syncing", e))?;
        Ok(())
    }
}
