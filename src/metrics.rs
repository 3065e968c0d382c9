//! Prometheus metrics (prometheus-client) and the admin HTTP endpoints that serve them.
//!
//! Two kinds of metric:
//! - counters and histograms updated on the hot path: each core keeps its own handle per label
//!   set (a `core` label), cached in a thread-local, so an update is an atomic add on a value no
//!   other core writes: no lock, no allocation, no shared cache line;
//! - gauges of state (offsets, segments, bytes on disk, group lag, partitions per core): every
//!   core publishes a snapshot of its partitions and groups once a second
//!   ([`publish_core`]); a scrape reads the snapshots on the admin thread and never touches a
//!   core, so scrapes cannot slow clients down. Gauges are at most a second old.
//!
//! - in a cluster, the metadata quorum and the registered brokers, read from the controller's
//!   handle at each scrape ([`set_controller`]): the controller thread keeps them current, so a
//!   scrape costs a lock and a copy, never a core's time.
//!
//! Endpoints (see [`route`]): `/metrics` (Prometheus text format 0.0.4), `/v1/health`,
//! `/v1/ready`, `/v1/status`, `/v1/config`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::controller::{ControllerHandle, Role};
use crate::io::http::Response;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCore {
    api: String,
    core: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabel {
    core: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CorePool {
    core: u32,
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreKind {
    core: u32,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicCore {
    topic: String,
    core: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCode {
    api: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Partition {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabel {
    listener: String,
    mechanism: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabel {
    resource_type: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartition {
    group: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoterLabel {
    voter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BrokerState {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 10 us .. ~42 s
    exponential_buckets(0.000_01, 2.0, 23)
}

struct Long {
    registry: Registry,
    requests: Family<ApiCore, Counter>,
    request_seconds: Family<ApiCore, Histogram, fn() -> Histogram>,
    errors: Family<ApiCode, Counter>,
    bytes_in: Family<TopicCore, Counter>,
    records_in: Family<TopicCore, Counter>,
    bytes_out: Family<TopicCore, Counter>,
    fsync_seconds: Family<CoreLabel, Histogram, fn() -> Histogram>,
    fsync_bytes: Family<CoreLabel, Histogram, fn() -> Histogram>,
    cross_core: Family<CoreLabel, Counter>,
    connections_opened: Counter,
    connections_refused: Counter,
    authentications: Family<AuthLabel, Counter>,
    tls_reloads: Family<Outcome, Counter>,
    denials: Family<DenialLabel, Counter>,
    throttled: Family<ApiLabel, Counter>,
    throttled_ms: Family<ApiLabel, Counter>,
    memory_waits: Family<CoreLabel, Counter>,
    fetch_trimmed: Family<CoreLabel, Counter>,
    fetch_kinds: Family<CoreKind, Counter>,
    fetch_session_evictions: Family<CoreLabel, Counter>,
    busy_poll_found: Family<CoreLabel, Counter>,
    busy_poll_missed: Family<CoreLabel, Counter>,
    recompressed_batches: Family<CoreLabel, Counter>,
    recompressed_bytes: Family<CoreLabel, Counter>,
    replicated_bytes: Family<CoreLabel, Counter>,
    isr_shrinks: Family<CoreLabel, Counter>,
    isr_expands: Family<CoreLabel, Counter>,
}

static LONG: LazyLock<Long> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let requests = Family::<ApiCore, Counter>::default();
    let request_seconds: Family<ApiCore, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(|| Histogram::new(latency_buckets()));
    let errors = Family::<ApiCode, Counter>::default();
    let bytes_in = Family::<TopicCore, Counter>::default();
    let records_in = Family::<TopicCore, Counter>::default();
    let bytes_out = Family::<TopicCore, Counter>::default();
    let fsync_seconds: Family<CoreLabel, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(|| Histogram::new(latency_buckets()));
    let fsync_bytes: Family<CoreLabel, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 4.0, 12)));
    let cross_core = Family::<CoreLabel, Counter>::default();
    let connections_opened = Counter::default();
    let connections_refused = Counter::default();
    let authentications = Family::<AuthLabel, Counter>::default();
    let tls_reloads = Family::<Outcome, Counter>::default();
    let denials = Family::<DenialLabel, Counter>::default();
    let throttled = Family::<ApiLabel, Counter>::default();
    let throttled_ms = Family::<ApiLabel, Counter>::default();
    let memory_waits = Family::<CoreLabel, Counter>::default();
    let fetch_trimmed = Family::<CoreLabel, Counter>::default();
    let fetch_kinds = Family::<CoreKind, Counter>::default();
    let fetch_session_evictions = Family::<CoreLabel, Counter>::default();
    let busy_poll_found = Family::<CoreLabel, Counter>::default();
    let busy_poll_missed = Family::<CoreLabel, Counter>::default();
    let recompressed_batches = Family::<CoreLabel, Counter>::default();
    let recompressed_bytes = Family::<CoreLabel, Counter>::default();
    let replicated_bytes = Family::<CoreLabel, Counter>::default();
    let isr_shrinks = Family::<CoreLabel, Counter>::default();
    let isr_expands = Family::<CoreLabel, Counter>::default();
    registry.register("spate_replicated_bytes", "Record batch bytes this broker's followers copied from their leaders, by core", replicated_bytes.clone());
    registry.register("spate_isr_shrinks", "ISR shrinks this broker's leaders proposed (a follower fell behind), by core", isr_shrinks.clone());
    registry.register("spate_isr_expands", "ISR expansions this broker's leaders proposed (a follower caught up), by core", isr_expands.clone());
    registry.register("spate_requests", "Kafka requests handled, by API and core", requests.clone());
    registry.register(
        "spate_request_duration_seconds",
        "Time from a request's decode to its encoded response, by API and core",
        request_seconds.clone(),
    );
    registry.register("spate_errors", "Error codes answered, by API and Kafka error name", errors.clone());
    registry.register("spate_produced_bytes", "Record batch bytes appended, by topic and core", bytes_in.clone());
    registry.register("spate_produced_records", "Records appended, by topic and core", records_in.clone());
    registry.register("spate_fetched_bytes", "Record bytes returned to fetches, by topic and core", bytes_out.clone());
    registry.register("spate_fsync_duration_seconds", "fdatasync latency of segment files, by core", fsync_seconds.clone());
    registry.register("spate_fsync_covered_records", "Records made durable by one fdatasync (group commit), by core", fsync_bytes.clone());
    registry.register("spate_cross_core_requests", "Jobs sent to another core, by sending core", cross_core.clone());
    registry.register("spate_connections_opened", "Client connections accepted", connections_opened.clone());
    registry.register("spate_connections_refused", "Client connections closed at once (max_connections)", connections_refused.clone());
    registry.register(
        "spate_authentications",
        "TLS handshakes (mechanism TLS) and SASL authentications on client connections, by listener, mechanism and outcome (ok, failed, timeout)",
        authentications.clone(),
    );
    registry.register(
        "spate_authorization_denials",
        "Requests (or parts of them: a topic of a produce) the ACL authorizer refused, by resource type and operation",
        denials.clone(),
    );
    registry.register("spate_quota_throttles", "Responses that told a client over its quota to wait (throttle_time_ms), by API", throttled.clone());
    registry.register("spate_quota_throttle_ms", "Milliseconds clients over their quotas were told to wait (and their connections muted), by API", throttled_ms.clone());
    registry.register(
        "spate_tls_reloads",
        "Reloads of changed TLS files: ok (new connections get them) or failed (the previous ones stay)",
        tls_reloads.clone(),
    );
    registry.register(
        "spate_memory_waits",
        "Request frames that waited for the core's share of queued_max_request_bytes, by core",
        memory_waits.clone(),
    );
    registry.register(
        "spate_fetch_trimmed",
        "Fetch reads cut below the asked size because the core's memory budget was short, by core",
        fetch_trimmed.clone(),
    );
    registry.register(
        "spate_fetch_requests",
        "Fetch requests by core and kind: sessionless (v6 and older, or session epoch -1), full (epoch 0: opens an incremental fetch session if the core has room), incremental (served from a session)",
        fetch_kinds.clone(),
    );
    registry.register(
        "spate_fetch_session_evictions",
        "Incremental fetch sessions evicted to make room for a new one, by core",
        fetch_session_evictions.clone(),
    );
    registry.register(
        "spate_busy_poll_found",
        "Requests found by busy polling a connection (connection_busy_poll_us), by core",
        busy_poll_found.clone(),
    );
    registry.register(
        "spate_busy_poll_missed",
        "Busy polls of a connection that ran out of time before a request came, by core",
        busy_poll_missed.clone(),
    );
    registry.register(
        "spate_recompressed_batches",
        "Produced batches re-encoded into their topic's compression.type, by core",
        recompressed_batches.clone(),
    );
    registry.register(
        "spate_recompressed_bytes",
        "Bytes of produced batches re-encoded into their topic's compression.type (as they arrived), by core",
        recompressed_bytes.clone(),
    );
    Long {
        registry,
        requests,
        request_seconds,
        errors,
        bytes_in,
        records_in,
        bytes_out,
        fsync_seconds,
        fsync_bytes,
        cross_core,
        connections_opened,
        connections_refused,
        authentications,
        tls_reloads,
        denials,
        throttled,
        throttled_ms,
        memory_waits,
        fetch_trimmed,
        fetch_kinds,
        fetch_session_evictions,
        busy_poll_found,
        busy_poll_missed,
        recompressed_batches,
        recompressed_bytes,
        replicated_bytes,
        isr_shrinks,
        isr_expands,
    }
});

thread_local! {
    /// This core's handles, by API key.
    static API: RefCell<HashMap<i16, (Counter, Histogram)>> = RefCell::new(HashMap::new());
    static CORE: RefCell<Option<CoreHandles>> = const { RefCell::new(None) };
    static TOPIC: RefCell<HashMap<String, (Counter, Counter, Counter)>> = RefCell::new(HashMap::new());
}

fn core_id() -> u32 {
    CURRENT_CORE.with(|c| c.get())
}

thread_local! {
    static CURRENT_CORE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Called once on each core's thread at start.
pub fn set_core(core: usize) {
    CURRENT_CORE.with(|c| c.set(core as u32));
}

/// One request handled: its API (key and name) and how long it took.
pub fn request(api_key: i16, api_name: &str, seconds: f64) {
    API.with(|m| {
        let mut m = m.borrow_mut();
        let (c, h) = m.entry(api_key).or_insert_with(|| {
            let l = ApiCore { api: api_name.to_string(), core: core_id() };
            (LONG.requests.get_or_create(&l).clone(), LONG.request_seconds.get_or_create(&l).clone())
        });
        c.inc();
        h.observe(seconds);
    });
}

/// An error code answered (not the common "none").
pub fn error(api_name: &str, code_name: &str) {
    LONG.errors.get_or_create(&ApiCode { api: api_name.to_string(), code: code_name.to_string() }).inc();
}

fn topic_handles<R>(topic: &str, f: impl FnOnce(&(Counter, Counter, Counter)) -> R) -> R {
    TOPIC.with(|m| {
        let mut m = m.borrow_mut();
        if !m.contains_key(topic) {
            let l = TopicCore { topic: topic.to_string(), core: core_id() };
            let h = (
                LONG.bytes_in.get_or_create(&l).clone(),
                LONG.records_in.get_or_create(&l).clone(),
                LONG.bytes_out.get_or_create(&l).clone(),
            );
            m.insert(topic.to_string(), h);
        }
        f(&m[topic])
    })
}

pub fn produced(topic: &str, bytes: u64, records: u64) {
    topic_handles(topic, |(b, r, _)| {
        b.inc_by(bytes);
        r.inc_by(records);
    });
}

pub fn fetched(topic: &str, bytes: u64) {
    if bytes > 0 {
        topic_handles(topic, |(_, _, o)| {
            o.inc_by(bytes);
        });
    }
}

/// This core's handles of the per-core families.
struct CoreHandles {
    fsync_seconds: Histogram,
    fsync_records: Histogram,
    cross_core: Counter,
    memory_waits: Counter,
    fetch_trimmed: Counter,
    fetch_sessionless: Counter,
    fetch_full: Counter,
    fetch_incremental: Counter,
    fetch_session_evictions: Counter,
    busy_poll_found: Counter,
    busy_poll_missed: Counter,
    recompressed_batches: Counter,
    recompressed_bytes: Counter,
    replicated_bytes: Counter,
    isr_shrinks: Counter,
    isr_expands: Counter,
}

fn core_handles<R>(f: impl FnOnce(&CoreHandles) -> R) -> R {
    CORE.with(|c| {
        let mut c = c.borrow_mut();
        let h = c.get_or_insert_with(|| {
            let l = CoreLabel { core: core_id() };
            let kind = |kind: &str| LONG.fetch_kinds.get_or_create(&CoreKind { core: l.core, kind: kind.to_string() }).clone();
            CoreHandles {
                fsync_seconds: LONG.fsync_seconds.get_or_create(&l).clone(),
                fsync_records: LONG.fsync_bytes.get_or_create(&l).clone(),
                cross_core: LONG.cross_core.get_or_create(&l).clone(),
                memory_waits: LONG.memory_waits.get_or_create(&l).clone(),
                fetch_trimmed: LONG.fetch_trimmed.get_or_create(&l).clone(),
                fetch_sessionless: kind("sessionless"),
                fetch_full: kind("full"),
                fetch_incremental: kind("incremental"),
                fetch_session_evictions: LONG.fetch_session_evictions.get_or_create(&l).clone(),
                busy_poll_found: LONG.busy_poll_found.get_or_create(&l).clone(),
                busy_poll_missed: LONG.busy_poll_missed.get_or_create(&l).clone(),
                recompressed_batches: LONG.recompressed_batches.get_or_create(&l).clone(),
                recompressed_bytes: LONG.recompressed_bytes.get_or_create(&l).clone(),
                replicated_bytes: LONG.replicated_bytes.get_or_create(&l).clone(),
                isr_shrinks: LONG.isr_shrinks.get_or_create(&l).clone(),
                isr_expands: LONG.isr_expands.get_or_create(&l).clone(),
            }
        });
        f(h)
    })
}

/// One fdatasync: how long it took and how many records it made durable.
pub fn fsync(seconds: f64, records: u64) {
    core_handles(|h| {
        h.fsync_seconds.observe(seconds);
        h.fsync_records.observe(records as f64);
    });
}

/// A produced batch of `bytes` was re-encoded into its topic's codec.
/// Bytes a follower appended from its leader.
pub fn replicated(_topic: &str, bytes: u64) {
    core_handles(|h| h.replicated_bytes.inc_by(bytes));
}

/// An ISR change a leader on this core proposed.
pub fn isr_change(shrink: bool) {
    core_handles(|h| if shrink { h.isr_shrinks.inc() } else { h.isr_expands.inc() });
}

pub fn recompressed(bytes: u64) {
    core_handles(|h| {
        h.recompressed_batches.inc();
        h.recompressed_bytes.inc_by(bytes);
    });
}

pub fn cross_core() {
    core_handles(|h| {
        h.cross_core.inc();
    });
}

pub fn connection_opened() {
    LONG.connections_opened.inc();
}

pub fn connection_refused() {
    LONG.connections_refused.inc();
}

/// A TLS handshake (`mechanism` "TLS") or SASL authentication ended: `outcome` is "ok",
/// "failed" or "timeout".
pub fn authentication(listener: &str, mechanism: &str, outcome: &str) {
    LONG.authentications
        .get_or_create(&AuthLabel { listener: listener.into(), mechanism: mechanism.into(), outcome: outcome.into() })
        .inc();
}

pub fn authorization_denied(resource: crate::server::acl::ResourceType, op: crate::server::acl::Operation) {
    LONG.denials
        .get_or_create(&DenialLabel { resource_type: format!("{resource:?}"), operation: format!("{op:?}") })
        .inc();
}

/// A response told its client to wait `ms` (a quota).
pub fn throttled(api: &str, ms: i64) {
    let label = ApiLabel { api: api.into() };
    LONG.throttled.get_or_create(&label).inc();
    LONG.throttled_ms.get_or_create(&label).inc_by(ms.max(0) as u64);
}

pub fn tls_reload(ok: bool) {
    LONG.tls_reloads.get_or_create(&Outcome { outcome: if ok { "ok" } else { "failed" }.into() }).inc();
}

pub fn memory_waited() {
    core_handles(|h| {
        h.memory_waits.inc();
    });
}

pub fn fetch_trimmed() {
    core_handles(|h| {
        h.fetch_trimmed.inc();
    });
}

/// How a Fetch was served (see `server::fetch_sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    Sessionless,
    Full,
    Incremental,
}

pub fn fetch_kind(kind: FetchKind) {
    core_handles(|h| {
        match kind {
            FetchKind::Sessionless => &h.fetch_sessionless,
            FetchKind::Full => &h.fetch_full,
            FetchKind::Incremental => &h.fetch_incremental,
        }
        .inc();
    });
}

pub fn fetch_session_evicted() {
    core_handles(|h| {
        h.fetch_session_evictions.inc();
    });
}

/// A busy poll of a connection ended: a request came (`found`) or the window ran out.
pub fn busy_poll(found: bool) {
    core_handles(|h| {
        if found {
            h.busy_poll_found.inc();
        } else {
            h.busy_poll_missed.inc();
        }
    });
}

/// One partition as its core last published it.
#[derive(Debug, Clone)]
pub struct PartitionStat {
    pub topic: String,
    pub partition: i32,
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
    pub segments: usize,
    pub disk_bytes: u64,
    pub cache_bytes: u64,
    /// The last stable offset (below the first open transaction, else the high watermark).
    pub last_stable: i64,
    /// A replicated partition's state (None: one replica).
    pub replication: Option<ReplicaStat>,
}

/// A replicated partition as this broker sees it (see `server::replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStat {
    /// This broker leads it (else follows).
    pub leader: bool,
    pub replicas: usize,
    pub isr: usize,
    /// As leader: the furthest follower's distance behind what is written here, in offsets,
    /// and the longest time since a follower was last caught up.
    pub lag_offsets: i64,
    pub lag_ms: i64,
}

/// What one core publishes each second.
#[derive(Debug, Clone, Default)]
pub struct CoreSnapshot {
    pub partitions: Vec<PartitionStat>,
    /// (group, topic, partition, committed offset) of the groups this core coordinates.
    pub committed: Vec<(String, String, i32, i64)>,
    pub groups: usize,
    /// Bytes the core's connections hold in requests and responses, now and at most since the
    /// last snapshot (`server::memory`).
    pub request_bytes: u64,
    pub request_bytes_peak: u64,
    /// File operations submitted to the core's io_uring rings and not yet completed, now and at
    /// most since the last snapshot.
    pub io_in_flight: u64,
    pub io_in_flight_peak: u64,
    /// Incremental fetch sessions in the core's cache, and their partitions together.
    pub fetch_sessions: usize,
    /// Core 0 in a cluster: partitions led by nobody, cluster-wide.
    pub offline_partitions: Option<usize>,
    pub fetch_session_partitions: usize,
    /// Transactions the core's coordinators have ongoing or being completed, and those
    /// committed, aborted (by the producer) and aborted at their timeout since start.
    pub txn_open: usize,
    pub txn_committed: u64,
    pub txn_aborted: u64,
    pub txn_timed_out: u64,
}

struct State {
    started: Instant,
    ready: AtomicBool,
    stopping: AtomicBool,
    open_connections: AtomicU64,
    cores: OnceLock<Vec<Mutex<CoreSnapshot>>>,
    status: OnceLock<StatusInfo>,
    /// The broker configs `/v1/config` shows, as they apply now (dynamic changes included).
    config: Mutex<Vec<(&'static str, String)>>,
    /// The metadata quorum, in a cluster (voters configured).
    controller: OnceLock<ControllerHandle>,
    /// In a cluster: the digest of the metadata image core 0 installed last (`/v1/metadata`).
    installed_metadata: Mutex<Option<serde_json::Value>>,
}

/// Fixed facts for `/v1/status` and `/v1/config`.
pub struct StatusInfo {
    pub node_id: i32,
    pub cores: usize,
    pub listen: String,
    pub data_dir: String,
}

static STATE: LazyLock<State> = LazyLock::new(|| State {
    started: Instant::now(),
    ready: AtomicBool::new(false),
    stopping: AtomicBool::new(false),
    open_connections: AtomicU64::new(0),
    cores: OnceLock::new(),
    status: OnceLock::new(),
    config: Mutex::new(Vec::new()),
    controller: OnceLock::new(),
    installed_metadata: Mutex::new(None),
});

/// In a cluster: the controller whose quorum and brokers `/v1/status` and `/metrics` show.
pub fn set_controller(handle: ControllerHandle) {
    let _ = STATE.controller.set(handle);
}

/// The quorum's gauges, when this node is in a cluster.
fn register_quorum(reg: &mut Registry) {
    let Some(c) = STATE.controller.get() else { return };
    let s = c.status();
    let (_, meta) = c.metadata();
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    let index = |i: Option<u64>| i.map_or(-1, |i| i as i64);
    reg.register("spate_quorum_leader_id", "Node id of the metadata quorum's leader as this node knows it; -1: none known", gauge(s.leader.map_or(-1, i64::from)));
    reg.register("spate_quorum_is_leader", "1 when this node leads the metadata quorum (it is the active controller)", gauge((s.role == Role::Leader) as i64));
    reg.register("spate_quorum_term", "The metadata quorum's Raft term (KRaft's epoch) as this node knows it", gauge(s.term as i64));
    reg.register("spate_quorum_committed_index", "Last metadata-log index known committed on this node; -1: none", gauge(index(s.committed)));
    reg.register("spate_quorum_applied_index", "Last metadata-log index applied on this node; -1: none", gauge(index(s.last_applied)));
    let lag = Family::<VoterLabel, Gauge>::default();
    let matched = Family::<VoterLabel, Gauge>::default();
    for v in &s.voters {
        let l = VoterLabel { voter: v.id.to_string() };
        if let Some(x) = v.lag {
            lag.get_or_create(&l).set(x as i64);
        }
        if let Some(x) = v.matched {
            matched.get_or_create(&l).set(x as i64);
        }
    }
    reg.register("spate_quorum_voter_lag", "Metadata-log entries the leader has that a voter is not known to have (on the leader only)", lag);
    reg.register("spate_quorum_voter_matched_index", "Last metadata-log index known in a voter's log (on the leader only)", matched);
    let brokers = Family::<BrokerState, Gauge>::default();
    for state in ["fenced", "unfenced"] {
        let n = meta.brokers.values().filter(|b| b.fenced == (state == "fenced")).count();
        brokers.get_or_create(&BrokerState { state: state.into() }).set(n as i64);
    }
    reg.register("spate_cluster_brokers", "Brokers registered in the cluster's metadata, by state: fenced (silent, shut down or not caught up) or unfenced", brokers);
    reg.register(
        "spate_cluster_unclean_leader_elections",
        "Leaders the cluster elected from outside their ISR (unclean.leader.election.enable), as this node's metadata counts them",
        gauge(meta.unclean_elections as i64),
    );
    reg.register("spate_cluster_partition_reassignments", "Partition reassignments in progress", gauge(meta.reassignments.len() as i64));
}

/// `/v1/status`'s `quorum` and `brokers`, when this node is in a cluster.
fn cluster_status() -> Option<(serde_json::Value, serde_json::Value)> {
    let c = STATE.controller.get()?;
    let quorum = serde_json::to_value(c.status()).unwrap_or_default();
    let (_, meta) = c.metadata();
    let brokers = meta
        .brokers
        .values()
        .map(|b| {
            serde_json::json!({
                "id": b.id,
                "listener": b.listeners.first(),
                "rack": b.rack,
                "fenced": b.fenced,
                "incarnation": b.incarnation.to_string(),
            })
        })
        .collect();
    Some((quorum, serde_json::Value::Array(brokers)))
}

/// In a cluster: the digest of the image this broker's cores now serve (core 0, after each
/// install).
pub fn set_installed_metadata(digest: serde_json::Value) {
    *STATE.installed_metadata.lock().expect("metadata lock") = Some(digest);
}

/// `/v1/metadata`: the image this broker serves and the controller thread's applied metadata,
/// each as a digest of one shape (`ClusterMetadata::digest`), so that a check can compare every
/// broker's image with the controller's at the same index.
fn metadata_digests() -> Option<serde_json::Value> {
    let c = STATE.controller.get()?;
    let installed = STATE.installed_metadata.lock().expect("metadata lock").clone();
    Some(serde_json::json!({ "installed": installed, "controller": c.metadata().1.digest() }))
}

/// The broker configs `/v1/config` shows: at start, and after each dynamic change.
pub fn set_config(entries: Vec<(&'static str, String)>) {
    *STATE.config.lock().expect("config lock") = entries;
}

/// Called once at start, before the cores run.
pub fn init(info: StatusInfo) {
    let _ = STATE.cores.set((0..info.cores).map(|_| Mutex::new(CoreSnapshot::default())).collect());
    let _ = STATE.status.set(info);
    LazyLock::force(&LONG);
}

/// Every core has recovered and the listeners accept clients.
pub fn set_ready() {
    STATE.ready.store(true, Ordering::Release);
}

/// Shutdown began: not ready any more (so a load balancer or orchestrator stops sending clients).
pub fn set_stopping() {
    STATE.stopping.store(true, Ordering::Release);
}

pub fn set_open_connections(n: usize) {
    STATE.open_connections.store(n as u64, Ordering::Relaxed);
}

pub fn publish_core(core: usize, snap: CoreSnapshot) {
    if let Some(slot) = STATE.cores.get().and_then(|c| c.get(core)) {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = snap;
    }
}

fn snapshots() -> Vec<CoreSnapshot> {
    STATE
        .cores
        .get()
        .map(|c| c.iter().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect())
        .unwrap_or_default()
}

/// The Prometheus text exposition (OpenMetrics): long-lived families plus gauges built now.
pub fn render() -> String {
    let mut reg = Registry::default();
    let snaps = snapshots();
    let p = |s: &PartitionStat| Partition { topic: s.topic.clone(), partition: s.partition.to_string() };
    let gauge_family = || Family::<Partition, Gauge>::default();
    let (leo, hw, start, segs, disk) = (gauge_family(), gauge_family(), gauge_family(), gauge_family(), gauge_family());
    let lso = gauge_family();
    let txn_open = Gauge::<i64>::default();
    let txn_ended = Family::<Outcome, Counter>::default();
    let per_core_parts = Family::<CoreLabel, Gauge>::default();
    let per_core_cache = Family::<CoreLabel, Gauge>::default();
    let per_core_groups = Family::<CoreLabel, Gauge>::default();
    let memory = Family::<CorePool, Gauge>::default();
    let memory_peak = Family::<CorePool, Gauge>::default();
    let io_now = Family::<CoreLabel, Gauge>::default();
    let io_peak = Family::<CoreLabel, Gauge>::default();
    let sessions = Family::<CoreLabel, Gauge>::default();
    let session_parts = Family::<CoreLabel, Gauge>::default();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let isr_size = Family::<Partition, Gauge>::default();
    let replicas = Family::<Partition, Gauge>::default();
    let under = Family::<Partition, Gauge>::default();
    let lag_offsets = Family::<Partition, Gauge>::default();
    let lag_seconds = Family::<Partition, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let (mut under_total, mut leading, mut following) = (0i64, 0i64, 0i64);
    let offline = Gauge::<i64>::default();
    for (core, snap) in snaps.iter().enumerate() {
        if let Some(n) = snap.offline_partitions {
            offline.set(n as i64);
        }
        for (s, r) in snap.partitions.iter().filter_map(|s| s.replication.map(|r| (s, r))) {
            if !r.leader {
                following += 1;
                continue;
            }
            leading += 1;
            under_total += (r.isr < r.replicas) as i64;
            isr_size.get_or_create(&p(s)).set(r.isr as i64);
            replicas.get_or_create(&p(s)).set(r.replicas as i64);
            under.get_or_create(&p(s)).set((r.isr < r.replicas) as i64);
            lag_offsets.get_or_create(&p(s)).set(r.lag_offsets);
            lag_seconds.get_or_create(&p(s)).set(r.lag_ms as f64 / 1000.0);
        }
        let cl = CoreLabel { core: core as u32 };
        per_core_parts.get_or_create(&cl).set(snap.partitions.len() as i64);
        per_core_cache.get_or_create(&cl).set(snap.partitions.iter().map(|s| s.cache_bytes).sum::<u64>() as i64);
        per_core_groups.get_or_create(&cl).set(snap.groups as i64);
        txn_open.inc_by(snap.txn_open as i64);
        for (outcome, n) in [("committed", snap.txn_committed), ("aborted", snap.txn_aborted), ("timed_out", snap.txn_timed_out)] {
            txn_ended.get_or_create(&Outcome { outcome: outcome.to_string() }).inc_by(n);
        }
        let pool = |pool: &str| CorePool { core: core as u32, pool: pool.to_string() };
        let cache = snap.partitions.iter().map(|s| s.cache_bytes).sum::<u64>() as i64;
        memory.get_or_create(&pool("cache")).set(cache);
        memory.get_or_create(&pool("requests")).set(snap.request_bytes as i64);
        memory_peak.get_or_create(&pool("requests")).set(snap.request_bytes_peak as i64);
        io_now.get_or_create(&cl).set(snap.io_in_flight as i64);
        io_peak.get_or_create(&cl).set(snap.io_in_flight_peak as i64);
        sessions.get_or_create(&cl).set(snap.fetch_sessions as i64);
        session_parts.get_or_create(&cl).set(snap.fetch_session_partitions as i64);
        for s in &snap.partitions {
            leo.get_or_create(&p(s)).set(s.log_end);
            hw.get_or_create(&p(s)).set(s.high_watermark);
            lso.get_or_create(&p(s)).set(s.last_stable);
            start.get_or_create(&p(s)).set(s.log_start);
            segs.get_or_create(&p(s)).set(s.segments as i64);
            disk.get_or_create(&p(s)).set(s.disk_bytes as i64);
            // Lag is counted to where a read_committed consumer can go.
            ends.insert((s.topic.clone(), s.partition), s.last_stable);
        }
    }
    let lag = Family::<GroupPartition, Gauge>::default();
    let committed = Family::<GroupPartition, Gauge>::default();
    for snap in &snaps {
        for (g, t, part, off) in &snap.committed {
            let l = GroupPartition { group: g.clone(), topic: t.clone(), partition: part.to_string() };
            committed.get_or_create(&l).set(*off);
            if let Some(end) = ends.get(&(t.clone(), *part)) {
                lag.get_or_create(&l).set((end - off).max(0));
            }
        }
    }
    let connections = Gauge::<i64>::default();
    connections.set(STATE.open_connections.load(Ordering::Relaxed) as i64);
    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(STATE.started.elapsed().as_secs_f64());
    let ready = Gauge::<i64>::default();
    ready.set(STATE.ready.load(Ordering::Acquire) as i64);
    let build = Family::<Version, Gauge>::default();
    build.get_or_create(&Version { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
    reg.register("spate_partition_log_end_offset", "Next offset to be assigned", leo);
    reg.register("spate_partition_high_watermark", "End of what consumers may read", hw);
    reg.register("spate_partition_last_stable_offset", "End of what read_committed consumers may read (the first offset of the oldest open transaction, else the high watermark)", lso);
    reg.register("spate_transactions_open", "Transactions ongoing or being completed at this broker's transaction coordinators", txn_open);
    reg.register("spate_transactions_ended", "Transactions ended since start, by outcome: committed, aborted (by the producer or a new incarnation), timed_out (aborted by the coordinator)", txn_ended);
    reg.register("spate_partition_log_start_offset", "First offset in the log", start);
    reg.register("spate_partition_segments", "Segment files", segs);
    reg.register("spate_partition_in_sync_replicas", "ISR size of a replicated partition this broker leads", isr_size);
    reg.register("spate_partition_replicas", "Replicas of a replicated partition this broker leads", replicas);
    reg.register("spate_partition_under_replicated", "1 while a partition this broker leads has fewer in-sync replicas than replicas", under);
    reg.register("spate_partition_replica_max_lag_offsets", "How far the furthest follower of a partition this broker leads is behind its log end", lag_offsets);
    reg.register("spate_partition_replica_max_lag_seconds", "Longest time since a follower of a partition this broker leads was caught up with its log end", lag_seconds);
    let (u, l, f) = (Gauge::<i64>::default(), Gauge::<i64>::default(), Gauge::<i64>::default());
    u.set(under_total);
    l.set(leading);
    f.set(following);
    reg.register("spate_under_replicated_partitions", "Partitions this broker leads whose ISR is smaller than their replicas (Kafka's UnderReplicatedPartitions)", u);
    reg.register("spate_replicated_partitions_leading", "Replicated partitions this broker leads", l);
    reg.register("spate_replicated_partitions_following", "Replicated partitions this broker follows", f);
    reg.register("spate_offline_partitions", "Partitions of the cluster led by nobody, as this broker's metadata shows (Kafka's OfflinePartitionsCount)", offline);
    reg.register("spate_partition_disk_bytes", "Bytes of segment files", disk);
    reg.register("spate_core_partitions", "Partitions owned, by core", per_core_parts);
    reg.register("spate_core_cache_bytes", "Bytes of recent batches kept in memory, by core", per_core_cache);
    reg.register("spate_core_groups", "Consumer groups coordinated, by core", per_core_groups);
    reg.register(
        "spate_core_memory_bytes",
        "Bytes held, by core and pool: cache (recent batches kept for tailing consumers), requests (request frames and responses held by connections)",
        memory,
    );
    reg.register("spate_core_memory_peak_bytes", "Most bytes held at once in the last second, by core and pool", memory_peak);
    reg.register(
        "spate_core_io_in_flight",
        "File reads, writes and fdatasyncs submitted to the core's io_uring rings and not yet completed (the rings' queue depth)",
        io_now,
    );
    reg.register("spate_core_io_in_flight_peak", "Most file operations in flight at once in the last second, by core", io_peak);
    reg.register(
        "spate_core_fetch_sessions",
        "Incremental fetch sessions open, by core (each core keeps its share of max_incremental_fetch_session_cache_slots)",
        sessions,
    );
    reg.register("spate_core_fetch_session_partitions", "Partitions held by the core's incremental fetch sessions together", session_parts);
    let rss = Gauge::<i64>::default();
    rss.set(crate::io::fs::resident_bytes().unwrap_or(0) as i64);
    reg.register("spate_process_resident_memory_bytes", "Resident memory of the whole process (all pools, code, allocator slack)", rss);
    reg.register("spate_group_committed_offset", "Committed offset, by group and partition", committed);
    reg.register("spate_group_lag", "Last stable offset (the high watermark without open transactions) minus committed offset, by group and partition", lag);
    reg.register("spate_connections", "Open client connections", connections);
    reg.register("spate_uptime_seconds", "Seconds since the process started", uptime);
    reg.register("spate_ready", "1 once every core recovered and clients are served", ready);
    reg.register("spate_build_info", "Version of the running broker", build);
    register_quorum(&mut reg);
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &LONG.registry).expect("writing to a String");
    prometheus_client::encoding::text::encode_registry(&mut out, &reg).expect("writing to a String");
    prometheus_client::encoding::text::encode_eof(&mut out).expect("writing to a String");
    to_prometheus_text(&out)
}

/// OpenMetrics text (what prometheus-client writes) to the Prometheus text format 0.0.4, which
/// every scraper and `promtool check metrics` read: counters' HELP and TYPE name the `_total`
/// series, and the `# EOF` and `# UNIT` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The admin endpoints.
pub fn route(path: &str) -> Response {
    let stopping = STATE.stopping.load(Ordering::Acquire);
    let ready = STATE.ready.load(Ordering::Acquire) && !stopping;
    let text = |status, body: &str| Response { status, content_type: "text/plain; charset=utf-8", body: body.to_string() };
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render(),
        },
        "/v1/health" => text(200, "ok\n"),
        "/v1/ready" if ready => text(200, "ready\n"),
        "/v1/ready" if stopping => text(503, "shutting down\n"),
        "/v1/ready" => text(503, "recovering\n"),
        "/v1/status" => {
            let snaps = snapshots();
            let info = STATE.status.get();
            let topics: std::collections::BTreeSet<&str> =
                snaps.iter().flat_map(|s| s.partitions.iter().map(|p| p.topic.as_str())).collect();
            let mut body = serde_json::json!({
                "node_id": info.map(|i| i.node_id),
                "version": env!("CARGO_PKG_VERSION"),
                "ready": ready,
                "uptime_seconds": STATE.started.elapsed().as_secs_f64(),
                "cores": info.map(|i| i.cores),
                "listen": info.map(|i| i.listen.clone()),
                "data_dir": info.map(|i| i.data_dir.clone()),
                "partitions_per_core": snaps.iter().map(|s| s.partitions.len()).collect::<Vec<_>>(),
                "topics": topics,
                "connections": STATE.open_connections.load(Ordering::Relaxed),
            });
            let replicated: Vec<(&PartitionStat, ReplicaStat)> =
                snaps.iter().flat_map(|s| s.partitions.iter().filter_map(|p| p.replication.map(|r| (p, r)))).collect();
            if !replicated.is_empty() || snaps.iter().any(|s| s.offline_partitions.is_some()) {
                let under: Vec<serde_json::Value> = replicated
                    .iter()
                    .filter(|(_, r)| r.leader && r.isr < r.replicas)
                    .map(|(p, r)| serde_json::json!({"topic": p.topic, "partition": p.partition, "isr": r.isr, "replicas": r.replicas, "lag_offsets": r.lag_offsets, "lag_ms": r.lag_ms}))
                    .collect();
                let replication = serde_json::json!({
                    "leading": replicated.iter().filter(|(_, r)| r.leader).count(),
                    "following": replicated.iter().filter(|(_, r)| !r.leader).count(),
                    "under_replicated": under.len(),
                    "under_replicated_partitions": under,
                    "max_lag_offsets": replicated.iter().map(|(_, r)| r.lag_offsets).max().unwrap_or(0),
                    "max_lag_ms": replicated.iter().map(|(_, r)| r.lag_ms).max().unwrap_or(0),
                    "offline_partitions": snaps.iter().find_map(|s| s.offline_partitions),
                });
                if let Some(map) = body.as_object_mut() {
                    map.insert("replication".into(), replication);
                }
            }
            if let (Some((quorum, brokers)), Some(map)) = (cluster_status(), body.as_object_mut()) {
                map.insert("quorum".into(), quorum);
                map.insert("brokers".into(), brokers);
            }
            Response { status: 200, content_type: "application/json", body: format!("{body:#}\n") }
        }
        "/v1/metadata" => match metadata_digests() {
            Some(body) => Response {
                status: 200,
                content_type: "application/json",
                body: format!("{body:#}\n"),
            },
            None => text(
                404,
                "not in a cluster: /v1/metadata shows a cluster's metadata\n",
            ),
        },
        "/v1/config" => {
            let entries: Vec<String> = STATE
                .config
                .lock()
                .expect("config lock")
                .iter()
                .map(|(k, v)| format!("  {}: {}", json_escape(k), json_escape(v)))
                .collect();
            Response { status: 200, content_type: "application/json", body: format!("{{\n{}\n}}\n", entries.join(",\n")) }
        }
        _ => text(404, "not found: try /metrics, /v1/health, /v1/ready, /v1/status, /v1/config\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_flips_and_the_exposition_is_prometheus_text() {
        assert_eq!(route("/v1/ready").status, 503, "not ready before every core recovered");
        assert_eq!(route("/v1/health").status, 200, "alive all the same");
        set_core(3);
        request(0, "Produce", 0.002);
        produced("t", 100, 2);
        set_ready();
        assert_eq!(route("/v1/ready").status, 200);
        let m = route("/metrics").body;
        assert!(m.contains("# TYPE spate_requests_total counter\n"), "{m}");
        assert!(m.contains("spate_requests_total{api=\"Produce\",core=\"3\"} 1\n"), "{m}");
        assert!(m.contains("spate_produced_records_total{topic=\"t\",core=\"3\"} 2\n"), "{m}");
        assert!(!m.contains("# EOF") && !m.contains("# UNIT"), "{m}");
        // A single node (no controller set) shows no quorum and no brokers.
        assert!(!m.contains("spate_quorum") && !m.contains("spate_cluster_brokers"), "{m}");
        let status = route("/v1/status").body;
        assert!(status.contains("\"node_id\"") && !status.contains("\"quorum\"") && !status.contains("\"brokers\""), "{status}");
        set_stopping();
        let r = route("/v1/ready");
        assert_eq!((r.status, r.body.as_str()), (503, "shutting down\n"), "not ready once shutdown began");
        assert_eq!(route("/v1/health").status, 200);
    }
}
