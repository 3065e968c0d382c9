//! The groups a core coordinates: each group's state machine ([`crate::coordinator::group`]),
//! the requests waiting for its replies, and its committed offsets.
//!
//! Ownership: a group lives on the core that owns its `__consumer_offsets` partition
//! ([`group_core`]); every request for it is sent there. A commit is appended to that partition
//! (and fdatasync'd) before it is acknowledged, and the offsets are reloaded from it on start.
//!
//! Membership is persisted there too: whenever a group settles (Stable after a rebalance, or
//! Empty) its snapshot is queued for this core's metadata writer, which appends the latest
//! snapshot of each changed group in order. On start the last snapshot is restored, so members
//! that heartbeat through a broker restart keep their assignment without a rebalance. Losing the
//! newest snapshot in a crash only costs a rebalance (members get ILLEGAL_GENERATION and
//! rejoin); offsets are never written this way.
//!
//! The topic is created on first use (50 partitions, `cleanup.policy=compact`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::shard::{current, NewTopic, Shard};
pub use crate::coordinator::offsets::Committed;
use crate::coordinator::group::{Event, Group, GroupConfig, GroupState, Reply, Token};
use crate::coordinator::consumer_group::{self, ConsumerGroup, ConsumerGroupConfig, StoredGroup, TopicLookup};
use crate::coordinator::offsets::Record;
use super::metadata::MetadataImage;
use crate::coordinator::offsets;
use crate::protocol::{batch, ResponseError};
use crate::storage::now_ms;
use crate::sync::{Ticket, Turns};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Whether `topic` is one of the coordinators' internal topics (`__consumer_offsets`,
/// `__transaction_state`): flagged internal in Metadata, and not for clients to delete records
/// from, add partitions to or reconfigure.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == super::transactions::TXN_TOPIC
}

/// Partitions of `__consumer_offsets`, as Kafka's `offsets.topic.num.partitions` default.
pub const OFFSETS_PARTITIONS: i32 = 50;

/// How long a group's `__consumer_offsets` write waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT_MS: i64 = 5_000;

/// The `__consumer_offsets` partition of a group: Kafka's `abs(groupId.hashCode) % partitions`,
/// with Java's String.hashCode (UTF-16 code units), so groups land where Kafka would put them.
pub fn offsets_partition(group_id: &str) -> i32 {
    kafka_partition_of(group_id, OFFSETS_PARTITIONS)
}

/// Kafka's `abs(id.hashCode) % partitions` for a coordinator's key (a group or a transactional
/// id), with Java's String.hashCode over UTF-16 code units.
pub fn kafka_partition_of(id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    // Kafka's Utils.abs maps i32::MIN to 0.
    (if h == i32::MIN { 0 } else { h.abs() }) % partitions
}

/// In a cluster, NOT_COORDINATOR for a group whose `__consumer_offsets` partition another
/// broker (or nobody) leads: the client asks FindCoordinator again. None when this broker
/// coordinates it (always on a single node, where a group may start before
/// `__consumer_offsets` exists and the usual path creates it).
///
/// In a cluster, also NOT_COORDINATOR while this broker's image has no `__consumer_offsets`:
/// FindCoordinator through another broker has just created it and named this one, whose image
/// follows a moment later. A group started here before then was forgotten when that image
/// arrived (`Shard::take_group_leadership` loads a partition that comes to this broker afresh),
/// and its member's next commit got UNKNOWN_MEMBER_ID.
pub fn coordinator_elsewhere(shard: &super::shard::Shard, group_id: &str) -> Option<i16> {
    let image = shard.image();
    image.cluster.as_ref()?;
    let Some(t) = image.topic(OFFSETS_TOPIC) else { return Some(ResponseError::NotCoordinator.code()) };
    (!image.leads(t, offsets_partition(group_id))).then_some(ResponseError::NotCoordinator.code())
}

/// The core that coordinates a group: the owner of its `__consumer_offsets` partition.
pub fn group_core(group_id: &str, cores: usize) -> usize {
    super::metadata::owner_core("__consumer_offsets", offsets_partition(group_id), cores)
}

struct Entry {
    /// The classic-protocol group (JoinGroup/SyncGroup...).
    group: Group,
    /// The KIP-848 consumer-protocol group, once a ConsumerGroupHeartbeat names this id. A group
    /// id holds members of one protocol at a time: each refuses members while the other has some.
    consumer: Option<ConsumerGroup>,
    waiting: HashMap<Token, flume::Sender<Reply>>,
    offsets: BTreeMap<(String, i32), Committed>,
    /// (generation, state) of the last snapshot queued for writing.
    persisted: (i32, GroupState),
    /// When the group last became empty, for offsets retention.
    empty_since: Option<i64>,
    /// The consumer-protocol members whose records the last write of the group stored: the
    /// next write tombstones those that have left.
    consumer_stored: BTreeSet<String>,
    /// Offsets committed in transactions not yet ended, by producer id (TxnOffsetCommit): the
    /// producer's COMMIT marker in this group's partition makes them committed, ABORT drops them.
    txn_offsets: HashMap<i64, BTreeMap<(String, i32), Committed>>,
}

/// A group as DescribeGroups shows it. Members: (id, instance id, client id, host, metadata,
/// assignment).
pub struct Described {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<(String, Option<String>, String, String, bytes::Bytes, bytes::Bytes)>,
}

/// Who may commit offsets for a group (OffsetCommit's generation and member id).
pub enum Committer {
    /// A negative generation or member epoch: a consumer using assign(), allowed while the group
    /// has no members.
    Simple,
    Member { member_id: String, generation: i32 },
}

/// This core's groups. Owned by one core.
pub struct Groups {
    config: GroupConfig,
    consumer_config: ConsumerGroupConfig,
    entries: RefCell<HashMap<String, Entry>>,
    next_token: Cell<Token>,
    /// Group snapshots waiting for the metadata writer: the latest value per group (`None`, a
    /// tombstone, is never queued: deletes write their own). Bounded by the number of groups.
    dirty: RefCell<BTreeMap<String, bytes::Bytes>>,
    /// Consumer-protocol groups whose stored state changed: the writer encodes each group as it
    /// is when its turn comes (so a burst of heartbeats costs one write).
    consumer_dirty: RefCell<BTreeSet<String>>,
    wake_writer: (flume::Sender<()>, flume::Receiver<()>),
    /// Set at shutdown: the writer ends once the queue is empty.
    writer_stopping: Cell<bool>,
    /// One line per `__consumer_offsets` partition: what an appended record changes in memory
    /// (a commit's offsets, a tombstone's removal) is applied in the order of the records in
    /// the log, whatever order their fdatasyncs wake the appenders in. A restart replays the log
    /// in that order, so memory and the log never disagree about which commit was last.
    apply_turns: Vec<Turns>,
}

impl Groups {
    pub fn new(config: GroupConfig) -> Groups {
        let consumer_config = ConsumerGroupConfig {
            session_timeout_ms: config.consumer_session_timeout_ms,
            heartbeat_interval_ms: config.consumer_heartbeat_interval_ms,
            ..ConsumerGroupConfig::default()
        };
        Groups {
            config,
            consumer_config,
            entries: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            dirty: RefCell::new(BTreeMap::new()),
            consumer_dirty: RefCell::new(BTreeSet::new()),
            wake_writer: flume::bounded(1),
            writer_stopping: Cell::new(false),
            apply_turns: (0..OFFSETS_PARTITIONS).map(|_| Turns::default()).collect(),
        }
    }

    fn entry<'a>(&self, entries: &'a mut HashMap<String, Entry>, id: &str) -> &'a mut Entry {
        entries.entry(id.to_string()).or_insert_with(|| Entry {
            group: Group::new(id.to_string(), self.config),
            consumer: None,
            waiting: HashMap::new(),
            offsets: BTreeMap::new(),
            persisted: Group::initial_marker(),
            empty_since: None,
            consumer_stored: BTreeSet::new(),
            txn_offsets: HashMap::new(),
        })
    }

    /// Queues the group's snapshot for the metadata writer if it settled in a new shape.
    fn note_settled(&self, group_id: &str, e: &mut Entry, now: i64) {
        let Some((marker, snap)) = e.group.snapshot(now) else { return };
        if marker == e.persisted {
            return;
        }
        e.persisted = marker;
        // As Kafka's "Stabilized group ... generation ...": one line per rebalance.
        tracing::info!(group = %group_id, generation = marker.0, state = ?marker.1, members = snap.members.len(), "classic group settled");
        e.empty_since = (marker.1 == GroupState::Empty).then_some(now);
        self.dirty.borrow_mut().insert(group_id.to_string(), offsets::encode_group_value(&snap));
        let _ = self.wake_writer.0.try_send(());
    }

    /// The metadata writer: appends queued group snapshots to `__consumer_offsets`, one at a
    /// time in queue order. Runs until [`Groups::stop_writer`], after writing what is queued.
    pub async fn write_metadata(&self) {
        while self.wake_writer.1.recv_async().await.is_ok() {
            loop {
                let Some((group_id, value)) = self.dirty.borrow_mut().pop_first() else { break };
                if ensure_offsets_topic(&current()).await.is_err() {
                    continue;
                }
                let record = [(Some(offsets::encode_group_key(&group_id)), Some(value))];
                // Errors are logged by the append; the group goes on from memory.
                let _ = append_offset_records(&group_id, &record).await;
            }
            loop {
                let Some(group_id) = self.consumer_dirty.borrow_mut().pop_first() else { break };
                if ensure_offsets_topic(&current()).await.is_err() {
                    continue;
                }
                let Some(records) = self.consumer_records(&group_id) else { continue };
                let _ = append_offset_records(&group_id, &records).await;
            }
            if self.writer_stopping.get() {
                return;
            }
        }
    }

    /// The records that store a consumer-protocol group as it is now, with tombstones for the
    /// members stored before that have left; `None` if the group is gone.
    fn consumer_records(&self, group_id: &str) -> Option<Vec<KeyValue>> {
        let mut entries = self.entries.borrow_mut();
        let e = entries.get_mut(group_id)?;
        let c = e.consumer.as_ref()?;
        let (group_epoch, assignment_epoch, members) = c.stored();
        let now: BTreeSet<String> = members.iter().map(|m| m.0.clone()).collect();
        let gone: Vec<String> = e.consumer_stored.difference(&now).cloned().collect();
        e.consumer_stored = now;
        Some(offsets::encode_consumer_group(group_id, group_epoch, assignment_epoch, members, &gone))
    }

    /// Queues a consumer-protocol group for the metadata writer if its stored state changed.
    fn note_consumer_changed(&self, group_id: &str, c: &mut ConsumerGroup) {
        if c.take_changed() {
            self.consumer_dirty.borrow_mut().insert(group_id.to_string());
            let _ = self.wake_writer.0.try_send(());
        }
    }

    /// Shutdown: the metadata writer writes what is queued, then ends.
    pub fn stop_writer(&self) {
        self.writer_stopping.set(true);
        let _ = self.wake_writer.0.try_send(());
    }

    /// Feeds the group an event built around a fresh token and waits for that token's reply,
    /// which may come from a later event (JoinGroup and SyncGroup are long polls).
    pub async fn call(&self, group_id: &str, make: impl FnOnce(Token) -> Event) -> Reply {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = flume::bounded(1);
        let fallback;
        {
            let mut entries = self.entries.borrow_mut();
            let e = self.entry(&mut entries, group_id);
            let event = make(token);
            if matches!(event, Event::Join(_)) && e.consumer.as_ref().is_some_and(|c| c.has_members()) {
                return join_error(ResponseError::InconsistentGroupProtocol.code());
            }
            fallback = not_coordinator(&event);
            e.waiting.insert(token, tx);
            let now = now_ms();
            let actions = e.group.handle(event, now);
            deliver(e, actions);
            self.note_settled(group_id, e, now);
        }
        // A group is dropped with requests waiting only when this broker stops coordinating it
        // (`forget_partition`): they are told so, and find the new coordinator.
        rx.recv_async().await.unwrap_or(fallback)
    }

    /// Time passed: expire sessions and finish rebalances on every group.
    pub fn tick(&self) {
        let now = now_ms();
        for (id, e) in self.entries.borrow_mut().iter_mut() {
            if e.group.next_deadline().is_some_and(|d| d <= now) {
                let actions = e.group.handle(Event::Tick, now);
                deliver(e, actions);
                self.note_settled(id, e, now);
            }
            if let Some(c) = e.consumer.as_mut().filter(|c| c.next_deadline().is_some_and(|d| d <= now)) {
                for member in c.tick(now) {
                    tracing::info!(group = %id, %member, "consumer-protocol member removed (session or rebalance timeout)");
                }
                self.note_consumer_changed(id, c);
            }
        }
    }

    /// Stores offsets durably if `who` may commit for the group; the error code otherwise.
    pub async fn commit(&self, group_id: &str, who: &Committer, offsets: Vec<((String, i32), Committed)>) -> i16 {
        let code = self.may_commit(group_id, who);
        if code != 0 || offsets.is_empty() {
            return code;
        }
        let in_flight = CommitInFlight::start(self, group_id, who);
        if let Err(code) = ensure_offsets_topic(&current()).await {
            return code;
        }
        let records: Vec<_> = offsets
            .iter()
            .map(|((topic, p), c)| (Some(offsets::encode_key(group_id, topic, *p)), Some(offsets::encode_value(c))))
            .collect();
        let (written, _turn) = self.append_in_order(group_id, &records).await;
        drop(in_flight);
        if let Err(code) = written {
            return code;
        }
        let mut entries = self.entries.borrow_mut();
        self.entry(&mut entries, group_id).offsets.extend(offsets);
        0
    }

    /// TxnOffsetCommit: stores offsets as part of producer `producer_id`'s transaction (a
    /// transactional batch in the group's partition, durable before the answer); they count as
    /// committed once its COMMIT marker is written there ([`Groups::complete_txn_offsets`]).
    /// A member's generation is checked when the request names one (v3+), as OffsetCommit does.
    pub async fn txn_commit(&self, group_id: &str, producer_id: i64, epoch: i16, who: Option<&Committer>, offsets: Vec<((String, i32), Committed)>) -> i16 {
        if let Some(who) = who {
            let code = self.may_commit(group_id, who);
            if code != 0 {
                return code;
            }
        }
        if offsets.is_empty() {
            return 0;
        }
        let records: Vec<_> = offsets
            .iter()
            .map(|((topic, p), c)| (Some(offsets::encode_key(group_id, topic, *p)), Some(offsets::encode_value(c))))
            .collect();
        let mut turn = self.apply_turns[offsets_partition(group_id) as usize].ticket();
        let b = batch::build_transactional(&records, now_ms(), producer_id, epoch);
        let written = append_coordinator_batch(OFFSETS_TOPIC, offsets_partition(group_id), b, group_id).await;
        turn.turn().await;
        if let Err(code) = written {
            return code;
        }
        let mut entries = self.entries.borrow_mut();
        self.entry(&mut entries, group_id).txn_offsets.entry(producer_id).or_default().extend(offsets);
        0
    }

    /// A marker of producer `producer_id` is written to `__consumer_offsets` partition `p`:
    /// its transactional offsets there become committed (or are dropped, for an abort).
    pub fn complete_txn_offsets(&self, p: i32, producer_id: i64, commit: bool) {
        let mut entries = self.entries.borrow_mut();
        for (id, e) in entries.iter_mut().filter(|(id, _)| offsets_partition(id) == p) {
            if let Some(pending) = e.txn_offsets.remove(&producer_id) {
                tracing::debug!(group = %id, producer_id, commit, partitions = pending.len(), "transactional offsets settled");
                if commit {
                    e.offsets.extend(pending);
                }
            }
        }
    }

    /// The partitions of the group for which a transaction not yet ended has offsets
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for them, KIP-447).
    pub fn unstable_partitions(&self, group_id: &str) -> BTreeSet<(String, i32)> {
        let entries = self.entries.borrow();
        entries.get(group_id).map(|e| e.txn_offsets.values().flat_map(|p| p.keys().cloned()).collect()).unwrap_or_default()
    }

    /// Appends `records` to the group's `__consumer_offsets` partition and waits for fdatasync,
    /// then for every earlier append to that partition to have been applied. The caller applies
    /// its own change to memory while it holds the returned turn (and not after an error).
    async fn append_in_order(&self, group_id: &str, records: &[KeyValue]) -> (Result<(), i16>, Ticket<'_>) {
        // Taken right before the append takes its place in the log (no await in between), so
        // tickets follow log order.
        let mut turn = self.apply_turns[offsets_partition(group_id) as usize].ticket();
        let written = append_offset_records(group_id, records).await;
        turn.turn().await;
        (written, turn)
    }

    fn may_commit(&self, group_id: &str, who: &Committer) -> i16 {
        let mut entries = self.entries.borrow_mut();
        let e = self.entry(&mut entries, group_id);
        if let Some(c) = e.consumer.as_ref().filter(|c| c.has_members()) {
            // Consumer protocol: the "generation" is the member epoch.
            return match who {
                Committer::Simple => ResponseError::UnknownMemberId.code(),
                Committer::Member { member_id, generation } => c.is_member(member_id, *generation).err().unwrap_or(0),
            };
        }
        let allowed = match who {
            Committer::Simple => {
                if e.group.state() == GroupState::Empty {
                    Ok(())
                } else {
                    Err(ResponseError::UnknownMemberId)
                }
            }
            Committer::Member { member_id, generation } => {
                if !e.group.has_member(member_id) {
                    Err(ResponseError::UnknownMemberId)
                } else if !e.group.is_member(member_id, *generation) {
                    Err(ResponseError::IllegalGeneration)
                } else if e.group.state() == GroupState::CompletingRebalance {
                    Err(ResponseError::RebalanceInProgress)
                } else {
                    Ok(())
                }
            }
        };
        match allowed {
            Ok(()) => 0,
            Err(code) => code.code(),
        }
    }

    /// Forgets the groups of `__consumer_offsets` partition `p` (this broker no longer leads
    /// it, or is about to load it afresh as its new leader). Requests waiting on them are
    /// answered with an error as their channel closes; the client finds the new coordinator.
    pub fn forget_partition(&self, p: i32) -> usize {
        let mut entries = self.entries.borrow_mut();
        let before = entries.len();
        entries.retain(|id, _| offsets_partition(id) != p);
        let mut dirty = self.dirty.borrow_mut();
        dirty.retain(|id, _| offsets_partition(id) != p);
        self.consumer_dirty.borrow_mut().retain(|id| offsets_partition(id) != p);
        before - entries.len()
    }

    /// Reloads committed offsets and group membership from a `__consumer_offsets` partition
    /// this core has just opened (at start-up, before clients are served; in a cluster also
    /// when the metadata log gives this broker the partition later, before the image that shows
    /// it is installed). Returns how many records were applied.
    pub async fn load(&self, shard: &Shard, p: i32) -> Result<usize, String> {
        let mut applied = 0;
        let Some(log) = shard.partition(OFFSETS_TOPIC, p) else {
            return Ok(0);
        };
        // KIP-848 groups come in several records each; they are put together, then restored.
        let mut consumers: HashMap<String, StoredGroup> = HashMap::new();
        replay_written(&log, OFFSETS_TOPIC, p, |bytes, h| {
            let mut entries = self.entries.borrow_mut();
            if h.is_control() {
                // A transaction's marker settles its offsets, as when it was written.
                if let Some(marker) = batch::parse_marker(bytes, h) {
                    for (_, e) in entries.iter_mut().filter(|(id, _)| offsets_partition(id) == p) {
                        if let Some(pending) = e.txn_offsets.remove(&h.producer_id) {
                            if marker.commit {
                                e.offsets.extend(pending);
                            }
                        }
                    }
                }
                return;
            }
            let Some(kvs) = batch::key_values(bytes, h) else {
                return;
            };
            for (k, v) in kvs {
                let Some(key) = k else { continue };
                match offsets::decode_record(&key, v.as_deref()) {
                    Some(Record::Offset { group, topic, partition, committed: Some(c) }) if h.is_transactional() => {
                        let e = self.entry(&mut entries, &group);
                        e.txn_offsets.entry(h.producer_id).or_default().insert((topic, partition), c);
                    }
                    Some(Record::Offset { group, topic, partition, committed }) => {
                        let offsets = &mut self.entry(&mut entries, &group).offsets;
                        match committed {
                            Some(c) => offsets.insert((topic, partition), c),
                            None => offsets.remove(&(topic, partition)),
                        };
                    }
                    Some(Record::Group { group, snapshot }) => {
                        let e = self.entry(&mut entries, &group);
                        (e.group, e.persisted, e.empty_since) = match snapshot {
                            Some(snap) => {
                                let since = snap.members.is_empty().then_some(snap.state_ms);
                                let g = Group::restore(group, self.config, snap, now_ms());
                                let marker = (g.generation(), g.state());
                                (g, marker, since)
                            }
                            None => (Group::new(group, self.config), Group::initial_marker(), None),
                        };
                    }
                    Some(Record::ConsumerGroupEpoch { group, epoch: Some(epoch) }) => {
                        consumers.entry(group).or_default().group_epoch = epoch;
                    }
                    Some(Record::ConsumerGroupEpoch { group, epoch: None }) => {
                        consumers.remove(&group);
                    }
                    Some(Record::ConsumerTargetEpoch { group, epoch }) => {
                        consumers.entry(group).or_default().assignment_epoch = epoch.unwrap_or(0);
                    }
                    Some(Record::ConsumerMember { group, member, metadata }) => {
                        consumers.entry(group).or_default().members.entry(member).or_default().metadata = metadata;
                    }
                    Some(Record::ConsumerTarget { group, member, partitions }) => {
                        consumers.entry(group).or_default().members.entry(member).or_default().target = partitions;
                    }
                    Some(Record::ConsumerAssignment { group, member, assignment }) => {
                        consumers.entry(group).or_default().members.entry(member).or_default().assignment = assignment;
                    }
                    None => continue,
                }
                applied += 1;
            }
        })
        .await?;
        let image = shard.image();
        let now = now_ms();
        let mut entries = self.entries.borrow_mut();
        for (group, mut stored) in consumers {
            // Tombstoned members leave (None, None, None) behind.
            stored.members.retain(|_, m| m.metadata.is_some() || m.assignment.is_some() || m.target.is_some());
            let config = self.consumer_config.clone();
            let e = self.entry(&mut entries, &group);
            e.consumer_stored = stored.members.keys().cloned().collect();
            let c = ConsumerGroup::restore(group.clone(), config, stored, &*image, now);
            if c.has_members() {
                tracing::info!(group = %group, epoch = c.group_epoch(), members = c.member_ids().len(), "consumer group restored");
            }
            e.consumer = Some(c);
        }
        Ok(applied)
    }

    /// Every group this core knows that has members or committed offsets:
    /// (group id, protocol type, state, group type: "classic" or "consumer").
    pub fn list(&self) -> Vec<(String, String, String, &'static str)> {
        let entries = self.entries.borrow();
        let mut out: Vec<_> = entries
            .iter()
            .filter_map(|(id, e)| {
                if let Some(c) = e.consumer.as_ref().filter(|c| c.has_members()) {
                    return Some((id.clone(), "consumer".to_string(), c.state_name().to_string(), "consumer"));
                }
                (e.group.has_members() || !e.offsets.is_empty()).then(|| {
                    let protocol_type = e.group.protocol_type().unwrap_or("consumer").to_string();
                    (id.clone(), protocol_type, e.group.state_name().to_string(), "classic")
                })
            })
            .collect();
        out.sort();
        out
    }

    /// A group's state, protocol and members; `None` if this core does not know it.
    pub fn describe(&self, group_id: &str) -> Option<Described> {
        let entries = self.entries.borrow();
        let e = entries.get(group_id).filter(|e| e.group.has_members() || !e.offsets.is_empty())?;
        if e.consumer.as_ref().is_some_and(|c| c.has_members()) {
            return None; // not a classic group: ConsumerGroupDescribe describes it
        }
        Some(Described {
            state: e.group.state_name().to_string(),
            protocol_type: e.group.protocol_type().unwrap_or("").to_string(),
            protocol: e.group.protocol().unwrap_or("").to_string(),
            members: e.group.describe_members(),
        })
    }

    /// Deletes an empty group and its committed offsets (tombstones in `__consumer_offsets`,
    /// durable before the answer). GROUP_ID_NOT_FOUND or NON_EMPTY_GROUP otherwise.
    pub async fn delete(&self, group_id: &str) -> i16 {
        let keys: Vec<(String, i32)> = {
            let entries = self.entries.borrow();
            match entries.get(group_id) {
                None => return ResponseError::GroupIdNotFound.code(),
                Some(e) if e.group.has_members() || e.consumer.as_ref().is_some_and(|c| c.has_members()) => {
                    return ResponseError::NonEmptyGroup.code()
                }
                // A group exists once members have joined it (its generation moved, or it has a
                // consumer-protocol side) or offsets were committed for it. An empty group with
                // no offsets is deleted as Kafka does, not reported missing.
                Some(e) if e.offsets.is_empty() && e.group.generation() == 0 && e.consumer.is_none() => {
                    return ResponseError::GroupIdNotFound.code()
                }
                Some(e) => e.offsets.keys().cloned().collect(),
            }
        };
        let mut tombstones: Vec<_> =
            keys.iter().map(|(t, p)| (Some(offsets::encode_key(group_id, t, *p)), None)).collect();
        tombstones.push((Some(offsets::encode_group_key(group_id)), None));
        let stored: Vec<String> = self.entries.borrow().get(group_id).map(|e| e.consumer_stored.iter().cloned().collect()).unwrap_or_default();
        tombstones.extend(offsets::consumer_group_tombstones(group_id, &stored));
        self.dirty.borrow_mut().remove(group_id);
        self.consumer_dirty.borrow_mut().remove(group_id);
        let (written, _turn) = self.append_in_order(group_id, &tombstones).await;
        if let Err(code) = written {
            return code;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.get(group_id).is_some_and(|e| !e.group.has_members() && !e.consumer.as_ref().is_some_and(|c| c.has_members())) {
            entries.remove(group_id);
        }
        tracing::info!(group = %group_id, "deleted group");
        0
    }

    /// OffsetDelete: removes committed offsets (tombstones, durable before the answer). An
    /// empty group may lose any; a consumer group with members only those of topics none of its
    /// members subscribes to (GROUP_SUBSCRIBED_TO_TOPIC for the others), and a group of another
    /// protocol none while it has members (NON_EMPTY_GROUP). Returns per-partition codes, or the
    /// group-level error.
    pub async fn delete_offsets(&self, group_id: &str, wanted: Vec<(String, i32)>) -> Result<Vec<((String, i32), i16)>, i16> {
        let (results, tombstones) = {
            let entries = self.entries.borrow();
            let Some(e) = entries.get(group_id).filter(|e| e.group.has_members() || !e.offsets.is_empty()) else {
                return Err(ResponseError::GroupIdNotFound.code());
            };
            let subscribed: Option<BTreeSet<String>> = if let Some(topics) = consumer_subscriptions(e) {
                Some(topics)
            } else if !e.group.has_members() {
                None
            } else if e.group.protocol_type() == Some("consumer") {
                Some(e.group.describe_members().iter().flat_map(|m| subscribed_topics(&m.4)).collect())
            } else {
                return Err(ResponseError::NonEmptyGroup.code());
            };
            let mut results = Vec::new();
            let mut tombstones = Vec::new();
            for (topic, p) in wanted {
                if subscribed.as_ref().is_some_and(|s| s.contains(&topic)) {
                    results.push(((topic, p), ResponseError::GroupSubscribedToTopic.code()));
                    continue;
                }
                if e.offsets.contains_key(&(topic.clone(), p)) {
                    tombstones.push((Some(offsets::encode_key(group_id, &topic, p)), None));
                }
                results.push(((topic, p), 0));
            }
            (results, tombstones)
        };
        if !tombstones.is_empty() {
            let (written, _turn) = self.append_in_order(group_id, &tombstones).await;
            written?;
            let mut entries = self.entries.borrow_mut();
            if let Some(e) = entries.get_mut(group_id) {
                for ((t, p), code) in &results {
                    if *code == 0 {
                        e.offsets.remove(&(t.clone(), *p));
                    }
                }
            }
        }
        Ok(results)
    }

    /// Deletes the committed offsets that `offsets.retention.minutes` has expired (see
    /// [`offsets::expired`]), and forgets empty groups left with none. Tombstones first, then
    /// memory, as for DeleteGroups.
    pub async fn expire_offsets(&self, now: i64) {
        let retention = self.config.offsets_retention_ms;
        let mut work = Vec::new();
        for (id, e) in self.entries.borrow().iter() {
            if e.offsets.is_empty() {
                continue;
            }
            let subscribed: Option<BTreeSet<String>> = match (e.group.has_members(), e.group.protocol_type()) {
                _ if consumer_subscriptions(e).is_some() => consumer_subscriptions(e),
                (false, _) => None,
                (true, Some("consumer")) => {
                    Some(e.group.describe_members().iter().flat_map(|m| subscribed_topics(&m.4)).collect())
                }
                // Members of another protocol: nothing says which topics they use; keep all.
                (true, _) => continue,
            };
            let gone = offsets::expired(&e.offsets, e.empty_since, subscribed.as_ref(), retention, now);
            if !gone.is_empty() {
                // A group with members of either protocol stays, whatever offsets it loses.
                let members = e.group.has_members() || e.consumer.as_ref().is_some_and(|c| c.has_members());
                let forget_group = !members && gone.len() == e.offsets.len();
                let consumer = e.consumer.is_some().then(|| e.consumer_stored.iter().cloned().collect::<Vec<_>>());
                work.push((id.clone(), gone, forget_group, consumer));
            }
        }
        for (id, gone, forget_group, consumer) in work {
            let mut records: Vec<_> = gone.iter().map(|(t, p)| (Some(offsets::encode_key(&id, t, *p)), None)).collect();
            if forget_group {
                records.push((Some(offsets::encode_group_key(&id)), None));
                if let Some(stored) = consumer {
                    records.extend(offsets::consumer_group_tombstones(&id, &stored));
                }
                self.dirty.borrow_mut().remove(&id);
                self.consumer_dirty.borrow_mut().remove(&id);
            }
            let (written, _turn) = self.append_in_order(&id, &records).await;
            if written.is_err() {
                continue;
            }
            let mut entries = self.entries.borrow_mut();
            if let Some(e) = entries.get_mut(&id) {
                for k in &gone {
                    e.offsets.remove(k);
                }
                let consumer_members = e.consumer.as_ref().is_some_and(|c| c.has_members());
                if forget_group && !e.group.has_members() && !consumer_members && e.offsets.is_empty() && e.waiting.is_empty() {
                    entries.remove(&id);
                }
            }
            tracing::info!(group = %id, partitions = gone.len(), "committed offsets expired (offsets.retention.minutes)");
        }
    }

    /// ConsumerGroupHeartbeat: one step of the group's KIP-848 state machine. Refused with
    /// GROUP_ID_NOT_FOUND while the id is a classic group with members (as Kafka does without
    /// online migration).
    pub fn consumer_heartbeat(&self, group_id: &str, req: consumer_group::Heartbeat, topics: &MetadataImage) -> consumer_group::HeartbeatReply {
        let mut entries = self.entries.borrow_mut();
        let e = self.entry(&mut entries, group_id);
        if e.group.has_members() {
            return consumer_group::HeartbeatReply {
                error_code: ResponseError::GroupIdNotFound.code(),
                error_message: Some(format!("Group {group_id} is not a consumer group.")),
                member_id: None,
                member_epoch: 0,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        let config = self.consumer_config.clone();
        let c = e.consumer.get_or_insert_with(|| ConsumerGroup::new(group_id.to_string(), config));
        let reply = c.heartbeat(req, topics, now_ms());
        self.note_consumer_changed(group_id, c);
        reply
    }

    /// ConsumerGroupDescribe of one group: `Err` with GROUP_ID_NOT_FOUND (and why) when the id
    /// is unknown or a classic group.
    pub fn consumer_describe(&self, group_id: &str) -> Result<consumer_group::GroupDescription, (i16, String)> {
        let entries = self.entries.borrow();
        let not_found = |why: String| Err((ResponseError::GroupIdNotFound.code(), why));
        match entries.get(group_id) {
            Some(e) if e.group.has_members() => not_found(format!("Group {group_id} is not a consumer group.")),
            Some(Entry { consumer: Some(c), .. }) => Ok(c.describe()),
            // A group that never had consumer-protocol members is a classic group, even when
            // empty: Kafka says so, and clients then fall back to DescribeGroups.
            Some(e) if !e.offsets.is_empty() || e.group.protocol_type().is_some() => {
                not_found(format!("Group {group_id} is not a consumer group."))
            }
            _ => not_found(format!("Group {group_id} not found.")),
        }
    }

    /// For metrics: every committed offset (group, topic, partition, offset) and the number of
    /// groups with members or offsets.
    pub fn metrics_snapshot(&self) -> (Vec<(String, String, i32, i64)>, usize) {
        let entries = self.entries.borrow();
        let mut committed = Vec::new();
        let mut groups = 0;
        for (id, e) in entries.iter() {
            let members = e.group.has_members() || e.consumer.as_ref().is_some_and(|c| c.has_members());
            if members || !e.offsets.is_empty() {
                groups += 1;
            }
            committed.extend(e.offsets.iter().map(|((t, p), c)| (id.clone(), t.clone(), *p, c.offset)));
        }
        (committed, groups)
    }

    /// Committed offsets of a group: those asked for, or all when `wanted` is `None`.
    pub fn fetch(&self, group_id: &str, wanted: Option<Vec<(String, i32)>>) -> Vec<((String, i32), Option<Committed>)> {
        let entries = self.entries.borrow();
        let offsets = entries.get(group_id).map(|e| &e.offsets);
        match wanted {
            Some(list) => list
                .into_iter()
                .map(|k| {
                    let c = offsets.and_then(|o| o.get(&k).cloned());
                    (k, c)
                })
                .collect(),
            None => offsets
                .map(|o| o.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect())
                .unwrap_or_default(),
        }
    }
}

/// A member's commit being written: keeps its session alive from [`CommitInFlight::start`]
/// until dropped, however the commit ends (see `commits_in_flight` in `coordinator::group`).
struct CommitInFlight<'a> {
    groups: &'a Groups,
    group_id: &'a str,
    member_id: Option<&'a str>,
}

impl<'a> CommitInFlight<'a> {
    fn start(groups: &'a Groups, group_id: &'a str, who: &'a Committer) -> CommitInFlight<'a> {
        let member_id = match who {
            Committer::Member { member_id, .. } => Some(member_id.as_str()),
            Committer::Simple => None,
        };
        if let (Some(m), Some(e)) = (member_id, groups.entries.borrow_mut().get_mut(group_id)) {
            // A member id belongs to one of the two protocols; the other ignores it.
            e.group.commit_started(m);
            if let Some(c) = e.consumer.as_mut() {
                c.commit_started(m);
            }
        }
        CommitInFlight { groups, group_id, member_id }
    }
}

impl Drop for CommitInFlight<'_> {
    fn drop(&mut self) {
        let now = now_ms();
        if let (Some(m), Some(e)) = (self.member_id, self.groups.entries.borrow_mut().get_mut(self.group_id)) {
            e.group.commit_ended(m, now);
            if let Some(c) = e.consumer.as_mut() {
                c.commit_ended(m, now);
            }
        }
    }
}

/// The topics a KIP-848 group's members subscribe to (by name or by pattern), if it has members.
fn consumer_subscriptions(e: &Entry) -> Option<BTreeSet<String>> {
    let c = e.consumer.as_ref().filter(|c| c.has_members())?;
    Some(c.subscribed_topic_names())
}

impl TopicLookup for MetadataImage {
    fn topic(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        MetadataImage::topic(self, name).map(|t| (t.id, t.partitions))
    }
    fn topic_name(&self, id: uuid::Uuid) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
    fn topic_names(&self) -> Vec<&str> {
        self.topics.keys().map(String::as_str).collect()
    }
}

/// The topics a consumer-protocol member subscribes to (its JoinGroup metadata, Kafka's
/// ConsumerProtocolSubscription). Newer versions only add fields, so they are read as v3.
pub(crate) fn subscribed_topics(metadata: &bytes::Bytes) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut b = metadata.clone();
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    bytes::Buf::advance(&mut b, 2);
    match ConsumerProtocolSubscription::decode(&mut b, version) {
        Ok(sub) => sub.topics.into_iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Hands every batch written to partition `p` of the internal topic `topic` to `f`, in order,
/// from the log start: what a coordinator replays when it takes the partition. All that is
/// written, past the high watermark too: a replica that has just become the leader serves it
/// (nothing will cut it now).
pub(super) async fn replay_written(log: &crate::storage::log::PartitionLog, topic: &str, p: i32, mut f: impl FnMut(&[u8], &batch::BatchHeader)) -> Result<(), String> {
    let mut at = log.offsets().log_start;
    loop {
        let r = log.read_for_replica(at, 1 << 20).await.map_err(|e| format!("reading {topic}-{p}: {e}"))?;
        if r.records.is_empty() {
            return Ok(());
        }
        let mut next = at;
        batch::scan(&r.records, |pos, h| {
            next = h.last_offset() + 1;
            f(&r.records[pos..pos + h.total_len()], h);
        });
        if next <= at {
            return Err(format!("{topic}-{p}: no progress reading at offset {at}"));
        }
        at = next;
    }
}

/// Appends `records` to the group's `__consumer_offsets` partition (on this core) and waits for
/// fdatasync; the Kafka error code on failure.
/// A `__consumer_offsets` record: key and value (`None`, a tombstone).
type KeyValue = (Option<bytes::Bytes>, Option<bytes::Bytes>);

async fn append_offset_records(group_id: &str, records: &[KeyValue]) -> Result<(), i16> {
    let b = batch::build(records, now_ms());
    append_coordinator_batch(OFFSETS_TOPIC, offsets_partition(group_id), b, group_id).await
}

/// Appends a batch a coordinator built (group or transaction state, transactional offsets) to
/// partition `partition` of the internal topic `topic` (on this core), and waits for fdatasync
/// and the in-sync replicas; NOT_COORDINATOR if this broker no longer leads it, another Kafka
/// error code on failure. `who` names the group or transactional id in log lines.
pub(super) async fn append_coordinator_batch(topic: &str, partition: i32, b: bytes::Bytes, who: &str) -> Result<(), i16> {
    let shard = current();
    let Some(log) = shard.partition(topic, partition) else {
        return Err(ResponseError::CoordinatorNotAvailable.code());
    };
    let h = batch::validate(&b).expect("a batch the broker built is valid");
    // Coordination may have moved since the request was taken: only the leader appends.
    let image = shard.image();
    if !image.topic(topic).is_some_and(|t| image.leads(t, partition)) {
        return Err(ResponseError::NotCoordinator.code());
    }
    let epoch = shard.replication.leading_epoch(topic, partition);
    let appended = log.append(&[(b, h)], true).await.map_err(|e| {
        tracing::error!(%who, error = %e, "writing to {topic} failed");
        super::handlers::log_error_code(&e).code()
    })?;
    // Replicated: the write counts once every in-sync replica has it (Kafka writes these with
    // acks=all too), so a commit that was answered survives the loss of this broker.
    super::replication::wait_for_isr(&shard, topic, partition, &log, appended.end, epoch, OFFSETS_COMMIT_TIMEOUT_MS)
        .await
        .map_err(|(code, msg)| {
            tracing::warn!(%who, "a {topic} write was not replicated: {msg}");
            match code {
                ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator.code(),
                _ => ResponseError::CoordinatorNotAvailable.code(),
            }
        })
}

/// Creates `__consumer_offsets` on first use (core 0 does it; every core has installed it when
/// this returns): when a client first looks for a group coordinator, as Kafka does, or failing
/// that at the first commit.
pub async fn ensure_offsets_topic(shard: &Shard) -> Result<(), i16> {
    let rf = shard.config.offsets_topic_replication_factor;
    ensure_internal_topic(shard, OFFSETS_TOPIC, OFFSETS_PARTITIONS, rf, "offsets_topic_replication_factor").await
}

/// Creates the internal topic `name` (compacted, `partitions` partitions) unless it exists, as
/// the first use of its coordinator does. In a cluster it gets `rf` replicas (the setting
/// `rf_setting`), or as many brokers as are live if fewer (Kafka would refuse and keep the
/// coordinator unavailable until there are enough).
pub async fn ensure_internal_topic(shard: &Shard, name: &'static str, partitions: i32, rf: usize, rf_setting: &str) -> Result<(), i16> {
    if shard.image().topic(name).is_some() {
        return Ok(());
    }
    let mut overrides = BTreeMap::new();
    overrides.insert("cleanup.policy".to_string(), "compact".to_string());
    overrides.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
    let replication_factor = match &shard.image().cluster {
        Some(c) => {
            let live = c.brokers.iter().filter(|b| !b.fenced).count().max(1);
            if rf > live {
                tracing::warn!(live, wanted = rf, "creating {name} with fewer replicas than {rf_setting}: only {live} broker(s) are live");
            }
            rf.min(live) as i32
        }
        None => 1,
    };
    let spec = NewTopic { name: name.to_string(), partitions, overrides, placement: None, replication_factor };
    let r = shard.invoke_on(0, move || async move { current().create_topics(vec![spec]).await }).await;
    match r.into_iter().next().expect("one result per topic") {
        Ok(_) | Err((ResponseError::TopicAlreadyExists, _)) => Ok(()),
        Err((code, msg)) => {
            tracing::error!("creating {name} failed: {msg}");
            Err(code.code())
        }
    }
}

/// A JoinGroup answer carrying only `error`.
fn join_error(error: i16) -> Reply {
    Reply::Join {
        error,
        generation: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: String::new(),
        members: Vec::new(),
        skip_assignment: false,
    }
}

/// The answer to `event` from a broker that no longer coordinates its group.
fn not_coordinator(event: &Event) -> Reply {
    let error = ResponseError::NotCoordinator.code();
    match event {
        Event::Join(_) => join_error(error),
        Event::Sync { .. } => Reply::Sync { error, protocol_type: None, protocol_name: None, assignment: bytes::Bytes::new() },
        Event::Heartbeat { .. } | Event::Tick => Reply::Heartbeat { error },
        Event::Leave { members, .. } => Reply::Leave { results: members.iter().map(|(m, _)| (m.clone(), error)).collect() },
    }
}

fn deliver(e: &mut Entry, actions: Vec<crate::coordinator::group::Action>) {
    for a in actions {
        if let Some(tx) = e.waiting.remove(&a.token) {
            let _ = tx.send(a.reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_on_kafkas_offsets_partition() {
        let java_hash = |s: &str| s.encode_utf16().fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32));
        assert_eq!(java_hash("abc"), 96354);
        assert_eq!(offsets_partition("abc"), 96354 % 50);
        assert!((0..50).contains(&offsets_partition("a group with a long name and ünïcödé")));
        assert_eq!(group_core("g", 1), 0);
    }
}
