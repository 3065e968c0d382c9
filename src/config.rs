//! Every setting and every limit of the broker, in one place.
//!
//! Settings come from three layers, later ones winning: the built-in defaults below, a TOML file
//! (`--config`), then `SPATE_*` environment variables and command-line flags (clap merges those two).
//! Limits that are not user settings are the `const`s in [`limits`], named with their unit last.
//!
//! Topic-level settings (`segment.bytes`, `flush.messages`, ...) use Kafka's names; each has a
//! broker-wide default here and may be overridden per topic at CreateTopics time ([`TopicConfig`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Fixed bounds. Changing one is a code change, reviewed with the memory sums it affects.
pub mod security;

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
    /// Most bytes of the newest batches a partition keeps in memory to serve tailing consumers
    /// (less when the core's share of `batch_cache_max_bytes` spread over its partitions is less).
    pub const PARTITION_CACHE_MAX_BYTES: usize = 1024 * 1024;
    /// Longest a Fetch may wait for data, whatever `max.wait.ms` the client asks for.
    pub const FETCH_WAIT_MAX_MS: i32 = 60_000;
    /// O_DIRECT alignment of segment writes; the partial tail page is rewritten on the next append.
    pub const DMA_ALIGNMENT_BYTES: usize = 4096;
    /// Most batch bytes one segment write takes (it takes at least one batch, whatever its size):
    /// a partition with more waiting writes it in turns instead of in one huge buffer.
    pub const SEGMENT_WRITE_MAX_BYTES: usize = 8 * 1024 * 1024;
    /// Largest segment write issued so that ext4 takes it from the core's own thread (into
    /// preallocated blocks, its first block apart): a small write then saves a kernel worker's
    /// wake-up and two context switches; a larger one is left to the worker, which may run on
    /// another CPU while the core goes on (kernel-notes/segment-preallocation.md).
    pub const SEGMENT_INLINE_WRITE_MAX_BYTES: usize = 256 * 1024;
    /// Largest single read from a segment file when serving a fetch.
    pub const SEGMENT_READ_MAX_BYTES: usize = 8 * 1024 * 1024;
    /// Most bytes of segment read-ahead (the next chunks for the consumers reading from disk, up
    /// to four followed per partition) a core holds or has in flight, all its partitions together.
    pub const READ_AHEAD_CORE_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Most bytes a compressed batch's records may decompress to when the broker reads them
    /// (a timestamp lookup): a batch that would grow past this is answered from its header alone,
    /// so a compression bomb costs at most this much memory, once.
    pub const RECORDS_DECOMPRESSED_MAX_BYTES: usize = 64 * 1024 * 1024;
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
    /// The `spate topic` client: how long the broker may take over a topic change (the
    /// `timeout_ms` of CreateTopics, DeleteTopics, CreatePartitions and DeleteRecords); shorter
    /// than [`CLIENT_REQUEST_TIMEOUT_MS`] so that the broker's answer, timeout or not, arrives.
    pub const CLIENT_ADMIN_TIMEOUT_MS: i32 = 15_000;

    /// Smallest soft RLIMIT_MEMLOCK glommio 0.9 starts an executor with (`Reactor::new` in its
    /// `sys/uring.rs` refuses less); checked at start so the message can say what to do.
    pub const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * 1024;
    /// A port found in use at start is probed again for this long before start-up gives up: the
    /// listening sockets of a broker just killed outlive it by some milliseconds, until the kernel
    /// has torn down its io_uring instances (kernel-notes/io-uring-sockets-outlive-killed-process.md).
    pub const PORT_IN_USE_WAIT_MS: u64 = 2_000;
    /// A client connection on a TLS listener must finish its handshake, and one on a SASL
    /// listener its authentication, this long after it is accepted, or it is closed (a client
    /// stuck mid-handshake holds nothing longer).
    pub const AUTHENTICATION_DEADLINE_MS: u64 = 10_000;
    /// A connection whose SASL authentication failed is closed this long after the failure is
    /// answered (Kafka's `connection.failed.authentication.delay.ms` default).
    pub const FAILED_AUTHENTICATION_DELAY_MS: u64 = 100;
    /// After the shutdown grace period, how long a core waits for the connections it cut to go.
    pub const SHUTDOWN_CUT_WAIT_MS: u64 = 1_000;
    /// On SIGTERM, how long a broker in a cluster waits for the controller to fence it before
    /// its cores stop serving (controlled shutdown); a shutdown never waits on a lost quorum
    /// longer than this.
    pub const CONTROLLED_SHUTDOWN_WAIT_MS: u64 = 5_000;

    const _: () = assert!(SEGMENT_READ_MAX_BYTES % DMA_ALIGNMENT_BYTES == 0);
    const _: () = assert!(REQUEST_FRAME_MAX_BYTES <= CONNECTION_BUFFER_MAX_BYTES);
    const _: () = assert!(FETCH_RESPONSE_MAX_BYTES <= CONNECTION_BUFFER_MAX_BYTES);
    const _: () = assert!(PARTITION_CACHE_MAX_BYTES <= REQUEST_FRAME_MAX_BYTES);
    const _: () = assert!((CLIENT_ADMIN_TIMEOUT_MS as u64) < CLIENT_REQUEST_TIMEOUT_MS);
}

/// The broker's settings after all layers are merged. Owned by no core: built once in `main`,
/// then cloned (read-only) into every shard.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every core listens on (SO_REUSEPORT): the first listener's, the one brokers use
    /// between themselves.
    pub listen: SocketAddr,
    /// Every listener, the first at `listen`; every core binds each (SO_REUSEPORT).
    pub listeners: Vec<security::ListenerConfig>,
    /// Present when a listener uses TLS.
    pub tls: Option<security::TlsSettings>,
    /// SASL mechanisms offered on SASL listeners.
    pub sasl_mechanisms: Vec<&'static str>,
    /// KIP-368's session lifetime (0: none).
    pub connections_max_reauth_ms: i64,
    /// Kafka's `ssl.principal.mapping.rules`, parsed.
    pub principal_rules: crate::server::principal::MappingRules,
    /// Whether requests are checked against the ACLs (`authorizer = "acl"`).
    pub authorizer: bool,
    /// Kafka's `super.users`.
    pub super_users: Vec<String>,
    /// Kafka's `allow.everyone.if.no.acl.found`.
    pub allow_everyone_if_no_acl_found: bool,
    /// host:port given to clients in Metadata by the first listener; defaults to `listen`.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Directory holding topics, segments and metadata.
    pub data_dir: PathBuf,
    /// Number of shards (one pinned executor each).
    pub cores: usize,
    /// The broker id, which is also this node's id in the metadata quorum.
    pub node_id: i32,
    /// The metadata quorum this node takes part in (`controller_quorum_voters` set); None for a
    /// single node, which runs no quorum.
    pub quorum: Option<QuorumConfig>,
    /// Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of an auto-created topic or a CreateTopics with -1.
    pub num_partitions: i32,
    /// Kafka's `default.replication.factor` (in a cluster).
    pub default_replication_factor: usize,
    /// Kafka's `offsets.topic.replication.factor` (in a cluster).
    pub offsets_topic_replication_factor: usize,
    /// Kafka's `transaction.state.log.replication.factor` (in a cluster).
    pub transaction_state_log_replication_factor: usize,
    /// Kafka's `transaction.max.timeout.ms`.
    pub transaction_max_timeout_ms: i32,
    /// The `transaction.version` feature finalized in ApiVersions (1 or 2).
    pub transaction_version: i16,
    /// Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub transaction_timeout_check_interval_ms: i64,
    /// Kafka's `transactional.id.expiration.ms`.
    pub transactional_id_expiration_ms: i64,
    /// Kafka's `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub transactional_id_expiry_check_interval_ms: i64,
    /// Kafka's `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// Kafka's `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// Kafka's `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: i64,
    /// Broker-wide defaults of the topic-level settings.
    pub topic_defaults: TopicDefaults,
    /// Consumer-group settings (Kafka's `group.*` keys).
    pub groups: crate::coordinator::group::GroupConfig,
    /// Kafka's `log.cleaner.backoff.ms`: how often compacted topics are looked at.
    pub log_cleaner_backoff_ms: i64,
    /// Kafka's `log.retention.check.interval.ms`: how often retention limits are enforced.
    pub log_retention_check_interval_ms: i64,
    /// Kafka's `max.connections`: open client connections allowed, all cores together.
    pub max_connections: usize,
    /// Kafka's `connections.max.idle.ms`.
    pub connections_max_idle_ms: i64,
    /// How long a connection whose client answers quickly is polled for its next request
    /// before its core waits on the ring (0: never polled). See `server::connection`.
    pub connection_busy_poll_us: u64,
    /// Kafka's `max.incremental.fetch.session.cache.slots`: incremental fetch sessions (KIP-227)
    /// all cores together, split between the cores (see `server::fetch_sessions`).
    pub fetch_session_slots: usize,
    /// KIP-227's `min.incremental.fetch.session.eviction.ms` (a fixed 120 s in Kafka): a fetch
    /// session unused this long may be evicted for a new one, and one created this long ago may
    /// be evicted for a bigger one.
    pub fetch_session_eviction_ms: i64,
    /// Kafka's `queued.max.request.bytes`: request and response bytes held by all connections
    /// together, split evenly between the cores (see `server::memory`).
    pub queued_max_request_bytes: usize,
    /// Recent batches kept in memory for tailing consumers, all partitions together, split
    /// evenly between the cores and then between each core's partitions (at most 1 MiB each).
    pub batch_cache_max_bytes: usize,
    /// How far ahead of its writes the active segment's file is grown (0: not at all); see
    /// `io::file::SegmentFile::preallocate`.
    pub segment_preallocate_bytes: u64,
    /// The admin HTTP listener (`/metrics`, `/v1/...`).
    pub admin_listen: SocketAddr,
    /// Whether it serves HTTPS (with the listeners' certificate).
    pub admin_tls: bool,
    /// The bearer token its requests must carry, if any.
    pub admin_token: Option<String>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take before their connections close.
    pub shutdown_grace_ms: i64,
    /// The settings given by flag, variable or file rather than left at their defaults (for
    /// DescribeConfigs' STATIC_BROKER_CONFIG source).
    pub given: BTreeSet<&'static str>,
}

/// A node's roles (Kafka `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    pub broker: bool,
    pub controller: bool,
}

impl ProcessRoles {
    /// Parses `broker`, `controller` or both, comma-separated; the message names a bad entry.
    pub fn parse(text: &str) -> anyhow::Result<ProcessRoles> {
        let mut roles = ProcessRoles { broker: false, controller: false };
        for entry in text.split(',').map(str::trim) {
            let role = match entry {
                "broker" => &mut roles.broker,
                "controller" => &mut roles.controller,
                _ => anyhow::bail!("process_roles: {entry:?} is not a role (expected broker, controller or broker,controller)"),
            };
            anyhow::ensure!(!*role, "process_roles: {entry:?} is given twice in {text:?}");
            *role = true;
        }
        Ok(roles)
    }
}

/// One voter of the metadata quorum, as `controller_quorum_voters` lists it (`id@host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    /// `host:port` of its controller listener, as given (a host name is resolved on connect).
    pub addr: String,
}

/// Parses `controller_quorum_voters` (`1@host:port,2@host:port,...`): every entry well formed, no
/// id given twice. Empty text is no voters. Each message names the bad entry.
pub fn parse_voters(text: &str) -> anyhow::Result<Vec<Voter>> {
    let mut voters: Vec<Voter> = Vec::new();
    if text.trim().is_empty() {
        return Ok(voters);
    }
    for entry in text.split(',').map(str::trim) {
        let bad = |why: &str| anyhow::anyhow!("controller_quorum_voters: bad entry {entry:?}: {why} (expected id@host:port)");
        let (id, addr) = entry.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let id: i32 = id.trim().parse().map_err(|_| bad("the id is not an integer"))?;
        if id < 0 {
            return Err(bad("the id is negative"));
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no ':port'"))?;
        if host.trim_start_matches('[').trim_end_matches(']').is_empty() {
            return Err(bad("the host is empty"));
        }
        port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        if voters.iter().any(|v| v.id == id) {
            anyhow::bail!("controller_quorum_voters: id {id} is given twice");
        }
        if let Some(v) = voters.iter().find(|v| v.addr == addr) {
            anyhow::bail!("controller_quorum_voters: {addr} is given for both {} and {id}", v.id);
        }
        voters.push(Voter { id, addr: addr.to_string() });
    }
    Ok(voters)
}

/// The metadata quorum as this node takes part in it (see `controller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    pub roles: ProcessRoles,
    /// Never empty.
    pub voters: Vec<Voter>,
    /// The address this node's controller listens on (`controller_listen`, else its own entry in
    /// the voters).
    pub listen: String,
    /// `broker_rack`: registered with the controller (broker role).
    pub broker_rack: Option<String>,
    /// `broker_heartbeat_interval_ms` (broker role).
    pub broker_heartbeat_interval_ms: u64,
    /// `broker_session_timeout_ms` (used while this node is the active controller).
    pub broker_session_timeout_ms: u64,
}

impl QuorumConfig {
    /// Checks the quorum settings against each other and `node_id`; None without voters.
    fn from_settings(node_id: i32, roles: &str, voters: &str, listen: Option<String>) -> anyhow::Result<Option<QuorumConfig>> {
        let roles = ProcessRoles::parse(roles)?;
        let voters = parse_voters(voters)?;
        if voters.is_empty() {
            anyhow::ensure!(
                listen.is_none(),
                "controller_listen is set but controller_quorum_voters is empty (a single node runs no quorum)"
            );
            return Ok(None);
        }
        let own = voters.iter().find(|v| v.id == node_id);
        let ids = || voters.iter().map(|v| v.id.to_string()).collect::<Vec<_>>().join(", ");
        let listen = match (roles.controller, own, listen) {
            (true, None, _) => anyhow::bail!(
                "node_id {node_id} has the controller role (process_roles) but is not in controller_quorum_voters (ids {}): \
                 add it, or give this node process_roles = \"broker\"",
                ids()
            ),
            (false, Some(_), _) => anyhow::bail!(
                "node_id {node_id} is in controller_quorum_voters but has only the broker role (process_roles): \
                 a voter must have the controller role"
            ),
            (_, _, Some(listen)) => listen,
            (true, Some(own), None) => own.addr.clone(),
            (false, None, None) => anyhow::bail!(
                "a broker-only node with controller_quorum_voters set needs controller_listen (host:port), where the \
                 quorum's leader sends it the metadata log"
            ),
        };
        anyhow::ensure!(
            listen.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
            "controller_listen: expected host:port, got {listen:?}"
        );
        Ok(Some(QuorumConfig {
            roles,
            voters,
            listen,
            broker_rack: None,
            broker_heartbeat_interval_ms: default_of::<i64>("broker_heartbeat_interval_ms") as u64,
            broker_session_timeout_ms: default_of::<i64>("broker_session_timeout_ms") as u64,
        }))
    }

    /// The broker lifecycle's settings, checked against each other.
    fn with_lifecycle(mut self, rack: Option<String>, heartbeat_ms: i64, session_ms: i64) -> anyhow::Result<QuorumConfig> {
        anyhow::ensure!(
            heartbeat_ms < session_ms,
            "broker_heartbeat_interval_ms ({heartbeat_ms}) must be below broker_session_timeout_ms ({session_ms}), or \
             every broker would be fenced between two heartbeats"
        );
        self.broker_rack = rack.filter(|r| !r.is_empty());
        self.broker_heartbeat_interval_ms = heartbeat_ms as u64;
        self.broker_session_timeout_ms = session_ms as u64;
        Ok(self)
    }
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
    pub compression_type: String,
    pub min_insync_replicas: i64,
    pub unclean_leader_election: bool,
}

/// How a setting's default is given in [`SETTINGS`].
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    /// A fixed default, as a TOML literal (`"127.0.0.1:9092"`, `1048588`, `true`). The broker
    /// reads its default from this same text, so what `spate config print-defaults` shows is what
    /// runs.
    Toml(&'static str),
    /// A default computed at start (`shown` says how), with an example TOML literal.
    Computed { shown: &'static str, example: &'static str },
}

/// One setting of `spate serve`. The flag is `--` and the key with dashes, the environment
/// variable `env`, the TOML key `key`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub env: &'static str,
    pub default: DefaultValue,
    /// Unit of the value ("ms", "bytes", ...), or what kind of value it is ("host:port").
    pub unit: &'static str,
    /// Inclusive bounds of an integer setting; a value outside is refused at start.
    pub range: Option<(i64, i64)>,
    pub about: &'static str,
}

impl Setting {
    /// `--segment-bytes` for `segment_bytes`.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }

    /// The allowed values of an integer setting, as a person reads them.
    pub fn range_text(&self) -> Option<String> {
        let (lo, hi) = self.range?;
        Some(if hi == i64::MAX { format!("at least {lo}") } else { format!("{lo} to {hi}") })
    }

    /// The default as a person reads it: the literal without TOML quotes, or how it is computed.
    pub fn shown_default(&self) -> String {
        match self.default {
            DefaultValue::Toml(t) => t.trim_matches('"').to_string(),
            DefaultValue::Computed { shown, .. } => shown.to_string(),
        }
    }
}

/// The `--config` flag itself: named by flag and environment only, not a TOML key.
pub const CONFIG_FLAG: (&str, &str, &str) =
    ("--config", "SPATE_CONFIG", "TOML file with any of the keys below (snake_case)");

/// Declares every setting of `spate serve` once. From this one list come the clap flags
/// ([`ServeArgs`], help text included), the TOML file's keys ([`FileConfig`], unknown keys
/// refused), the table [`SETTINGS`] (defaults, units, ranges) that `spate config print-defaults`
/// and the README's configuration table are generated from, and the range checks.
macro_rules! settings {
    ($( $key:ident: $ty:ident, $env:literal, $default:expr, $unit:literal, $range:expr, $about:literal; )*) => {
        /// The flags of `spate serve`, generated from [`SETTINGS`]. Each is also read from its
        /// `SPATE_*` variable and, as a snake_case key, from the TOML file.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ServeArgs {
            #[arg(long, env = "SPATE_CONFIG", help = CONFIG_FLAG.2)]
            pub config: Option<PathBuf>,
            $(
                #[arg(long, env = $env, help = flag_help(stringify!($key)), allow_negative_numbers = true)]
                pub $key: Option<$ty>,
            )*
        }

        /// The same settings as read from the TOML file. Unknown keys are refused.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileConfig {
            $( $key: Option<$ty>, )*
        }

        /// Every setting of `spate serve`, in the order the README and `print-defaults` list them.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { key: stringify!($key), env: $env, default: $default, unit: $unit, range: $range, about: $about }, )*
        ];

        /// Each setting as given, flag or variable first, then the file; defaults not applied.
        struct Given {
            $( $key: Value<$ty>, )*
        }

        impl Given {
            fn merge(args: &ServeArgs, file: FileConfig, path: Option<&Path>) -> Given {
                Given {
                    $( $key: Value::merge(stringify!($key), args.$key.clone(), file.$key, path), )*
                }
            }

            /// Refuses integer values outside their setting's range, naming the key and where
            /// the value came from.
            fn check_ranges(&self) -> anyhow::Result<()> {
                $( self.$key.check_range()?; )*
                Ok(())
            }

            /// The settings given by flag, variable or file (the rest take their defaults).
            fn given_keys(&self) -> BTreeSet<&'static str> {
                let mut keys = BTreeSet::new();
                $( if self.$key.given.is_some() { keys.insert(stringify!($key)); } )*
                keys
            }
        }
    };
}

use DefaultValue::{Computed, Toml};

const MAX: i64 = i64::MAX;
const I32_MAX: i64 = i32::MAX as i64;

settings! {
    listen: SocketAddr, "SPATE_LISTEN", Toml("\"127.0.0.1:9092\""), "host:port", None,
        "address every core listens on for Kafka clients (SO_REUSEPORT)";
    advertised_listener: String, "SPATE_ADVERTISED_LISTENER",
        Computed { shown: "the listen address", example: "\"broker1.example.com:9092\"" }, "host:port", None,
        "address given to clients in Metadata";
    listeners: String, "SPATE_LISTENERS",
        Computed { shown: "`PLAINTEXT://` and the listen address", example: "\"PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9094\"" }, "NAME://host:port,...", None,
        "Kafka clients' listeners, each bound on every core: the name is the security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), an empty host every interface; the first is the one brokers use between themselves (PLAINTEXT in a cluster). Replaces listen (Kafka `listeners`)";
    advertised_listeners: String, "SPATE_ADVERTISED_LISTENERS",
        Computed { shown: "each listener's own address", example: "\"SASL_SSL://kafka.example.com:9094\"" }, "NAME://host:port,...", None,
        "addresses given to clients in Metadata, per listener: a client is told the brokers' addresses on the listener it connected to (Kafka `advertised.listeners`)";
    ssl_cert_file: String, "SPATE_SSL_CERT_FILE", Toml("\"\""), "path", None,
        "PEM certificate chain (leaf first) of the SSL and SASL_SSL listeners; reloaded when the file changes (Kafka `ssl.keystore.location`)";
    ssl_key_file: String, "SPATE_SSL_KEY_FILE", Toml("\"\""), "path", None,
        "PEM private key (PKCS#8, PKCS#1 or SEC1) of ssl_cert_file; reloaded with it";
    ssl_ca_file: String, "SPATE_SSL_CA_FILE", Toml("\"\""), "path", None,
        "PEM CA certificates that client certificates are checked against (Kafka `ssl.truststore.location`)";
    ssl_client_auth: String, "SPATE_SSL_CLIENT_AUTH", Toml("\"none\""), "none|requested|required", None,
        "mutual TLS: whether TLS clients must (`required`) or may (`requested`) present a certificate signed by ssl_ca_file; its subject becomes the principal (`User:CN=...`) unless SASL names one (Kafka `ssl.client.auth`)";
    ssl_principal_mapping_rules: String, "SPATE_SSL_PRINCIPAL_MAPPING_RULES", Toml("\"DEFAULT\""), "rules", None,
        "how a mutual-TLS client's certificate subject (RFC 2253, as Java prints it: `CN=alice,OU=eng,O=Team A`) becomes its principal `User:<name>`: Kafka's `RULE:pattern/replacement/[LU]` rules and `DEFAULT` (the subject unchanged), separated by commas or newlines, the first that matches wins; none matching refuses the client (Kafka `ssl.principal.mapping.rules`)";
    sasl_enabled_mechanisms: String, "SPATE_SASL_ENABLED_MECHANISMS", Toml("\"SCRAM-SHA-256,SCRAM-SHA-512\""), "mechanisms", None,
        "SASL mechanisms the SASL_PLAINTEXT and SASL_SSL listeners offer: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; every one checks the SCRAM credentials of `spate user` (PLAIN against either mechanism's) (Kafka `sasl.enabled.mechanisms`)";
    authorizer: String, "SPATE_AUTHORIZER", Toml("\"none\""), "none|acl", None,
        "`acl`: every request is checked against the ACLs (CreateAcls, `spate acl`, `kafka-acls`) as Kafka's StandardAuthorizer checks it, and refused with its *_AUTHORIZATION_FAILED code; `none`: every client may do anything (Kafka `authorizer.class.name`)";
    super_users: String, "SPATE_SUPER_USERS", Toml("\"\""), "principals", None,
        "principals allowed everything whatever the ACLs say, separated by `;` (for example `User:admin;User:ops`) (Kafka `super.users`)";
    allow_everyone_if_no_acl_found: bool, "SPATE_ALLOW_EVERYONE_IF_NO_ACL_FOUND", Toml("false"), "bool", None,
        "with the ACL authorizer, whether a resource no ACL names is open to everyone (Kafka `allow.everyone.if.no.acl.found`)";
    connections_max_reauth_ms: i64, "SPATE_CONNECTIONS_MAX_REAUTH_MS", Toml("0"), "ms", Some((0, MAX)),
        "KIP-368: a SASL session lasts this long, after which the client must authenticate again on the same connection or have it closed; 0: sessions never expire (Kafka `connections.max.reauth.ms`)";
    data_dir: PathBuf, "SPATE_DATA_DIR", Toml("\"./spate-data\""), "path", None,
        "topics, segments, indexes and cluster id; one broker at a time (`<data_dir>/.lock`)";
    cores: usize, "SPATE_CORES", Computed { shown: "all online cores", example: "4" }, "cores", Some((1, MAX)),
        "shards, one pinned executor each";
    node_id: i32, "SPATE_NODE_ID", Toml("0"), "id", Some((0, I32_MAX)),
        "broker id in Metadata, and this node's id in the metadata quorum (its entry in controller_quorum_voters)";
    process_roles: String, "SPATE_PROCESS_ROLES", Toml("\"broker,controller\""), "roles", None,
        "`broker`, `controller` or `broker,controller`: with controller_quorum_voters set, a node with the controller role is a voter of the metadata quorum (it must be in the list), a broker-only node follows the metadata log as a learner (it must not be); ignored without voters (Kafka `process.roles`)";
    controller_quorum_voters: String, "SPATE_CONTROLLER_QUORUM_VOTERS", Toml("\"\""), "id@host:port,...", None,
        "the metadata quorum's voters, the same list on every node (for example `1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093`); nodes started with the same voters on empty data directories form a cluster by themselves; empty: a single node, no quorum (Kafka `controller.quorum.voters`)";
    controller_listen: String, "SPATE_CONTROLLER_LISTEN",
        Computed { shown: "this node's entry in controller_quorum_voters", example: "\"0.0.0.0:9093\"" }, "host:port", None,
        "address this node's controller thread listens on for the quorum's RPCs; required on a broker-only node with voters set";
    broker_rack: String, "SPATE_BROKER_RACK", Computed { shown: "none", example: "\"rack-a\"" }, "name", None,
        "the rack (or zone) this broker registers with the controller; ignored without voters (Kafka `broker.rack`)";
    broker_heartbeat_interval_ms: i64, "SPATE_BROKER_HEARTBEAT_INTERVAL_MS", Toml("2000"), "ms", Some((1, I32_MAX)),
        "with voters set, how often a broker heartbeats the active controller; below broker_session_timeout_ms (Kafka `broker.heartbeat.interval.ms`)";
    broker_session_timeout_ms: i64, "SPATE_BROKER_SESSION_TIMEOUT_MS", Toml("9000"), "ms", Some((1, I32_MAX)),
        "with voters set, the active controller fences a broker that has not heartbeated for this long, and unfences it when it heartbeats again; a new active controller gives every broker this long afresh (Kafka `broker.session.timeout.ms`)";
    default_replication_factor: i64, "SPATE_DEFAULT_REPLICATION_FACTOR", Toml("1"), "replicas", Some((1, 32)),
        "replicas of auto-created topics and of a CreateTopics with replication factor -1, in a cluster (Kafka `default.replication.factor`)";
    offsets_topic_replication_factor: i64, "SPATE_OFFSETS_TOPIC_REPLICATION_FACTOR", Toml("3"), "replicas", Some((1, 32)),
        "replicas of each `__consumer_offsets` partition, in a cluster; fewer when fewer brokers are live when it is created (Kafka `offsets.topic.replication.factor`)";
    transaction_state_log_replication_factor: i64, "SPATE_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", Toml("3"), "replicas", Some((1, 32)),
        "replicas of each `__transaction_state` partition, in a cluster; fewer when fewer brokers are live when it is created (Kafka `transaction.state.log.replication.factor`)";
    transaction_max_timeout_ms: i32, "SPATE_TRANSACTION_MAX_TIMEOUT_MS", Toml("900000"), "ms", Some((1, I32_MAX)),
        "the longest `transaction.timeout.ms` a transactional producer may ask for; InitProducerId with more is refused with INVALID_TRANSACTION_TIMEOUT (Kafka `transaction.max.timeout.ms`)";
    transaction_version: i64, "SPATE_TRANSACTION_VERSION", Toml("2"), "level", Some((1, 2)),
        "the `transaction.version` feature ApiVersions advertises as finalized: 2 (Kafka 4.x's default) has Java 4.x clients bump the producer epoch with every transaction and leave adding partitions to the brokers (KIP-890 part 2: EndTxn v5, TxnOffsetCommit v5); 1 keeps every client on transaction version 1 (EndTxn and TxnOffsetCommit up to v4)";
    transaction_abort_timed_out_transaction_cleanup_interval_ms: i64, "SPATE_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS", Toml("10000"), "ms", Some((1, I32_MAX)),
        "how often each transaction coordinator aborts the transactions open longer than their timeout (Kafka `transaction.abort.timed.out.transaction.cleanup.interval.ms`)";
    transactional_id_expiration_ms: i64, "SPATE_TRANSACTIONAL_ID_EXPIRATION_MS", Toml("604800000"), "ms", Some((1, I32_MAX)),
        "a transactional id with no transaction ongoing and no request for this long is forgotten (a tombstone in `__transaction_state`); its next InitProducerId gets a new producer id (Kafka `transactional.id.expiration.ms`)";
    transaction_remove_expired_transaction_cleanup_interval_ms: i64, "SPATE_TRANSACTION_REMOVE_EXPIRED_TRANSACTION_CLEANUP_INTERVAL_MS", Toml("3600000"), "ms", Some((1, I32_MAX)),
        "how often each transaction coordinator looks for transactional ids to forget (Kafka `transaction.remove.expired.transaction.cleanup.interval.ms`)";
    min_insync_replicas: i64, "SPATE_MIN_INSYNC_REPLICAS", Toml("1"), "replicas", Some((1, 32)),
        "an acks=all produce to a partition whose in-sync replicas are fewer is refused with NOT_ENOUGH_REPLICAS (Kafka `min.insync.replicas`; topic `min.insync.replicas`)";
    auto_leader_rebalance_enable: bool, "SPATE_AUTO_LEADER_REBALANCE_ENABLE", Toml("true"), "bool", None,
        "in a cluster, the active controller's broker moves leadership back to each partition's preferred (first) replica when it is live and in the ISR, for every broker whose share of such partitions it does not lead is above 10% (Kafka `auto.leader.rebalance.enable`, `leader.imbalance.per.broker.percentage`)";
    leader_imbalance_check_interval_seconds: i64, "SPATE_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS", Toml("300"), "s", Some((1, I32_MAX)),
        "how often the leader rebalance looks (Kafka `leader.imbalance.check.interval.seconds`)";
    replica_lag_time_max_ms: i64, "SPATE_REPLICA_LAG_TIME_MAX_MS", Toml("30000"), "ms", Some((1, I32_MAX)),
        "a follower that has not caught up with its leader's log end for this long leaves the ISR (Kafka `replica.lag.time.max.ms`)";
    auto_create_topics: bool, "SPATE_AUTO_CREATE_TOPICS", Toml("true"), "bool", None,
        "create a topic when a client asks for metadata of one that does not exist (Kafka `auto.create.topics.enable`)";
    num_partitions: i32, "SPATE_NUM_PARTITIONS", Toml("1"), "partitions", Some((1, limits::TOPIC_PARTITIONS_MAX as i64)),
        "partitions of auto-created topics (Kafka `num.partitions`)";
    message_max_bytes: i64, "SPATE_MESSAGE_MAX_BYTES", Toml("1048588"), "bytes", Some((0, I32_MAX)),
        "largest record batch accepted (Kafka `message.max.bytes`)";
    segment_bytes: i64, "SPATE_SEGMENT_BYTES", Toml("1073741824"), "bytes", Some((14, u32::MAX as i64)),
        "segment size before a roll (Kafka `log.segment.bytes`)";
    segment_preallocate_bytes: i64, "SPATE_SEGMENT_PREALLOCATE_BYTES", Toml("16777216"), "bytes", Some((0, 1_073_741_824)),
        "the active segment's file is grown (fallocate) this far ahead of its writes, so ext4 takes them without a kernel worker thread; trimmed when the segment closes, so each partition holds up to this much more disk; 0 turns it off (Redpanda `segment_fallocation_step`)";
    segment_ms: i64, "SPATE_SEGMENT_MS", Toml("604800000"), "ms", Some((1, MAX)),
        "segment age before a roll (Kafka `log.roll.ms`)";
    log_retention_ms: i64, "SPATE_LOG_RETENTION_MS", Toml("604800000"), "ms", Some((-1, MAX)),
        "closed segments whose newest record is older than this are deleted, in topics with `cleanup.policy` delete; -1: no time limit (Kafka `log.retention.ms`; topic `retention.ms`)";
    log_retention_bytes: i64, "SPATE_LOG_RETENTION_BYTES", Toml("-1"), "bytes", Some((-1, MAX)),
        "the oldest closed segments are deleted while a partition holds more than this; -1: no size limit (Kafka `log.retention.bytes`; topic `retention.bytes`)";
    log_retention_check_interval_ms: i64, "SPATE_LOG_RETENTION_CHECK_INTERVAL_MS", Toml("300000"), "ms", Some((1, MAX)),
        "how often each partition is checked against its retention limits (Kafka `log.retention.check.interval.ms`)";
    flush_messages: i64, "SPATE_FLUSH_MESSAGES", Toml("1"), "records", Some((1, MAX)),
        "`1`: acks=all waits for fdatasync; N > 1: fdatasync every N records (Kafka `log.flush.interval.messages`)";
    flush_ms: i64, "SPATE_FLUSH_MS", Toml("9223372036854775807"), "ms", Some((0, MAX)),
        "with flush_messages > 1, also fdatasync this often; the default never does (Kafka `log.flush.interval.ms`)";
    group_initial_rebalance_delay_ms: i64, "SPATE_GROUP_INITIAL_REBALANCE_DELAY_MS", Toml("3000"), "ms", Some((0, MAX)),
        "an empty group waits this long for more members before its first rebalance (Kafka `group.initial.rebalance.delay.ms`)";
    group_min_session_timeout_ms: i32, "SPATE_GROUP_MIN_SESSION_TIMEOUT_MS", Toml("6000"), "ms", Some((1, I32_MAX)),
        "smallest `session.timeout.ms` a consumer may ask for (Kafka `group.min.session.timeout.ms`)";
    group_max_session_timeout_ms: i32, "SPATE_GROUP_MAX_SESSION_TIMEOUT_MS", Toml("1800000"), "ms", Some((1, I32_MAX)),
        "largest `session.timeout.ms` a consumer may ask for (Kafka `group.max.session.timeout.ms`)";
    offsets_retention_minutes: i64, "SPATE_OFFSETS_RETENTION_MINUTES", Toml("10080"), "minutes", Some((1, MAX / 60_000)),
        "committed offsets outlive an empty group (or a topic its members no longer subscribe to) this long (Kafka `offsets.retention.minutes`)";
    offsets_retention_check_interval_ms: i64, "SPATE_OFFSETS_RETENTION_CHECK_INTERVAL_MS", Toml("600000"), "ms", Some((1, MAX)),
        "how often expired offsets are looked for (Kafka `offsets.retention.check.interval.ms`)";
    group_consumer_session_timeout_ms: i32, "SPATE_GROUP_CONSUMER_SESSION_TIMEOUT_MS", Toml("45000"), "ms", Some((1, I32_MAX)),
        "KIP-848 members silent this long are removed (Kafka `group.consumer.session.timeout.ms`)";
    group_consumer_heartbeat_interval_ms: i32, "SPATE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS", Toml("5000"), "ms", Some((1, I32_MAX)),
        "heartbeat interval told to KIP-848 members (Kafka `group.consumer.heartbeat.interval.ms`)";
    log_cleaner_backoff_ms: i64, "SPATE_LOG_CLEANER_BACKOFF_MS", Toml("15000"), "ms", Some((1, MAX)),
        "how often compacted topics are looked at for newly closed segments (Kafka `log.cleaner.backoff.ms`)";
    max_connections: i64, "SPATE_MAX_CONNECTIONS", Toml("10000"), "connections", Some((1, I32_MAX)),
        "open client connections allowed, all cores together; new ones beyond it are closed at once (Kafka `max.connections`)";
    connections_max_idle_ms: i64, "SPATE_CONNECTIONS_MAX_IDLE_MS", Toml("600000"), "ms", Some((1, MAX)),
        "a connection with nothing in flight that sends nothing this long, or whose responses go unread this long, is closed (Kafka `connections.max.idle.ms`)";
    connection_busy_poll_us: i64, "SPATE_CONNECTION_BUSY_POLL_US", Toml("0"), "us", Some((0, 10_000)),
        "busy poll: once a connection's requests are all answered, its socket is polled this long for the next one before the core sleeps, if its client came back this quickly last time and does not pipeline; 0 turns it off. Request/response clients gain most (kernel-notes/connection-busy-poll.md)";
    max_incremental_fetch_session_cache_slots: i64, "SPATE_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS", Toml("1000"), "sessions", Some((0, I32_MAX)),
        "incremental fetch sessions (KIP-227) kept, all cores together: each core keeps its share (the slots divided by the cores, the remainder to the first cores) for the clients connected to it; 0 turns sessions off (Kafka `max.incremental.fetch.session.cache.slots`)";
    min_incremental_fetch_session_eviction_ms: i64, "SPATE_MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS", Toml("120000"), "ms", Some((0, MAX)),
        "when a core's fetch sessions fill its slots, a new one may evict a session unused this long, or else a smaller one created this long ago (KIP-227 `min.incremental.fetch.session.eviction.ms`; fixed in Kafka)";
    queued_max_request_bytes: i64, "SPATE_QUEUED_MAX_REQUEST_BYTES", Toml("1073741824"), "bytes", Some((1_048_576, MAX)),
        "request and response bytes all connections together may hold, split evenly between the cores; past it sockets are not read and fetches return less (Kafka `queued.max.request.bytes`)";
    batch_cache_max_bytes: i64, "SPATE_BATCH_CACHE_MAX_BYTES", Toml("536870912"), "bytes", Some((0, MAX)),
        "recent batches kept in memory for tailing consumers, all partitions together: split evenly between the cores, then between each core's partitions, at most 1 MiB and at least one batch each";
    admin_listen: SocketAddr, "SPATE_ADMIN_LISTEN", Toml("\"127.0.0.1:9644\""), "host:port", None,
        "admin HTTP listener: /metrics (Prometheus), /v1/health, /v1/ready, /v1/status, /v1/config";
    admin_tls: bool, "SPATE_ADMIN_TLS", Toml("false"), "bool", None,
        "serve the admin HTTP listener over TLS with ssl_cert_file and ssl_key_file (HTTPS)";
    admin_token: String, "SPATE_ADMIN_TOKEN", Toml("\"\""), "secret", None,
        "when set, every admin HTTP request but /v1/health and /v1/ready must carry `Authorization: Bearer <token>` (401 otherwise); prefer the variable to the flag, which other users of the host can read";
    shutdown_grace_ms: i64, "SPATE_SHUTDOWN_GRACE_MS", Toml("10000"), "ms", Some((0, MAX)),
        "on SIGTERM or SIGINT, how long in-flight requests may take to finish before their connections are closed";
}

/// The help text of a setting's flag: its meaning, unit and default, from [`SETTINGS`].
fn flag_help(key: &str) -> String {
    let s = setting(key).expect("every flag is in SETTINGS");
    format!("{} ({}) [default: {}]", s.about, s.unit, s.shown_default())
}

/// The setting named `key` in [`SETTINGS`].
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone)]
enum Source {
    FlagOrEnv,
    File(PathBuf),
}

/// One setting as given: its value and where it came from, if it was given at all.
struct Value<T> {
    key: &'static str,
    given: Option<(T, Source)>,
}

impl<T: DeserializeOwned + Clone + IntegerValue> Value<T> {
    fn merge(key: &'static str, flag: Option<T>, file: Option<T>, path: Option<&Path>) -> Value<T> {
        let given = match (flag, file, path) {
            (Some(v), _, _) => Some((v, Source::FlagOrEnv)),
            (None, Some(v), Some(p)) => Some((v, Source::File(p.to_path_buf()))),
            _ => None,
        };
        Value { key, given }
    }

    /// The value as given, if it was.
    fn get(&self) -> Option<T> {
        self.given.as_ref().map(|(v, _)| v.clone())
    }

    /// The value as given, else the setting's fixed default.
    fn or_default(&self) -> T {
        self.get().unwrap_or_else(|| default_of(self.key))
    }

    fn check_range(&self) -> anyhow::Result<()> {
        let Some((value, source)) = &self.given else { return Ok(()) };
        let s = setting(self.key).expect("every setting is in SETTINGS");
        let (Some(n), Some((lo, hi))) = (value.as_i64(), s.range) else { return Ok(()) };
        if n < lo || n > hi {
            let from = match source {
                Source::FlagOrEnv => format!("from {} or {}", s.flag(), s.env),
                Source::File(p) => format!("in config file {}", p.display()),
            };
            let allowed = s.range_text().expect("checked above");
            anyhow::bail!("{} = {n} ({from}) is out of range: it must be {allowed} ({})", self.key, s.unit);
        }
        Ok(())
    }
}

/// The fixed default of `key`, parsed from its TOML literal in [`SETTINGS`]. Panics for a
/// computed default or a literal that does not parse: both are bugs in the table, caught by the
/// unit tests.
fn default_of<T: DeserializeOwned>(key: &str) -> T {
    #[derive(Deserialize)]
    struct One<T> {
        v: T,
    }
    let s = setting(key).expect("every setting is in SETTINGS");
    let DefaultValue::Toml(literal) = s.default else { panic!("setting {key} has no fixed default") };
    toml::from_str::<One<T>>(&format!("v = {literal}"))
        .unwrap_or_else(|e| panic!("default of {key} ({literal}) does not parse: {e}"))
        .v
}

/// Integer settings report their value for the range check; others have no range.
trait IntegerValue {
    fn as_i64(&self) -> Option<i64> {
        None
    }
}

impl IntegerValue for i32 {
    fn as_i64(&self) -> Option<i64> {
        Some(*self as i64)
    }
}

impl IntegerValue for i64 {
    fn as_i64(&self) -> Option<i64> {
        Some(*self)
    }
}

impl IntegerValue for usize {
    fn as_i64(&self) -> Option<i64> {
        Some(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl IntegerValue for bool {}
impl IntegerValue for String {}
impl IntegerValue for SocketAddr {}
impl IntegerValue for PathBuf {}

impl Config {
    /// Merges defaults, the TOML file named by `--config`, and flags/env, then checks the values.
    /// Every refusal names the setting and where its value came from.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Config> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = crate::io::fs::read_to_string_sync(path)
                    .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?
                    .ok_or_else(|| anyhow::anyhow!("config file {} does not exist", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let g = Given::merge(args, file, args.config.as_deref());
        g.check_ranges()?;
        anyhow::ensure!(
            g.listen.get().is_none() || g.listeners.get().is_none(),
            "listen and listeners are both set: listen is the shorthand for one PLAINTEXT listener; give listeners only"
        );
        let advertised_first = g.advertised_listener.get().map(|s| parse_host_port(&s)).transpose()?;
        let listeners = security::listeners(
            g.listen.or_default(),
            g.listeners.get().as_deref(),
            advertised_first,
            g.advertised_listeners.get().as_deref(),
        )?;
        let admin_tls = g.admin_tls.or_default();
        let tls = security::tls_settings(
            &listeners,
            admin_tls,
            g.ssl_cert_file.get(),
            g.ssl_key_file.get(),
            g.ssl_ca_file.get(),
            &g.ssl_client_auth.or_default(),
        )?;
        let sasl_mechanisms = security::sasl_mechanisms(&g.sasl_enabled_mechanisms.or_default())?;
        anyhow::ensure!(
            !sasl_mechanisms.is_empty() || !listeners.iter().any(|l| l.protocol.sasl()),
            "sasl_enabled_mechanisms is empty but a listener is SASL_PLAINTEXT or SASL_SSL"
        );
        let listen = listeners[0].bind;
        let (advertised_host, advertised_port) = (listeners[0].advertised_host.clone(), listeners[0].advertised_port);
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cores = g.cores.get().unwrap_or(online);
        anyhow::ensure!(cores <= online, "cores = {cores} asked for but only {online} are online");
        let topic_defaults = TopicDefaults {
            message_max_bytes: g.message_max_bytes.or_default(),
            segment_bytes: g.segment_bytes.or_default(),
            segment_ms: g.segment_ms.or_default(),
            flush_messages: g.flush_messages.or_default(),
            flush_ms: g.flush_ms.or_default(),
            retention_ms: g.log_retention_ms.or_default(),
            retention_bytes: g.log_retention_bytes.or_default(),
            index_interval_bytes: 4096,
            message_timestamp_type: "CreateTime".into(),
            cleanup_policy: "delete".into(),
            delete_retention_ms: 24 * 3600 * 1000,
            compression_type: "producer".into(),
            min_insync_replicas: g.min_insync_replicas.or_default(),
            // Decided by the metadata log's apply, which sees only the topic's config and the
            // cluster-wide dynamic one (every node must decide alike), never a node's settings.
            unclean_leader_election: false,
        };
        // Validate the defaults with the same rules as per-topic overrides.
        TopicConfig::resolve(&topic_defaults, &BTreeMap::new())
            .map_err(|e| anyhow::anyhow!("broker topic defaults: {e}"))?;
        let groups = crate::coordinator::group::GroupConfig {
            initial_rebalance_delay_ms: g.group_initial_rebalance_delay_ms.or_default(),
            min_session_timeout_ms: g.group_min_session_timeout_ms.or_default(),
            max_session_timeout_ms: g.group_max_session_timeout_ms.or_default(),
            offsets_retention_ms: g.offsets_retention_minutes.or_default().saturating_mul(60_000),
            offsets_retention_check_interval_ms: g.offsets_retention_check_interval_ms.or_default(),
            consumer_session_timeout_ms: g.group_consumer_session_timeout_ms.or_default(),
            consumer_heartbeat_interval_ms: g.group_consumer_heartbeat_interval_ms.or_default(),
        };
        anyhow::ensure!(
            groups.consumer_heartbeat_interval_ms < groups.consumer_session_timeout_ms,
            "group_consumer_heartbeat_interval_ms ({}) must be below group_consumer_session_timeout_ms ({})",
            groups.consumer_heartbeat_interval_ms,
            groups.consumer_session_timeout_ms
        );
        anyhow::ensure!(
            groups.min_session_timeout_ms <= groups.max_session_timeout_ms,
            "group_min_session_timeout_ms ({}) must be at most group_max_session_timeout_ms ({})",
            groups.min_session_timeout_ms,
            groups.max_session_timeout_ms
        );
        let node_id = g.node_id.or_default();
        let quorum = QuorumConfig::from_settings(
            node_id,
            &g.process_roles.or_default(),
            &g.controller_quorum_voters.or_default(),
            g.controller_listen.get(),
        )?
        .map(|q| {
            q.with_lifecycle(
                g.broker_rack.get(),
                g.broker_heartbeat_interval_ms.or_default(),
                g.broker_session_timeout_ms.or_default(),
            )
        })
        .transpose()?;
        anyhow::ensure!(
            quorum.is_none() || listeners[0].protocol == security::SecurityProtocol::Plaintext,
            "in a cluster the first listener ({}) is the one brokers use between themselves, which must be PLAINTEXT for now; list a PLAINTEXT listener first",
            listeners[0].name()
        );
        Ok(Config {
            listeners,
            tls,
            sasl_mechanisms,
            connections_max_reauth_ms: g.connections_max_reauth_ms.or_default(),
            principal_rules: crate::server::principal::MappingRules::parse(&g.ssl_principal_mapping_rules.or_default())
                .map_err(|e| anyhow::anyhow!("ssl_principal_mapping_rules: {e}"))?,
            authorizer: match g.authorizer.or_default().to_ascii_lowercase().as_str() {
                "none" => false,
                "acl" => true,
                other => anyhow::bail!("authorizer: expected none or acl, got {other:?}"),
            },
            super_users: g
                .super_users
                .or_default()
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once(':') {
                    Some((k, n)) if !k.is_empty() && !n.is_empty() => Ok(p.to_string()),
                    _ => Err(anyhow::anyhow!("super_users: {p:?} is not a principal (Type:name, like User:admin)")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            allow_everyone_if_no_acl_found: g.allow_everyone_if_no_acl_found.or_default(),
            groups,
            log_cleaner_backoff_ms: g.log_cleaner_backoff_ms.or_default(),
            log_retention_check_interval_ms: g.log_retention_check_interval_ms.or_default(),
            max_connections: g.max_connections.or_default() as usize,
            connections_max_idle_ms: g.connections_max_idle_ms.or_default(),
            connection_busy_poll_us: g.connection_busy_poll_us.or_default() as u64,
            fetch_session_slots: g.max_incremental_fetch_session_cache_slots.or_default() as usize,
            fetch_session_eviction_ms: g.min_incremental_fetch_session_eviction_ms.or_default(),
            queued_max_request_bytes: g.queued_max_request_bytes.or_default() as usize,
            batch_cache_max_bytes: g.batch_cache_max_bytes.or_default() as usize,
            segment_preallocate_bytes: g.segment_preallocate_bytes.or_default() as u64,
            admin_listen: g.admin_listen.or_default(),
            admin_tls,
            admin_token: g.admin_token.get().filter(|t| !t.is_empty()),
            listen,
            advertised_host,
            advertised_port,
            data_dir: g.data_dir.or_default(),
            cores,
            node_id,
            quorum,
            auto_create_topics: g.auto_create_topics.or_default(),
            default_replication_factor: g.default_replication_factor.or_default() as usize,
            offsets_topic_replication_factor: g.offsets_topic_replication_factor.or_default() as usize,
            transaction_state_log_replication_factor: g.transaction_state_log_replication_factor.or_default() as usize,
            transaction_max_timeout_ms: g.transaction_max_timeout_ms.or_default(),
            transaction_version: g.transaction_version.or_default() as i16,
            transaction_timeout_check_interval_ms: g.transaction_abort_timed_out_transaction_cleanup_interval_ms.or_default(),
            transactional_id_expiration_ms: g.transactional_id_expiration_ms.or_default(),
            transactional_id_expiry_check_interval_ms: g.transaction_remove_expired_transaction_cleanup_interval_ms.or_default(),
            replica_lag_time_max_ms: g.replica_lag_time_max_ms.or_default(),
            auto_leader_rebalance: g.auto_leader_rebalance_enable.or_default(),
            leader_imbalance_check_interval_ms: g.leader_imbalance_check_interval_seconds.or_default() * 1000,
            num_partitions: g.num_partitions.or_default(),
            topic_defaults,
            shutdown_grace_ms: g.shutdown_grace_ms.or_default(),
            given: g.given_keys(),
        })
    }

    /// The advertised `host:port` of this broker's `protocol` listener.
    pub fn advertised_for(&self, protocol: security::SecurityProtocol) -> Option<(String, i32)> {
        let l = self.listeners.iter().find(|l| l.protocol == protocol)?;
        Some((l.advertised_host.clone(), l.advertised_port as i32))
    }

    /// What a broker registers with the metadata quorum: its first listener's `host:port` (the
    /// one brokers use between themselves), then every listener as `NAME://host:port`.
    pub fn registered_listeners(&self) -> Vec<String> {
        let mut out = vec![format!("{}:{}", self.advertised_host, self.advertised_port)];
        out.extend(self.listeners.iter().map(|l| l.advertised()));
        out
    }

    /// Broker configs as Kafka names them, with their values from the settings (before any
    /// dynamic change) and the `spate serve` setting each comes from, for DescribeConfigs on the
    /// broker resource and `/v1/config`.
    pub fn broker_entries(&self) -> Vec<BrokerEntry> {
        let d = &self.topic_defaults;
        let e = |name, value: String, setting| BrokerEntry { name, value, setting };
        vec![
            e("broker.id", self.node_id.to_string(), Some("node_id")),
            e("node.id", self.node_id.to_string(), Some("node_id")),
            e(
                "advertised.listeners",
                self.listeners.iter().map(|l| l.advertised()).collect::<Vec<_>>().join(","),
                Some(if self.listeners.len() > 1 { "advertised_listeners" } else { "advertised_listener" }),
            ),
            e(
                "listeners",
                self.listeners.iter().map(|l| format!("{}://{}", l.name(), l.bind)).collect::<Vec<_>>().join(","),
                Some(if self.listeners.len() > 1 { "listeners" } else { "listen" }),
            ),
            e("ssl.client.auth", self.tls.as_ref().map_or("none", |t| t.client_auth.name()).to_string(), Some("ssl_client_auth")),
            e("sasl.enabled.mechanisms", self.sasl_mechanisms.join(","), Some("sasl_enabled_mechanisms")),
            e("connections.max.reauth.ms", self.connections_max_reauth_ms.to_string(), Some("connections_max_reauth_ms")),
            e("authorizer.class.name", if self.authorizer { "acl" } else { "" }.to_string(), Some("authorizer")),
            e("super.users", self.super_users.join(";"), Some("super_users")),
            e("allow.everyone.if.no.acl.found", self.allow_everyone_if_no_acl_found.to_string(), Some("allow_everyone_if_no_acl_found")),
            e("log.dirs", self.data_dir.display().to_string(), Some("data_dir")),
            e("auto.create.topics.enable", self.auto_create_topics.to_string(), Some("auto_create_topics")),
            e("num.partitions", self.num_partitions.to_string(), Some("num_partitions")),
            e("default.replication.factor", self.default_replication_factor.to_string(), Some("default_replication_factor")),
            e("offsets.topic.replication.factor", self.offsets_topic_replication_factor.to_string(), Some("offsets_topic_replication_factor")),
            e("transaction.state.log.replication.factor", self.transaction_state_log_replication_factor.to_string(), Some("transaction_state_log_replication_factor")),
            e("transaction.max.timeout.ms", self.transaction_max_timeout_ms.to_string(), Some("transaction_max_timeout_ms")),
            e(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                self.transaction_timeout_check_interval_ms.to_string(),
                Some("transaction_abort_timed_out_transaction_cleanup_interval_ms"),
            ),
            e("transactional.id.expiration.ms", self.transactional_id_expiration_ms.to_string(), Some("transactional_id_expiration_ms")),
            e(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                self.transactional_id_expiry_check_interval_ms.to_string(),
                Some("transaction_remove_expired_transaction_cleanup_interval_ms"),
            ),
            e("min.insync.replicas", d.min_insync_replicas.to_string(), Some("min_insync_replicas")),
            e("unclean.leader.election.enable", d.unclean_leader_election.to_string(), None),
            e("replica.lag.time.max.ms", self.replica_lag_time_max_ms.to_string(), Some("replica_lag_time_max_ms")),
            e("auto.leader.rebalance.enable", self.auto_leader_rebalance.to_string(), Some("auto_leader_rebalance_enable")),
            e("leader.imbalance.check.interval.seconds", (self.leader_imbalance_check_interval_ms / 1000).to_string(), Some("leader_imbalance_check_interval_seconds")),
            e("leader.imbalance.per.broker.percentage", "10".into(), None),
            e("message.max.bytes", d.message_max_bytes.to_string(), Some("message_max_bytes")),
            e("log.segment.bytes", d.segment_bytes.to_string(), Some("segment_bytes")),
            e("log.roll.ms", d.segment_ms.to_string(), Some("segment_ms")),
            e("log.flush.interval.messages", d.flush_messages.to_string(), Some("flush_messages")),
            e("log.flush.interval.ms", d.flush_ms.to_string(), Some("flush_ms")),
            e("log.retention.ms", d.retention_ms.to_string(), Some("log_retention_ms")),
            e("log.retention.bytes", d.retention_bytes.to_string(), Some("log_retention_bytes")),
            e("log.index.interval.bytes", d.index_interval_bytes.to_string(), None),
            e("log.message.timestamp.type", d.message_timestamp_type.clone(), None),
            e("log.cleanup.policy", d.cleanup_policy.clone(), None),
            e("compression.type", d.compression_type.clone(), None),
            e("log.cleaner.delete.retention.ms", d.delete_retention_ms.to_string(), None),
            e("log.cleaner.backoff.ms", self.log_cleaner_backoff_ms.to_string(), Some("log_cleaner_backoff_ms")),
            e("log.retention.check.interval.ms", self.log_retention_check_interval_ms.to_string(), Some("log_retention_check_interval_ms")),
            e("batch.cache.max.bytes", self.batch_cache_max_bytes.to_string(), Some("batch_cache_max_bytes")),
            e("follower.replication.throttled.rate", i64::MAX.to_string(), None),
            e("leader.replication.throttled.rate", i64::MAX.to_string(), None),
            e("socket.request.max.bytes", limits::REQUEST_FRAME_MAX_BYTES.to_string(), None),
            e("max.connections", self.max_connections.to_string(), Some("max_connections")),
            e("connections.max.idle.ms", self.connections_max_idle_ms.to_string(), Some("connections_max_idle_ms")),
            e("queued.max.request.bytes", self.queued_max_request_bytes.to_string(), Some("queued_max_request_bytes")),
            e("fetch.max.bytes", limits::FETCH_RESPONSE_MAX_BYTES.to_string(), None),
            e("max.incremental.fetch.session.cache.slots", self.fetch_session_slots.to_string(), Some("max_incremental_fetch_session_cache_slots")),
            e("group.initial.rebalance.delay.ms", self.groups.initial_rebalance_delay_ms.to_string(), Some("group_initial_rebalance_delay_ms")),
            e("group.min.session.timeout.ms", self.groups.min_session_timeout_ms.to_string(), Some("group_min_session_timeout_ms")),
            e("group.max.session.timeout.ms", self.groups.max_session_timeout_ms.to_string(), Some("group_max_session_timeout_ms")),
            e("offsets.retention.minutes", (self.groups.offsets_retention_ms / 60_000).to_string(), Some("offsets_retention_minutes")),
            e("offsets.retention.check.interval.ms", self.groups.offsets_retention_check_interval_ms.to_string(), Some("offsets_retention_check_interval_ms")),
            e("offsets.topic.num.partitions", "50".into(), None),
            e("group.consumer.session.timeout.ms", self.groups.consumer_session_timeout_ms.to_string(), Some("group_consumer_session_timeout_ms")),
            e("group.consumer.heartbeat.interval.ms", self.groups.consumer_heartbeat_interval_ms.to_string(), Some("group_consumer_heartbeat_interval_ms")),
            e("group.coordinator.rebalance.protocols", "classic,consumer".into(), None),
        ]
    }

    /// Every broker config with the value that applies now (dynamic changes included).
    pub fn effective_broker_entries(&self, dynamic: &DynamicBrokerConfig) -> Vec<(&'static str, String)> {
        let now = dynamic.effective();
        self.broker_entries().into_iter().map(|e| (e.name, now.get(e.name).cloned().unwrap_or(e.value))).collect()
    }

    /// Whether a broker config's value was given (flag, variable or file) rather than defaulted.
    pub fn is_given(&self, entry: &BrokerEntry) -> bool {
        entry.setting.is_some_and(|s| self.given.contains(s))
    }

    /// The broker-wide topic defaults with the dynamic broker configs applied. Refuses a key
    /// that cannot change at run time, or a bad value, with a message naming the broker key.
    pub fn topic_defaults_with(&self, dynamic: &DynamicBrokerConfig) -> Result<TopicDefaults, String> {
        let mut overrides = BTreeMap::new();
        for (key, value) in dynamic.effective() {
            match dynamic_key(&key) {
                Some(DynamicKey { topic_key: Some(topic_key), .. }) => {
                    // Checked one by one, so that the message names the broker key.
                    let one = BTreeMap::from([(topic_key.to_string(), value.clone())]);
                    TopicConfig::resolve(&self.topic_defaults, &one).map_err(|e| e.replacen(topic_key, &key, 1))?;
                    overrides.insert(topic_key.to_string(), value);
                }
                Some(DynamicKey { topic_key: None, .. }) => {
                    value.trim().parse::<u64>().map_err(|_| format!("{key}: {value:?} is not a non-negative integer"))?;
                }
                None if self.broker_entries().iter().any(|e| e.name == key) => {
                    return Err(format!("{key} cannot be changed at run time (it is read at start)"))
                }
                None => return Err(format!("unknown broker config {key:?}")),
            }
        }
        TopicConfig::resolve(&self.topic_defaults, &overrides).map(|c| TopicDefaults::from(&c))
    }

    /// `batch_cache_max_bytes` with the dynamic broker configs applied (checked when stored).
    pub fn batch_cache_max_bytes_with(&self, dynamic: &DynamicBrokerConfig) -> usize {
        dynamic.effective().get("batch.cache.max.bytes").and_then(|v| v.trim().parse().ok()).unwrap_or(self.batch_cache_max_bytes)
    }
}

/// A broker config as Kafka names it, with its value from the settings.
#[derive(Debug, Clone)]
pub struct BrokerEntry {
    pub name: &'static str,
    pub value: String,
    /// The `spate serve` setting it comes from; None for a fixed value.
    pub setting: Option<&'static str>,
}

/// A broker config that may change at run time (Kafka's dynamic broker configs).
#[derive(Debug, Clone, Copy)]
pub struct DynamicKey {
    pub name: &'static str,
    /// The topic config this is the broker-wide default of (Kafka's synonyms); None for a
    /// broker-only setting.
    pub topic_key: Option<&'static str>,
}

/// The broker configs IncrementalAlterConfigs and AlterConfigs may change at run time: the
/// defaults of the topic configs, and the batch cache. They apply to every partition at once.
pub const DYNAMIC_BROKER_KEYS: &[DynamicKey] = &[
    DynamicKey { name: "batch.cache.max.bytes", topic_key: None },
    DynamicKey { name: "follower.replication.throttled.rate", topic_key: None },
    DynamicKey { name: "leader.replication.throttled.rate", topic_key: None },
    DynamicKey { name: "compression.type", topic_key: Some("compression.type") },
    DynamicKey { name: "log.cleaner.delete.retention.ms", topic_key: Some("delete.retention.ms") },
    DynamicKey { name: "log.cleanup.policy", topic_key: Some("cleanup.policy") },
    DynamicKey { name: "log.flush.interval.messages", topic_key: Some("flush.messages") },
    DynamicKey { name: "log.flush.interval.ms", topic_key: Some("flush.ms") },
    DynamicKey { name: "log.index.interval.bytes", topic_key: Some("index.interval.bytes") },
    DynamicKey { name: "log.message.timestamp.type", topic_key: Some("message.timestamp.type") },
    DynamicKey { name: "log.retention.bytes", topic_key: Some("retention.bytes") },
    DynamicKey { name: "log.retention.ms", topic_key: Some("retention.ms") },
    DynamicKey { name: "log.roll.ms", topic_key: Some("segment.ms") },
    DynamicKey { name: "log.segment.bytes", topic_key: Some("segment.bytes") },
    DynamicKey { name: "message.max.bytes", topic_key: Some("max.message.bytes") },
    DynamicKey { name: "min.insync.replicas", topic_key: Some("min.insync.replicas") },
    DynamicKey { name: "unclean.leader.election.enable", topic_key: Some("unclean.leader.election.enable") },
];

pub fn dynamic_key(name: &str) -> Option<DynamicKey> {
    DYNAMIC_BROKER_KEYS.iter().copied().find(|k| k.name == name)
}

/// The broker config a topic config defaults to (`retention.ms` -> `log.retention.ms`).
pub fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    DYNAMIC_BROKER_KEYS.iter().find(|k| k.topic_key == Some(topic_key)).map(|k| k.name)
}

/// Broker configs changed at run time, by Kafka name: `cluster` for every broker (the broker
/// resource named ""), `node` for this broker (named by its id). A node value wins over a
/// cluster one, which wins over the static settings. Kept in `<data_dir>/broker-configs.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct DynamicBrokerConfig {
    #[serde(default)]
    pub cluster: BTreeMap<String, String>,
    #[serde(default)]
    pub node: BTreeMap<String, String>,
}

impl DynamicBrokerConfig {
    /// Every dynamically set key with the value that applies.
    pub fn effective(&self) -> BTreeMap<String, String> {
        let mut m = self.cluster.clone();
        m.extend(self.node.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    }
}

impl From<&TopicConfig> for TopicDefaults {
    fn from(c: &TopicConfig) -> TopicDefaults {
        TopicDefaults {
            message_max_bytes: c.message_max_bytes,
            segment_bytes: c.segment_bytes,
            segment_ms: c.segment_ms,
            flush_messages: c.flush_messages,
            flush_ms: c.flush_ms,
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            index_interval_bytes: c.index_interval_bytes,
            message_timestamp_type: match c.timestamp_type {
                TimestampType::CreateTime => "CreateTime".into(),
                TimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            cleanup_policy: c.cleanup_policy.clone(),
            delete_retention_ms: c.delete_retention_ms,
            compression_type: c.compression.name().to_string(),
            min_insync_replicas: c.min_insync_replicas,
            unclean_leader_election: c.unclean_leader_election,
        }
    }
}

/// `spate config print-defaults`: every setting of `spate serve` with its flag, variable,
/// default, unit and meaning, for a person.
pub fn render_text() -> String {
    let mut out = String::from(
        "Settings of `spate serve`. Each is a flag, a SPATE_* environment variable and a TOML key\n\
         (in the file named by --config); flags and variables win over the file.\n\n",
    );
    let (flag, env, about) = CONFIG_FLAG;
    out += &format!("{flag}  {env}\n    {about}\n");
    for s in SETTINGS {
        out += &format!(
            "\n{}  {}  {}\n    default: {} ({})\n    {}\n",
            s.key,
            s.flag(),
            s.env,
            s.shown_default(),
            s.unit,
            s.about
        );
        if let Some(r) = s.range_text() {
            out += &format!("    allowed: {r}\n");
        }
    }
    out
}

/// `spate config print-defaults --format toml`: a commented TOML file holding every default,
/// which `spate serve --config` accepts as it is. Settings whose default is computed at start are
/// left commented out, with an example.
pub fn render_toml() -> String {
    let mut out = String::from(
        "# Spate broker configuration: every `spate serve` setting with its default.\n\
         # Use with `spate serve --config FILE`; flags and SPATE_* variables win over this file.\n",
    );
    for s in SETTINGS {
        out += &format!("\n# {}.\n# Unit: {}", capitalized(s.about), s.unit);
        if let Some(r) = s.range_text() {
            out += &format!(", {r}");
        }
        out += &format!(". Flag {}, variable {}.\n", s.flag(), s.env);
        match s.default {
            DefaultValue::Toml(literal) => out += &format!("{} = {literal}\n", s.key),
            DefaultValue::Computed { shown, example } => {
                out += &format!("# Default: {shown}. Uncomment to set, for example:\n# {} = {example}\n", s.key)
            }
        }
    }
    out
}

/// `spate config print-defaults --markdown`: the README's configuration table (between its
/// `config-table` markers; `tests/tidy.rs` checks that they agree).
pub fn render_markdown() -> String {
    let mut out = String::from("| flag | env | TOML key | default | unit | meaning |\n|---|---|---|---|---|---|\n");
    let (flag, env, about) = CONFIG_FLAG;
    out += &format!("| `{flag}` | `{env}` | | | path | {about} |\n");
    for s in SETTINGS {
        let default = match s.default {
            DefaultValue::Toml(_) => format!("`{}`", s.shown_default()),
            DefaultValue::Computed { shown, .. } => shown.to_string(),
        };
        out += &format!("| `{}` | `{}` | `{}` | {default} | {} | {} |\n", s.flag(), s.env, s.key, s.unit, s.about);
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
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
    /// `delete.retention.ms`: how long compaction keeps tombstones, and transaction markers once their transaction has no record left.
    pub delete_retention_ms: i64,
    /// `compression.type`: the codec batches are stored in.
    pub compression: Compression,
    /// `min.insync.replicas`: an acks=all produce is refused (NOT_ENOUGH_REPLICAS) while the
    /// partition's ISR is smaller.
    pub min_insync_replicas: i64,
    /// `unclean.leader.election.enable`: with no in-sync replica left alive, a replica outside
    /// the ISR may lead (losing what only the ISR had).
    pub unclean_leader_election: bool,
    /// `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`:
    /// "partition:broker" entries (or "*") whose replication the broker-wide throttle rates
    /// slow, as Kafka's reassignment tool sets them; "" for none.
    pub leader_throttled_replicas: String,
    pub follower_throttled_replicas: String,
}

impl TopicConfig {
    /// Whether `list` (a `*.replication.throttled.replicas` value) names `partition` on `broker`.
    pub fn names_replica(list: &str, partition: i32, broker: i32) -> bool {
        list.trim() == "*"
            || list.split(',').filter_map(|e| e.trim().split_once(':')).any(|(p, b)| p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(broker))
    }
}

fn throttled_replicas(k: &str, v: &str) -> Result<String, String> {
    let ok = v.trim().is_empty()
        || v.trim() == "*"
        || v.split(',').all(|e| e.trim().split_once(':').is_some_and(|(p, b)| p.trim().parse::<i32>().is_ok() && b.trim().parse::<i32>().is_ok()));
    if !ok {
        return Err(format!("{k}: {v:?} is not \"*\" or a list of partition:broker"));
    }
    Ok(v.trim().to_string())
}

/// A topic's `compression.type`: keep each batch as the producer compressed it, or store every
/// batch with one codec (batches in another are recompressed on append).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Producer,
    /// One of `protocol::codec`'s codec numbers (0 is uncompressed).
    Codec(i16),
}

impl Compression {
    const NAMES: [(&'static str, Compression); 6] = [
        ("producer", Compression::Producer),
        ("uncompressed", Compression::Codec(0)),
        ("gzip", Compression::Codec(1)),
        ("snappy", Compression::Codec(2)),
        ("lz4", Compression::Codec(3)),
        ("zstd", Compression::Codec(4)),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, c)| *c == self).map(|(n, _)| *n).expect("every value is named")
    }

    fn parse(v: &str) -> Result<Compression, String> {
        Self::NAMES.iter().find(|(n, _)| *n == v.trim()).map(|(_, c)| *c).ok_or_else(|| {
            let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
            format!("compression.type: {v:?} is not one of {}", names.join(", "))
        })
    }
}

/// The topic-level keys Spate knows, as Kafka names them. Any other key is INVALID_CONFIG.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
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
            compression: Compression::parse(&d.compression_type)?,
            min_insync_replicas: d.min_insync_replicas,
            unclean_leader_election: d.unclean_leader_election,
            leader_throttled_replicas: String::new(),
            follower_throttled_replicas: String::new(),
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
                "compression.type" => c.compression = Compression::parse(v)?,
                "delete.retention.ms" => c.delete_retention_ms = int(0)?,
                "flush.messages" => c.flush_messages = int(1)?,
                "flush.ms" => c.flush_ms = int(0)?,
                "index.interval.bytes" => c.index_interval_bytes = int(0)?,
                "max.message.bytes" => c.message_max_bytes = int(0)?,
                "min.insync.replicas" => c.min_insync_replicas = int(1)?,
                "leader.replication.throttled.replicas" => c.leader_throttled_replicas = throttled_replicas(k, v)?,
                "follower.replication.throttled.replicas" => c.follower_throttled_replicas = throttled_replicas(k, v)?,
                "unclean.leader.election.enable" => {
                    c.unclean_leader_election = match v.trim() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("{k}: {v:?} is not true or false")),
                    }
                }
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
            ("compression.type", self.compression.name().to_string()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("flush.messages", self.flush_messages.to_string()),
            ("flush.ms", self.flush_ms.to_string()),
            ("follower.replication.throttled.replicas", self.follower_throttled_replicas.clone()),
            ("index.interval.bytes", self.index_interval_bytes.to_string()),
            ("leader.replication.throttled.replicas", self.leader_throttled_replicas.clone()),
            ("max.message.bytes", self.message_max_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
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
            ("unclean.leader.election.enable", self.unclean_leader_election.to_string()),
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

    /// Writes `text` as a config file in a temp dir and merges it with `args`.
    fn from_file(text: &str, args: ServeArgs) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spate.toml");
        crate::io::fs::write_atomic_sync(&path, text.as_bytes()).unwrap();
        Config::from_args(&ServeArgs { config: Some(path), cores: Some(1), ..args })
    }

    #[test]
    fn every_fixed_default_parses_and_lies_in_its_range() {
        for s in SETTINGS {
            let DefaultValue::Toml(literal) = s.default else { continue };
            let v: toml::Value = default_of(s.key);
            if let (Some((lo, hi)), Some(n)) = (s.range, v.as_integer()) {
                assert!(lo <= n && n <= hi, "default {literal} of {} outside {lo}..={hi}", s.key);
            }
            assert!(!s.about.is_empty() && !s.unit.is_empty(), "{} needs a meaning and a unit", s.key);
        }
        let c = Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.topic_defaults.segment_bytes, 1 << 30);
        assert_eq!(c.shutdown_grace_ms, 10_000);
    }

    #[test]
    fn printed_toml_defaults_are_accepted_and_change_nothing() {
        let text = render_toml();
        let mut from_file = from_file(&text, ServeArgs::default()).unwrap();
        let built_in = Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).unwrap();
        // Everything was given (by the file), nothing else differs.
        assert!(SETTINGS.iter().filter(|s| matches!(s.default, DefaultValue::Toml(_))).all(|s| from_file.given.contains(s.key)));
        assert_eq!(built_in.given, BTreeSet::from(["cores"]));
        from_file.given = built_in.given.clone();
        assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
        // Every setting appears, set or commented out with an example that parses.
        for s in SETTINGS {
            let line = text.lines().find(|l| l.trim_start_matches("# ").starts_with(&format!("{} = ", s.key)));
            let line = line.unwrap_or_else(|| panic!("{} missing from the TOML defaults", s.key));
            toml::from_str::<FileConfig>(line.trim_start_matches("# ")).unwrap();
        }
    }

    #[test]
    fn bad_values_name_the_key_and_where_they_came_from() {
        let e = from_file("segment_bytes = -1\n", ServeArgs::default()).unwrap_err().to_string();
        assert!(e.contains("segment_bytes = -1") && e.contains("config file") && e.contains("14 to 4294967295"), "{e}");
        let e = Config::from_args(&ServeArgs { cores: Some(1), segment_bytes: Some(-5), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("segment_bytes = -5") && e.contains("--segment-bytes or SPATE_SEGMENT_BYTES"), "{e}");
        let e = from_file("num_partitions = 0\n", ServeArgs::default()).unwrap_err().to_string();
        assert!(e.contains("num_partitions = 0"), "{e}");
        // A value of the wrong type: toml's message points at the key.
        let e = from_file("flush_ms = \"soon\"\n", ServeArgs::default()).unwrap_err().to_string();
        assert!(e.contains("flush_ms"), "{e}");
        // A flag wins over the file, and is what gets checked.
        let c = from_file("segment_bytes = -1\n", ServeArgs { segment_bytes: Some(4096), ..Default::default() }).unwrap();
        assert_eq!(c.topic_defaults.segment_bytes, 4096);
    }

    #[test]
    fn clap_flags_and_variables_come_from_the_settings_table() {
        use clap::Args;
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        for s in SETTINGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(&s.flag()[2..]))
                .unwrap_or_else(|| panic!("no flag {}", s.flag()));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(s.env));
            assert_eq!(s.env, format!("SPATE_{}", s.key.to_uppercase()));
            let help = arg.get_help().unwrap().to_string();
            assert!(help.contains(s.about) && help.contains(&s.shown_default()), "{help}");
        }
        assert_eq!(cmd.get_arguments().count(), SETTINGS.len() + 1, "one flag per setting, plus --config");
        assert!(render_markdown().lines().count() == SETTINGS.len() + 3);
        assert!(render_text().contains("--shutdown-grace-ms"));
    }

    #[test]
    fn dynamic_broker_configs_layer_over_static_ones_and_name_bad_keys() {
        let c = Config::from_args(&ServeArgs { cores: Some(1), log_retention_ms: Some(5000), ..Default::default() }).unwrap();
        assert!(c.is_given(c.broker_entries().iter().find(|e| e.name == "log.retention.ms").unwrap()));
        let mut d = DynamicBrokerConfig::default();
        assert_eq!(c.topic_defaults_with(&d).unwrap().retention_ms, 5000);
        d.cluster.insert("log.retention.ms".into(), "7000".into());
        d.cluster.insert("log.cleanup.policy".into(), "compact".into());
        let t = c.topic_defaults_with(&d).unwrap();
        assert_eq!((t.retention_ms, t.cleanup_policy.as_str()), (7000, "compact"));
        d.node.insert("log.retention.ms".into(), "9000".into());
        assert_eq!(c.topic_defaults_with(&d).unwrap().retention_ms, 9000, "the node's value wins");
        d.node.insert("batch.cache.max.bytes".into(), "1024".into());
        assert_eq!(c.batch_cache_max_bytes_with(&d), 1024);
        d.node.insert("log.retention.ms".into(), "soon".into());
        assert!(c.topic_defaults_with(&d).unwrap_err().starts_with("log.retention.ms: "));
        d.node.insert("log.retention.ms".into(), "9000".into());
        d.node.insert("num.partitions".into(), "3".into());
        assert!(c.topic_defaults_with(&d).unwrap_err().contains("num.partitions cannot be changed at run time"));
        d.node.remove("num.partitions");
        d.node.insert("no.such".into(), "3".into());
        assert!(c.topic_defaults_with(&d).unwrap_err().contains("unknown broker config \"no.such\""));
        for k in DYNAMIC_BROKER_KEYS {
            assert!(c.broker_entries().iter().any(|e| e.name == k.name), "{} is described", k.name);
            if let Some(t) = k.topic_key {
                assert!(TOPIC_CONFIG_KEYS.contains(&t) && broker_synonym(t) == Some(k.name));
            }
        }
    }

    #[test]
    fn quorum_settings_are_checked_against_each_other() {
        let q = |id: i32, roles: &str, voters: &str, listen: Option<&str>| {
            QuorumConfig::from_settings(id, roles, voters, listen.map(String::from)).map_err(|e| e.to_string())
        };
        let voters = "1@127.0.0.1:9093, 2@127.0.0.1:9094,3@localhost:9095";
        assert_eq!(q(0, "broker,controller", "", None).unwrap(), None, "no voters: a single node");
        let c = q(2, "broker,controller", voters, None).unwrap().unwrap();
        assert_eq!((c.listen.as_str(), c.voters.len(), c.voters[2].addr.as_str()), ("127.0.0.1:9094", 3, "localhost:9095"));
        assert_eq!(q(2, "controller", voters, Some("0.0.0.0:9094")).unwrap().unwrap().listen, "0.0.0.0:9094");
        assert!(q(4, "broker,controller", voters, None).unwrap_err().contains("not in controller_quorum_voters"));
        assert!(q(1, "broker", voters, Some("127.0.0.1:1")).unwrap_err().contains("only the broker role"));
        assert!(q(4, "broker", voters, None).unwrap_err().contains("needs controller_listen"));
        assert!(q(4, "broker", voters, Some("127.0.0.1:9999")).unwrap().unwrap().roles == ProcessRoles { broker: true, controller: false });
        assert!(q(1, "broker,broker", voters, None).unwrap_err().contains("given twice"));
        assert!(q(1, "borker", voters, None).unwrap_err().contains("\"borker\" is not a role"));
        assert!(q(1, "controller", "1@a:1,1@b:2", None).unwrap_err().contains("id 1 is given twice"));
        assert!(q(1, "controller", "1@a:1,2@a:1", None).unwrap_err().contains("a:1 is given for both 1 and 2"));
        for bad in ["x@a:1", "1a:1", "1@a", "1@:5", "1@a:99999", "-1@a:1"] {
            let e = q(1, "controller", &format!("1@h:1,{bad}"), None).unwrap_err();
            assert!(e.contains(&format!("bad entry {bad:?}")), "{bad}: {e}");
        }
        assert!(q(1, "controller", "", Some("127.0.0.1:1")).unwrap_err().contains("controller_quorum_voters is empty"));
        assert!(q(1, "controller", voters, Some("nope")).unwrap_err().contains("controller_listen: expected host:port"));
        // Through the layers, like every other setting.
        let e = Config::from_args(&ServeArgs {
            cores: Some(1),
            node_id: Some(7),
            controller_quorum_voters: Some(voters.into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("node_id 7"), "{e}");
        let lifecycle = |hb: i64, session: i64| {
            Config::from_args(&ServeArgs {
                cores: Some(1),
                node_id: Some(2),
                controller_quorum_voters: Some(voters.into()),
                broker_rack: Some("rack-b".into()),
                broker_heartbeat_interval_ms: Some(hb),
                broker_session_timeout_ms: Some(session),
                ..Default::default()
            })
        };
        let given = lifecycle(500, 3000).unwrap().quorum.unwrap();
        let got = (given.broker_rack.as_deref(), given.broker_heartbeat_interval_ms, given.broker_session_timeout_ms);
        assert_eq!(got, (Some("rack-b"), 500, 3000));
        let e = lifecycle(3000, 3000).unwrap_err().to_string();
        assert!(e.contains("broker_heartbeat_interval_ms (3000) must be below broker_session_timeout_ms (3000)"), "{e}");
        let d = q(2, "broker,controller", voters, None).unwrap().unwrap();
        assert_eq!((d.broker_rack, d.broker_heartbeat_interval_ms, d.broker_session_timeout_ms), (None, 2000, 9000), "Kafka's defaults");
    }

    #[test]
    fn advertised_listener_parses() {
        assert_eq!(parse_host_port("example:9093").unwrap(), ("example".to_string(), 9093));
        assert!(parse_host_port("nope").is_err());
    }
}
