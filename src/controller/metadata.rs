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

    /// A fenced broker (or a new process of it) leads nothing: each partition it led gets
    /// another unfenced member of its ISR as leader if there is one, or is led by nobody
    /// (leader -1, KRaft's NO_LEADER), with its leader and partition epochs bumped so that a
    /// replica still acting on the old leadership is behind by an epoch. With one replica per
    /// partition (all issue 21 places) there is never another; taking the broker out of ISRs
    /// and moving replicas is issue 22's.
    fn move_leadership_from(&mut self, broker: i32) {
        let live: Vec<i32> = self.brokers.values().filter(|b| !b.fenced && b.id != broker).map(|b| b.id).collect();
        for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()).filter(|p| p.leader == broker) {
            p.leader = p.isr.iter().copied().find(|r| live.contains(r)).unwrap_or(-1);
            p.leader_epoch += 1;
            p.partition_epoch += 1;
        }
    }

    /// Gives every partition led by nobody the first unfenced member of its ISR, if any (KRaft
    /// elects when such a broker returns), bumping its epochs. A partition created while its
    /// replicas were fenced starts led by nobody and is elected here too.
    fn elect_leaderless(&mut self) {
        let live: Vec<i32> = self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect();
        for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
            let leader_fenced = p.leader != -1 && !live.contains(&p.leader);
            if p.leader == -1 || leader_fenced {
                if let Some(l) = p.isr.iter().copied().find(|r| live.contains(r)) {
                    p.leader = l;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                } else if leader_fenced {
                    p.leader = -1;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }
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
