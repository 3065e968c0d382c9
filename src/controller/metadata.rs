//! The cluster's metadata as the quorum replicates it: the records of the metadata log
//! ([`MetadataRecord`], KRaft's records in our own serde form) and the state they build
//! ([`ClusterMetadata`]), with the one function that applies a record. Pure: no I/O, no clock,
//! no randomness, so every node that applies the same records in the same order holds the same
//! state (the tests compare them).
//!
//! Extending: a new record is a new variant (the enum is tagged by name, so old logs still read);
//! a new field of an existing one takes `#[serde(default)]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of [`ClusterMetadata`]'s stored form (snapshots).
pub const METADATA_FORMAT_VERSION: u32 = 1;

/// One record of the metadata log. Adjacently tagged (`{"type": "CreateTopic", "data": {..}}`)
/// so that variants of any shape, a bare string included, keep a stable name on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum MetadataRecord {
    /// The cluster's id, committed once by the first leader (see `controller` on formation).
    ClusterId(String),
    /// A broker's registration (a new incarnation replaces the previous one).
    RegisterBroker {
        id: i32,
        /// `host:port` clients reach it at.
        listeners: Vec<String>,
        #[serde(default)]
        rack: Option<String>,
        /// Changes on every start of the broker process.
        incarnation: Uuid,
        fenced: bool,
    },
    FenceBroker {
        id: i32,
    },
    UnfenceBroker {
        id: i32,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: Vec<PartitionRecord>,
        #[serde(default)]
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// New partitions of an existing topic, numbered after its last (Kafka's CreatePartitions).
    /// `first` is the topic's partition count the proposer saw: a growth racing another is a
    /// misfit rather than a double growth.
    CreatePartitions {
        name: String,
        id: Uuid,
        first: u32,
        partitions: Vec<PartitionRecord>,
    },
    /// A topic's configs, replaced whole (Kafka's incremental changes are resolved by the
    /// proposer against the state it read; the `id` makes a change to a topic deleted and
    /// created again in between a misfit).
    TopicConfigs {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A block of producer ids taken by a broker at start (KRaft's ProducerIdsRecord): `block`
    /// must be the next free one, so two brokers racing for one get one each.
    ProducerIdBlock {
        broker: i32,
        block: i64,
    },
    /// A dynamic broker config: `resource` "" for every broker, else a broker id; `value` None
    /// removes the key.
    BrokerConfig {
        resource: String,
        key: String,
        value: Option<String>,
    },
    /// A partition's ISR as its leader asks (KRaft's AlterPartition): a follower that fell
    /// behind leaves, one that caught up joins. Refused unless the leader, leader epoch and
    /// partition epoch are still those the leader saw, the leader stays in it, and every member
    /// added is a replica on an unfenced broker; the partition epoch is bumped.
    AlterPartition {
        topic: String,
        id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// A partition's replicas move to `target` (Kafka's AlterPartitionReassignments): the new
    /// ones are added and copy the log while the old ones serve; once every target replica is
    /// in the ISR the old ones go (and leadership with them, to the first target replica in the
    /// ISR). `None` cancels a reassignment in progress (the original replicas stay).
    ReassignPartition {
        topic: String,
        id: Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// A leader election asked for (Kafka's ElectLeaders, and the automatic leader rebalance):
    /// preferred (the first replica, if it is live and in the ISR, and not leading already), or
    /// unclean (a partition led by nobody takes a live replica outside its ISR).
    ElectLeader {
        topic: String,
        id: Uuid,
        partition: i32,
        unclean: bool,
    },
    /// A user's SCRAM credential for one mechanism ("SCRAM-SHA-256", "SCRAM-SHA-512"; Kafka's
    /// UserScramCredentialRecord), or its removal (`credential` None). Never a password.
    ScramCredential {
        user: String,
        mechanism: String,
        credential: Option<StoredScramCredential>,
    },
    /// ACL bindings added (Kafka's AccessControlEntryRecord); one already there is no change.
    CreateAcls {
        acls: Vec<AclRecord>,
    },
    /// ACL bindings removed (RemoveAccessControlEntryRecord); one not there is no change.
    DeleteAcls {
        acls: Vec<AclRecord>,
    },
    /// A client quota set or removed (Kafka's ClientQuotaRecord): `entity` is the broker's
    /// form of the (user, client id) entity, `value` the number as text, None to remove.
    ClientQuota {
        entity: String,
        key: String,
        value: Option<String>,
    },
}

/// One ACL binding with Kafka's codes (`ResourceType`, `PatternType`, `AclOperation`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclRecord {
    pub resource_type: i8,
    pub name: String,
    pub pattern: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub allow: bool,
}

/// What is kept of a SCRAM password (RFC 5802): its salt and iteration count and the two keys
/// derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// One partition's replicas and leadership (KRaft's PartitionRecord).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    pub listeners: Vec<String>,
    pub rack: Option<String>,
    pub incarnation: Uuid,
    pub fenced: bool,
    /// The log index of this registration: the controller unfences the broker once the broker
    /// has applied the log up to here (it has caught up with the metadata it registered into,
    /// as KRaft waits for a broker's metadata offset before unfencing it).
    #[serde(default)]
    pub registered_at: u64,
}

/// A topic as the metadata log knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: Uuid,
    pub partitions: Vec<PartitionRecord>,
    pub configs: BTreeMap<String, String>,
    /// The log index of its creation: a broker's files of this topic say it too, so that a
    /// broker removes a topic's files only on a state at least that new which no longer holds it
    /// (a stale state never deletes a newer topic's data).
    #[serde(default)]
    pub created_at: u64,
}

/// The cluster's metadata after applying the log up to `applied_index`. Immutable once
/// published (it travels as an `Arc`); the controller thread applies records to its own copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// [`METADATA_FORMAT_VERSION`] of the form it was stored in.
    pub version: u32,
    /// Index of the last metadata-log entry applied (0 before any).
    pub applied_index: u64,
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Dynamic broker configs by resource ("" for the cluster-wide layer, else a broker id).
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The next producer-id block no broker has taken.
    #[serde(default)]
    pub next_producer_id_block: i64,
    /// Leaders elected from outside their ISR so far (`unclean.leader.election.enable`).
    #[serde(default)]
    pub unclean_elections: u64,
    /// Reassignments in progress.
    #[serde(default)]
    pub reassignments: Vec<Reassignment>,
    /// SCRAM credentials by user, then mechanism.
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, BTreeMap<String, StoredScramCredential>>,
    /// ACL bindings.
    #[serde(default)]
    pub acls: std::collections::BTreeSet<AclRecord>,
    /// Client quotas by entity (the broker's form), then key (the value as text).
    #[serde(default)]
    pub client_quotas: BTreeMap<String, BTreeMap<String, String>>,
}

/// A partition moving to other replicas (see `MetadataRecord::ReassignPartition`): while it
/// lasts the partition's replicas are `target` followed by the `original` ones not in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub original: Vec<i32>,
    pub target: Vec<i32>,
}

impl Reassignment {
    /// Replicas being added and being removed (Kafka's adding/removing replicas).
    pub fn adding(&self) -> Vec<i32> {
        self.target.iter().copied().filter(|r| !self.original.contains(r)).collect()
    }

    pub fn removing(&self) -> Vec<i32> {
        self.original.iter().copied().filter(|r| !self.target.contains(r)).collect()
    }
}

impl ClusterMetadata {
    pub fn new() -> ClusterMetadata {
        ClusterMetadata { version: METADATA_FORMAT_VERSION, ..ClusterMetadata::default() }
    }

    /// The parts of the state a broker serves, in a form a broker's image can be put in too
    /// (`server::cluster::image_digest`): the index, the brokers, and every topic with its
    /// partitions and configs. `/v1/metadata` shows both, for consistency checks.
    pub fn digest(&self) -> serde_json::Value {
        let brokers: BTreeMap<String, serde_json::Value> = self
            .brokers
            .values()
            .map(|b| (b.id.to_string(), serde_json::json!({ "listener": b.listeners.first(), "rack": b.rack, "fenced": b.fenced })))
            .collect();
        let topics: BTreeMap<&str, serde_json::Value> = self
            .topics
            .iter()
            .map(|(n, t)| {
                (
                    n.as_str(),
                    serde_json::json!({ "id": t.id, "partitions": t.partitions, "configs": t.configs, "created_at": t.created_at }),
                )
            })
            .collect();
        serde_json::json!({ "index": self.applied_index, "brokers": brokers, "topics": topics })
    }

    /// Applies `record` (log entry `index`). A record that does not fit the state (a topic that
    /// already exists, a broker that is not registered) changes nothing and returns why; every
    /// node decides the same, so the refusal is part of the replicated history.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), String> {
        assert!(index > self.applied_index || index == 0, "entries are applied in log order");
        self.applied_index = index;
        match record {
            MetadataRecord::ClusterId(id) => match &self.cluster_id {
                None => self.cluster_id = Some(id.clone()),
                Some(have) if have == id => {}
                Some(have) => return Err(format!("the cluster id is already {have}")),
            },
            MetadataRecord::RegisterBroker { id, listeners, rack, incarnation, fenced } => {
                let new_incarnation = self.brokers.get(id).is_none_or(|b| b.incarnation != *incarnation);
                if *fenced && new_incarnation {
                    // A new process: what the previous one led is led by nobody until it is
                    // unfenced (its leadership is stale: it may have lost unflushed data).
                    self.move_leadership_from(*id);
                }
                let b = BrokerRegistration {
                    id: *id,
                    listeners: listeners.clone(),
                    rack: rack.clone(),
                    incarnation: *incarnation,
                    fenced: *fenced,
                    registered_at: index,
                };
                self.brokers.insert(*id, b);
            }
            MetadataRecord::FenceBroker { id } => {
                let b = self.brokers.get_mut(id).ok_or_else(|| format!("broker {id} is not registered"))?;
                b.fenced = true;
                self.move_leadership_from(*id);
            }
            MetadataRecord::UnfenceBroker { id } => {
                let b = self.brokers.get_mut(id).ok_or_else(|| format!("broker {id} is not registered"))?;
                b.fenced = false;
                self.elect_leaderless();
            }
            MetadataRecord::CreateTopic { name, id, partitions, configs } => {
                if self.topics.contains_key(name) {
                    return Err(format!("topic {name:?} already exists"));
                }
                if self.topics.values().any(|t| t.id == *id) {
                    return Err(format!("topic id {id} is already taken"));
                }
                self.check_replicas(partitions)?;
                let t = TopicRecord { id: *id, partitions: partitions.clone(), configs: configs.clone(), created_at: index };
                self.topics.insert(name.clone(), t);
                self.elect_leaderless();
            }
            MetadataRecord::DeleteTopic { name } => {
                self.topics.remove(name).ok_or_else(|| format!("topic {name:?} does not exist"))?;
                self.reassignments.retain(|r| r.topic != *name);
            }
            MetadataRecord::CreatePartitions { name, id, first, partitions } => {
                self.check_replicas(partitions)?;
                let t = self
                    .topics
                    .get_mut(name)
                    .filter(|t| t.id == *id)
                    .ok_or_else(|| format!("topic {name:?} with id {id} does not exist"))?;
                if t.partitions.len() != *first as usize {
                    return Err(format!("topic {name:?} has {} partitions now, not {first}", t.partitions.len()));
                }
                t.partitions.extend(partitions.iter().cloned());
                self.elect_leaderless();
            }
            MetadataRecord::TopicConfigs { name, id, configs } => {
                let t = self
                    .topics
                    .get_mut(name)
                    .filter(|t| t.id == *id)
                    .ok_or_else(|| format!("topic {name:?} with id {id} does not exist"))?;
                t.configs = configs.clone();
            }
            MetadataRecord::ProducerIdBlock { broker, block } => {
                if *block != self.next_producer_id_block {
                    return Err(format!(
                        "producer-id block {block} for broker {broker}: the next free one is {}",
                        self.next_producer_id_block
                    ));
                }
                self.next_producer_id_block += 1;
            }
            MetadataRecord::AlterPartition { topic, id, partition, leader, leader_epoch, partition_epoch, isr } => {
                let live = self.live_brokers(None);
                let p = partition_mut(&mut self.topics, topic, id, *partition)?;
                if p.leader != *leader || p.leader_epoch != *leader_epoch {
                    return Err(format!(
                        "{topic}-{partition}: broker {leader} at leader epoch {leader_epoch} no longer leads it (leader {} epoch {})",
                        p.leader, p.leader_epoch
                    ));
                }
                if p.partition_epoch != *partition_epoch {
                    return Err(format!("{topic}-{partition}: partition epoch {partition_epoch} is stale (now {})", p.partition_epoch));
                }
                if !isr.contains(leader) || isr.iter().any(|r| !p.replicas.contains(r)) {
                    return Err(format!("{topic}-{partition}: ISR {isr:?} must hold the leader and only replicas {:?}", p.replicas));
                }
                if let Some(r) = isr.iter().find(|r| !p.isr.contains(r) && !live.contains(r)) {
                    return Err(format!("{topic}-{partition}: broker {r} is fenced and cannot join the ISR"));
                }
                // Kept in the replicas' order, so every node holds the same list.
                p.isr = p.replicas.iter().copied().filter(|r| isr.contains(r)).collect();
                p.partition_epoch += 1;
                self.complete_reassignment(topic, *partition);
            }
            MetadataRecord::ReassignPartition { topic, id, partition, target } => {
                let registered: Vec<i32> = self.brokers.keys().copied().collect();
                let p = partition_mut(&mut self.topics, topic, id, *partition)?;
                let at = self.reassignments.iter().position(|r| r.topic == *topic && r.partition == *partition);
                match target {
                    None => {
                        let i = at.ok_or_else(|| format!("no reassignment of {topic}-{partition} in progress"))?;
                        if !self.reassignments[i].original.iter().any(|r| p.isr.contains(r)) {
                            return Err(format!("cannot cancel the reassignment of {topic}-{partition}: none of its original replicas is in sync"));
                        }
                        let r = self.reassignments.remove(i);
                        set_replicas(p, &r.original, &self.brokers);
                    }
                    Some(target) => {
                        if target.is_empty() || (1..target.len()).any(|j| target[..j].contains(&target[j])) {
                            return Err(format!("invalid replica assignment {target:?}: replicas must be distinct, at least one"));
                        }
                        if let Some(b) = target.iter().find(|b| !registered.contains(b)) {
                            return Err(format!("invalid replica assignment {target:?}: broker {b} is not registered"));
                        }
                        let original = match at {
                            Some(i) => self.reassignments.remove(i).original,
                            None => p.replicas.clone(),
                        };
                        let mut replicas = target.clone();
                        replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
                        p.replicas = replicas;
                        p.isr.retain(|r| p.replicas.contains(r));
                        p.partition_epoch += 1;
                        if *target != original {
                            self.reassignments.push(Reassignment { topic: topic.clone(), partition: *partition, original, target: target.clone() });
                        }
                        self.complete_reassignment(topic, *partition);
                    }
                }
            }
            MetadataRecord::ElectLeader { topic, id, partition, unclean } => {
                let live = self.live_brokers(None);
                let p = partition_mut(&mut self.topics, topic, id, *partition)?;
                if *unclean {
                    if p.leader != -1 {
                        return Err(format!("election not needed: {topic}-{partition} is led by {}", p.leader));
                    }
                    let (l, was_unclean) = elect(p, &live, true);
                    if l == -1 {
                        return Err(format!("eligible leaders not available: no replica of {topic}-{partition} is live"));
                    }
                    self.unclean_elections += was_unclean as u64;
                    p.leader = l;
                } else {
                    let preferred = p.replicas[0];
                    if p.leader == preferred {
                        return Err(format!("election not needed: {topic}-{partition} is led by its preferred replica {preferred}"));
                    }
                    if !p.isr.contains(&preferred) || !live.contains(&preferred) {
                        return Err(format!("preferred leader not available: broker {preferred} is not live and in the ISR of {topic}-{partition}"));
                    }
                    p.leader = preferred;
                }
                p.leader_epoch += 1;
                p.partition_epoch += 1;
            }
            MetadataRecord::ScramCredential { user, mechanism, credential } => {
                let user_creds = self.scram_credentials.entry(user.clone()).or_default();
                match credential {
                    Some(c) => {
                        user_creds.insert(mechanism.clone(), c.clone());
                    }
                    None => {
                        user_creds.remove(mechanism);
                    }
                }
                if user_creds.is_empty() {
                    self.scram_credentials.remove(user);
                }
            }
            MetadataRecord::CreateAcls { acls } => {
                self.acls.extend(acls.iter().cloned());
            }
            MetadataRecord::DeleteAcls { acls } => {
                for a in acls {
                    self.acls.remove(a);
                }
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                let keys = self.client_quotas.entry(entity.clone()).or_default();
                match value {
                    Some(v) => {
                        keys.insert(key.clone(), v.clone());
                    }
                    None => {
                        keys.remove(key);
                    }
                }
                if keys.is_empty() {
                    self.client_quotas.remove(entity);
                }
            }
            MetadataRecord::BrokerConfig { resource, key, value } => {
                let configs = self.broker_configs.entry(resource.clone()).or_default();
                match value {
                    Some(v) => {
                        configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        configs.remove(key);
                    }
                }
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                }
            }
        }
        Ok(())
    }

    /// A partition must have a replica. Whether its replicas are live brokers is the proposer's
    /// check (placement uses the brokers it sees): a broker may be fenced or re-registering
    /// by the time the record applies, which KRaft's replay does not refuse either.
    fn check_replicas(&self, partitions: &[PartitionRecord]) -> Result<(), String> {
        if partitions.iter().any(|p| p.replicas.is_empty() || !p.isr.iter().all(|r| p.replicas.contains(r))) {
            return Err("a partition has no replicas, or an ISR member that is not a replica".into());
        }
        Ok(())
    }

    /// Ends the reassignment of `topic`-`partition` if every target replica is in its ISR: the
    /// replicas become the target, the removed ones leave the ISR, and a leader that is not a
    /// target replica hands over to the first target replica in the ISR that is live.
    fn complete_reassignment(&mut self, topic: &str, partition: i32) {
        let Some(i) = self.reassignments.iter().position(|r| r.topic == topic && r.partition == partition) else { return };
        let Some(p) = self.topics.get_mut(topic).and_then(|t| t.partitions.get_mut(partition as usize)) else {
            self.reassignments.remove(i);
            return;
        };
        let target = self.reassignments[i].target.clone();
        if !target.iter().all(|r| p.isr.contains(r)) {
            return;
        }
        self.reassignments.remove(i);
        set_replicas(p, &target, &self.brokers);
    }

    /// The unfenced brokers, but `except`.
    fn live_brokers(&self, except: Option<i32>) -> Vec<i32> {
        self.brokers.values().filter(|b| !b.fenced && Some(b.id) != except).map(|b| b.id).collect()
    }

    /// Whether a topic may elect a leader outside its ISR: its own
    /// `unclean.leader.election.enable`, else the cluster-wide dynamic broker config (never a
    /// node's settings, which may differ from node to node).
    fn unclean_allowed(&self, t: &TopicRecord) -> bool {
        const KEY: &str = "unclean.leader.election.enable";
        let cluster = self.broker_configs.get("").and_then(|c| c.get(KEY));
        t.configs.get(KEY).or(cluster).is_some_and(|v| v.trim() == "true")
    }

    /// A fenced broker (or a new process of it) leaves every ISR it is in but the last member
    /// (KRaft's rule: the high watermark need not wait for it, and the last member must stay so
    /// that its return can elect it), and leads nothing: each partition it led gets another
    /// live member of its ISR as leader ([`elect`]), or is led by nobody (leader -1, KRaft's
    /// NO_LEADER), with its leader epoch bumped so that a replica still acting on the old
    /// leadership is behind by an epoch. Every change bumps the partition epoch.
    fn move_leadership_from(&mut self, broker: i32) {
        let live = self.live_brokers(Some(broker));
        let unclean: Vec<bool> = self.topics.values().map(|t| self.unclean_allowed(t)).collect();
        for (t, unclean) in self.topics.values_mut().zip(unclean) {
            for p in t.partitions.iter_mut() {
                let mut changed = false;
                if p.isr.len() > 1 && p.isr.contains(&broker) {
                    p.isr.retain(|r| *r != broker);
                    changed = true;
                }
                if p.leader == broker {
                    let (l, was_unclean) = elect(p, &live, unclean);
                    p.leader = l;
                    self.unclean_elections += was_unclean as u64;
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Gives every partition led by nobody (or by a fenced broker) a leader from its ISR if one
    /// is live ([`elect`]), bumping its epochs. A partition created while its replicas were
    /// fenced starts led by nobody and is elected here too.
    fn elect_leaderless(&mut self) {
        let live = self.live_brokers(None);
        let unclean: Vec<bool> = self.topics.values().map(|t| self.unclean_allowed(t)).collect();
        for (t, unclean) in self.topics.values_mut().zip(unclean) {
            for p in t.partitions.iter_mut() {
                let leader_fenced = p.leader != -1 && !live.contains(&p.leader);
                if p.leader != -1 && !leader_fenced {
                    continue;
                }
                let (l, was_unclean) = elect(p, &live, unclean);
                self.unclean_elections += was_unclean as u64;
                if l != -1 || leader_fenced {
                    p.leader = l;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }
}

/// Partition `partition` of topic `topic`, if the topic still has id `id`.
fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicRecord>,
    topic: &str,
    id: &Uuid,
    partition: i32,
) -> Result<&'a mut PartitionRecord, String> {
    let t = topics.get_mut(topic).filter(|t| t.id == *id).ok_or_else(|| format!("topic {topic:?} with id {id} does not exist"))?;
    usize::try_from(partition).ok().and_then(|i| t.partitions.get_mut(i)).ok_or_else(|| format!("topic {topic:?} has no partition {partition}"))
}

/// Makes `replicas` a partition's replicas: its ISR keeps only them (the callers make sure one
/// of them is in it), and if its leader is not one, the first of them in the ISR that is live
/// leads (or nobody), epochs bumped.
fn set_replicas(p: &mut PartitionRecord, replicas: &[i32], brokers: &BTreeMap<i32, BrokerRegistration>) {
    p.replicas = replicas.to_vec();
    p.isr = replicas.iter().copied().filter(|r| p.isr.contains(r)).collect();
    if !p.replicas.contains(&p.leader) {
        let live = |r: &i32| brokers.get(r).is_some_and(|b| !b.fenced);
        p.leader = p.replicas.iter().copied().find(|r| p.isr.contains(r) && live(r)).unwrap_or(-1);
        p.leader_epoch += 1;
    }
    p.partition_epoch += 1;
}

/// A new leader for `p` among the `live` brokers: the first replica (in replica order, so the
/// preferred replica when it can) that is in the ISR; with `unclean`, failing that, the first
/// live replica outside it, which becomes the whole ISR (what only the old ISR held is lost,
/// which is what the setting accepts); else -1. Also whether the election was unclean.
fn elect(p: &mut PartitionRecord, live: &[i32], unclean: bool) -> (i32, bool) {
    if let Some(l) = p.replicas.iter().copied().find(|r| p.isr.contains(r) && live.contains(r)) {
        return (l, false);
    }
    if unclean {
        if let Some(l) = p.replicas.iter().copied().find(|r| live.contains(r)) {
            // Logged by every node as it applies the record: the one place a replica outside
            // the ISR is made leader, and what it may cost.
            tracing::warn!(leader = l, old_isr = ?p.isr, "unclean leader election: a replica outside the ISR leads; records only the old ISR held are lost");
            p.isr = vec![l];
            return (l, true);
        }
    }
    (-1, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: i32) -> PartitionRecord {
        PartitionRecord { replicas: vec![leader], leader, leader_epoch: 0, isr: vec![leader], partition_epoch: 0 }
    }

    #[test]
    fn records_apply_and_misfits_change_nothing() {
        let mut m = ClusterMetadata::new();
        m.apply(1, &MetadataRecord::ClusterId("abc".into())).unwrap();
        assert!(m.apply(2, &MetadataRecord::ClusterId("other".into())).unwrap_err().contains("already abc"));
        let inc = Uuid::new_v4();
        let reg = MetadataRecord::RegisterBroker { id: 1, listeners: vec!["h:9092".into()], rack: None, incarnation: inc, fenced: true };
        m.apply(3, &reg).unwrap();
        m.apply(4, &MetadataRecord::UnfenceBroker { id: 1 }).unwrap();
        assert!(!m.brokers[&1].fenced);
        assert!(m.apply(5, &MetadataRecord::FenceBroker { id: 9 }).unwrap_err().contains("broker 9"));
        let id = Uuid::new_v4();
        let create = MetadataRecord::CreateTopic { name: "t".into(), id, partitions: vec![partition(1)], configs: BTreeMap::new() };
        m.apply(6, &create).unwrap();
        assert!(m.apply(7, &create).unwrap_err().contains("already exists"));
        m.apply(8, &MetadataRecord::BrokerConfig { resource: "".into(), key: "log.retention.ms".into(), value: Some("5".into()) }).unwrap();
        assert_eq!(m.broker_configs[""]["log.retention.ms"], "5");
        m.apply(9, &MetadataRecord::BrokerConfig { resource: "".into(), key: "log.retention.ms".into(), value: None }).unwrap();
        assert!(m.broker_configs.is_empty());
        m.apply(10, &MetadataRecord::DeleteTopic { name: "t".into() }).unwrap();
        m.apply(12, &MetadataRecord::ProducerIdBlock { broker: 1, block: 0 }).unwrap();
        assert!(m.apply(13, &MetadataRecord::ProducerIdBlock { broker: 2, block: 0 }).unwrap_err().contains("next free one is 1"));
        assert!(m.apply(14, &MetadataRecord::DeleteTopic { name: "t".into() }).is_err());
        assert_eq!((m.applied_index, m.cluster_id.as_deref(), m.topics.len(), m.next_producer_id_block), (14, Some("abc"), 0, 1));
        let cred = StoredScramCredential { salt: vec![1], iterations: 4096, stored_key: vec![2], server_key: vec![3] };
        let scram = |c: Option<StoredScramCredential>| MetadataRecord::ScramCredential { user: "alice".into(), mechanism: "SCRAM-SHA-256".into(), credential: c };
        m.apply(15, &scram(Some(cred.clone()))).unwrap();
        assert_eq!(m.scram_credentials["alice"]["SCRAM-SHA-256"], cred);
        m.apply(16, &scram(None)).unwrap();
        assert!(m.scram_credentials.is_empty());
        let acl = AclRecord { resource_type: 2, name: "t".into(), pattern: 3, principal: "User:a".into(), host: "*".into(), operation: 3, allow: true };
        m.apply(17, &MetadataRecord::CreateAcls { acls: vec![acl.clone(), acl.clone()] }).unwrap();
        assert_eq!(m.acls.len(), 1);
        m.apply(18, &MetadataRecord::DeleteAcls { acls: vec![acl] }).unwrap();
        assert!(m.acls.is_empty());
    }

    #[test]
    fn fencing_a_broker_leaves_its_partitions_led_by_nobody_until_it_returns() {
        let mut m = ClusterMetadata::new();
        let reg =
            |id: i32, fenced| MetadataRecord::RegisterBroker { id, listeners: vec![], rack: None, incarnation: Uuid::new_v4(), fenced };
        for id in [1, 2] {
            m.apply(id as u64, &reg(id, false)).unwrap();
        }
        assert_eq!(m.brokers[&2].registered_at, 2, "a registration knows its log index");
        let parts = vec![partition(1), partition(2), partition(1)];
        let create = MetadataRecord::CreateTopic { name: "t".into(), id: Uuid::new_v4(), partitions: parts, configs: BTreeMap::new() };
        m.apply(3, &create).unwrap();
        assert_eq!(m.topics["t"].created_at, 3);
        let leaders = |m: &ClusterMetadata| m.topics["t"].partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect::<Vec<_>>();
        m.apply(4, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        assert_eq!(leaders(&m), vec![(-1, 1), (2, 0), (-1, 1)], "no other replica in the ISR: led by nobody");
        assert_eq!(m.topics["t"].partitions[0].partition_epoch, 1);
        assert!(m.brokers[&1].fenced && !m.brokers[&2].fenced);
        m.apply(5, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        assert_eq!(leaders(&m), vec![(-1, 1), (2, 0), (-1, 1)], "fencing again changes nothing more");
        m.apply(6, &MetadataRecord::UnfenceBroker { id: 1 }).unwrap();
        assert_eq!(leaders(&m), vec![(1, 2), (2, 0), (1, 2)], "back in the ISR and unfenced: elected again");
        // A new process of broker 2 registers fenced: its leadership is stale until unfenced.
        m.apply(7, &reg(2, true)).unwrap();
        assert_eq!(leaders(&m), vec![(1, 2), (-1, 1), (1, 2)]);
        m.apply(8, &MetadataRecord::UnfenceBroker { id: 2 }).unwrap();
        assert_eq!(leaders(&m), vec![(1, 2), (2, 2), (1, 2)]);
        // An ISR with another live member moves the leadership there instead.
        let two = PartitionRecord { replicas: vec![1, 2], leader: 1, leader_epoch: 0, isr: vec![1, 2], partition_epoch: 0 };
        m.apply(9, &MetadataRecord::CreateTopic { name: "u".into(), id: Uuid::new_v4(), partitions: vec![two], configs: BTreeMap::new() })
            .unwrap();
        m.apply(10, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        assert_eq!((m.topics["u"].partitions[0].leader, m.topics["u"].partitions[0].leader_epoch), (2, 1));
    }

    fn three(m: &mut ClusterMetadata, name: &str, configs: BTreeMap<String, String>) -> Uuid {
        let reg = |id: i32| MetadataRecord::RegisterBroker { id, listeners: vec![], rack: None, incarnation: Uuid::new_v4(), fenced: false };
        for id in [1, 2, 3] {
            if !m.brokers.contains_key(&id) {
                let i = m.applied_index + 1;
                m.apply(i, &reg(id)).unwrap();
            }
        }
        let id = Uuid::new_v4();
        let p = PartitionRecord { replicas: vec![1, 2, 3], leader: 1, leader_epoch: 0, isr: vec![1, 2, 3], partition_epoch: 0 };
        let i = m.applied_index + 1;
        m.apply(i, &MetadataRecord::CreateTopic { name: name.into(), id, partitions: vec![p], configs }).unwrap();
        id
    }

    #[test]
    fn a_fenced_broker_leaves_every_isr_but_the_last_member_and_leadership_moves_within_the_isr() {
        let mut m = ClusterMetadata::new();
        three(&mut m, "t", BTreeMap::new());
        let p = |m: &ClusterMetadata| m.topics["t"].partitions[0].clone();
        let i = m.applied_index;
        m.apply(i + 1, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        let now = p(&m);
        assert_eq!((now.leader, now.leader_epoch, now.isr.clone(), now.partition_epoch), (2, 1, vec![2, 3], 1), "the next ISR member leads");
        m.apply(i + 2, &MetadataRecord::FenceBroker { id: 3 }).unwrap();
        assert_eq!((p(&m).leader, p(&m).isr.clone(), p(&m).partition_epoch), (2, vec![2], 2), "a follower just leaves the ISR");
        m.apply(i + 3, &MetadataRecord::FenceBroker { id: 2 }).unwrap();
        let now = p(&m);
        assert_eq!((now.leader, now.isr.clone()), (-1, vec![2]), "the last member stays in the ISR, led by nobody");
        m.apply(i + 4, &MetadataRecord::UnfenceBroker { id: 1 }).unwrap();
        assert_eq!(p(&m).leader, -1, "a replica outside the ISR is not elected (unclean election is off)");
        m.apply(i + 5, &MetadataRecord::UnfenceBroker { id: 2 }).unwrap();
        assert_eq!((p(&m).leader, p(&m).isr.clone()), (2, vec![2]), "the last ISR member returns and leads");
    }

    #[test]
    fn alter_partition_is_refused_from_a_stale_leader_or_epoch_and_for_fenced_brokers() {
        let mut m = ClusterMetadata::new();
        let id = three(&mut m, "t", BTreeMap::new());
        let alter = |leader, leader_epoch, partition_epoch, isr: Vec<i32>| MetadataRecord::AlterPartition {
            topic: "t".into(),
            id,
            partition: 0,
            leader,
            leader_epoch,
            partition_epoch,
            isr,
        };
        let i = m.applied_index;
        m.apply(i + 1, &alter(1, 0, 0, vec![3, 1])).unwrap();
        assert_eq!((m.topics["t"].partitions[0].isr.clone(), m.topics["t"].partitions[0].partition_epoch), (vec![1, 3], 1), "kept in replica order");
        assert!(m.apply(i + 2, &alter(1, 0, 0, vec![1])).unwrap_err().contains("stale"), "an old partition epoch");
        assert!(m.apply(i + 3, &alter(2, 0, 1, vec![2])).unwrap_err().contains("no longer leads"), "not the leader");
        assert!(m.apply(i + 4, &alter(1, 0, 1, vec![3])).unwrap_err().contains("must hold the leader"));
        m.apply(i + 5, &MetadataRecord::FenceBroker { id: 2 }).unwrap();
        assert!(m.apply(i + 6, &alter(1, 0, 1, vec![1, 2, 3])).unwrap_err().contains("fenced"), "a fenced broker cannot join");
        m.apply(i + 7, &alter(1, 0, 1, vec![1])).unwrap();
        assert_eq!(m.topics["t"].partitions[0].isr, vec![1]);
    }

    #[test]
    fn unclean_election_picks_a_live_replica_outside_the_isr_only_when_allowed() {
        let mut m = ClusterMetadata::new();
        three(&mut m, "clean", BTreeMap::new());
        three(&mut m, "unclean", BTreeMap::from([("unclean.leader.election.enable".to_string(), "true".to_string())]));
        let i = m.applied_index;
        let id = m.topics["clean"].id;
        let shrink = MetadataRecord::AlterPartition { topic: "clean".into(), id, partition: 0, leader: 1, leader_epoch: 0, partition_epoch: 0, isr: vec![1] };
        m.apply(i + 1, &shrink).unwrap();
        let id = m.topics["unclean"].id;
        let shrink = MetadataRecord::AlterPartition { topic: "unclean".into(), id, partition: 0, leader: 1, leader_epoch: 0, partition_epoch: 0, isr: vec![1] };
        m.apply(i + 2, &shrink).unwrap();
        m.apply(i + 3, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        assert_eq!(m.topics["clean"].partitions[0].leader, -1);
        let u = &m.topics["unclean"].partitions[0];
        assert_eq!((u.leader, u.isr.clone()), (2, vec![2]), "the first live replica, alone in the ISR");
        // The cluster-wide dynamic config turns it on for every topic without its own.
        let config = MetadataRecord::BrokerConfig { resource: "".into(), key: "unclean.leader.election.enable".into(), value: Some("true".into()) };
        m.apply(i + 4, &config).unwrap();
        m.apply(i + 5, &MetadataRecord::UnfenceBroker { id: 3 }).unwrap();
        assert_eq!(m.topics["clean"].partitions[0].leader, 2, "elected at the next election, outside its ISR");
    }

    #[test]
    fn a_reassignment_adds_replicas_until_they_are_in_sync_then_drops_the_old_ones() {
        let mut m = ClusterMetadata::new();
        let id = three(&mut m, "t", BTreeMap::new());
        let i = m.applied_index;
        let reg = MetadataRecord::RegisterBroker { id: 4, listeners: vec![], rack: None, incarnation: Uuid::new_v4(), fenced: false };
        m.apply(i + 1, &reg).unwrap();
        let move_to = |target: Option<Vec<i32>>| MetadataRecord::ReassignPartition { topic: "t".into(), id, partition: 0, target };
        assert!(m.apply(i + 2, &move_to(Some(vec![2, 9]))).unwrap_err().contains("not registered"));
        assert!(m.apply(i + 3, &move_to(None)).unwrap_err().contains("no reassignment"));
        // 1,2,3 -> 4,2,3: broker 4 is added, 1 (the leader) stays until 4 is in sync.
        m.apply(i + 4, &move_to(Some(vec![4, 2, 3]))).unwrap();
        let p = m.topics["t"].partitions[0].clone();
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![4, 2, 3, 1], vec![1, 2, 3], 1));
        assert_eq!((m.reassignments[0].adding(), m.reassignments[0].removing()), (vec![4], vec![1]));
        // The leader lets 4 into the ISR: the reassignment completes, 1 leaves, 4 leads.
        let alter = MetadataRecord::AlterPartition {
            topic: "t".into(),
            id,
            partition: 0,
            leader: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2, 3, 4],
        };
        m.apply(i + 5, &alter).unwrap();
        let p = m.topics["t"].partitions[0].clone();
        assert_eq!((p.replicas, p.isr, p.leader, p.leader_epoch), (vec![4, 2, 3], vec![4, 2, 3], 4, 1));
        assert!(m.reassignments.is_empty());
        // Shrinking to replicas already in sync completes at once; a cancel puts them back.
        m.apply(i + 6, &move_to(Some(vec![2, 3]))).unwrap();
        assert_eq!((m.topics["t"].partitions[0].replicas.clone(), m.topics["t"].partitions[0].leader), (vec![2, 3], 2));
        m.apply(i + 7, &move_to(Some(vec![1, 2]))).unwrap();
        assert_eq!(m.topics["t"].partitions[0].replicas, vec![1, 2, 3]);
        m.apply(i + 8, &move_to(None)).unwrap();
        assert_eq!((m.topics["t"].partitions[0].replicas.clone(), m.reassignments.len()), (vec![2, 3], 0));
    }

    #[test]
    fn partitions_and_topic_configs_change_and_partitions_without_replicas_are_refused() {
        let mut m = ClusterMetadata::new();
        let reg = MetadataRecord::RegisterBroker { id: 1, listeners: vec![], rack: None, incarnation: Uuid::new_v4(), fenced: false };
        m.apply(1, &reg).unwrap();
        let id = Uuid::new_v4();
        let none = PartitionRecord { replicas: vec![], leader: -1, leader_epoch: 0, isr: vec![], partition_epoch: 0 };
        let bad = MetadataRecord::CreateTopic { name: "t".into(), id, partitions: vec![none], configs: BTreeMap::new() };
        assert!(m.apply(2, &bad).unwrap_err().contains("no replicas"));
        let create = MetadataRecord::CreateTopic { name: "t".into(), id, partitions: vec![partition(1)], configs: BTreeMap::new() };
        m.apply(3, &create).unwrap();
        let grow = |first| MetadataRecord::CreatePartitions { name: "t".into(), id, first, partitions: vec![partition(1), partition(1)] };
        m.apply(4, &grow(1)).unwrap();
        assert_eq!(m.topics["t"].partitions.len(), 3);
        assert!(m.apply(5, &grow(1)).unwrap_err().contains("has 3 partitions now"), "a second growth from the same count");
        let configs = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        m.apply(6, &MetadataRecord::TopicConfigs { name: "t".into(), id, configs: configs.clone() }).unwrap();
        assert_eq!(m.topics["t"].configs, configs);
        let stale = MetadataRecord::TopicConfigs { name: "t".into(), id: Uuid::new_v4(), configs: BTreeMap::new() };
        assert!(m.apply(7, &stale).is_err(), "a change meant for another topic of the same name");
        assert_eq!(m.topics["t"].configs, configs);
    }

    #[test]
    fn records_and_state_round_trip_through_their_stored_form() {
        let records = [
            MetadataRecord::ClusterId("abc".into()),
            MetadataRecord::RegisterBroker {
                id: 2,
                listeners: vec!["h:1".into()],
                rack: Some("r".into()),
                incarnation: Uuid::new_v4(),
                fenced: false,
            },
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                partitions: vec![partition(2)],
                configs: BTreeMap::from([("retention.ms".into(), "1".into())]),
            },
        ];
        let mut m = ClusterMetadata::new();
        for (i, r) in records.iter().enumerate() {
            let text = serde_json::to_string(r).unwrap();
            assert!(text.starts_with("{\"type\":"), "{text}");
            let back: MetadataRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, r);
            m.apply(i as u64 + 1, &back).unwrap();
        }
        let back: ClusterMetadata = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
