//! A broker in a cluster (issue 21): its metadata image is built from the quorum's metadata log,
//! and its metadata changes (topics, partitions, configs) are proposals to the quorum.
//!
//! **Image.** Core 0 follows the controller thread's applied states ([`Shard::follow_cluster`]):
//! each one becomes a [`MetadataImage`] ([`image_of`]: every topic with its placement, the
//! brokers, the broker configs of the cluster and of this node) and is installed on every core
//! exactly as a single node's topic change is (open the partitions this broker hosts on every
//! core, then install), so a request sees one consistent image, and a broker's image lags the
//! controller's by one channel hop and one install. States arriving while one is installed are
//! skipped but for the newest (each is whole).
//!
//! **Files.** The metadata log is the truth; a broker's `topics/<name>/topic.toml` is its local
//! note of which topic (id, and the log index that created it) the directory's data belongs to.
//! A topic's files are removed only on an image at least as new as that index which no longer
//! holds it (deleted, or deleted and created again with another id): a stale image (a restart
//! before the node has re-applied its log) can never remove a newer topic's data, and a topic
//! whose directory holds a newer topic of the same name is hidden from the cores until the image
//! catches up ([`plan`]).
//!
//! **Changes.** `Shard::create_topics` and the rest, on core 0, propose records
//! ([`crate::controller::MetadataRecord`]) through the controller handle (forwarded to the
//! quorum's leader), then wait until this broker has installed an image at least that new, so a
//! client that is answered sees its change here at once. Placement is computed from this node's
//! applied metadata (`controller::placement`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::acl::Acls;
use super::credentials::{self, CredentialChange, Credentials};
use super::metadata::{self, BrokerNode, ClusterView, MetadataImage, TopicMeta};
use super::shard::{NewTopic, Shard};
use crate::config::security::SecurityProtocol;
use crate::config::{Config, DynamicBrokerConfig, TopicConfig};
use crate::controller::{placement, ClusterMetadata, ControllerError, ControllerHandle, MetadataRecord, PartitionRecord};
use crate::io::{fs, rt};
use crate::protocol::ResponseError;

/// How long a metadata change waits for this broker to install the image that holds it, once
/// the quorum has committed it. A hang guard: installing takes milliseconds.
const INSTALL_WAIT: Duration = Duration::from_secs(30);

/// How long core 0 waits before installing again a metadata state whose install failed.
const INSTALL_RETRY: Duration = Duration::from_secs(1);

/// What every core of a broker in a cluster shares: the way into the quorum, and the topics
/// found on disk at start (taken once by core 0).
pub struct ClusterLink {
    pub handle: ControllerHandle,
    startup_local: Mutex<Option<LocalTopics>>,
    /// The metadata-log index of the image the cores start with.
    startup_index: u64,
}

impl ClusterLink {
    pub fn new(handle: ControllerHandle, local: LocalTopics, startup: &MetadataImage) -> ClusterLink {
        let startup_index = startup.cluster.as_ref().map_or(0, |c| c.applied_index);
        crate::metrics::set_installed_metadata(image_digest(startup));
        ClusterLink { handle, startup_local: Mutex::new(Some(local)), startup_index }
    }

    /// The broker that clients are told is the controller: the quorum's leader when it is a
    /// live broker (combined roles), else the live broker with the lowest id, as KRaft names
    /// a broker to clients that cannot reach controllers.
    pub fn controller_id(&self, image: &MetadataImage) -> i32 {
        let leader = self.handle.status().leader;
        match leader.filter(|l| image.broker(*l).is_some()) {
            Some(l) => l,
            None => image.cluster.as_ref().and_then(|c| c.brokers.iter().find(|b| !b.fenced)).map_or(-1, |b| b.id),
        }
    }
}

/// A topic directory found on this broker: the topic (id) its data belongs to, and the
/// metadata-log index that created it (None in a single node's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTopic {
    pub id: Uuid,
    pub created_at: Option<u64>,
}

pub type LocalTopics = BTreeMap<String, LocalTopic>;

/// Reads the topic directories under the data directory (main thread, before the cores start),
/// finishing interrupted deletions as a single node does.
pub fn read_local_topics(data_dir: &Path) -> anyhow::Result<LocalTopics> {
    let mut out = LocalTopics::new();
    for (name, file, text) in metadata::topic_files(data_dir)? {
        let (id, created_at) = metadata::decode_topic_identity(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        out.insert(name, LocalTopic { id, created_at });
    }
    Ok(out)
}

/// The image of `meta` for this broker.
pub fn image_of(config: &Config, meta: &ClusterMetadata) -> MetadataImage {
    let layer = |key: &str| meta.broker_configs.get(key).cloned().unwrap_or_default();
    let mut broker = DynamicBrokerConfig { cluster: layer(""), node: layer(&config.node_id.to_string()) };
    let defaults = match config.topic_defaults_with(&broker) {
        Ok(d) => d,
        Err(e) => {
            // Checked by the proposer against its own settings; another node's settings may
            // differ. This node keeps its own defaults rather than refuse the whole image.
            tracing::error!(error = %e, configs = ?broker, "broker configs in the metadata log are invalid here; ignored");
            broker = DynamicBrokerConfig::default();
            config.topic_defaults_with(&broker).expect("the settings alone are valid")
        }
    };
    let topics = meta.topics.iter().map(|(name, t)| {
        let config = TopicConfig::resolve(&defaults, &t.configs).unwrap_or_else(|e| {
            tracing::error!(topic = %name, error = %e, "topic configs in the metadata log are invalid here; defaults apply");
            TopicConfig::resolve(&defaults, &BTreeMap::new()).expect("defaults resolve")
        });
        TopicMeta {
            name: name.clone(),
            id: t.id,
            partitions: t.partitions.len() as i32,
            overrides: t.configs.clone(),
            config,
            placement: t.partitions.clone(),
            created_at: t.created_at,
        }
    });
    let mut image = MetadataImage::new(config.node_id, topics.collect(), broker);
    let brokers = meta
        .brokers
        .values()
        .map(|b| {
            let (host, port) = b.listeners.first().and_then(|l| l.rsplit_once(':')).unwrap_or(("", "-1"));
            // Named listeners (`NAME://host:port`) after the first, plain `host:port`.
            let endpoints = b
                .listeners
                .iter()
                .filter_map(|l| {
                    let (name, addr) = l.split_once("://")?;
                    let (h, p) = addr.rsplit_once(':')?;
                    Some((SecurityProtocol::from_name(name)?, h.to_string(), p.parse().ok()?))
                })
                .collect();
            BrokerNode {
                id: b.id,
                host: host.to_string(),
                port: port.parse().unwrap_or(-1),
                rack: b.rack.clone(),
                fenced: b.fenced,
                endpoints,
            }
        })
        .collect();
    image.credentials = Arc::new(Credentials::from_cluster(&meta.scram_credentials));
    image.acls = Arc::new(Acls::from_records(&meta.acls, config.super_users.clone(), config.allow_everyone_if_no_acl_found));
    image.quotas = Arc::new(super::quota::Quotas::from_cluster(&meta.client_quotas));
    image.cluster = Some(Arc::new(ClusterView { applied_index: meta.applied_index, brokers, reassignments: meta.reassignments.clone() }));
    image
}

/// The image in the shape of `ClusterMetadata::digest`, so that `/v1/metadata` can show what a
/// broker serves beside what its controller thread applied.
pub fn image_digest(image: &MetadataImage) -> serde_json::Value {
    let (index, brokers) = match &image.cluster {
        Some(c) => (c.applied_index, c.brokers.as_slice()),
        None => (0, &[][..]),
    };
    let brokers: BTreeMap<String, serde_json::Value> = brokers
        .iter()
        .map(|b| {
            (b.id.to_string(), serde_json::json!({ "listener": format!("{}:{}", b.host, b.port), "rack": b.rack, "fenced": b.fenced }))
        })
        .collect();
    let topics: BTreeMap<&str, serde_json::Value> = image
        .topics
        .iter()
        .map(|(n, t)| {
            (n.as_str(), serde_json::json!({ "id": t.id, "partitions": t.placement, "configs": t.overrides, "created_at": t.created_at }))
        })
        .collect();
    serde_json::json!({ "index": index, "brokers": brokers, "topics": topics })
}

/// What bringing this broker's topic directories in line with an image takes.
#[derive(Debug, Default)]
pub struct Plan {
    /// Directories whose topic the image shows deleted: (name, id of their data).
    pub remove: Vec<(String, Uuid)>,
    /// Topics this broker hosts that have no directory of theirs yet.
    pub write: Vec<Arc<TopicMeta>>,
    /// Topics whose directory holds data of a newer topic of the same name than the image
    /// knows: kept from the cores until the image catches up.
    pub hidden: Vec<String>,
}

/// Compares the topic directories with `image` (see the module doc for the rules).
pub fn plan(local: &LocalTopics, image: &MetadataImage) -> Plan {
    let applied = image.cluster.as_ref().map_or(0, |c| c.applied_index);
    let mut p = Plan::default();
    for (name, l) in local {
        if image.topic(name).is_some_and(|t| t.id == l.id) {
            continue;
        }
        match l.created_at {
            Some(c) if c <= applied => p.remove.push((name.clone(), l.id)),
            _ => {
                if image.topic(name).is_some() {
                    p.hidden.push(name.clone());
                }
            }
        }
    }
    for t in image.topics.values() {
        let hosted = (0..t.partitions).any(|i| image.hosts(t, i));
        let mine = local.get(&t.name).is_some_and(|l| l.id == t.id);
        if hosted && !mine && !p.hidden.contains(&t.name) {
            p.write.push(t.clone());
        }
    }
    p
}

fn without(image: MetadataImage, names: &[String]) -> MetadataImage {
    names.iter().fold(image, |img, n| img.without_topic(n))
}

/// Start-up (main thread): brings the topic directories in line with the first image and
/// returns the image the cores start with.
pub fn prepare_sync(config: &Config, local: &mut LocalTopics, image: MetadataImage) -> anyhow::Result<MetadataImage> {
    let p = plan(local, &image);
    for (name, id) in &p.remove {
        let dir = metadata::topic_dir(&config.data_dir, name);
        tracing::info!(topic = %name, %id, dir = %dir.display(), "removing the files of a topic deleted while this broker was away");
        fs::remove_dir_all_sync(&dir)?;
        local.remove(name);
    }
    for t in &p.write {
        let dir = metadata::topic_dir(&config.data_dir, &t.name);
        fs::create_dir_all_sync(&dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        fs::write_atomic_sync(&dir.join("topic.toml"), &metadata::encode_topic(t))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", dir.display()))?;
        local.insert(t.name.clone(), LocalTopic { id: t.id, created_at: Some(t.created_at) });
    }
    for name in &p.hidden {
        tracing::warn!(topic = %name, "this broker's files hold a newer topic of this name than its metadata shows; hidden until the metadata catches up");
    }
    // Replicas moved away while this broker was down (a reassignment completed): their files go.
    for (name, l) in local.iter() {
        let Some(t) = image.topic(name).filter(|t| t.id == l.id && l.created_at.is_some()) else { continue };
        for (entry, path) in fs::list_dir_sync(&metadata::topic_dir(&config.data_dir, name))? {
            let Ok(p) = entry.parse::<i32>() else { continue };
            if !image.hosts(t, p) {
                tracing::info!(topic = %name, partition = p, "removing a replica this broker no longer holds");
                fs::remove_dir_all_sync(&path)?;
            }
        }
    }
    Ok(without(image, &p.hidden))
}

/// Takes this start's block of producer ids from the metadata log (main thread, before the
/// cores start), so that no two brokers, and no two starts of one, hand out the same id.
pub fn reserve_producer_id_block(handle: &ControllerHandle, node_id: i32) -> anyhow::Result<i64> {
    for _ in 0..PRODUCER_BLOCK_TRIES {
        let block = handle.metadata().1.next_producer_id_block;
        anyhow::ensure!(block < (1 << 31), "producer id blocks exhausted");
        match futures_lite::future::block_on(handle.propose(MetadataRecord::ProducerIdBlock { broker: node_id, block })) {
            Ok(_) => return Ok(block),
            // Another broker took it: this node's applied state shows the next one soon.
            Err(ControllerError::Rejected { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => anyhow::bail!("reserving a block of producer ids: {e}"),
        }
    }
    anyhow::bail!("reserving a block of producer ids: lost the race {PRODUCER_BLOCK_TRIES} times")
}

const PRODUCER_BLOCK_TRIES: usize = 500;

/// A controller's refusal as a Kafka error for the client.
fn refusal(e: ControllerError) -> (ResponseError, String) {
    let code = match &e {
        ControllerError::Timeout { .. } | ControllerError::Unknown(_) => ResponseError::RequestTimedOut,
        ControllerError::Rejected { reason, .. } if reason.contains("already exists") => ResponseError::TopicAlreadyExists,
        ControllerError::Rejected { reason, .. } if reason.contains("does not exist") => ResponseError::UnknownTopicOrPartition,
        ControllerError::Rejected { .. } => ResponseError::InvalidRequest,
        ControllerError::Stopped | ControllerError::Refused(_) | ControllerError::Failed(_) => ResponseError::NotController,
    };
    (code, format!("metadata quorum: {e}"))
}

impl Shard {
    fn link(&self) -> &Arc<ClusterLink> {
        self.cluster.as_ref().expect("only a broker in a cluster proposes")
    }

    /// Core 0: installs the image of every state the controller applies, until shutdown.
    pub async fn follow_cluster(&self) {
        assert_eq!(self.core, 0, "core 0 follows the metadata log");
        let link = self.link().clone();
        let mut local = link.startup_local.lock().expect("never poisoned").take().unwrap_or_default();
        // States older than the start's image may still be queued: never installed.
        self.installed.set(link.startup_index);
        let states = link.handle.applied();
        // A state whose install failed (a disk error creating a topic's directory, say) is
        // tried again, or the newer one that arrived meanwhile: `installed` never moves past an
        // image the cores do not serve, so a change waiting on it is not answered as done.
        let mut failed: Option<(u64, Arc<ClusterMetadata>)> = None;
        loop {
            let mut next = match failed.take() {
                Some(f) => {
                    rt::sleep(INSTALL_RETRY).await;
                    f
                }
                None => match states.recv_async().await {
                    Ok(n) => n,
                    Err(_) => return,
                },
            };
            while let Ok(newer) = states.try_recv() {
                next = newer;
            }
            let (index, meta) = next;
            if index <= self.installed.get() {
                continue;
            }
            self.lock_metadata().await;
            let result = self.install_cluster_image(&mut local, image_of(&self.config, &meta)).await;
            self.unlock_metadata();
            match result {
                Ok(()) => {
                    self.installed.set(index);
                    self.installed_changed.notify_all();
                }
                Err(_) if self.lifecycle.is_closed() => return,
                Err(e) => {
                    tracing::error!(index, error = %e, "installing the cluster's metadata failed; trying again");
                    failed = Some((index, meta));
                }
            }
        }
    }

    async fn install_cluster_image(&self, local: &mut LocalTopics, image: MetadataImage) -> Result<(), String> {
        let p = plan(local, &image);
        if !p.remove.is_empty() {
            // Every core closes the logs first, then the files go.
            let names: Vec<String> = p.remove.iter().map(|(n, _)| n.clone()).collect();
            self.broadcast(Arc::new(without((*self.image()).clone(), &names))).await?;
            for (name, id) in &p.remove {
                let dir = metadata::topic_dir(&self.config.data_dir, name);
                let grave = metadata::topics_dir(&self.config.data_dir).join(format!(".deleted-{name}-{id}"));
                let r = async {
                    fs::rename(dir, grave.clone()).await?;
                    fs::remove_dir_all(grave).await
                };
                match r.await {
                    Ok(()) => tracing::info!(topic = %name, %id, "deleted topic's files"),
                    Err(e) => {
                        tracing::error!(topic = %name, error = %e, "removing deleted topic's files failed")
                    }
                }
                local.remove(name);
            }
        }
        for t in &p.write {
            let dir = metadata::topic_dir(&self.config.data_dir, &t.name);
            fs::create_dir_all(dir.clone()).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
            fs::write_atomic(dir.join("topic.toml"), metadata::encode_topic(t))
                .await
                .map_err(|e| format!("writing {}: {e}", dir.display()))?;
            local.insert(t.name.clone(), LocalTopic { id: t.id, created_at: Some(t.created_at) });
        }
        if self.image().broker != image.broker {
            crate::metrics::set_config(self.config.effective_broker_entries(&image.broker));
        }
        let image = without(image, &p.hidden);
        // Replicas this broker held and no longer does (a reassignment moved them): their
        // files go once every core has dropped the log.
        let old = self.image();
        let dropped: Vec<(String, i32)> = image
            .topics
            .values()
            .filter_map(|t| old.topic(&t.name).filter(|o| o.id == t.id).map(|o| (t, o)))
            .flat_map(|(t, o)| (0..t.partitions).filter(|p| old.hosts(o, *p) && !image.hosts(t, *p)).map(|p| (t.name.clone(), p)))
            .collect();
        let digest = image_digest(&image);
        self.broadcast(Arc::new(image)).await?;
        crate::metrics::set_installed_metadata(digest);
        for (name, p) in dropped {
            let dir = metadata::partition_dir(&self.config.data_dir, &name, p);
            match fs::remove_dir_all(dir.clone()).await {
                Ok(()) => tracing::info!(topic = %name, partition = p, "removed a replica this broker no longer holds"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(dir = %dir.display(), error = %e, "removing a replica's files failed"),
            }
        }
        Ok(())
    }

    /// Core 0: proposes `record`, then waits until this broker has installed the image that
    /// holds it. Returns the record's log index.
    /// Proposes a record to the quorum and waits until this broker serves it.
    pub(super) async fn propose_metadata(&self, record: MetadataRecord) -> Result<u64, (ResponseError, String)> {
        self.propose_and_install(record).await
    }

    async fn propose_and_install(&self, record: MetadataRecord) -> Result<u64, (ResponseError, String)> {
        match self.link().handle.propose(record).await {
            Ok(index) => self.installed_at(index).await.map(|()| index),
            // Refused, but committed: what refused it (a topic another broker created first,
            // say) is served here too before the client hears, so its next request finds it.
            Err(e @ ControllerError::Rejected { index, .. }) => {
                self.installed_at(index).await?;
                Err(refusal(e))
            }
            Err(e) => Err(refusal(e)),
        }
    }

    /// Waits until this broker serves an image at least as new as metadata-log entry `index`.
    async fn installed_at(&self, index: u64) -> Result<(), (ResponseError, String)> {
        let installed = rt::timeout(INSTALL_WAIT, async {
            while self.installed.get() < index {
                self.installed_changed.wait().await;
            }
        });
        installed.await.ok_or_else(|| {
            (
                ResponseError::RequestTimedOut,
                format!("committed at metadata index {index}, but this broker has not installed it within {INSTALL_WAIT:?}"),
            )
        })
    }

    pub(super) async fn cluster_create_topics(&self, topics: Vec<NewTopic>) -> Vec<Result<Arc<TopicMeta>, (ResponseError, String)>> {
        let mut results = Vec::new();
        for t in topics {
            results.push(self.cluster_create_topic(t).await);
        }
        results
    }

    async fn cluster_create_topic(&self, t: NewTopic) -> Result<Arc<TopicMeta>, (ResponseError, String)> {
        if self.image().topic(&t.name).is_some() {
            return Err((ResponseError::TopicAlreadyExists, format!("topic {:?} already exists", t.name)));
        }
        TopicConfig::resolve(&self.topic_defaults(), &t.overrides).map_err(|m| (ResponseError::InvalidConfig, m))?;
        let partitions = match t.placement {
            Some(p) => p,
            None => {
                let (_, meta) = self.link().handle.metadata();
                let rf = if t.replication_factor < 1 { self.config.default_replication_factor } else { t.replication_factor as usize };
                placement::place(&meta, t.partitions as usize, rf).map_err(|m| (ResponseError::InvalidReplicationFactor, m))?
            }
        };
        let id = Uuid::new_v4();
        let record = MetadataRecord::CreateTopic { name: t.name.clone(), id, partitions, configs: t.overrides };
        self.propose_and_install(record).await?;
        match self.image().topic(&t.name) {
            Some(meta) if meta.id == id => {
                tracing::info!(topic = %t.name, partitions = meta.partitions, %id, "created topic in the cluster");
                Ok(meta.clone())
            }
            _ => Err((ResponseError::TopicAlreadyExists, format!("topic {:?} already exists", t.name))),
        }
    }

    pub(super) async fn cluster_delete_topics(&self, names: Vec<String>) -> Vec<Result<Uuid, (ResponseError, String)>> {
        let mut results = Vec::new();
        for name in names {
            let Some(id) = self.image().topic(&name).map(|t| t.id) else {
                results.push(Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))));
                continue;
            };
            let r = self.propose_and_install(MetadataRecord::DeleteTopic { name: name.clone() }).await;
            if r.is_ok() {
                tracing::info!(topic = %name, %id, "deleted topic in the cluster");
            }
            results.push(r.map(|_| id));
        }
        results
    }

    pub(super) async fn cluster_create_partitions(&self, growths: Vec<(String, i32)>) -> Vec<Result<(), (ResponseError, String)>> {
        let mut results = Vec::new();
        for (name, count) in growths {
            let r = async {
                let old = self
                    .image()
                    .topic(&name)
                    .cloned()
                    .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist")))?;
                if count <= old.partitions {
                    return Err((
                        ResponseError::InvalidPartitions,
                        format!("topic {name:?} has {} partitions; the new count must be larger", old.partitions),
                    ));
                }
                let (_, meta) = self.link().handle.metadata();
                let rf = old.placement.first().map_or(1, |p| p.replicas.len());
                let partitions = placement::place(&meta, (count - old.partitions) as usize, rf)
                    .map_err(|m| (ResponseError::InvalidReplicationFactor, m))?;
                let record = MetadataRecord::CreatePartitions { name: name.clone(), id: old.id, first: old.partitions as u32, partitions };
                self.propose_and_install(record).await.map(|_| ())
            };
            results.push(r.await);
        }
        results
    }

    pub(super) async fn cluster_alter_topic_configs(
        &self,
        changes: Vec<(String, BTreeMap<String, String>)>,
    ) -> Vec<Result<(), (ResponseError, String)>> {
        let mut results = Vec::new();
        for (name, configs) in changes {
            let r = async {
                let id = self
                    .image()
                    .topic(&name)
                    .map(|t| t.id)
                    .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist")))?;
                TopicConfig::resolve(&self.topic_defaults(), &configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
                self.propose_and_install(MetadataRecord::TopicConfigs { name: name.clone(), id, configs }).await.map(|_| ())
            };
            results.push(r.await);
        }
        results
    }

    /// Core 0, in a cluster, with `auto_leader_rebalance_enable`: every
    /// `leader_imbalance_check_interval_seconds`, if this node is the quorum's leader, elects
    /// the preferred replicas of the brokers whose leader imbalance is above 10% (Kafka's rule:
    /// of the partitions whose first replica is that broker, the share it does not lead), where
    /// that replica is live and in the ISR. Until shutdown.
    pub async fn rebalance_leaders(&self) {
        let interval = Duration::from_millis(self.config.leader_imbalance_check_interval_ms as u64);
        while !self.lifecycle.is_stopping() {
            rt::sleep(interval).await;
            if self.link().handle.status().leader != Some(self.config.node_id) {
                continue;
            }
            let parts = imbalanced(&self.image());
            if parts.is_empty() {
                continue;
            }
            tracing::info!(partitions = parts.len(), "leaders are off their preferred replicas; electing them back");
            for (r, (t, p)) in self.cluster_elect_leaders(parts.clone(), false).await.into_iter().zip(parts) {
                if let Err((_, m)) = r {
                    tracing::debug!(topic = %t, partition = p, "preferred election not made: {m}");
                }
            }
        }
    }

    /// Partition reassignments (AlterPartitionReassignments): one `ReassignPartition` record
    /// per partition (`None`: cancel).
    pub async fn cluster_reassign(&self, moves: Vec<(String, i32, Option<Vec<i32>>)>) -> Vec<Result<(), (ResponseError, String)>> {
        let mut results = Vec::new();
        for (topic, partition, target) in moves {
            let Some(id) = self.image().topic(&topic).filter(|t| (0..t.partitions).contains(&partition)).map(|t| t.id) else {
                results.push(Err((ResponseError::UnknownTopicOrPartition, format!("no partition {topic}-{partition}"))));
                continue;
            };
            let r = self.propose_and_install(MetadataRecord::ReassignPartition { topic: topic.clone(), id, partition, target }).await;
            if r.is_ok() {
                tracing::info!(topic = %topic, partition, "reassignment proposed");
            }
            results.push(r.map(|_| ()).map_err(|(code, msg)| {
                let code = if msg.contains("invalid replica assignment") {
                    ResponseError::InvalidReplicaAssignment
                } else if msg.contains("no reassignment") || msg.contains("cannot cancel") {
                    ResponseError::NoReassignmentInProgress
                } else {
                    code
                };
                (code, msg)
            }));
        }
        results
    }

    /// Leader elections (ElectLeaders, and the automatic rebalance): one `ElectLeader` record
    /// per partition; the quorum's refusal says why an election was not made.
    pub async fn cluster_elect_leaders(&self, parts: Vec<(String, i32)>, unclean: bool) -> Vec<Result<(), (ResponseError, String)>> {
        let mut results = Vec::new();
        for (topic, partition) in parts {
            let Some(id) = self.image().topic(&topic).map(|t| t.id) else {
                results.push(Err((ResponseError::UnknownTopicOrPartition, format!("topic {topic:?} does not exist"))));
                continue;
            };
            let r = self.propose_and_install(MetadataRecord::ElectLeader { topic: topic.clone(), id, partition, unclean }).await;
            results.push(r.map(|_| ()).map_err(|(code, msg)| {
                let code = if msg.contains("election not needed") {
                    ResponseError::ElectionNotNeeded
                } else if msg.contains("preferred leader not available") {
                    ResponseError::PreferredLeaderNotAvailable
                } else if msg.contains("eligible leaders not available") {
                    ResponseError::EligibleLeadersNotAvailable
                } else {
                    code
                };
                (code, msg)
            }));
        }
        results
    }

    /// Broker configs: the cluster-wide layer is resource "" in the metadata log, this node's
    /// layer its id; one record per key changed.
    pub(super) async fn cluster_alter_credentials(&self, changes: Vec<CredentialChange>) -> Result<(), (ResponseError, String)> {
        for c in changes {
            let record = MetadataRecord::ScramCredential {
                user: c.user.clone(),
                mechanism: c.mechanism.name().to_string(),
                credential: c.credential.as_ref().map(credentials::stored),
            };
            self.propose_and_install(record).await?;
            tracing::info!(user = c.user, mechanism = c.mechanism.name(), removed = c.credential.is_none(), "SCRAM credential changed in the cluster");
        }
        Ok(())
    }

    pub(super) async fn cluster_alter_broker_configs(
        &self,
        change: impl FnOnce(&mut DynamicBrokerConfig),
    ) -> Result<(), (ResponseError, String)> {
        let image = self.image();
        let mut next = image.broker.clone();
        change(&mut next);
        let defaults = self.config.topic_defaults_with(&next).map_err(|m| (ResponseError::InvalidConfig, m))?;
        for t in image.topics.values() {
            TopicConfig::resolve(&defaults, &t.overrides)
                .map_err(|m| (ResponseError::InvalidConfig, format!("topic {:?} would be invalid: {m}", t.name)))?;
        }
        let node = self.config.node_id.to_string();
        let mut records = Vec::new();
        for (resource, old, new) in [("", &image.broker.cluster, &next.cluster), (node.as_str(), &image.broker.node, &next.node)] {
            for (k, v) in new {
                if old.get(k) != Some(v) {
                    records.push(MetadataRecord::BrokerConfig { resource: resource.to_string(), key: k.clone(), value: Some(v.clone()) });
                }
            }
            for k in old.keys().filter(|k| !new.contains_key(*k)) {
                records.push(MetadataRecord::BrokerConfig { resource: resource.to_string(), key: k.clone(), value: None });
            }
        }
        for r in records {
            self.propose_and_install(r).await?;
        }
        tracing::info!(configs = ?next, "altered broker configs in the cluster");
        Ok(())
    }
}

/// The partitions the automatic leader rebalance elects: per preferred (first) replica, the
/// partitions it should lead but does not, when they are more than 10% of those it should
/// lead (Kafka's `leader.imbalance.per.broker.percentage`) and it is live and in their ISR.
pub fn imbalanced(image: &MetadataImage) -> Vec<(String, i32)> {
    let mut by_broker: BTreeMap<i32, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for t in image.topics.values() {
        for (i, p) in t.placement.iter().enumerate() {
            let Some(&preferred) = p.replicas.first() else { continue };
            let e = by_broker.entry(preferred).or_default();
            e.0 += 1;
            if p.leader != preferred && p.isr.contains(&preferred) && image.broker(preferred).is_some() {
                e.1.push((t.name.clone(), i as i32));
            }
        }
    }
    by_broker.into_values().filter(|(total, off)| off.len() * 10 > *total).flat_map(|(_, off)| off).collect()
}

/// The placement of explicit assignments (CreateTopics' `assignments`): the replicas given,
/// distinct registered brokers, the same number for every partition, led by the first.
pub fn assigned(image: &MetadataImage, assignments: &[Vec<i32>]) -> Result<Vec<PartitionRecord>, String> {
    let cluster = image.cluster.as_ref().ok_or("not in a cluster")?;
    let rf = assignments.first().map_or(0, Vec::len);
    assignments
        .iter()
        .enumerate()
        .map(|(i, replicas)| {
            if replicas.is_empty() || replicas.len() != rf {
                return Err(format!("partition {i}: every partition needs the same number of replicas, at least one"));
            }
            if let Some(b) = replicas.iter().find(|b| !cluster.brokers.iter().any(|n| n.id == **b)) {
                return Err(format!("partition {i}: broker {b} is not registered"));
            }
            if (1..replicas.len()).any(|j| replicas[..j].contains(&replicas[j])) {
                return Err(format!("partition {i}: a broker appears twice in {replicas:?}"));
            }
            Ok(PartitionRecord { replicas: replicas.clone(), leader: replicas[0], leader_epoch: 0, isr: replicas.clone(), partition_epoch: 0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::MetadataRecord as R;

    fn config(node_id: i32) -> Config {
        let args = crate::config::ServeArgs { cores: Some(1), ..Default::default() };
        let mut c = Config::from_args(&args).unwrap();
        c.node_id = node_id;
        c
    }

    fn cluster() -> ClusterMetadata {
        let mut m = ClusterMetadata::new();
        for id in [1, 2] {
            let r = R::RegisterBroker {
                id,
                listeners: vec![format!("127.0.0.1:{}", 9090 + id)],
                rack: None,
                incarnation: Uuid::new_v4(),
                fenced: false,
            };
            m.apply(id as u64, &r).unwrap();
        }
        m
    }

    fn create(m: &mut ClusterMetadata, name: &str, id: Uuid, leaders: &[i32]) {
        let parts = leaders
            .iter()
            .map(|l| PartitionRecord { replicas: vec![*l], leader: *l, leader_epoch: 0, isr: vec![*l], partition_epoch: 0 })
            .collect();
        let index = m.applied_index + 1;
        m.apply(index, &R::CreateTopic { name: name.into(), id, partitions: parts, configs: BTreeMap::new() }).unwrap();
    }

    #[test]
    fn the_image_shows_placement_brokers_and_leadership() {
        let mut m = cluster();
        create(&mut m, "t", Uuid::new_v4(), &[1, 2, 1]);
        m.apply(4, &R::BrokerConfig { resource: "2".into(), key: "log.retention.ms".into(), value: Some("1000".into()) }).unwrap();
        let img = image_of(&config(2), &m);
        let t = img.topic("t").unwrap().clone();
        assert_eq!(t.partitions, 3);
        assert_eq!((0..3).map(|p| img.leads(&t, p)).collect::<Vec<_>>(), vec![false, true, false]);
        assert_eq!((0..3).map(|p| img.hosts(&t, p)).collect::<Vec<_>>(), vec![false, true, false]);
        assert_eq!(img.leader(&t, 7), -1, "no such partition");
        assert_eq!(img.broker(1).map(|b| (b.host.as_str(), b.port)), Some(("127.0.0.1", 9091)));
        assert_eq!(img.broker.node.get("log.retention.ms").map(String::as_str), Some("1000"), "this node's layer");
        assert_eq!(t.config.retention_ms, 1000);
        assert!(image_of(&config(1), &m).broker.node.is_empty(), "another node's layer is not this one's");
    }

    #[test]
    fn files_go_only_on_an_image_at_least_as_new_as_their_topic() {
        let mut m = cluster();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        create(&mut m, "t", new, &[1]);
        let img = image_of(&config(1), &m);
        let here = |id, at| LocalTopics::from([("t".to_string(), LocalTopic { id, created_at: Some(at) })]);
        // The directory holds an older topic "t" (created at 2, the image is at 3): it was deleted.
        let p = plan(&here(old, 2), &img);
        assert_eq!(p.remove, vec![("t".to_string(), old)]);
        assert_eq!(p.write.iter().map(|t| t.id).collect::<Vec<_>>(), vec![new], "then the new one is written");
        // The directory holds a newer "t" than the image knows (created at 9): kept, and hidden.
        let p = plan(&here(old, 9), &img);
        assert!(p.remove.is_empty() && p.write.is_empty());
        assert_eq!(p.hidden, vec!["t".to_string()]);
        // Up to date: nothing to do. A single node's directory (no index) is never removed.
        let p = plan(&here(new, 3), &img);
        assert!(p.remove.is_empty() && p.write.is_empty() && p.hidden.is_empty());
        let single = LocalTopics::from([("u".to_string(), LocalTopic { id: old, created_at: None })]);
        assert!(plan(&single, &img).remove.is_empty());
        // Broker 2 hosts nothing of "t": no directory for it.
        assert!(plan(&LocalTopics::new(), &image_of(&config(2), &m)).write.is_empty());
    }
}
