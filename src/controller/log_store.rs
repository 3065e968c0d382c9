//! The metadata log as openraft's [`RaftLogStorage`]: entries kept in memory (the log is small,
//! compacted by snapshots) and in `<data_dir>/metadata/log` (`io::metadata_store::RecordLog`),
//! the vote in `vote.json`, the purge point in `purged.json`, the commit point in
//! `committed.json`. Owned by the controller thread.
//!
//! Durability, as openraft asks: an append's callback is called only after the entries are
//! fdatasync'd, and `save_vote` returns only after the vote file is durably replaced. A purge
//! first records its point durably, then rewrites the log without the purged entries; a crash
//! in between leaves entries at or below the point, which `open` drops.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;
use crate::io::metadata_store::{MetadataDir, RecordLog};

type Nid = u64;

/// Largest metadata-log entry read back (a topic of 10,000 partitions with their replica lists
/// is a few MiB of JSON).
const ENTRY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The log store. Clones share the same log (openraft reads entries from its replication tasks
/// through a clone, `LogReader`); the lock is never held across an await.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The last commit point openraft saved (`u64::MAX`: none), for the status.
    committed_index: Arc<AtomicU64>,
}

struct Inner {
    dir: Arc<MetadataDir>,
    log: RecordLog,
    /// Entry by index, with the offset it starts at in the log file.
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    purged: Option<LogId<Nid>>,
    vote: Option<Vote<Nid>>,
    committed: Option<LogId<Nid>>,
}

/// Reads the JSON file `name` of `dir`, None if absent; a damaged one is an error naming it.
pub(crate) fn read_json<T: DeserializeOwned>(dir: &MetadataDir, name: &str) -> Result<Option<T>, String> {
    let Some(bytes) = dir.read(name).map_err(|e| format!("reading {}: {e}", dir.path().join(name).display()))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", dir.path().join(name).display()))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata types always serialise")
}

impl LogStore {
    /// Opens the log under `dir`, dropping entries at or below the purge point and checking
    /// that the rest follow each other.
    pub fn open(dir: Arc<MetadataDir>) -> Result<LogStore, String> {
        let vote = read_json(&dir, "vote.json")?;
        let committed: Option<LogId<Nid>> = read_json(&dir, "committed.json")?;
        let purged: Option<LogId<Nid>> = read_json(&dir, "purged.json")?;
        let path = dir.path().join("log");
        let (log, records) = dir.open_log("log", ENTRY_MAX_BYTES).map_err(|e| format!("opening {}: {e}", path.display()))?;
        let mut entries = BTreeMap::new();
        let mut next: Option<u64> = None;
        for r in records {
            let entry: Entry<TypeConfig> = serde_json::from_slice(&r.data)
                .map_err(|e| format!("{}: entry at byte {} does not parse: {e}", path.display(), r.offset))?;
            let index = entry.log_id.index;
            if purged.is_some_and(|p| index <= p.index) {
                continue;
            }
            if next.is_some_and(|n| n != index) {
                return Err(format!("{}: entry {index} follows entry {} (a hole in the log)", path.display(), index - 1));
            }
            next = Some(index + 1);
            entries.insert(index, (entry, r.offset));
        }
        let committed_index = Arc::new(AtomicU64::new(committed.map_or(u64::MAX, |c| c.index)));
        let inner = Inner { dir, log, entries, purged, vote, committed };
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)), committed_index })
    }

    /// The last commit point saved, if any.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("the log store's lock is never held across a panic")
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<Nid>> {
        let inner = self.lock();
        // A range that starts at a purged entry gets nothing, not the entries after the purge
        // point: openraft 0.9's replication sends what it gets as following the range's start.
        // A leader never purges what its replication still needs, but a replication task of a
        // leader that has just stepped down can still read, after the node, now a follower,
        // purged (a snapshot installed): it sent entries 1.. as following entry 0, which a
        // follower takes as contiguous (openraft's debug assertion, or a hole in its log).
        // Nothing is openraft's documented "no entries" answer, which the task sends as a
        // heartbeat (controller::simulation, seed 1000588).
        let start = match range.start_bound() {
            Bound::Included(s) => Some(*s),
            Bound::Excluded(s) => Some(s + 1),
            Bound::Unbounded => None,
        };
        let first = inner.entries.keys().next().copied();
        if let (Some(start), Some(purged)) = (start, inner.purged) {
            if start <= purged.index && first.is_some_and(|f| f > start) {
                return Ok(Vec::new());
            }
        }
        Ok(inner.entries.range(range).map(|(_, (e, _))| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<Nid>> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|(e, _)| e.log_id).or(inner.purged);
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.lock();
        inner.dir.replace("vote.json", &to_json(vote)).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Nid>>, StorageError<Nid>> {
        Ok(self.lock().vote)
    }

    /// Kept so that a restarted node re-applies the committed entries after its snapshot at
    /// once, before it hears from a leader. Written durably too: metadata commits are rare.
    async fn save_committed(&mut self, committed: Option<LogId<Nid>>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.lock();
        inner.dir.replace("committed.json", &to_json(&committed)).map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        self.committed_index.store(committed.map_or(u64::MAX, |c| c.index), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Nid>>, StorageError<Nid>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let bytes: Vec<Vec<u8>> = entries.iter().map(to_json).collect();
        let mut inner = self.lock();
        if let (Some(first), Some(last)) = (entries.first(), inner.entries.keys().next_back()) {
            assert_eq!(first.log_id.index, last + 1, "openraft appends right after the last entry");
        }
        match inner.log.append(bytes.iter().map(|b| b.as_slice())) {
            Ok(offsets) => {
                for (e, offset) in entries.into_iter().zip(offsets) {
                    inner.entries.insert(e.log_id.index, (e, offset));
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.lock();
        let Some((_, offset)) = inner.entries.get(&log_id.index) else { return Ok(()) };
        let offset = *offset;
        inner.log.truncate(offset).map_err(|e| StorageIOError::write_logs(&e))?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.lock();
        assert!(inner.purged.is_none_or(|p| p.index <= log_id.index), "the purge point never moves back");
        inner.dir.replace("purged.json", &to_json(&Some(log_id))).map_err(|e| StorageIOError::write_logs(&e))?;
        inner.purged = Some(log_id);
        // The map changes only once the file has: a failed rewrite leaves both as they were
        // (with the purged entries still in them, which `open` would drop).
        let bytes: Vec<Vec<u8>> = inner.entries.range(log_id.index + 1..).map(|(_, (e, _))| to_json(e)).collect();
        let offsets = inner.log.rewrite(bytes.iter().map(|b| b.as_slice())).map_err(|e| StorageIOError::write_logs(&e))?;
        let kept = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = kept.into_iter().zip(offsets).map(|((i, (e, _)), o)| (i, (e, o))).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    /// What a stepped-down leader's replication task read in `controller::simulation` (seed
    /// 1000588): a range from a purged entry on. It must get nothing, never entries that do
    /// not start where it asked.
    #[test]
    fn a_read_from_a_purged_entry_gets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let md = Arc::new(MetadataDir::open(&dir.path().join("metadata")).unwrap());
        let (mut log, _) = md.open_log("log", ENTRY_MAX_BYTES).unwrap();
        let bytes: Vec<Vec<u8>> = (0..8).map(|i| to_json(&entry(i))).collect();
        log.append(bytes.iter().map(|b| b.as_slice())).unwrap();
        drop(log);
        let mut store = LogStore::open(md).unwrap();
        futures_lite::future::block_on(async {
            let got = |v: Vec<Entry<TypeConfig>>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
            assert_eq!(got(store.try_get_log_entries(0..8).await.unwrap()), (0..8).collect::<Vec<_>>());
            store.purge(entry(2).log_id).await.unwrap();
            assert_eq!(got(store.try_get_log_entries(0..8).await.unwrap()), Vec::<u64>::new());
            assert_eq!(got(store.try_get_log_entries(2..8).await.unwrap()), Vec::<u64>::new());
            assert_eq!(got(store.try_get_log_entries(3..5).await.unwrap()), vec![3, 4]);
            assert_eq!(got(store.try_get_log_entries(3..).await.unwrap()), (3..8).collect::<Vec<_>>());
            assert_eq!(got(store.try_get_log_entries(6..=9).await.unwrap()), vec![6, 7]);
        });
    }
}
