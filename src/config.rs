//! Every setting and every limit of the broker, in one place.
//!
//! Settings come from three layers, later ones winning: the built-in defaults below, a TOML file
//! (`--config`), then `SPATE_*` environment variables and command-line flags (clap merges those two).
//! Limits that are not user settings are the `const`s in [`limits`], named with their unit last.
//!
//! Topic-level settings (`segment.bytes`, `flush.messages`, ...) use Kafka's names; each has a
//! broker-wide default here and may be overridden per topic at CreateTopics time ([`TopicConfig`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Fixed bounds. Changing one is a code change, reviewed with the memory sums it affects.
pub mod limits {
    /// Largest request frame accepted from a client (Kafka's `socket.request.max.bytes`). A frame
    /// announcing more is refused before anything is allocated for it, and the connection closed.
    pub const REQUEST_FRAME_MAX_BYTES: usize = 100 * 1024 * 1024;
    /// Requests a single connection may have in flight (decoded, not yet answered). The reader stops
    /// reading the socket at this depth, so a pipelining client is slowed by TCP backpressure.
    pub const CONNECTION_IN_FLIGHT_MAX: usize = 128;
    /// Bytes one connection may hold in requests read but not yet answered plus responses not
    /// yet written (a Fetch counts as [`FETCH_RESPONSE_MAX_BYTES`] from the moment it is read).
    /// The reader stops reading at this budget, so a client that never reads its responses
    /// holds at most this much broker memory (one oversized item may exceed it when nothing else
    /// is in flight).
    pub const CONNECTION_BUFFER_MAX_BYTES: usize = 128 * 1024 * 1024;
    /// Largest Fetch response (Kafka's broker `fetch.max.bytes` default, 55 MiB), plus one batch
    /// per partition since a read always returns a whole batch.
    pub const FETCH_RESPONSE_MAX_BYTES: usize = 55 * 1024 * 1024;
    /// Depth of each cross-core channel (one per ordered pair of cores).
    pub const MESH_CHANNEL_DEPTH: usize = 1024;
    /// Bytes of the newest batches a partition keeps in memory to serve tailing consumers.
    /// Not yet capped per core: a core with P partitions may hold P times this (issue #4 adds a
    /// per-core budget).
    pub const PARTITION_CACHE_MAX_BYTES: usize = 1024 * 1024;
    /// Longest a Fetch may wait for data, whatever `max.wait.ms` the client asks for.
    pub const FETCH_WAIT_MAX_MS: i32 = 60_000;
    /// O_DIRECT alignment of segment writes; the partial tail page is rewritten on the next append.
    pub const DMA_ALIGNMENT_BYTES: usize = 4096;
    /// Largest single read from a segment file when serving a fetch.
    pub const SEGMENT_READ_MAX_BYTES: usize = 8 * 1024 * 1024;
    /// Longest topic name Kafka allows.
    pub const TOPIC_NAME_MAX_LEN: usize = 249;
    /// Most partitions one topic may have.
    pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;
    /// The `spate group` client: longest wait for a TCP connection to a broker.
    pub const CLIENT_CONNECT_TIMEOUT_MS: u64 = 10_000;
    /// The `spate group` client: longest wait for a request to be sent or its response to arrive.
    pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 30_000;
    /// The `spate group` client: largest response frame accepted from a broker; a frame announcing
    /// more is refused before anything is allocated for it.
    pub const CLIENT_RESPONSE_FRAME_MAX_BYTES: usize = 100 * 1024 * 1024;

    const _: () = assert!(SEGMENT_READ_MAX_BYTES % DMA_ALIGNMENT_BYTES == 0);
    const _: () = assert!(REQUEST_FRAME_MAX_BYTES <= CONNECTION_BUFFER_MAX_BYTES);
    const _: () = assert!(FETCH_RESPONSE_MAX_BYTES <= CONNECTION_BUFFER_MAX_BYTES);
    const _: () = assert!(PARTITION_CACHE_MAX_BYTES <= REQUEST_FRAME_MAX_BYTES);
}

/// The broker's settings after all layers are merged. Owned by no core: built once in `main`,
/// then cloned (read-only) into every shard.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every core listens on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// host:port given to clients in Metadata; defaults to `listen`.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Directory holding topics, segments and metadata.
    pub data_dir: PathBuf,
    /// Number of shards (one pinned executor each).
    pub cores: usize,
    pub node_id: i32,
    /// Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of an auto-created topic or a CreateTopics with -1.
    pub num_partitions: i32,
    /// Broker-wide defaults of the topic-level settings.
    pub topic_defaults: TopicDefaults,
    /// Consumer-group settings (Kafka's `group.*` keys).
    pub groups: crate::coordinator::group::GroupConfig,
    /// Kafka's `log.cleaner.backoff.ms`: how often compacted topics are looked at.
    pub log_cleaner_backoff_ms: i64,
    /// Kafka's `max.connections`: open client connections allowed, all cores together.
    pub max_connections: usize,
    /// Kafka's `connections.max.idle.ms`.
    pub connections_max_idle_ms: i64,
    /// The admin HTTP listener (`/metrics`, `/v1/...`).
    pub admin_listen: SocketAddr,
}

/// Broker-wide defaults for topic-level settings (Kafka's `log.*` broker keys).
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub message_max_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: i64,
    pub message_timestamp_type: String,
    pub cleanup_policy: String,
    pub delete_retention_ms: i64,
}

/// The flags of `spate serve`. Each is also read from `SPATE_<NAME>` and from the TOML file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "SPATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for Kafka clients [default: 127.0.0.1:9092].
    #[arg(long, env = "SPATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// host:port advertised to clients in Metadata [default: the listen address].
    #[arg(long, env = "SPATE_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Data directory [default: ./spate-data].
    #[arg(long, env = "SPATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of cores (shards) to run on [default: all online cores].
    #[arg(long, env = "SPATE_CORES")]
    pub cores: Option<usize>,
    /// Node id reported in Metadata [default: 0].
    #[arg(long, env = "SPATE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Create a topic when a client asks for metadata of one that does not exist [default: true].
    #[arg(long, env = "SPATE_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1].
    #[arg(long, env = "SPATE_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Largest record batch accepted, bytes (Kafka `message.max.bytes`) [default: 1048588].
    #[arg(long, env = "SPATE_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<i64>,
    /// Segment size before a roll, bytes (Kafka `log.segment.bytes`) [default: 1073741824].
    #[arg(long, env = "SPATE_SEGMENT_BYTES")]
    pub segment_bytes: Option<i64>,
    /// Segment age before a roll, ms (Kafka `log.roll.ms`) [default: 604800000].
    #[arg(long, env = "SPATE_SEGMENT_MS")]
    pub segment_ms: Option<i64>,
    /// fdatasync after this many records; 1 means acks=all waits for fdatasync (Kafka
    /// `log.flush.interval.messages`) [default: 1].
    #[arg(long, env = "SPATE_FLUSH_MESSAGES")]
    pub flush_messages: Option<i64>,
    /// fdatasync at least this often when flush_messages > 1, ms (Kafka `log.flush.interval.ms`)
    /// [default: 9223372036854775807, i.e. never by time].
    #[arg(long, env = "SPATE_FLUSH_MS")]
    pub flush_ms: Option<i64>,
    /// How long an empty consumer group waits for more members before its first rebalance, ms
    /// (Kafka `group.initial.rebalance.delay.ms`) [default: 3000].
    #[arg(long, env = "SPATE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// Smallest session timeout a consumer may ask for, ms (`group.min.session.timeout.ms`)
    /// [default: 6000].
    #[arg(long, env = "SPATE_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a consumer may ask for, ms (`group.max.session.timeout.ms`)
    /// [default: 1800000].
    #[arg(long, env = "SPATE_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// How long committed offsets outlive an empty group, minutes (Kafka
    /// `offsets.retention.minutes`) [default: 10080, 7 days].
    #[arg(long, env = "SPATE_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// How often expired committed offsets are looked for, ms (Kafka
    /// `offsets.retention.check.interval.ms`) [default: 600000].
    #[arg(long, env = "SPATE_OFFSETS_RETENTION_CHECK_INTERVAL_MS")]
    pub offsets_retention_check_interval_ms: Option<i64>,
    /// How often compacted topics (`cleanup.policy=compact`) are looked at for closed segments to
    /// clean, ms (Kafka `log.cleaner.backoff.ms`) [default: 15000].
    #[arg(long, env = "SPATE_LOG_CLEANER_BACKOFF_MS")]
    pub log_cleaner_backoff_ms: Option<i64>,
    /// Session timeout of members using the KIP-848 consumer protocol, ms (Kafka
    /// `group.consumer.session.timeout.ms`) [default: 45000].
    #[arg(long, env = "SPATE_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Heartbeat interval told to KIP-848 consumer-protocol members, ms (Kafka
    /// `group.consumer.heartbeat.interval.ms`) [default: 5000].
    #[arg(long, env = "SPATE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Open client connections allowed, all cores together; beyond it new connections are closed
    /// at once (Kafka `max.connections`) [default: 10000].
    #[arg(long, env = "SPATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A connection with no request in flight that sends nothing for this long is closed, ms
    /// (Kafka `connections.max.idle.ms`) [default: 600000].
    #[arg(long, env = "SPATE_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<i64>,
    /// Address of the admin HTTP listener: /metrics (Prometheus), /v1/health, /v1/ready,
    /// /v1/status, /v1/config [default: 127.0.0.1:9644].
    #[arg(long, env = "SPATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
}

/// The same settings as [`ServeArgs`], as read from the TOML file. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    advertised_listener: Option<String>,
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    node_id: Option<i32>,
    auto_create_topics: Option<bool>,
    num_partitions: Option<i32>,
    message_max_bytes: Option<i64>,
    segment_bytes: Option<i64>,
    segment_ms: Option<i64>,
    flush_messages: Option<i64>,
    flush_ms: Option<i64>,
    group_initial_rebalance_delay_ms: Option<i64>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    offsets_retention_minutes: Option<i64>,
    offsets_retention_check_interval_ms: Option<i64>,
    log_cleaner_backoff_ms: Option<i64>,
    group_consumer_session_timeout_ms: Option<i32>,
    group_consumer_heartbeat_interval_ms: Option<i32>,
    max_connections: Option<usize>,
    connections_max_idle_ms: Option<i64>,
    admin_listen: Option<SocketAddr>,
}

impl Config {
    /// Merges defaults, the TOML file named by `--config`, and flags/env, then checks the values.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Config> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = crate::io::fs::read_to_string_sync(path)
                    .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?
                    .ok_or_else(|| anyhow::anyhow!("config file {} does not exist", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:9092".parse().expect("literal address"));
        let advertised = args.advertised_listener.clone().or(file.advertised_listener);
        let (advertised_host, advertised_port) = match advertised {
            Some(s) => parse_host_port(&s)?,
            None => (listen.ip().to_string(), listen.port()),
        };
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cores = args.cores.or(file.cores).unwrap_or(online);
        anyhow::ensure!(cores >= 1, "cores: must be at least 1");
        anyhow::ensure!(cores <= online, "cores: {cores} asked for but only {online} online");
        let num_partitions = args.num_partitions.or(file.num_partitions).unwrap_or(1);
        anyhow::ensure!(
            (1..=limits::TOPIC_PARTITIONS_MAX).contains(&num_partitions),
            "num_partitions: must be 1..={}",
            limits::TOPIC_PARTITIONS_MAX
        );
        let topic_defaults = TopicDefaults {
            message_max_bytes: args.message_max_bytes.or(file.message_max_bytes).unwrap_or(1_048_588),
            segment_bytes: args.segment_bytes.or(file.segment_bytes).unwrap_or(1 << 30),
            segment_ms: args.segment_ms.or(file.segment_ms).unwrap_or(7 * 24 * 3600 * 1000),
            flush_messages: args.flush_messages.or(file.flush_messages).unwrap_or(1),
            flush_ms: args.flush_ms.or(file.flush_ms).unwrap_or(i64::MAX),
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            message_timestamp_type: "CreateTime".into(),
            cleanup_policy: "delete".into(),
            delete_retention_ms: 24 * 3600 * 1000,
        };
        // Validate the defaults with the same rules as per-topic overrides.
        TopicConfig::resolve(&topic_defaults, &BTreeMap::new())
            .map_err(|e| anyhow::anyhow!("broker topic defaults: {e}"))?;
        let groups = crate::coordinator::group::GroupConfig {
            initial_rebalance_delay_ms: args
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(3000),
            min_session_timeout_ms: args.group_min_session_timeout_ms.or(file.group_min_session_timeout_ms).unwrap_or(6000),
            max_session_timeout_ms: args
                .group_max_session_timeout_ms
                .or(file.group_max_session_timeout_ms)
                .unwrap_or(1_800_000),
            offsets_retention_ms: args
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes)
                .unwrap_or(10080)
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: args
                .offsets_retention_check_interval_ms
                .or(file.offsets_retention_check_interval_ms)
                .unwrap_or(600_000),
            consumer_session_timeout_ms: args
                .group_consumer_session_timeout_ms
                .or(file.group_consumer_session_timeout_ms)
                .unwrap_or(45_000),
            consumer_heartbeat_interval_ms: args
                .group_consumer_heartbeat_interval_ms
                .or(file.group_consumer_heartbeat_interval_ms)
                .unwrap_or(5_000),
        };
        anyhow::ensure!(
            0 < groups.consumer_heartbeat_interval_ms && groups.consumer_heartbeat_interval_ms < groups.consumer_session_timeout_ms,
            "group_consumer_heartbeat_interval_ms must be positive and below group_consumer_session_timeout_ms"
        );
        anyhow::ensure!(groups.offsets_retention_ms >= 60_000, "offsets_retention_minutes: must be at least 1");
        anyhow::ensure!(
            groups.offsets_retention_check_interval_ms >= 1,
            "offsets_retention_check_interval_ms: must be at least 1"
        );
        anyhow::ensure!(groups.initial_rebalance_delay_ms >= 0, "group_initial_rebalance_delay_ms: must be >= 0");
        anyhow::ensure!(
            0 < groups.min_session_timeout_ms && groups.min_session_timeout_ms <= groups.max_session_timeout_ms,
            "group_min_session_timeout_ms must be positive and at most group_max_session_timeout_ms"
        );
        let log_cleaner_backoff_ms = args.log_cleaner_backoff_ms.or(file.log_cleaner_backoff_ms).unwrap_or(15_000);
        anyhow::ensure!(log_cleaner_backoff_ms >= 1, "log_cleaner_backoff_ms: must be at least 1");
        let max_connections = args.max_connections.or(file.max_connections).unwrap_or(10_000);
        anyhow::ensure!(max_connections >= 1, "max_connections: must be at least 1");
        let connections_max_idle_ms = args.connections_max_idle_ms.or(file.connections_max_idle_ms).unwrap_or(600_000);
        anyhow::ensure!(connections_max_idle_ms >= 1, "connections_max_idle_ms: must be at least 1");
        Ok(Config {
            groups,
            log_cleaner_backoff_ms,
            max_connections,
            connections_max_idle_ms,
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| "127.0.0.1:9644".parse().expect("literal address")),
            listen,
            advertised_host,
            advertised_port,
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| "spate-data".into()),
            cores,
            node_id: args.node_id.or(file.node_id).unwrap_or(0),
            auto_create_topics: args.auto_create_topics.or(file.auto_create_topics).unwrap_or(true),
            num_partitions,
            topic_defaults,
        })
    }

    /// Broker settings as Kafka names them, for DescribeConfigs on the broker resource.
    pub fn broker_entries(&self) -> Vec<(&'static str, String)> {
        let d = &self.topic_defaults;
        vec![
            ("broker.id", self.node_id.to_string()),
            ("node.id", self.node_id.to_string()),
            ("advertised.listeners", format!("PLAINTEXT://{}:{}", self.advertised_host, self.advertised_port)),
            ("listeners", format!("PLAINTEXT://{}", self.listen)),
            ("log.dirs", self.data_dir.display().to_string()),
            ("auto.create.topics.enable", self.auto_create_topics.to_string()),
            ("num.partitions", self.num_partitions.to_string()),
            ("default.replication.factor", "1".into()),
            ("message.max.bytes", d.message_max_bytes.to_string()),
            ("log.segment.bytes", d.segment_bytes.to_string()),
            ("log.roll.ms", d.segment_ms.to_string()),
            ("log.flush.interval.messages", d.flush_messages.to_string()),
            ("log.flush.interval.ms", d.flush_ms.to_string()),
            ("log.retention.ms", d.retention_ms.to_string()),
            ("log.retention.bytes", d.retention_bytes.to_string()),
            ("log.index.interval.bytes", d.index_interval_bytes.to_string()),
            ("log.message.timestamp.type", d.message_timestamp_type.clone()),
            ("log.cleanup.policy", d.cleanup_policy.clone()),
            ("log.cleaner.delete.retention.ms", d.delete_retention_ms.to_string()),
            ("log.cleaner.backoff.ms", self.log_cleaner_backoff_ms.to_string()),
            ("socket.request.max.bytes", limits::REQUEST_FRAME_MAX_BYTES.to_string()),
            ("max.connections", self.max_connections.to_string()),
            ("connections.max.idle.ms", self.connections_max_idle_ms.to_string()),
            ("fetch.max.bytes", limits::FETCH_RESPONSE_MAX_BYTES.to_string()),
            ("group.initial.rebalance.delay.ms", self.groups.initial_rebalance_delay_ms.to_string()),
            ("group.min.session.timeout.ms", self.groups.min_session_timeout_ms.to_string()),
            ("group.max.session.timeout.ms", self.groups.max_session_timeout_ms.to_string()),
            ("offsets.retention.minutes", (self.groups.offsets_retention_ms / 60_000).to_string()),
            ("offsets.retention.check.interval.ms", self.groups.offsets_retention_check_interval_ms.to_string()),
            ("offsets.topic.num.partitions", "50".into()),
            ("group.consumer.session.timeout.ms", self.groups.consumer_session_timeout_ms.to_string()),
            ("group.consumer.heartbeat.interval.ms", self.groups.consumer_heartbeat_interval_ms.to_string()),
            ("group.coordinator.rebalance.protocols", "classic,consumer".into()),
        ]
    }
}

fn parse_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("advertised_listener: expected host:port, got {s:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("advertised_listener: bad port in {s:?}"))?;
    anyhow::ensure!(!host.is_empty(), "advertised_listener: empty host in {s:?}");
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// How record timestamps are set (Kafka `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A topic's effective settings: broker defaults with the topic's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub message_max_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: i64,
    pub timestamp_type: TimestampType,
    pub cleanup_policy: String,
    /// `delete.retention.ms`: how long compaction keeps tombstones.
    pub delete_retention_ms: i64,
}

/// The topic-level keys Spate knows, as Kafka names them. Any other key is INVALID_CONFIG.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

impl TopicConfig {
    /// Applies `overrides` (Kafka key -> value) to the broker defaults, refusing unknown keys and
    /// bad values with a message that names the key.
    pub fn resolve(d: &TopicDefaults, overrides: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        let mut c = TopicConfig {
            message_max_bytes: d.message_max_bytes,
            segment_bytes: d.segment_bytes,
            segment_ms: d.segment_ms,
            flush_messages: d.flush_messages,
            flush_ms: d.flush_ms,
            retention_ms: d.retention_ms,
            retention_bytes: d.retention_bytes,
            index_interval_bytes: d.index_interval_bytes,
            timestamp_type: parse_timestamp_type(&d.message_timestamp_type)?,
            cleanup_policy: d.cleanup_policy.clone(),
            delete_retention_ms: d.delete_retention_ms,
        };
        for (k, v) in overrides {
            let int = |min: i64| -> Result<i64, String> {
                let n: i64 = v.trim().parse().map_err(|_| format!("{k}: {v:?} is not an integer"))?;
                if n < min {
                    return Err(format!("{k}: {n} is below the minimum {min}"));
                }
                Ok(n)
            };
            match k.as_str() {
                "cleanup.policy" => {
                    for p in v.split(',') {
                        if !matches!(p.trim(), "delete" | "compact") {
                            return Err(format!("{k}: {v:?} is not delete and/or compact"));
                        }
                    }
                    c.cleanup_policy = v.clone();
                }
                "delete.retention.ms" => c.delete_retention_ms = int(0)?,
                "flush.messages" => c.flush_messages = int(1)?,
                "flush.ms" => c.flush_ms = int(0)?,
                "index.interval.bytes" => c.index_interval_bytes = int(0)?,
                "max.message.bytes" => c.message_max_bytes = int(0)?,
                "message.timestamp.type" => c.timestamp_type = parse_timestamp_type(v)?,
                "retention.bytes" => c.retention_bytes = int(-1)?,
                "retention.ms" => c.retention_ms = int(-1)?,
                "segment.bytes" => c.segment_bytes = int(14)?,
                "segment.ms" => c.segment_ms = int(1)?,
                _ => return Err(format!("unknown topic config {k:?}")),
            }
        }
        if c.segment_bytes > u32::MAX as i64 {
            return Err(format!("segment.bytes: {} is above the maximum {}", c.segment_bytes, u32::MAX));
        }
        Ok(c)
    }

    /// Every key with its effective value, for DescribeConfigs.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cleanup.policy", self.cleanup_policy.clone()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("flush.messages", self.flush_messages.to_string()),
            ("flush.ms", self.flush_ms.to_string()),
            ("index.interval.bytes", self.index_interval_bytes.to_string()),
            ("max.message.bytes", self.message_max_bytes.to_string()),
            (
                "message.timestamp.type",
                match self.timestamp_type {
                    TimestampType::CreateTime => "CreateTime".into(),
                    TimestampType::LogAppendTime => "LogAppendTime".into(),
                },
            ),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
        ]
    }

    /// Whether acks=all must wait for fdatasync (the durable default).
    pub fn sync_on_ack(&self) -> bool {
        self.flush_messages <= 1
    }
}

fn parse_timestamp_type(v: &str) -> Result<TimestampType, String> {
    match v {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(format!("message.timestamp.type: {v:?} is not CreateTime or LogAppendTime")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicDefaults {
        Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).unwrap().topic_defaults
    }

    #[test]
    fn overrides_apply_and_bad_values_name_the_key() {
        let d = defaults();
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "1048576".to_string());
        o.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        let c = TopicConfig::resolve(&d, &o).unwrap();
        assert_eq!(c.segment_bytes, 1_048_576);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        o.insert("segment.bytes".to_string(), "abc".to_string());
        assert!(TopicConfig::resolve(&d, &o).unwrap_err().contains("segment.bytes"));
        let mut o = BTreeMap::new();
        o.insert("no.such.key".to_string(), "1".to_string());
        assert!(TopicConfig::resolve(&d, &o).unwrap_err().contains("no.such.key"));
    }

    #[test]
    fn toml_file_refuses_unknown_keys() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }

    #[test]
    fn advertised_listener_parses() {
        assert_eq!(parse_host_port("example:9093").unwrap(), ("example".to_string(), 9093));
        assert!(parse_host_port("nope").is_err());
    }
}
