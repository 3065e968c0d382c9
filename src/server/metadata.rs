//! Topic metadata: the immutable image every core reads, how it is persisted, and the shard table
//! that says which core owns each partition.
//!
//! Ownership: core 0 is the only writer. It serialises every change (create, delete), persists it
//! under `<data_dir>/topics/<name>/topic.toml`, builds a new [`MetadataImage`] and sends it to every
//! core, answering the client only when all cores have installed it. Other cores hold a read-only
//! `Arc` of the image they were last sent.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::security::SecurityProtocol;
use crate::config::{limits, Config, DynamicBrokerConfig, TopicConfig};
pub use crate::controller::PartitionRecord;
use crate::io::fs;

/// One topic as every core sees it.
#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// The per-topic settings given at creation (Kafka names), as stored.
    pub overrides: BTreeMap<String, String>,
    /// Broker defaults with `overrides` applied.
    pub config: TopicConfig,
    /// In a cluster, each partition's replicas and leader from the metadata log (one per
    /// partition); empty on a single node, where this node holds and leads every partition.
    pub placement: Vec<PartitionRecord>,
    /// In a cluster, the metadata-log index that created the topic (0 on a single node).
    pub created_at: u64,
}

impl TopicMeta {
    /// A single node's topic: every partition here.
    pub fn local(name: String, id: Uuid, partitions: i32, overrides: BTreeMap<String, String>, config: TopicConfig) -> TopicMeta {
        TopicMeta { name, id, partitions, overrides, config, placement: Vec::new(), created_at: 0 }
    }
}

/// A broker of the cluster as the image shows it to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNode {
    pub id: i32,
    /// Its first listener's address, the one brokers use between themselves.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Every listener's advertised address (empty for a broker registered before listeners
    /// were named: then only `host:port`, as PLAINTEXT).
    pub endpoints: Vec<(SecurityProtocol, String, i32)>,
}

impl BrokerNode {
    /// Where a client that came in by a `protocol` listener reaches this broker: None when the
    /// broker has no such listener (Kafka leaves it out for that client).
    pub fn address(&self, protocol: SecurityProtocol) -> Option<(String, i32)> {
        if self.endpoints.is_empty() {
            return (protocol == SecurityProtocol::Plaintext).then(|| (self.host.clone(), self.port));
        }
        self.endpoints.iter().find(|(p, _, _)| *p == protocol).map(|(_, h, port)| (h.clone(), *port))
    }
}

/// What a cluster adds to the image: the metadata-log index it was built from and the brokers.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub applied_index: u64,
    pub brokers: Vec<BrokerNode>,
    /// Partition reassignments in progress (ListPartitionReassignments).
    pub reassignments: Vec<crate::controller::metadata::Reassignment>,
}

/// The whole topic namespace, and the broker configs changed at run time, at one moment.
/// Immutable; replaced whole on change.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    pub by_id: HashMap<Uuid, String>,
    /// Broker configs changed at run time; every topic's `config` has them applied.
    pub broker: DynamicBrokerConfig,
    /// This broker's id.
    pub node_id: i32,
    /// None on a single node.
    pub cluster: Option<Arc<ClusterView>>,
    /// The SCRAM credentials SASL checks.
    pub credentials: Arc<crate::server::credentials::Credentials>,
    /// The ACLs the authorizer checks (with the settings' super users).
    pub acls: Arc<crate::server::acl::Acls>,
    /// The client quotas configured.
    pub quotas: Arc<crate::server::quota::Quotas>,
}

impl MetadataImage {
    pub fn new(node_id: i32, topics: Vec<TopicMeta>, broker: DynamicBrokerConfig) -> MetadataImage {
        let mut img = MetadataImage { broker, node_id, ..MetadataImage::default() };
        for t in topics {
            img.by_id.insert(t.id, t.name.clone());
            img.topics.insert(t.name.clone(), Arc::new(t));
        }
        img
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn with_topic(&self, t: TopicMeta) -> MetadataImage {
        let mut img = self.clone();
        img.by_id.insert(t.id, t.name.clone());
        img.topics.insert(t.name.clone(), Arc::new(t));
        img
    }

    /// The broker leading a partition of `t` (-1: none now); this node on a single node.
    pub fn leader(&self, t: &TopicMeta, partition: i32) -> i32 {
        if t.placement.is_empty() {
            return self.node_id;
        }
        usize::try_from(partition).ok().and_then(|p| t.placement.get(p)).map_or(-1, |p| p.leader)
    }

    /// Whether this broker leads the partition: only the leader serves produce and fetch.
    pub fn leads(&self, t: &TopicMeta, partition: i32) -> bool {
        self.leader(t, partition) == self.node_id
    }

    /// Whether this broker holds a replica of the partition (opens its log).
    pub fn hosts(&self, t: &TopicMeta, partition: i32) -> bool {
        if t.placement.is_empty() {
            return true;
        }
        usize::try_from(partition).ok().and_then(|p| t.placement.get(p)).is_some_and(|p| p.replicas.contains(&self.node_id))
    }

    /// The leader epoch of a partition (0 on a single node, where it never changes).
    pub fn leader_epoch(&self, t: &TopicMeta, partition: i32) -> i32 {
        usize::try_from(partition).ok().and_then(|p| t.placement.get(p)).map_or(0, |p| p.leader_epoch)
    }

    /// Where a client of a `protocol` listener reaches broker `id` (this node on a single node,
    /// from its settings; a live broker of the cluster from its registration).
    pub fn broker_address(&self, config: &Config, id: i32, protocol: SecurityProtocol) -> Option<(String, i32)> {
        if self.cluster.is_none() {
            return (id == self.node_id).then(|| config.advertised_for(protocol)).flatten();
        }
        self.broker(id)?.address(protocol)
    }

    /// A live broker by id (on a single node, only this one).
    pub fn broker(&self, id: i32) -> Option<&BrokerNode> {
        self.cluster.as_ref()?.brokers.iter().find(|b| b.id == id && !b.fenced)
    }

    pub fn without_topic(&self, name: &str) -> MetadataImage {
        let mut img = self.clone();
        if let Some(t) = img.topics.remove(name) {
            img.by_id.remove(&t.id);
        }
        img
    }
}

/// The shard table: which core owns a partition. A pure function of the topic name, the partition
/// and the core count, so every core computes the same answer with no shared state, and a topic's
/// partitions are spread round-robin over the cores starting at a per-topic offset.
pub fn owner_core(topic: &str, partition: i32, cores: usize) -> usize {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h % cores as u64) as usize + partition as usize) % cores
}

/// Kafka's topic-name rule: 1..=249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > limits::TOPIC_NAME_MAX_LEN {
        return Err(format!("topic name is longer than {} characters", limits::TOPIC_NAME_MAX_LEN));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains {c:?}; allowed are ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// The stored form of a topic (`topic.toml`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTopic {
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    /// In a cluster: the metadata-log index that created the topic (see `cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<u64>,
}

pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

pub fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    topics_dir(data_dir).join(name)
}

pub fn partition_dir(data_dir: &Path, name: &str, partition: i32) -> PathBuf {
    topic_dir(data_dir, name).join(partition.to_string())
}

/// Serialised `topic.toml` for a topic.
pub fn encode_topic(t: &TopicMeta) -> Vec<u8> {
    let created_at = (t.created_at > 0).then_some(t.created_at);
    let stored = StoredTopic { id: t.id.to_string(), partitions: t.partitions, configs: t.overrides.clone(), created_at };
    toml::to_string(&stored).expect("a topic always serialises").into_bytes()
}

/// The topic a `topic.toml` names: its id, and in a cluster the metadata-log index that
/// created it.
pub fn decode_topic_identity(text: &str) -> Result<(Uuid, Option<u64>), String> {
    let stored: StoredTopic = toml::from_str(text).map_err(|e| e.to_string())?;
    let id = Uuid::parse_str(&stored.id).map_err(|e| format!("bad id: {e}"))?;
    Ok((id, stored.created_at))
}

/// Where the broker configs changed at run time are kept.
pub fn broker_configs_file(data_dir: &Path) -> PathBuf {
    data_dir.join("broker-configs.toml")
}

/// Serialised `broker-configs.toml`.
pub fn encode_broker_configs(d: &DynamicBrokerConfig) -> Vec<u8> {
    toml::to_string(d).expect("string maps always serialise").into_bytes()
}

/// Reads the broker configs changed at run time (main thread, before the cores start), checked
/// against this start's settings: a value the settings now make invalid stops the start with a
/// message naming the file and the key.
pub fn load_broker_configs(config: &Config) -> anyhow::Result<DynamicBrokerConfig> {
    let file = broker_configs_file(&config.data_dir);
    let Some(text) = fs::read_to_string_sync(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))? else {
        return Ok(DynamicBrokerConfig::default());
    };
    let d: DynamicBrokerConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    config.topic_defaults_with(&d).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if !d.effective().is_empty() {
        tracing::info!(file = %file.display(), configs = ?d, "broker configs changed at run time apply");
    }
    Ok(d)
}

/// Every topic directory's name, `topic.toml` path and text (main thread, before the cores
/// start), once what a crash during a deletion left behind is removed; a directory without
/// `topic.toml` (an interrupted creation) is skipped with a warning.
pub fn topic_files(data_dir: &Path) -> anyhow::Result<Vec<(String, PathBuf, String)>> {
    let mut out = Vec::new();
    for (name, path) in fs::list_dir_sync(&topics_dir(data_dir))? {
        if name.starts_with(".deleted-") {
            tracing::info!(dir = %path.display(), "finishing an interrupted topic deletion");
            fs::remove_dir_all_sync(&path)?;
            continue;
        }
        let file = path.join("topic.toml");
        let Some(text) = fs::read_to_string_sync(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))? else {
            tracing::warn!(dir = %path.display(), "directory without topic.toml ignored (interrupted creation?)");
            continue;
        };
        out.push((name, file, text));
    }
    Ok(out)
}

/// Reads every topic under the data directory (main thread, before the cores start) and removes
/// what a crash during deletion left behind. `broker` is applied under each topic's overrides.
pub fn load_topics(config: &Config, broker: &DynamicBrokerConfig) -> anyhow::Result<Vec<TopicMeta>> {
    let defaults = config.topic_defaults_with(broker).map_err(|e| anyhow::anyhow!("broker configs: {e}"))?;
    let mut topics = Vec::new();
    for (name, file, text) in topic_files(&config.data_dir)? {
        let stored: StoredTopic =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let id = Uuid::parse_str(&stored.id).map_err(|e| anyhow::anyhow!("{}: bad id: {e}", file.display()))?;
        let topic_config = TopicConfig::resolve(&defaults, &stored.configs)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        validate_topic_name(&name).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        topics.push(TopicMeta::local(name, id, stored.partitions, stored.configs, topic_config));
    }
    Ok(topics)
}

/// Reserves this start's block of producer ids: reads the last block from
/// `<data_dir>/producer-id-block`, writes the next one durably, and returns it. Ids of earlier
/// starts are therefore never handed out again, even after a crash.
pub fn reserve_producer_id_block(data_dir: &Path) -> anyhow::Result<i64> {
    let path = data_dir.join("producer-id-block");
    let last: i64 = match fs::read_to_string_sync(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
        Some(text) => text.trim().parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => -1,
    };
    let block = last + 1;
    anyhow::ensure!(block < (1 << 31), "{}: producer id blocks exhausted", path.display());
    fs::write_atomic_sync(&path, format!("{block}\n").as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(block)
}

/// The cluster id of a single node (no voters configured): created on its first start and
/// kept in `<data_dir>/cluster.toml` (Kafka keeps it in meta.properties). In a cluster the
/// metadata quorum chooses it and writes the same file (`controller`).
pub fn load_or_create_cluster_id(data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = crate::controller::stored_cluster_id(data_dir)? {
        return Ok(id);
    }
    let id = Uuid::new_v4().simple().to_string();
    crate::controller::store_cluster_id(data_dir, &id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_table_spreads_partitions_over_cores() {
        for cores in 1..=8 {
            let mut seen = vec![0; cores];
            for p in 0..(cores as i32 * 3) {
                let c = owner_core("orders", p, cores);
                assert!(c < cores);
                seen[c] += 1;
            }
            assert!(seen.iter().all(|&n| n == 3), "cores={cores} seen={seen:?}");
        }
        assert_eq!(owner_core("t", 0, 2), owner_core("t", 0, 2));
        assert_ne!(owner_core("t", 0, 2), owner_core("t", 1, 2));
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ä"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
    }
}
