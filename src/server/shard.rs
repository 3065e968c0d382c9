//! A shard: everything one core owns. Its partition logs, its copy of the metadata image, and the
//! cross-core plumbing to reach the others.
//!
//! Ownership: a `Shard` is created on its core and never leaves it (`Rc`, not `Arc`). Code running
//! on a core reaches its shard with [`current`]; code that needs another core's partition sends a
//! closure there with [`Shard::invoke_on`], which calls `current()` on arrival.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use uuid::Uuid;

use super::credentials::{self, CredentialChange};
use super::cluster::ClusterLink;
use super::fetch_sessions::FetchSessionCache;
use super::groups::Groups;
use super::memory::CoreMemory;
use super::shutdown::Lifecycle;
use super::metadata::{self, MetadataImage, TopicMeta};
use crate::config::{Config, DynamicBrokerConfig, TopicConfig, TopicDefaults};
use crate::io::mesh::Mesh;
use crate::io::{fs, rt};
use crate::protocol::ResponseError;
use crate::storage::log::PartitionLog;
use crate::sync::Notify;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Shard>>> = const { RefCell::new(None) };
}

/// Takes this core's shard out of the thread-local, once the core has stopped, so that what it
/// owns (partitions and their files, the mesh) is dropped while the core's thread still runs.
/// Left in the thread-local it would be dropped while the thread is torn down, where a drop that
/// logs (glommio logs each file dropped open, at debug) finds the log's own thread-locals gone
/// and aborts the process.
pub fn uninstall() {
    let shard = CURRENT.with(|c| c.borrow_mut().take());
    drop(shard);
}

/// This core's shard. Panics if called off a broker core (an internal invariant).
pub fn current() -> Rc<Shard> {
    CURRENT.with(|c| c.borrow().clone().expect("shard::current() called off a broker core"))
}

pub struct Shard {
    pub core: usize,
    pub cores: usize,
    pub config: Arc<Config>,
    pub cluster_id: Arc<str>,
    /// In a cluster: the way into the metadata quorum (see `server::cluster`).
    pub cluster: Option<Arc<ClusterLink>>,
    /// Core 0, in a cluster: the metadata-log index of the image installed last, and its change.
    pub(super) installed: Cell<u64>,
    pub(super) installed_changed: Notify,
    pub mesh: Rc<Mesh>,
    image: RefCell<Arc<MetadataImage>>,
    partitions: RefCell<HashMap<(String, i32), (Uuid, Rc<PartitionLog>)>>,
    /// Woken when any partition on this core gets new readable data.
    pub data_arrived: Rc<Notify>,
    /// The consumer groups this core coordinates.
    pub groups: Groups,
    /// The transactional ids this core coordinates.
    pub transactions: super::transactions::Transactions,
    /// Serving, shutting down or closed (see `server::shutdown`).
    pub lifecycle: Lifecycle,
    /// Bytes this core's connections hold in requests and responses (see `server::memory`).
    pub memory: CoreMemory,
    /// The incremental fetch sessions of this core's clients (see `server::fetch_sessions`).
    pub fetch_sessions: RefCell<FetchSessionCache>,
    /// This core's replicated partitions: leaders' follower progress, followers' fetchers
    /// (see `server::replication`).
    pub replication: super::replication::Replication,
    /// Core 0 only: set while a metadata change is being made, so changes apply one at a time.
    meta_busy: Cell<bool>,
    meta_done: Notify,
}

/// One partition's share of the core's batch-cache budget, among `partitions`.
fn log_cache_share(shard: &Shard, image: &MetadataImage, partitions: usize) -> usize {
    shard.config.batch_cache_max_bytes_with(&image.broker) / shard.cores.max(1) / partitions.max(1)
}

/// The two steps of a metadata change on every core (see [`Shard::broadcast`]).
#[derive(Debug, Clone, Copy)]
enum Step {
    Open,
    Install,
}

/// A topic to create, already validated by the CreateTopics or Metadata handler.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub overrides: std::collections::BTreeMap<String, String>,
    /// In a cluster, replicas given by the client (CreateTopics' assignments); else placed by
    /// `controller::placement`.
    pub placement: Option<Vec<metadata::PartitionRecord>>,
    /// Replicas per partition when placed (-1: `default_replication_factor`); a single node
    /// has only 1.
    pub replication_factor: i32,
}

impl Shard {
    pub fn install(core: usize, config: Arc<Config>, cluster_id: Arc<str>, cluster: Option<Arc<ClusterLink>>, mesh: Rc<Mesh>) -> Rc<Shard> {
        let groups = config.groups;
        let memory = CoreMemory::new(config.queued_max_request_bytes / mesh.cores().max(1));
        let fetch_sessions = FetchSessionCache::new(
            core,
            mesh.cores(),
            config.fetch_session_slots,
            config.fetch_session_eviction_ms,
            Uuid::new_v4().as_u64_pair().0,
        );
        let shard = Rc::new(Shard {
            core,
            cores: mesh.cores(),
            config,
            cluster_id,
            cluster,
            installed: Cell::new(0),
            installed_changed: Notify::default(),
            mesh,
            image: RefCell::new(Arc::new(MetadataImage::default())),
            partitions: RefCell::new(HashMap::new()),
            data_arrived: Rc::new(Notify::default()),
            groups: Groups::new(groups),
            transactions: Default::default(),
            lifecycle: Lifecycle::default(),
            memory,
            fetch_sessions: RefCell::new(fetch_sessions),
            replication: Default::default(),
            meta_busy: Cell::new(false),
            meta_done: Notify::default(),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(shard.clone()));
        shard
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The broker-wide topic defaults as they apply now: the settings with the broker configs
    /// changed at run time on top (the base of every topic's config).
    pub fn topic_defaults(&self) -> TopicDefaults {
        self.config.topic_defaults_with(&self.image().broker).expect("dynamic broker configs are checked before they are installed")
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        metadata::owner_core(topic, partition, self.cores)
    }

    /// The log of a partition this core owns, if it exists here.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<PartitionLog>> {
        self.partitions.borrow().get(&(topic.to_string(), partition)).map(|(_, l)| l.clone())
    }

    pub fn partitions(&self) -> Vec<Rc<PartitionLog>> {
        self.partitions.borrow().values().map(|(_, l)| l.clone()).collect()
    }

    /// This core's partitions with their names.
    pub fn partitions_named(&self) -> Vec<((String, i32), Rc<PartitionLog>)> {
        self.partitions.borrow().iter().map(|(k, (_, l))| (k.clone(), l.clone())).collect()
    }

    /// Runs `f` on `core` (inline when it is this core) and returns its result.
    /// Jobs to one core start there in the order of these calls (see `Mesh::invoke_on`).
    pub fn invoke_on<R, F, Fut>(&self, core: usize, f: F) -> impl Future<Output = R> + '_
    where
        R: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if core != self.core {
            crate::metrics::cross_core();
        }
        self.mesh.invoke_on(core, f)
    }

    /// Installs a new metadata image: drops partitions of topics that are gone, opens (and so
    /// recovers or creates) the partitions this core owns that are new. Refused once shutdown
    /// closed the partitions (a straggling metadata change must not open new ones).
    pub async fn install_image(&self, image: Arc<MetadataImage>) -> Result<(), String> {
        if self.lifecycle.is_closed() {
            return Err(format!("core {} is shutting down", self.core));
        }
        self.take_leader_epochs(&image).await?;
        self.take_group_leadership(&image).await?;
        // Leaders' and followers' roles before any request sees the image (an acks=all
        // produce must find the partition's followers to wait for).
        self.replication.install(self, &image);
        *self.image.borrow_mut() = image.clone();
        self.partitions.borrow_mut().retain(|(name, p), (id, _)| image.topic(name).is_some_and(|t| t.id == *id && image.hosts(t, *p)));
        // Settings altered at run time reach the partitions already open.
        for ((name, _), (_, log)) in self.partitions.borrow().iter() {
            if let Some(t) = image.topic(name) {
                if log.config() != t.config {
                    log.set_config(t.config.clone());
                }
            }
        }
        self.open_new_partitions(&image).await?;
        // Partitions opened just now (at start) take their roles too.
        self.replication.install(self, &image);
        // The core's batch-cache budget, shared evenly among the partitions it now owns.
        let logs = self.partitions();
        let share = log_cache_share(self, &image, logs.len());
        for log in logs {
            log.set_cache_cap(share);
            log.set_preallocate_step(self.config.segment_preallocate_bytes);
        }
        Ok(())
    }

    /// Hands each partition this core leads its leader epoch from `image` (a cluster's; a single
    /// node's stay 0), before the image is installed: no request sees the leadership before the
    /// partition stamps its batches with it.
    async fn take_leader_epochs(&self, image: &MetadataImage) -> Result<(), String> {
        let logs: Vec<((String, i32), Rc<PartitionLog>)> = self.partitions_named();
        for ((name, p), log) in logs {
            let Some(t) = image.topic(&name) else { continue };
            let epoch = image.leader_epoch(t, p);
            if image.leads(t, p) && epoch > log.leader_epoch() {
                log.set_leader_epoch(epoch).await.map_err(|e| format!("partition {name}-{p}: {e:?}"))?;
            }
        }
        Ok(())
    }

    /// In a cluster, the `__consumer_offsets` partitions this core owns whose leadership comes
    /// to this broker with `image`: their groups are loaded afresh from the log (a follower's
    /// copy was not applied as it arrived) before the image that makes this broker their
    /// coordinator is installed; those whose leadership leaves forget their groups.
    async fn take_group_leadership(&self, image: &MetadataImage) -> Result<(), String> {
        let old = self.image();
        if image.cluster.is_none() {
            return Ok(());
        }
        for topic in [super::groups::OFFSETS_TOPIC, super::transactions::TXN_TOPIC] {
            let Some(t) = image.topic(topic) else { continue };
            let before = old.topic(topic).filter(|o| o.id == t.id);
            for p in 0..t.partitions {
                if self.owner(&t.name, p) != self.core || self.partition(&t.name, p).is_none() {
                    continue;
                }
                let led = before.is_some_and(|o| old.leads(o, p));
                let leads = image.leads(t, p);
                if leads && !led {
                    self.forget_coordinated(topic, p);
                    let n = self.load_coordinated(topic, p).await?;
                    tracing::info!(core = self.core, partition = p, records = n, "coordinating the groups or transactions of a {} partition", t.name);
                } else if led && !leads {
                    let n = self.forget_coordinated(topic, p);
                    tracing::info!(core = self.core, partition = p, forgotten = n, "no longer coordinating the groups or transactions of a {} partition", t.name);
                }
            }
        }
        Ok(())
    }

    /// Loads the groups or transactional ids of a partition of `__consumer_offsets` or
    /// `__transaction_state` this core owns; how many records were read.
    async fn load_coordinated(&self, topic: &str, p: i32) -> Result<usize, String> {
        if topic == super::groups::OFFSETS_TOPIC {
            self.groups.load(self, p).await
        } else {
            self.transactions.load(self, p).await
        }
    }

    fn forget_coordinated(&self, topic: &str, p: i32) -> usize {
        if topic == super::groups::OFFSETS_TOPIC {
            self.groups.forget_partition(p)
        } else {
            self.transactions.forget_partition(p)
        }
    }

    /// Opens `log`'s partition again in its place (after `PartitionLog::cut_for_reopen`), if
    /// the map still holds that log.
    pub async fn reopen_partition(&self, topic: &str, p: i32, log: &Rc<PartitionLog>) -> Result<(), String> {
        let image = self.image();
        let t = image.topic(topic).ok_or_else(|| format!("topic {topic} is gone"))?;
        let dir = log.dir().to_path_buf();
        let fresh = PartitionLog::open(dir.clone(), t.config.clone(), self.data_arrived.clone())
            .await
            .map_err(|e| format!("opening partition {topic}-{p} in {}: {e}", dir.display()))?;
        // Leadership may have come here while the log was cut back: the reopened log stamps
        // with the epoch the image gives, as the one it replaces would have.
        let image = self.image();
        if let Some(t) = image.topic(topic).filter(|t| image.leads(t, p)) {
            fresh.set_leader_epoch(image.leader_epoch(t, p)).await.map_err(|e| format!("partition {topic}-{p}: {e}"))?;
        }
        let mut parts = self.partitions.borrow_mut();
        let count = parts.len();
        match parts.get_mut(&(topic.to_string(), p)) {
            Some((id, held)) if Rc::ptr_eq(held, log) && *id == t.id => {
                let share = log_cache_share(self, &image, count);
                fresh.set_cache_cap(share);
                fresh.set_preallocate_step(self.config.segment_preallocate_bytes);
                *held = fresh;
                Ok(())
            }
            _ => Err(format!("partition {topic}-{p} changed while it was cut back")),
        }
    }

    /// Opens (and so recovers or creates) the partitions of `image` this core owns and has no
    /// log for. Not yet visible to requests, which look topics up in the installed image.
    async fn open_new_partitions(&self, image: &MetadataImage) -> Result<(), String> {
        if self.lifecycle.is_closed() {
            return Err(format!("core {} is shutting down", self.core));
        }
        for t in image.topics.values() {
            for p in 0..t.partitions {
                if self.owner(&t.name, p) != self.core || !image.hosts(t, p) || self.partition(&t.name, p).is_some() {
                    continue;
                }
                let dir = metadata::partition_dir(&self.config.data_dir, &t.name, p);
                let log = PartitionLog::open(dir.clone(), t.config.clone(), self.data_arrived.clone())
                    .await
                    .map_err(|e| format!("opening partition {}-{p} in {}: {e}", t.name, dir.display()))?;
                self.partitions.borrow_mut().insert((t.name.clone(), p), (t.id, log));
                // A follower's copy is not applied as it arrives: its groups are loaded when
                // this broker comes to lead it (`take_group_leadership`).
                let coordinated = t.name == super::groups::OFFSETS_TOPIC || t.name == super::transactions::TXN_TOPIC;
                if coordinated && image.leads(t, p) {
                    let n = self.load_coordinated(&t.name, p).await?;
                    if n > 0 {
                        tracing::info!(core = self.core, topic = %t.name, partition = p, records = n, "reloaded coordinator state");
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `image` to every core and waits until all have installed it. In two steps: every
    /// core first opens the partitions it newly owns, and only then does any core install the
    /// image, so that no request anywhere finds a new topic whose partition is not open yet on
    /// its owning core (a commit racing the creation of `__consumer_offsets` was answered
    /// COORDINATOR_NOT_AVAILABLE).
    pub(super) async fn broadcast(&self, image: Arc<MetadataImage>) -> Result<(), String> {
        self.on_every_core(&image, Step::Open).await?;
        self.on_every_core(&image, Step::Install).await
    }

    /// Runs one step of [`Self::broadcast`] on every core at once; the first error, once all
    /// have finished.
    async fn on_every_core(&self, image: &Arc<MetadataImage>, step: Step) -> Result<(), String> {
        let tasks: Vec<_> = (0..self.cores)
            .map(|c| {
                let img = image.clone();
                let me = current();
                rt::spawn(async move {
                    me.invoke_on(c, move || async move {
                        match step {
                            Step::Open => current().open_new_partitions(&img).await,
                            Step::Install => current().install_image(img).await,
                        }
                    })
                    .await
                })
            })
            .collect();
        let mut first_err = Ok(());
        for t in tasks {
            if let Err(e) = t.await {
                first_err = first_err.and(Err(e));
            }
        }
        first_err
    }

    pub(super) async fn lock_metadata(&self) {
        assert_eq!(self.core, 0, "metadata changes run on core 0");
        while self.meta_busy.get() {
            self.meta_done.wait().await;
        }
        self.meta_busy.set(true);
    }

    pub(super) fn unlock_metadata(&self) {
        self.meta_busy.set(false);
        self.meta_done.notify_all();
    }

    /// Core 0: creates topics one at a time, durably, then publishes them to every core.
    /// Each result is the created topic, or the Kafka error and message for that topic.
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Vec<Result<Arc<TopicMeta>, (ResponseError, String)>> {
        if self.cluster.is_some() {
            return self.cluster_create_topics(topics).await;
        }
        self.lock_metadata().await;
        let mut results = Vec::new();
        let mut image = (*self.image()).clone();
        let defaults = self.topic_defaults();
        for t in topics {
            if let Some(existing) = image.topic(&t.name) {
                results.push(Err((ResponseError::TopicAlreadyExists, format!("topic {:?} already exists", existing.name))));
                continue;
            }
            // Resolved here, against the broker configs that apply now (the caller checked the
            // overrides, but a broker config may have changed since).
            let config = match TopicConfig::resolve(&defaults, &t.overrides) {
                Ok(c) => c,
                Err(m) => {
                    results.push(Err((ResponseError::InvalidConfig, m)));
                    continue;
                }
            };
            let meta = TopicMeta::local(t.name.clone(), Uuid::new_v4(), t.partitions, t.overrides, config);
            if let Err(e) = self.store_topic(&meta).await {
                results.push(Err(e));
                continue;
            }
            tracing::info!(topic = %meta.name, partitions = meta.partitions, id = %meta.id, "created topic");
            image = image.with_topic(meta.clone());
            results.push(Ok(Arc::new(meta)));
        }
        self.publish(image, &mut results).await;
        self.unlock_metadata();
        results
    }

    /// Core 0: replaces topics' overrides (topic name -> new overrides, already checked by the
    /// caller; resolved here against the broker configs that apply now); the topic's partitions
    /// take the new settings when the image is installed.
    pub async fn alter_topic_configs(
        &self,
        changes: Vec<(String, std::collections::BTreeMap<String, String>)>,
    ) -> Vec<Result<(), (ResponseError, String)>> {
        if self.cluster.is_some() {
            return self.cluster_alter_topic_configs(changes).await;
        }
        let defaults = self.topic_defaults();
        let updates = changes
            .into_iter()
            .map(|(name, overrides)| {
                let config = TopicConfig::resolve(&defaults, &overrides).map_err(|m| (ResponseError::InvalidConfig, m));
                (name, move |old: &TopicMeta| Ok(TopicMeta { overrides, config: config?, ..old.clone() }))
            })
            .collect();
        self.update_topics("altered topic configs", updates).await
    }

    /// Core 0: grows topics to a new partition count (topic name -> count, already checked
    /// against the image the request saw); each core opens the new partitions it owns when the
    /// image is installed (existing partitions keep their core and their data). A count no
    /// larger than the topic's now is INVALID_PARTITIONS.
    pub async fn create_partitions(&self, growths: Vec<(String, i32)>) -> Vec<Result<(), (ResponseError, String)>> {
        if self.cluster.is_some() {
            return self.cluster_create_partitions(growths).await;
        }
        let updates = growths
            .into_iter()
            .map(|(name, count)| {
                (name, move |old: &TopicMeta| {
                    if count <= old.partitions {
                        return Err((
                            ResponseError::InvalidPartitions,
                            format!("topic {:?} has {} partitions; the new count must be larger", old.name, old.partitions),
                        ));
                    }
                    Ok(TopicMeta { partitions: count, ..old.clone() })
                })
            })
            .collect();
        self.update_topics("added partitions", updates).await
    }

    /// Core 0: changes existing topics one at a time (`change` makes a topic's new metadata
    /// from its current one, or refuses), each written to its `topic.toml` durably, then
    /// publishes the new image to every core. A topic deleted meanwhile is
    /// UNKNOWN_TOPIC_OR_PARTITION.
    async fn update_topics<C>(&self, what: &'static str, changes: Vec<(String, C)>) -> Vec<Result<(), (ResponseError, String)>>
    where
        C: FnOnce(&TopicMeta) -> Result<TopicMeta, (ResponseError, String)>,
    {
        self.lock_metadata().await;
        let mut image = (*self.image()).clone();
        let mut results = Vec::new();
        for (name, change) in changes {
            let meta = match image.topic(&name) {
                Some(old) => change(old),
                None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))),
            };
            let stored = match meta {
                Ok(meta) => self.store_topic(&meta).await.map(|()| meta),
                Err(e) => Err(e),
            };
            match stored {
                Ok(meta) => {
                    tracing::info!(topic = %name, partitions = meta.partitions, configs = ?meta.overrides, "{what}");
                    image = image.with_topic(meta);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        self.publish(image, &mut results).await;
        self.unlock_metadata();
        results
    }

    /// Writes a topic's `topic.toml` (creating its directory) atomically and durably.
    async fn store_topic(&self, meta: &TopicMeta) -> Result<(), (ResponseError, String)> {
        let dir = metadata::topic_dir(&self.config.data_dir, &meta.name);
        let stored = async {
            fs::create_dir_all(dir.clone()).await?;
            fs::write_atomic(dir.join("topic.toml"), metadata::encode_topic(meta)).await
        };
        stored.await.map_err(|e| {
            tracing::error!(topic = %meta.name, error = %e, "could not store topic metadata");
            (ResponseError::KafkaStorageError, format!("storing topic {:?}: {e}", meta.name))
        })
    }

    /// Sends `image` to every core; if that fails, every change that had succeeded is answered
    /// with the failure instead (its `topic.toml` is written, so the next start has it).
    pub(super) async fn publish<T>(&self, image: MetadataImage, results: &mut [Result<T, (ResponseError, String)>]) {
        if let Err(e) = self.broadcast(Arc::new(image)).await {
            tracing::error!(error = %e, "installing the new metadata failed");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err((ResponseError::KafkaStorageError, e.clone()));
            }
        }
    }

    /// Core 0: replaces the broker configs changed at run time (already checked against the
    /// settings by the caller, and checked again here against the image they now apply to):
    /// stores them durably in `broker-configs.toml`, recomputes every topic's effective config
    /// on top of them, and publishes the new image, so every open partition takes them at once.
    pub async fn alter_broker_configs(&self, change: impl FnOnce(&mut DynamicBrokerConfig)) -> Result<(), (ResponseError, String)> {
        if self.cluster.is_some() {
            return self.cluster_alter_broker_configs(change).await;
        }
        self.lock_metadata().await;
        let result = self.replace_broker_configs(change).await;
        self.unlock_metadata();
        result
    }

    async fn replace_broker_configs(&self, change: impl FnOnce(&mut DynamicBrokerConfig)) -> Result<(), (ResponseError, String)> {
        let mut image = (*self.image()).clone();
        let mut broker = image.broker.clone();
        change(&mut broker);
        let defaults = self.config.topic_defaults_with(&broker).map_err(|m| (ResponseError::InvalidConfig, m))?;
        for t in image.topics.values_mut() {
            let config = TopicConfig::resolve(&defaults, &t.overrides)
                .map_err(|m| (ResponseError::InvalidConfig, format!("topic {:?} would be invalid: {m}", t.name)))?;
            *t = Arc::new(TopicMeta { config, ..(**t).clone() });
        }
        let file = metadata::broker_configs_file(&self.config.data_dir);
        fs::write_atomic(file.clone(), metadata::encode_broker_configs(&broker)).await.map_err(|e| {
            tracing::error!(file = %file.display(), error = %e, "could not store broker configs");
            (ResponseError::KafkaStorageError, format!("storing broker configs: {e}"))
        })?;
        tracing::info!(configs = ?broker, "altered broker configs");
        crate::metrics::set_config(self.config.effective_broker_entries(&broker));
        image.broker = broker;
        let mut result = [Ok(())];
        self.publish(image, &mut result).await;
        let [result] = result;
        result
    }

    /// Core 0: sets and removes SCRAM credentials (checked by the caller), durably, then
    /// publishes them to every core.
    pub async fn alter_credentials(&self, changes: Vec<CredentialChange>) -> Result<(), (ResponseError, String)> {
        if self.cluster.is_some() {
            return self.cluster_alter_credentials(changes).await;
        }
        self.lock_metadata().await;
        let mut image = (*self.image()).clone();
        let mut creds = (*image.credentials).clone();
        creds.apply(&changes);
        let file = credentials::file(&self.config.data_dir);
        let stored = fs::write_atomic(file.clone(), credentials::encode(&creds)).await.map_err(|e| {
            tracing::error!(file = %file.display(), error = %e, "could not store SCRAM credentials");
            (ResponseError::KafkaStorageError, format!("storing SCRAM credentials: {e}"))
        });
        let mut result = [stored];
        if result[0].is_ok() {
            for c in &changes {
                tracing::info!(user = c.user, mechanism = c.mechanism.name(), removed = c.credential.is_none(), "SCRAM credential changed");
            }
            image.credentials = Arc::new(creds);
            self.publish(image, &mut result).await;
        }
        self.unlock_metadata();
        let [result] = result;
        result
    }

    /// Core 0: deletes topics by name. Each result is Ok or the Kafka error and message.
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<Result<Uuid, (ResponseError, String)>> {
        if self.cluster.is_some() {
            return self.cluster_delete_topics(names).await;
        }
        self.lock_metadata().await;
        let mut image = (*self.image()).clone();
        let mut results = Vec::new();
        let mut doomed = Vec::new();
        for n in names {
            match image.topic(&n) {
                Some(t) => {
                    results.push(Ok(t.id));
                    doomed.push((n.clone(), t.id));
                    image = image.without_topic(&n);
                }
                None => results.push(Err((ResponseError::UnknownTopicOrPartition, format!("topic {n:?} does not exist")))),
            }
        }
        if !doomed.is_empty() {
            // Every core drops its logs first, then the files go.
            if let Err(e) = self.broadcast(Arc::new(image)).await {
                tracing::error!(error = %e, "installing metadata after deletion failed");
            }
            for (name, id) in doomed {
                let dir = metadata::topic_dir(&self.config.data_dir, &name);
                let grave = metadata::topics_dir(&self.config.data_dir).join(format!(".deleted-{name}-{id}"));
                let r = async {
                    fs::rename(dir, grave.clone()).await?;
                    fs::remove_dir_all(grave).await
                };
                match r.await {
                    Ok(()) => tracing::info!(topic = %name, "deleted topic"),
                    Err(e) => tracing::error!(topic = %name, error = %e, "removing deleted topic's files failed"),
                }
            }
        }
        self.unlock_metadata();
        results
    }
}
