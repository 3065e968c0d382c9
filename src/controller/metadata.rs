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
}

impl ClusterMetadata {
    pub fn new() -> ClusterMetadata {
        ClusterMetadata { version: METADATA_FORMAT_VERSION, ..ClusterMetadata::default() }
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
                self.lead_by_nobody(*id);
            }
            MetadataRecord::UnfenceBroker { id } => {
                let b = self.brokers.get_mut(id).ok_or_else(|| format!("broker {id} is not registered"))?;
                b.fenced = false;
            }
            MetadataRecord::CreateTopic { name, id, partitions, configs } => {
                if self.topics.contains_key(name) {
                    return Err(format!("topic {name:?} already exists"));
                }
                if self.topics.values().any(|t| t.id == *id) {
                    return Err(format!("topic id {id} is already taken"));
                }
                let t = TopicRecord { id: *id, partitions: partitions.clone(), configs: configs.clone() };
                self.topics.insert(name.clone(), t);
            }
            MetadataRecord::DeleteTopic { name } => {
                self.topics.remove(name).ok_or_else(|| format!("topic {name:?} does not exist"))?;
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

    /// A fenced broker leads nothing: its partitions are marked as led by nobody (leader -1,
    /// KRaft's NO_LEADER) with their leader and partition epochs bumped, so that a replica
    /// still acting on the old leadership is behind by an epoch. Electing a new leader from the
    /// ISR, and taking the broker out of the ISRs, is issue 21's part 2 (placement); until then
    /// an unfenced broker does not get its leaderships back by itself.
    fn lead_by_nobody(&mut self, broker: i32) {
        for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()).filter(|p| p.leader == broker) {
            p.leader = -1;
            p.leader_epoch += 1;
            p.partition_epoch += 1;
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
        assert!(m.apply(11, &MetadataRecord::DeleteTopic { name: "t".into() }).is_err());
        assert_eq!((m.applied_index, m.cluster_id.as_deref(), m.topics.len()), (11, Some("abc"), 0));
    }

    #[test]
    fn fencing_a_broker_leaves_its_partitions_led_by_nobody() {
        let mut m = ClusterMetadata::new();
        for id in [1, 2] {
            let reg = MetadataRecord::RegisterBroker { id, listeners: vec![], rack: None, incarnation: Uuid::new_v4(), fenced: false };
            m.apply(id as u64, &reg).unwrap();
        }
        assert_eq!(m.brokers[&2].registered_at, 2, "a registration knows its log index");
        let parts = vec![partition(1), partition(2), partition(1)];
        let create = MetadataRecord::CreateTopic { name: "t".into(), id: Uuid::new_v4(), partitions: parts, configs: BTreeMap::new() };
        m.apply(3, &create).unwrap();
        m.apply(4, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        let p = &m.topics["t"].partitions;
        assert_eq!(p.iter().map(|p| p.leader).collect::<Vec<_>>(), vec![-1, 2, -1]);
        assert_eq!(p.iter().map(|p| (p.leader_epoch, p.partition_epoch)).collect::<Vec<_>>(), vec![(1, 1), (0, 0), (1, 1)]);
        assert!(m.brokers[&1].fenced && !m.brokers[&2].fenced);
        // Fencing again changes nothing more; unfencing gives no leadership back (part 2 will).
        m.apply(5, &MetadataRecord::FenceBroker { id: 1 }).unwrap();
        m.apply(6, &MetadataRecord::UnfenceBroker { id: 1 }).unwrap();
        let p = &m.topics["t"].partitions;
        assert_eq!(p.iter().map(|p| (p.leader, p.leader_epoch)).collect::<Vec<_>>(), vec![(-1, 1), (2, 0), (-1, 1)]);
        assert!(!m.brokers[&1].fenced);
    }

    #[test]
    fn records_and_state_round_trip_through_their_stored_form() {
        let records = [
            MetadataRecord::ClusterId("abc".into()),
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
