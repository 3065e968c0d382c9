//! The metadata quorum (issue 21): a Raft group on openraft 0.9 that replicates the cluster's
//! metadata log, and the brokers' lifecycle over it, run on a `controller` thread of its own (a
//! tokio current-thread runtime, `io::controller_net::run_thread`), beside the shard cores and
//! never on them.
//!
//! - [`metadata`]: the records and the state they build ([`ClusterMetadata`]), pure.
//! - `log_store`, `state_machine`: openraft's v2 storage traits over `<data_dir>/metadata/`
//!   (`io::metadata_store`), fdatasync'd before openraft is told anything is durable.
//! - `network`: the RPCs between controllers (`io::controller_net` frames, serde JSON).
//! - `lifecycle`: brokers' registration, heartbeats, fencing and controlled shutdown (both the
//!   broker's side and the active controller's).
//! - this file: [`Controller`] (start, wait for the cluster id, stop) and [`ControllerHandle`]
//!   (propose, status, the applied metadata), usable from any thread.
//!
//! **Formation without a format step.** Every voter whose Raft state is empty (no log, no vote)
//! calls `Raft::initialize` with the membership built from `controller_quorum_voters`. openraft
//! documents this as safe when every caller passes the same membership ("If this method is
//! called on more than one node simultaneously with the same membership, it is safe, as the
//! voting protocol ensures consistency"; `docs::cluster_control::cluster_formation`), and only
//! then: so every RPC carries the sender's voters list and a node configured with another list
//! is refused (`network::Refusal::OtherVoters`), and a node whose log holds other voters than
//! its settings stops at start. Why not "only the lowest id initializes": the cluster would then
//! not form while that one node is down, and it buys no safety the above does not already give.
//! What it does not protect against (KRaft's format step does): a voter whose data directory was
//! lost comes back empty and initializes again, forgetting the vote it had cast. Its first log
//! entry is the same as everyone's, and its term is behind, so it rejoins; a lost vote within
//! one term is the window that remains.
//!
//! **The cluster id.** The first leader commits a `ClusterId` record with a new uuid when the
//! applied metadata has none (a second leader racing it commits a second one, which the state
//! machine refuses: the first applied wins, the same on every node). Each node keeps the id in
//! `<data_dir>/cluster.toml`, the file a single node keeps its own in. A node is ready once its
//! applied metadata holds the id, its file agrees (or it had none and writes it), and a peer
//! has answered or asked it with the same id (a lone voter needs no peer). A data directory
//! whose `cluster.toml` names another cluster than the one the quorum (or a peer) reports makes
//! the node stop with a message saying so; single-node data (a `cluster.toml` and no metadata
//! log) is not imported into a cluster yet, so such a node refuses to join.
//!
//! **Proposals are forwarded**: [`ControllerHandle::propose`] on a follower or learner sends
//! the record to the leader and returns once it is applied there (its log index); the caller
//! never sees NotController. A proposal that does not commit within the timeout (no majority)
//! is [`ControllerError::Timeout`]; it may still commit later, as a Kafka request that timed out.

mod lifecycle;
mod log_store;
pub mod metadata;
mod network;
pub mod placement;
#[cfg(test)]
mod simulation;
mod state_machine;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::InitializeError;
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Voter};
use crate::io::controller_net::{run_thread, FrameListener};
use crate::io::metadata_store::MetadataDir;
pub use metadata::{BrokerRegistration, ClusterMetadata, MetadataRecord, PartitionRecord};
use network::{Pool, ProposeReply, Request, Response};
use state_machine::Published;

openraft::declare_raft_types!(
    /// openraft's types for the metadata log: records in, [`Applied`] out, node ids as u64
    /// (our `node_id`, never negative), snapshots as bytes in memory (the metadata is small).
    pub TypeConfig:
        D = MetadataRecord,
        R = Applied,
);

/// What applying one entry gave: `rejected` says why a record changed nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub rejected: Option<String>,
}

/// The quorum's timers and sizes. Fixed in code: the defaults are for production, tests make
/// them small.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How often the leader sends heartbeats; also openraft's timeout of one AppendEntries.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range stands for election.
    pub election_timeout_ms: (u64, u64),
    /// A snapshot is taken every this many entries, and the log purged up to it...
    pub snapshot_every_entries: u64,
    /// ...except this many entries before it, kept to catch slow followers up without one.
    pub entries_kept_after_snapshot: u64,
    /// How long a proposal may wait to be committed.
    pub propose_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            heartbeat_ms: 250,
            election_timeout_ms: (1500, 3000),
            snapshot_every_entries: 1000,
            entries_kept_after_snapshot: 200,
            propose_timeout: Duration::from_secs(15),
        }
    }
}

/// What the controller thread needs to start.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    pub voters: Vec<Voter>,
    /// `host:port` to listen on; also the address a learner gives the leader to reach it.
    pub listen: String,
    /// A voter (the controller role) or a learner (broker only).
    pub voter: bool,
    /// The broker role: registers and heartbeats (see `lifecycle`); None on a controller only.
    pub broker: Option<BrokerConfig>,
    /// While this node leads: a broker silent this long is fenced (`broker_session_timeout_ms`).
    pub broker_session_timeout_ms: u64,
    pub tuning: Tuning,
}

/// What the broker's side of the lifecycle registers with and how often it heartbeats.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The addresses Kafka clients reach this broker at: the first listener's `host:port`, then
    /// every listener's `NAME://host:port` (`Config::registered_listeners`).
    pub listeners: Vec<String>,
    pub rack: Option<String>,
    pub heartbeat_interval_ms: u64,
}

impl ControllerConfig {
    /// The quorum's part of the settings; None when no voters are configured.
    pub fn from_config(config: &Config) -> Option<ControllerConfig> {
        let q = config.quorum.as_ref()?;
        Some(ControllerConfig {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            voters: q.voters.clone(),
            listen: q.listen.clone(),
            voter: q.roles.controller,
            broker: q.roles.broker.then(|| BrokerConfig {
                listeners: config.registered_listeners(),
                rack: q.broker_rack.clone(),
                heartbeat_interval_ms: q.broker_heartbeat_interval_ms,
            }),
            broker_session_timeout_ms: q.broker_session_timeout_ms,
            tuning: Tuning::default(),
        })
    }
}

/// Why a proposal or the start failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerError {
    /// Not committed within the timeout; it may still commit later.
    Timeout { waited_ms: u64, leader: Option<i32> },
    /// Committed at `index`, but the state machine refused it (`reason`): nothing changed.
    Rejected { index: u64, reason: String },
    /// The connection to the leader failed after the proposal was sent: it may or may not commit.
    Unknown(String),
    /// The controller thread has stopped (or is stopping).
    Stopped,
    /// The node cannot take part in this quorum (another cluster's data, other voters).
    Refused(String),
    Failed(String),
}

impl std::fmt::Display for ControllerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControllerError::Timeout { waited_ms, leader } => write!(
                f,
                "the metadata quorum did not commit the proposal within {waited_ms} ms (leader: {}); a majority of the \
                 voters may be down or unreachable; it may still commit later",
                leader.map_or("none known".to_string(), |l| l.to_string())
            ),
            ControllerError::Rejected { index, reason } => write!(f, "refused by the metadata state machine at entry {index}: {reason}"),
            ControllerError::Unknown(e) => write!(f, "outcome unknown: {e}"),
            ControllerError::Stopped => write!(f, "the controller thread has stopped"),
            ControllerError::Refused(e) | ControllerError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ControllerError {}

/// A node's part in the quorum, as its status tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Stopped,
}

/// One voter (or observer) as the leader sees it (`matched`, `lag`: only the leader knows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterStatus {
    pub id: i32,
    /// The last entry known to be in that voter's log.
    pub matched: Option<u64>,
    /// Entries the leader has that the voter is not known to have.
    pub lag: Option<u64>,
}

/// The quorum as this node sees it, for `/v1/status`, metrics and DescribeQuorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub node_id: i32,
    pub role: Role,
    pub leader: Option<i32>,
    /// The Raft term (KRaft's epoch).
    pub term: u64,
    pub committed: Option<u64>,
    pub last_applied: Option<u64>,
    pub last_log: Option<u64>,
    /// The last entry the newest snapshot covers.
    pub snapshot: Option<u64>,
    pub voters: Vec<VoterStatus>,
    /// The learners (broker-only nodes following the log), as the leader sees them; empty
    /// elsewhere.
    #[serde(default)]
    pub observers: Vec<VoterStatus>,
    pub cluster_id: Option<String>,
}

/// State shared by the controller thread's tasks and the handles (any thread).
pub(crate) struct Shared {
    node_id: u64,
    voter_ids: BTreeSet<u64>,
    /// The voters as `id@addr,...` sorted by id: sent with every RPC and compared.
    voters_text: String,
    data_dir: PathBuf,
    /// `<data_dir>/cluster.toml`'s id, if there is one.
    stored_id: Mutex<Option<String>>,
    /// The id in the applied metadata, once there is one.
    applied_id: Mutex<Option<String>>,
    /// A peer has answered or asked this node with the same cluster id (see the module doc).
    confirmed: AtomicBool,
    /// Why the node must stop, first reason wins.
    fatal: Mutex<Option<String>>,
    wake: tokio::sync::Notify,
    status: Mutex<ControllerStatus>,
    published: Arc<Published>,
    last_warning_ms: AtomicU64,
    /// Brokers' sessions, kept while this node leads (`lifecycle`).
    sessions: Mutex<lifecycle::Sessions>,
    /// The origin of [`Shared::clock_ms`].
    clock: Instant,
    /// Tests stop this node's heartbeats without stopping the node.
    heartbeats_paused: AtomicBool,
}

impl Shared {
    /// The cluster id this node goes by: the applied one, else the one its data directory has.
    fn known_cluster_id(&self) -> Option<String> {
        let applied = self.applied_id.lock().expect("never poisoned").clone();
        applied.or_else(|| self.stored_id.lock().expect("never poisoned").clone())
    }

    /// A peer spoke with `theirs`: the same id as ours confirms this node's.
    fn confirm(&self, theirs: Option<&str>) {
        if theirs.is_some() && theirs.map(str::to_string) == self.known_cluster_id() {
            self.confirmed.store(true, Ordering::Release);
        }
    }

    /// `peer` refused this node, or spoke from another cluster. Before this node is confirmed
    /// its data directory (or its settings) is the odd one out: it stops. After, it only warns
    /// (now and then): a confirmed node keeps serving its own cluster.
    fn peer_differs(&self, peer: &str, why: &network::Refusal) {
        let msg = match why {
            network::Refusal::OtherCluster { ours: theirs } => format!(
                "the data directory {} belongs to cluster {}, but the controller at {peer} is in cluster {theirs}: \
                 this node's data is from another cluster; start it with an empty data directory, or with the voters of its own cluster",
                self.data_dir.display(),
                self.known_cluster_id().unwrap_or_else(|| "(none)".into()),
            ),
            network::Refusal::OtherVoters { ours } => format!(
                "the controller at {peer} was started with controller_quorum_voters {ours}, this node with {}: every node \
                 needs the same list",
                self.voters_text
            ),
        };
        if !self.confirmed.load(Ordering::Acquire) {
            self.fail(msg);
        } else {
            let now = now_ms();
            if now.saturating_sub(self.last_warning_ms.swap(now, Ordering::AcqRel)) > 10_000 {
                tracing::warn!("controller: {msg}");
            }
        }
    }

    fn fail(&self, msg: String) {
        let mut fatal = self.fatal.lock().expect("never poisoned");
        if fatal.is_none() {
            tracing::error!("controller: {msg}");
            *fatal = Some(msg);
        }
        drop(fatal);
        self.wake.notify_one();
    }

    /// Milliseconds on a monotonic clock, for broker sessions.
    fn clock_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn heartbeats_paused(&self) -> bool {
        self.heartbeats_paused.load(Ordering::Acquire)
    }

    fn fatal(&self) -> Option<String> {
        self.fatal.lock().expect("never poisoned").clone()
    }

    /// The cluster id once this node is ready to serve under it (see the module doc).
    fn ready_id(&self) -> Option<String> {
        let applied = self.applied_id.lock().expect("never poisoned").clone()?;
        let stored = self.stored_id.lock().expect("never poisoned").clone()?;
        (applied == stored && self.confirmed.load(Ordering::Acquire)).then_some(applied)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

enum Command {
    Propose { record: MetadataRecord, reply: flume::Sender<Result<u64, ControllerError>> },
    LeaderStatus(flume::Sender<Result<ControllerStatus, ControllerError>>),
    ControlledShutdown(lifecycle::ShutdownAsk),
}

/// Depth of the channel of commands into the controller thread.
const COMMANDS_DEPTH: usize = 1024;

/// The rest of the program's way into the quorum. `Send + Clone`, usable from any thread and
/// any executor (flume's async channels work on both).
#[derive(Clone)]
pub struct ControllerHandle {
    shared: Arc<Shared>,
    commands: flume::Sender<Command>,
}

impl ControllerHandle {
    /// Proposes `record` and waits until it is committed and applied (forwarded to the leader
    /// when this node is not it); returns its log index.
    pub async fn propose(&self, record: MetadataRecord) -> Result<u64, ControllerError> {
        let (reply, answer) = flume::bounded(1);
        self.commands.send_async(Command::Propose { record, reply }).await.map_err(|_| ControllerError::Stopped)?;
        answer.recv_async().await.map_err(|_| ControllerError::Stopped)?
    }

    /// The quorum as this node saw it last (updated on every change).
    pub fn status(&self) -> ControllerStatus {
        self.shared.status.lock().expect("never poisoned").clone()
    }

    /// The quorum as its leader sees it (each voter's and observer's progress), asked of the
    /// leader over the controller network when this node is not it.
    pub async fn leader_status(&self) -> Result<ControllerStatus, ControllerError> {
        let (reply, answer) = flume::bounded(1);
        self.commands.send_async(Command::LeaderStatus(reply)).await.map_err(|_| ControllerError::Stopped)?;
        answer.recv_async().await.map_err(|_| ControllerError::Stopped)?
    }

    /// The newest applied metadata and its log index.
    pub fn metadata(&self) -> (u64, Arc<ClusterMetadata>) {
        self.shared.published.latest()
    }

    /// Every applied metadata state, in order (when the receiver falls behind, older states are
    /// skipped: each is whole). One receiver is shared by all who call this.
    pub fn applied(&self) -> flume::Receiver<(u64, Arc<ClusterMetadata>)> {
        self.shared.published.receiver()
    }

    /// The cluster id once this node is ready (see the module doc).
    pub fn cluster_id(&self) -> Option<String> {
        self.shared.ready_id()
    }

    /// Controlled shutdown of this node's broker: asks the active controller to fence it and
    /// waits, at most `timeout`, until it has. After it this broker sends no more heartbeats.
    /// An error says why not (no quorum, not registered, the controller thread gone); the
    /// caller shuts down all the same. Blocks the calling thread: call it off the cores.
    pub fn controlled_shutdown(&self, timeout: Duration) -> Result<(), ControllerError> {
        let (reply, answer) = flume::bounded(1);
        let deadline = Instant::now() + timeout;
        self.commands.send_deadline(Command::ControlledShutdown(reply), deadline).map_err(|e| match e {
            flume::SendTimeoutError::Timeout(_) => ControllerError::Timeout { waited_ms: timeout.as_millis() as u64, leader: None },
            flume::SendTimeoutError::Disconnected(_) => ControllerError::Stopped,
        })?;
        match answer.recv_deadline(deadline) {
            Ok(r) => r,
            Err(flume::RecvTimeoutError::Timeout) => {
                Err(ControllerError::Timeout { waited_ms: timeout.as_millis() as u64, leader: self.status().leader })
            }
            Err(flume::RecvTimeoutError::Disconnected) => Err(ControllerError::Stopped),
        }
    }

    /// Stops (or resumes) this node's heartbeats, to test fencing.
    #[cfg(test)]
    fn pause_heartbeats(&self, paused: bool) {
        self.shared.heartbeats_paused.store(paused, Ordering::Release);
    }
}

/// The running controller thread. Stopped by [`Controller::stop`] or on drop.
pub struct Controller {
    handle: ControllerHandle,
    stop: Option<flume::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Controller {
    /// Opens `<data_dir>/metadata/`, binds `listen` and starts the Raft node on the controller
    /// thread; returns once it runs (or why it could not start).
    pub fn start(cfg: ControllerConfig) -> anyhow::Result<Controller> {
        anyhow::ensure!(cfg.node_id >= 0, "node_id {} is negative", cfg.node_id);
        let stored = stored_cluster_id(&cfg.data_dir)?;
        let meta_path = cfg.data_dir.join("metadata");
        let dir = Arc::new(MetadataDir::open(&meta_path).map_err(|e| anyhow::anyhow!("creating {}: {e}", meta_path.display()))?);
        let published = Arc::new(Published::new());
        let log_store = log_store::LogStore::open(dir.clone()).map_err(anyhow::Error::msg)?;
        let committed = log_store.committed_index();
        let sm = state_machine::StateMachine::open(dir.clone(), published.clone()).map_err(anyhow::Error::msg)?;
        let mut voters = cfg.voters.clone();
        voters.sort_by_key(|v| v.id);
        let shared = Arc::new(Shared {
            node_id: cfg.node_id as u64,
            voter_ids: voters.iter().map(|v| v.id as u64).collect(),
            voters_text: voters.iter().map(|v| format!("{}@{}", v.id, v.addr)).collect::<Vec<_>>().join(","),
            data_dir: cfg.data_dir.clone(),
            stored_id: Mutex::new(stored),
            applied_id: Mutex::new(sm.cluster_id()),
            confirmed: AtomicBool::new(voters.len() == 1 && cfg.voter),
            fatal: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            status: Mutex::new(ControllerStatus {
                node_id: cfg.node_id,
                role: Role::Learner,
                leader: None,
                term: 0,
                committed: None,
                last_applied: None,
                last_log: None,
                snapshot: None,
                voters: voters.iter().map(|v| VoterStatus { id: v.id, matched: None, lag: None }).collect(),
                observers: Vec::new(),
                cluster_id: None,
            }),
            published,
            last_warning_ms: AtomicU64::new(0),
            sessions: Mutex::new(lifecycle::Sessions::default()),
            clock: Instant::now(),
            heartbeats_paused: AtomicBool::new(false),
        });
        let (commands, command_rx) = flume::bounded(COMMANDS_DEPTH);
        let (stop, stop_rx) = flume::bounded(1);
        let (started_tx, started_rx) = flume::bounded(1);
        let thread_shared = shared.clone();
        let thread = run_thread("controller", move || async move {
            let parts = Parts { cfg, shared: thread_shared, log_store, sm, committed, commands: command_rx, stop: stop_rx };
            run(parts, started_tx).await
        })
        .map_err(|e| anyhow::anyhow!("starting the controller thread: {e}"))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                anyhow::bail!(e);
            }
            Err(_) => {
                let end = thread.join();
                anyhow::bail!("the controller thread ended during start-up: {end:?}");
            }
        }
        Ok(Controller { handle: ControllerHandle { shared, commands }, stop: Some(stop), thread: Some(thread) })
    }

    pub fn handle(&self) -> ControllerHandle {
        self.handle.clone()
    }

    /// Blocks until this node is ready under the cluster's id (see the module doc) and returns
    /// it; calls `progress` with the status every `progress_every` meanwhile. Gives up when
    /// `cancelled()` says so, after `timeout`, or when the node cannot join (another cluster's
    /// data, other voters), with a message saying why.
    pub fn wait_cluster_id(
        &self,
        timeout: Duration,
        progress_every: Duration,
        mut progress: impl FnMut(&ControllerStatus),
        cancelled: impl Fn() -> bool,
    ) -> Result<String, ControllerError> {
        let start = Instant::now();
        let mut next_progress = start + progress_every;
        loop {
            if let Some(id) = self.handle.shared.ready_id() {
                return Ok(id);
            }
            if let Some(e) = self.handle.shared.fatal() {
                return Err(ControllerError::Refused(e));
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) || cancelled() {
                return Err(ControllerError::Stopped);
            }
            if start.elapsed() >= timeout {
                return Err(ControllerError::Failed(format!(
                    "the metadata quorum gave this node no cluster id within {} s (status: {:?})",
                    timeout.as_secs(),
                    self.handle.status()
                )));
            }
            if Instant::now() >= next_progress {
                next_progress += progress_every;
                progress(&self.handle.status());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the Raft node and the thread; returns why the thread ended early, if it did.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "the controller thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// Reads the cluster id of `<data_dir>/cluster.toml`, if there is one.
pub fn stored_cluster_id(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join("cluster.toml");
    match crate::io::fs::read_to_string_sync(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))? {
        Some(text) => Ok(Some(
            toml::from_str::<ClusterFile>(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?.cluster_id,
        )),
        None => Ok(None),
    }
}

/// Writes `<data_dir>/cluster.toml` durably.
pub fn store_cluster_id(data_dir: &Path, id: &str) -> anyhow::Result<()> {
    let path = data_dir.join("cluster.toml");
    let text = toml::to_string(&ClusterFile { cluster_id: id.to_string() })?;
    crate::io::fs::write_atomic_sync(&path, text.as_bytes()).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// `cluster.toml` (Kafka keeps the same in meta.properties).
#[derive(Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
}

/// What the controller thread owns.
struct Parts {
    cfg: ControllerConfig,
    shared: Arc<Shared>,
    log_store: log_store::LogStore,
    sm: state_machine::StateMachine,
    committed: Arc<AtomicU64>,
    commands: flume::Receiver<Command>,
    stop: flume::Receiver<()>,
}

/// The controller thread: start the Raft node, report, then serve until stopped or refused.
async fn run(parts: Parts, started: flume::Sender<Result<(), String>>) -> Result<(), String> {
    let cfg = parts.cfg.clone();
    let raft = match start_raft(parts.cfg, parts.shared.clone(), parts.log_store, parts.sm).await {
        Ok(r) => r,
        Err(e) => {
            let _ = started.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = started.send(Ok(()));
    let result = serve(&cfg, &raft, &parts.shared, &parts.committed, &parts.commands, &parts.stop).await;
    let _ = raft.shutdown().await;
    parts.shared.status.lock().expect("never poisoned").role = Role::Stopped;
    result
}

async fn start_raft(
    cfg: ControllerConfig,
    shared: Arc<Shared>,
    log_store: log_store::LogStore,
    sm: state_machine::StateMachine,
) -> Result<Raft<TypeConfig>, String> {
    let listener =
        FrameListener::bind(&cfg.listen).await.map_err(|e| format!("cannot listen on {} (controller_listen): {e}", cfg.listen))?;
    let t = &cfg.tuning;
    let config = openraft::Config {
        cluster_name: "spate-metadata".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_timeout_ms.0,
        election_timeout_max: t.election_timeout_ms.1,
        install_snapshot_timeout: t.election_timeout_ms.0,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every_entries),
        max_in_snapshot_log_to_keep: t.entries_kept_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| format!("controller settings: {e}"))?;
    let network = network::Network { shared: shared.clone() };
    let raft = Raft::new(shared.node_id, Arc::new(config), network, log_store, sm)
        .await
        .map_err(|e| format!("starting the metadata quorum: {e}"))?;
    // The voters in the log must be the configured ones: changing them is not supported yet.
    let membership = raft.metrics().borrow().membership_config.clone();
    let in_log: BTreeMap<u64, String> = membership
        .membership()
        .voter_ids()
        .map(|id| (id, membership.membership().get_node(&id).map_or(String::new(), |n| n.addr.clone())))
        .collect();
    let configured: BTreeMap<u64, String> = cfg.voters.iter().map(|v| (v.id as u64, v.addr.clone())).collect();
    if !in_log.is_empty() && in_log != configured {
        let _ = raft.shutdown().await;
        return Err(format!(
            "the metadata log in {} has the voters {in_log:?}, but controller_quorum_voters says {configured:?}: changing the \
             voters is not supported yet (or this data directory belongs to another cluster)",
            cfg.data_dir.join("metadata").display()
        ));
    }
    if cfg.voter && !raft.is_initialized().await.map_err(|e| e.to_string())? {
        let members: BTreeMap<u64, BasicNode> = configured.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(voters = %shared.voters_text, "controller: new metadata quorum initialized on this node"),
            // A peer's vote or log reached this node first: it joins through them.
            Err(e) if matches!(e.api_error(), Some(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(format!("initializing the metadata quorum: {e}")),
        }
    }
    tokio::spawn(network::serve(listener, raft.clone(), shared));
    Ok(raft)
}

/// The controller's main loop: takes proposals, keeps the status current, settles the cluster
/// id, and (on a learner) asks to join until the leader has added it.
async fn serve(
    cfg: &ControllerConfig,
    raft: &Raft<TypeConfig>,
    shared: &Arc<Shared>,
    committed: &AtomicU64,
    commands: &flume::Receiver<Command>,
    stop: &flume::Receiver<()>,
) -> Result<(), String> {
    let pool = Arc::new(Pool::default());
    let mut metrics = raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let proposing_id = Arc::new(AtomicBool::new(false));
    let joining = Arc::new(AtomicBool::new(false));
    let (mut commands_open, mut metrics_open) = (true, true);
    // The broker's side of the lifecycle, started once the cluster id is settled; asks for a
    // controlled shutdown go to it. The receiver moves into its task, so that an ask after the
    // task ended fails at once.
    let (asks_tx, asks) = flume::bounded::<lifecycle::ShutdownAsk>(4);
    let mut asks = Some(asks);
    let mut broker_started = false;
    loop {
        tokio::select! {
            _ = stop.recv_async() => return Ok(()),
            c = commands.recv_async(), if commands_open => match c {
                Ok(Command::Propose { record, reply }) => {
                    let (raft, shared, pool, timeout) = (raft.clone(), shared.clone(), pool.clone(), cfg.tuning.propose_timeout);
                    tokio::spawn(async move {
                        let _ = reply.send(propose(&raft, &shared, &pool, record, timeout).await);
                    });
                }
                Ok(Command::LeaderStatus(reply)) => {
                    let (raft, shared, pool) = (raft.clone(), shared.clone(), pool.clone());
                    tokio::spawn(async move {
                        let _ = reply.send(leader_status(&raft, &shared, &pool).await);
                    });
                }
                Ok(Command::ControlledShutdown(reply)) => {
                    if !broker_started {
                        let why = if cfg.broker.is_some() { "this broker has not registered yet" } else { "this node has no broker role" };
                        let _ = reply.send(Err(ControllerError::Failed(why.into())));
                    } else if let Err(flume::TrySendError::Full(reply) | flume::TrySendError::Disconnected(reply)) = asks_tx.try_send(reply) {
                        let _ = reply.send(Err(ControllerError::Failed("the broker's heartbeats have ended".into())));
                    }
                }
                Err(_) => commands_open = false,
            },
            m = metrics.changed(), if metrics_open => if m.is_err() { metrics_open = false },
            _ = tick.tick() => {}
            _ = shared.wake.notified() => {}
        }
        if let Some(e) = shared.fatal() {
            return Err(e);
        }
        let m = metrics.borrow().clone();
        if let Err(e) = settle_cluster_id(shared) {
            shared.fail(e);
            return Err(shared.fatal().unwrap_or_default());
        }
        update_status(cfg, shared, &m, committed);
        lifecycle::fence_expired(raft, shared, cfg.broker_session_timeout_ms);
        if let (Some(broker), Some(_)) = (&cfg.broker, shared.ready_id()) {
            if let Some(asks) = asks.take() {
                broker_started = true;
                let (raft, shared, pool, broker) = (raft.clone(), shared.clone(), pool.clone(), broker.clone());
                tokio::spawn(lifecycle::run_broker(raft, shared, pool, broker, asks));
            }
        }
        let applied_id = shared.applied_id.lock().expect("never poisoned").is_some();
        if m.state == ServerState::Leader && !applied_id && !proposing_id.swap(true, Ordering::AcqRel) {
            let (raft, flag) = (raft.clone(), proposing_id.clone());
            tokio::spawn(async move {
                let id = uuid::Uuid::new_v4().simple().to_string();
                tracing::info!(cluster_id = %id, "controller: this leader gives the new cluster its id");
                let _ = network::propose_here(&raft, MetadataRecord::ClusterId(id), 5_000).await;
                flag.store(false, Ordering::Release);
            });
        }
        let member = m.membership_config.membership().get_node(&shared.node_id).is_some();
        if !cfg.voter && !member && !joining.swap(true, Ordering::AcqRel) {
            let (shared, pool, flag, cfg) = (shared.clone(), pool.clone(), joining.clone(), cfg.clone());
            let leader = m.current_leader;
            tokio::spawn(async move {
                join(&cfg, &shared, &pool, leader).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                flag.store(false, Ordering::Release);
            });
        }
    }
}

/// Takes the applied cluster id in, and writes it to `cluster.toml` the first time (or stops
/// the node when its file names another cluster).
fn settle_cluster_id(shared: &Shared) -> Result<(), String> {
    let Some(applied) = shared.published.latest().1.cluster_id.clone() else { return Ok(()) };
    *shared.applied_id.lock().expect("never poisoned") = Some(applied.clone());
    let mut stored = shared.stored_id.lock().expect("never poisoned");
    match stored.as_deref() {
        Some(s) if s == applied => Ok(()),
        Some(s) => Err(format!(
            "the data directory {} belongs to cluster {s} (its cluster.toml), but the metadata quorum's cluster is {applied}: \
             this node's data is from another cluster (or from a single node, which cannot join a cluster yet); start it \
             with an empty data directory",
            shared.data_dir.display()
        )),
        None => {
            store_cluster_id(&shared.data_dir, &applied).map_err(|e| e.to_string())?;
            tracing::info!(cluster_id = %applied, "controller: this node joined the cluster");
            *stored = Some(applied);
            Ok(())
        }
    }
}

fn update_status(cfg: &ControllerConfig, shared: &Shared, m: &openraft::RaftMetrics<u64, BasicNode>, committed: &AtomicU64) {
    let role = match m.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Stopped,
    };
    let committed = committed.load(Ordering::Acquire);
    let voters = cfg
        .voters
        .iter()
        .map(|v| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&(v.id as u64)).cloned().flatten()).map(|l| l.index);
            let matched = if v.id as u64 == shared.node_id && role == Role::Leader { m.last_log_index } else { matched };
            let lag = match (role, m.last_log_index, matched) {
                (Role::Leader, Some(last), Some(matched)) => Some(last.saturating_sub(matched)),
                (Role::Leader, Some(last), None) => Some(last + 1),
                _ => None,
            };
            VoterStatus { id: v.id, matched, lag }
        })
        .collect();
    let observers = m
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| !cfg.voters.iter().any(|v| v.id as u64 == **id))
        .map(|(id, matched)| {
            let matched = matched.map(|l| l.index);
            let lag = m.last_log_index.map(|last| matched.map_or(last + 1, |x| last.saturating_sub(x)));
            VoterStatus { id: *id as i32, matched, lag }
        })
        .collect();
    let status = ControllerStatus {
        node_id: cfg.node_id,
        role,
        leader: m.current_leader.map(|l| l as i32),
        term: m.current_term,
        committed: (committed != u64::MAX).then_some(committed),
        last_applied: m.last_applied.map(|l| l.index),
        last_log: m.last_log_index,
        snapshot: m.snapshot.map(|l| l.index),
        voters,
        observers,
        cluster_id: shared.ready_id(),
    };
    *shared.status.lock().expect("never poisoned") = status;
}

/// This node's status if it leads, else the leader's, asked over the controller network.
async fn leader_status(raft: &Raft<TypeConfig>, shared: &Shared, pool: &Pool) -> Result<ControllerStatus, ControllerError> {
    let leader = raft.metrics().borrow().current_leader;
    match leader {
        None => Err(ControllerError::Timeout { waited_ms: 0, leader: None }),
        Some(l) if l == shared.node_id => Ok(shared.status.lock().expect("never poisoned").clone()),
        Some(l) => {
            let addr = addr_of(raft, l).ok_or_else(|| ControllerError::Failed(format!("no address for the leader {l}")))?;
            match pool.call(shared, &addr, Request::Status, Duration::from_secs(5)).await {
                Ok(Response::Status(s)) => Ok(s),
                Ok(other) => Err(ControllerError::Failed(format!("unexpected answer from the leader: {other:?}"))),
                Err(e) => Err(ControllerError::Failed(format!("the leader at {addr}: {e}"))),
            }
        }
    }
}

/// The address of node `id` in the current membership.
pub(crate) fn addr_of(raft: &Raft<TypeConfig>, id: u64) -> Option<String> {
    raft.metrics().borrow().membership_config.membership().get_node(&id).map(|n| n.addr.clone())
}

/// Writes `record` through the leader, wherever it is, within `timeout`.
pub(crate) async fn propose(
    raft: &Raft<TypeConfig>,
    shared: &Shared,
    pool: &Pool,
    record: MetadataRecord,
    timeout: Duration,
) -> Result<u64, ControllerError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let leader = raft.metrics().borrow().current_leader;
        if left.is_zero() {
            return Err(ControllerError::Timeout { waited_ms: timeout.as_millis() as u64, leader: leader.map(|l| l as i32) });
        }
        let left_ms = left.as_millis() as u64;
        let reply = match leader {
            Some(l) if l == shared.node_id => network::propose_here(raft, record.clone(), left_ms).await,
            Some(l) => match addr_of(raft, l) {
                None => ProposeReply::NotLeader { leader: None },
                Some(addr) => {
                    let body = Request::Propose { record: record.clone(), timeout_ms: left_ms };
                    // A little longer than the leader waits, so that its TimedOut arrives.
                    match pool.call(shared, &addr, body, left + Duration::from_secs(2)).await {
                        Ok(Response::Propose(r)) => r,
                        Ok(other) => ProposeReply::Failed(format!("unexpected answer from the leader: {other:?}")),
                        // Not sent: try again (the leader may be changing).
                        Err(network::CallError::Unreachable(_)) | Err(network::CallError::Refused(_)) => {
                            ProposeReply::NotLeader { leader: None }
                        }
                        Err(e @ network::CallError::Network(_)) => {
                            return Err(ControllerError::Unknown(format!("the connection to the leader at {addr} failed: {e}")))
                        }
                    }
                }
            },
            None => ProposeReply::NotLeader { leader: None },
        };
        match reply {
            ProposeReply::Applied { index } => return Ok(index),
            ProposeReply::Rejected { index, reason } => return Err(ControllerError::Rejected { index, reason }),
            ProposeReply::TimedOut => {
                let leader = raft.metrics().borrow().current_leader.map(|l| l as i32);
                return Err(ControllerError::Timeout { waited_ms: timeout.as_millis() as u64, leader });
            }
            ProposeReply::Failed(e) => return Err(ControllerError::Failed(e)),
            ProposeReply::NotLeader { .. } => tokio::time::sleep(Duration::from_millis(50).min(left)).await,
        }
    }
}

/// A learner asks the leader (or, not knowing it, each voter in turn) to add it.
async fn join(cfg: &ControllerConfig, shared: &Shared, pool: &Pool, leader: Option<u64>) {
    let mut targets: Vec<&Voter> = cfg.voters.iter().collect();
    if let Some(l) = leader {
        targets.sort_by_key(|v| v.id as u64 != l);
    }
    for v in targets {
        let body = Request::Join { addr: cfg.listen.clone() };
        match pool.call(shared, &v.addr, body, Duration::from_secs(5)).await {
            Ok(Response::Join(network::JoinReply::Added)) => return,
            Ok(Response::Join(network::JoinReply::Refused(e))) => {
                shared.fail(format!("the controller at {} refused this node as a learner: {e}", v.addr));
                return;
            }
            Ok(Response::Join(network::JoinReply::Failed(e))) => {
                tracing::debug!(addr = %v.addr, error = %e, "controller: joining as a learner failed for now; asking again");
                return;
            }
            Ok(_) | Err(_) => continue,
        }
    }
}
