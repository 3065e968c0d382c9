//! The metadata state machine as openraft's [`RaftStateMachine`]: [`ClusterMetadata`] in memory,
//! its snapshots in `<data_dir>/metadata/snapshot.json`, and the publication of every applied
//! state to the rest of the program ([`Published`]). Owned by the controller thread.
//!
//! The state itself is not written on every apply: a restart loads the last snapshot and
//! openraft applies the committed entries after it again (the log store keeps the commit
//! point). A snapshot is durable (`MetadataDir::replace`) before openraft learns of it, so the
//! log is never purged past a state that is not on disk.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use super::log_store::{read_json, to_json};
use super::metadata::ClusterMetadata;
use super::{Applied, TypeConfig};
use crate::io::metadata_store::MetadataDir;

type Nid = u64;

/// Depth of the channel of applied states. Each item is a whole state, not a delta, so when the
/// receiver falls behind the oldest is dropped: it always gets the newest.
const PUBLISHED_DEPTH: usize = 16;

/// Applied states on their way out of the controller thread: the newest one (read any time,
/// from any thread) and a channel of them in order of application.
pub struct Published {
    latest: Mutex<(u64, Arc<ClusterMetadata>)>,
    tx: flume::Sender<(u64, Arc<ClusterMetadata>)>,
    /// Held to drop the oldest item when the channel is full, so the controller never waits on
    /// a slow receiver.
    rx: flume::Receiver<(u64, Arc<ClusterMetadata>)>,
}

impl Published {
    pub fn new() -> Published {
        let (tx, rx) = flume::bounded(PUBLISHED_DEPTH);
        Published { latest: Mutex::new((0, Arc::new(ClusterMetadata::new()))), tx, rx }
    }

    pub fn latest(&self) -> (u64, Arc<ClusterMetadata>) {
        self.latest.lock().expect("never poisoned").clone()
    }

    pub fn receiver(&self) -> flume::Receiver<(u64, Arc<ClusterMetadata>)> {
        self.rx.clone()
    }

    fn publish(&self, state: &ClusterMetadata) {
        let item = (state.applied_index, Arc::new(state.clone()));
        *self.latest.lock().expect("never poisoned") = item.clone();
        let mut item = item;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return,
                Err(flume::TrySendError::Full(back)) => {
                    let _ = self.rx.try_recv();
                    item = back;
                }
                Err(flume::TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// A snapshot as stored: openraft's description of it and the state.
#[derive(Serialize, Deserialize, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<Nid, BasicNode>,
    state: ClusterMetadata,
}

pub struct StateMachine {
    dir: Arc<MetadataDir>,
    state: ClusterMetadata,
    last_applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, BasicNode>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    published: Arc<Published>,
}

impl StateMachine {
    /// Loads the last snapshot under `dir`, if any, and publishes its state.
    pub fn open(dir: Arc<MetadataDir>, published: Arc<Published>) -> Result<StateMachine, String> {
        let stored: Option<StoredSnapshot> = read_json(&dir, "snapshot.json")?;
        let mut sm = StateMachine {
            dir,
            state: ClusterMetadata::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            current: Arc::new(Mutex::new(None)),
            published,
        };
        if let Some(s) = stored {
            sm.state = s.state.clone();
            sm.last_applied = s.meta.last_log_id;
            sm.membership = s.meta.last_membership.clone();
            *sm.current.lock().expect("never poisoned") = Some(s);
            sm.published.publish(&sm.state);
        }
        Ok(sm)
    }

    /// The state's id as stored, for the start-up checks before openraft runs.
    pub fn cluster_id(&self) -> Option<String> {
        self.state.cluster_id.clone()
    }
}

fn to_snapshot(s: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(to_json(&s.state))) }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, BasicNode>), StorageError<Nid>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            let rejected = match entry.payload {
                EntryPayload::Normal(record) => self.state.apply(index, &record).err(),
                EntryPayload::Blank => {
                    self.state.applied_index = index;
                    None
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.state.applied_index = index;
                    None
                }
            };
            replies.push(Applied { rejected });
        }
        if !replies.is_empty() {
            self.published.publish(&self.state);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            state: self.state.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let state: ClusterMetadata = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot { meta: meta.clone(), state };
        let mut current = self.current.lock().expect("never poisoned");
        self.dir
            .replace("snapshot.json", &to_json(&stored))
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.state = stored.state.clone();
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *current = Some(stored);
        drop(current);
        self.published.publish(&self.state);
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index),
            "metadata: installed a snapshot from the leader (this node was behind the entries its log keeps)"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<Nid>> {
        Ok(self.current.lock().expect("never poisoned").as_ref().map(to_snapshot))
    }
}

/// Writes a snapshot of the state as it was when openraft asked for the builder.
pub struct SnapshotBuilder {
    dir: Arc<MetadataDir>,
    state: ClusterMetadata,
    last_applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, BasicNode>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<Nid>> {
        let id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, uuid::Uuid::new_v4().simple()),
            None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
        };
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id: id };
        let stored = StoredSnapshot { meta, state: self.state.clone() };
        // Held while the file is written: a snapshot installed from the leader meanwhile may be
        // newer than this one, and must not be replaced by it.
        let mut current = self.current.lock().expect("never poisoned");
        if let Some(newer) = current.as_ref().filter(|c| c.meta.last_log_id > self.last_applied) {
            return Ok(to_snapshot(newer));
        }
        self.dir
            .replace("snapshot.json", &to_json(&stored))
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        let snapshot = to_snapshot(&stored);
        *current = Some(stored);
        Ok(snapshot)
    }
}
