//! Test harness: a real `spate serve` process on a free loopback port with its own temp data
//! directory, real librdkafka clients (the `rdkafka` crate), and a raw protocol client for the
//! requests no well-behaved client sends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// The `spate` binary the harness runs: cargo's build of it, or the one `SPATE_TEST_BIN` names
/// (scripts/asan points it at a build with AddressSanitizer).
pub fn spate_bin() -> PathBuf {
    std::env::var_os("SPATE_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spate")))
}

/// A broker process. Killed (SIGKILL) and its data directory removed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// The admin HTTP port (`/metrics`, `/v1/...`).
    pub admin_port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    starts: usize,
    /// `RUST_LOG` for the broker: `SPATE_TEST_LOG`, or `info`.
    log_level: String,
}

/// A port free now, never handed out before in this test process. The kernel may give a port
/// just released to the next bind to port 0, and two brokers starting side by side on one port
/// can both pass the start-up check before either reserves it; their listeners (SO_REUSEPORT,
/// same user) then share it, and one test's client talks to another test's broker.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl Broker {
    /// Starts a broker with `--cores 2` (so cross-core routing is always exercised) plus `extra`.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_logging(&std::env::var("SPATE_TEST_LOG").unwrap_or_else(|_| "info".into()), extra)
    }

    /// [`Broker::start`] with `RUST_LOG` set to `level`.
    pub fn start_logging(level: &str, extra: &[&str]) -> Broker {
        let mut b = Broker::unstarted(level, extra);
        b.spawn();
        b.wait_ready_or_move();
        b
    }

    /// Starts a broker like [`Broker::start`] without waiting for it to become ready (a cluster
    /// node waits for its quorum, so the nodes of one start together); see [`Broker::wait_ready`].
    pub fn start_without_waiting(extra: &[&str]) -> Broker {
        let mut b = Broker::unstarted(&std::env::var("SPATE_TEST_LOG").unwrap_or_else(|_| "info".into()), extra);
        b.spawn();
        b
    }

    /// A broker on free ports and a new temporary data directory, not started yet.
    fn unstarted(level: &str, extra: &[&str]) -> Broker {
        Broker {
            child: None,
            port: free_port(),
            admin_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
            log_level: level.to_string(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin endpoint's `/metrics` text.
    #[allow(dead_code)]
    pub fn metrics(&self) -> String {
        self.admin_get("/metrics")
    }

    /// The admin endpoint's answer to `GET path`, headers included.
    #[allow(dead_code)]
    pub fn admin_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("broker-{n}.log"))
    }

    /// The stderr log of the most recent start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// kill -9, then start again without waiting for it to become ready (see [`Broker::wait_ready`]).
    pub fn restart_without_waiting(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).unwrap();
        let mut cmd = Command::new(spate_bin());
        // A test giving `--listeners` names the Kafka port as `{port}` in it (the PLAINTEXT one).
        let listeners = self.args.iter().any(|a| a == "--listeners");
        cmd.arg("serve")
            .args(if listeners { vec![] } else { vec!["--listen".to_string(), self.bootstrap()] })
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(if self.args.iter().any(|a| a == "--cores") { vec![] } else { vec!["--cores", "2"] })
            .args(if self.args.iter().any(|a| a == "--admin-listen") {
                vec![]
            } else {
                vec!["--admin-listen".to_string(), format!("127.0.0.1:{}", self.admin_port)]
            })
            .args(self.args.iter().map(|a| a.replace("{port}", &self.port.to_string())))
            .env("RUST_LOG", &self.log_level)
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawning spate"));
    }

    /// Waits until the broker says it is ready and its Kafka port accepts connections.
    pub fn wait_ready(&mut self) {
        if let Err(e) = self.ready_or_exit() {
            panic!("{e}");
        }
    }

    /// [`Broker::wait_ready`] that survives another test taking the broker's Kafka or admin port
    /// between `free_port()` and its bind: it starts again on fresh ones (its other flags, a
    /// cluster node's controller address among them, stay as they were).
    pub fn wait_ready_or_move(&mut self) {
        for _ in 0..5 {
            match self.ready_or_exit() {
                Ok(()) => return,
                Err(log)
                    if log.lines().any(|l| {
                        l.contains("already in use") && [self.port, self.admin_port].iter().any(|p| l.contains(&format!("127.0.0.1:{p}")))
                    }) =>
                {
                    (self.port, self.admin_port) = (free_port(), free_port());
                    self.spawn();
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("spate found its ports taken five times; log:\n{}", self.log());
    }

    /// [`Broker::wait_ready`], telling an exit during start-up (with its log) to the caller.
    fn ready_or_exit(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("spate exited during start-up ({status}); log:\n{}", self.log()));
            }
            if self.log().contains("spate ready") && TcpStream::connect(self.bootstrap()).is_ok() {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "spate did not become ready; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/pid/status");
        kb * 1024
    }

    /// SIGKILL, as a crash: nothing is flushed or closed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// kill -9, then start again on the same port and data directory. After [`Broker::terminate`]
    /// this just starts it again.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker running").id()
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the broker without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(r, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits up to `limit` for the broker to exit; its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().expect("broker running").try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, as an operator or a service manager stops the broker, then waits for it to exit
    /// (hang guard: 60 s). Returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(Duration::from_secs(60)) {
            Some(status) => status,
            None => panic!("spate did not exit within 60 s of SIGTERM; log:\n{}", self.log()),
        }
    }

    /// Starts a process that must fail; returns its stderr.
    pub fn run_failing(args: &[&str]) -> String {
        let out = Command::new(spate_bin()).args(args).output().unwrap();
        assert!(!out.status.success(), "expected failure from {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `spate` with `args`, after `setup` adjusted the command (environment, limits); it must
    /// exit with a failure. Returns its stderr. A hang guard kills it after 60 s (a broker that
    /// started instead of failing) and fails the test.
    pub fn run_failing_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let err_path = dir.path().join("stderr");
        let mut cmd = Command::new(spate_bin());
        cmd.args(args).stdout(Stdio::null()).stderr(std::fs::File::create(&err_path).unwrap());
        setup(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                child.kill().ok();
                child.wait().ok();
                panic!("spate {args:?} did not fail; stderr:\n{}", std::fs::read_to_string(&err_path).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        assert!(!status.success(), "expected failure from {args:?}; stderr:\n{stderr}");
        stderr
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- spate log ---\n{}", self.log());
        }
    }
}

/// The metric families a `/metrics` text declares (its `# TYPE` lines).
pub fn metric_families(metrics: &str) -> std::collections::BTreeSet<&str> {
    metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect()
}

/// Every metric the Grafana dashboard (`ops/grafana/spate-dashboard.json`) queries, as
/// (panel title, metric family): a histogram's `_bucket`, `_sum` and `_count` name its family.
pub fn dashboard_metrics() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana/spate-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("spate_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
                out.push((panel["title"].as_str().unwrap_or_default().to_string(), family.to_string()));
            }
        }
    }
    out
}

/// The sum over all label sets of the metric `name` in a `/metrics` text (0 when absent).
#[allow(dead_code)]
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What librdkafka reported for each produced message.
#[derive(Default)]
pub struct Deliveries {
    pub ok: Mutex<Vec<(i32, i64, Option<Vec<u8>>)>>,
    pub failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => self.ok.lock().unwrap().push((m.partition(), m.offset(), m.key().map(|k| k.to_vec()))),
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> ThreadedProducer<Deliveries> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Deliveries::default()).expect("creating producer")
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "spate-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("creating consumer")
}

/// A consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

pub fn to_rec(m: &BorrowedMessage<'_>) -> Rec {
    let headers = m
        .headers()
        .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.map(|v| v.to_vec()))).collect())
        .unwrap_or_default();
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        timestamp: m.timestamp().to_millis(),
        headers,
    }
}

/// Assigns `partitions` of `topic` at `offset` and reads until `want` records arrived. The
/// deadline is a hang guard, not a speed check.
pub fn consume(bootstrap: &str, topic: &str, partitions: &[i32], offset: Offset, want: usize) -> Vec<Rec> {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, offset).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while out.len() < want {
        assert!(Instant::now() < deadline, "consumed only {} of {want} records", out.len());
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(to_rec(&m)),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

/// Waits for every message to be acknowledged (or failed) and returns the acknowledgements.
pub fn flush(p: &ThreadedProducer<Deliveries>) {
    use rdkafka::producer::Producer;
    p.flush(Duration::from_secs(120)).expect("flushing producer");
}

/// A raw Kafka protocol client for requests real clients never send.
pub struct Raw {
    s: TcpStream,
    corr: i32,
}

impl Raw {
    /// The socket itself, for tests that read or close it by hand.
    #[allow(dead_code)]
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.s
    }

    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw { s, corr: 0 }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Sends a request at `version` and decodes the response as `R` at `resp_version`.
    pub fn call<Q: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, req: &Q, resp_version: i16) -> R {
        self.send(key, version, req);
        self.receive(key, resp_version)
    }

    /// Sends a request at `version` without waiting for its response (see [`Raw::receive`]).
    pub fn send<Q: Encodable>(&mut self, key: ApiKey, version: i16, req: &Q) {
        self.corr += 1;
        let mut body = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = self.corr;
        h.client_id = Some(StrBytes::from_static_str("raw-test"));
        let hv = if version > key.valid_versions().max { 2 } else { key.request_header_version(version) };
        h.encode(&mut body, hv).unwrap();
        req.encode(&mut body, version.min(key.valid_versions().max)).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.send_bytes(&frame);
    }

    /// Reads and decodes the response to the last request sent.
    pub fn receive<R: Decodable>(&mut self, key: ApiKey, resp_version: i16) -> R {
        let mut resp = self.read_frame().expect("connection closed instead of a response");
        let rhv = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(resp_version) };
        let rh = ResponseHeader::decode(&mut resp, rhv).unwrap();
        assert_eq!(rh.correlation_id, self.corr);
        let r = R::decode(&mut resp, resp_version).unwrap();
        assert_eq!(resp.remaining(), 0, "trailing bytes in response");
        r
    }

    /// Reads one response frame; `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<bytes::Bytes> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut buf).ok()?;
        Some(buf.into())
    }

    /// True once the broker has closed this connection.
    pub fn closed_by_broker(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

/// Lists segment files (`*.log`) of a partition directory, sorted.
pub fn segments(data_dir: &Path, topic: &str, partition: i32) -> Vec<PathBuf> {
    let dir = data_dir.join("topics").join(topic).join(partition.to_string());
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// An uncompressed v2 record batch of `n` records with values `v0..v{n-1}`, as a producer sends it.
pub fn batch(n: usize) -> bytes::Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence changes.
            sequence: i as i32,
            timestamp: 1_000 + i as i64,
            key: None,
            value: Some(bytes::Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &recs, &RecordEncodeOptions { version: 2, compression: Compression::None }).unwrap();
    buf.freeze()
}

/// A thread that sends `n0`, `n1`, ... to `topic`, round-robin over `partitions`, until `stop`;
/// a full queue makes it wait a millisecond. For load while a test crashes or stops the broker.
#[allow(dead_code)]
pub fn spawn_numbered_writer(
    p: std::sync::Arc<ThreadedProducer<Deliveries>>,
    topic: &'static str,
    partitions: i32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let v = format!("n{i}");
            if p.send(rdkafka::producer::BaseRecord::<(), _>::to(topic).payload(&v).partition((i % partitions as u64) as i32)).is_ok() {
                i += 1;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap()
}

/// Creates a topic through librdkafka's admin API (CreateTopics), with topic settings.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    create_replicated_topic(bootstrap, name, partitions, 1, configs)
}

/// [`create_topic`] with `replicas` replicas per partition (a cluster's).
pub fn create_replicated_topic(bootstrap: &str, name: &str, partitions: i32, replicas: i32, configs: &[(&str, &str)]) {
    let a = admin(bootstrap);
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = futures_lite_block_on(a.create_topics([&t], &AdminOptions::new()));
    for x in r.unwrap() {
        x.unwrap();
    }
}

/// rdkafka's admin futures run on librdkafka's threads; a trivial executor is enough.
pub fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

/// A group member with [`group_config`]'s settings.
pub fn group_consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    group_config(bootstrap, group, extra).create().expect("creating consumer")
}

/// A group member's settings: short session so failures show quickly, no auto-commit.
pub fn group_config(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

/// IncrementalAlterConfigs SET of one config of one resource (2: topic, 4: broker, "" for the
/// cluster-wide default) through `raw`; the resource's error code.
pub fn set_config(raw: &mut Raw, resource_type: i8, name: &str, key: &str, value: &str) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_configs(vec![AlterableConfig::default()
            .with_name(StrBytes::from_string(key.to_string()))
            .with_config_operation(0)
            .with_value(Some(StrBytes::from_string(value.to_string())))])]);
    let r: IncrementalAlterConfigsResponse = raw.call(ApiKey::IncrementalAlterConfigs, 1, &req, 1);
    r.responses[0].error_code
}
