//! The workloads of `spate bench`: produce, consume and end-to-end, driven through librdkafka (the
//! `rdkafka` crate) against any Kafka-compatible broker.
//!
//! Threads: the caller's thread sets the run up (topic, watermarks, clients), prints the progress
//! line every second and gathers the report; each producer has a sending thread (and librdkafka's
//! own threads, among them the `ThreadedProducer` poll thread that runs delivery reports); each
//! consumer has a polling thread. They share one [`Run`]: atomic counters and the histograms,
//! each behind a mutex.
//!
//! What is measured:
//! - produce: per message, from the `produce()` call librdkafka accepted to its delivery report
//!   (so linger.ms and batching are included); throughput over the measured window.
//! - consume: messages and payload bytes read per second; no latency.
//! - e2e: per message, from the time the producer sent it, written in the record (header
//!   [`SENT_US_HEADER`]: microseconds by the wall clock, 8 bytes big-endian), to the wall clock when
//!   a consumer gets it from `poll()`: same host clock, microsecond resolution. A record without
//!   the header (another writer's) falls back to its timestamp (CreateTime, milliseconds, so up to
//!   1 ms high). Both ends read the monotonic clock once per message and turn it into wall-clock
//!   time from the wall clock read once at the run's start (`Run::unix_us_at`), so a clock read
//!   is not paid twice per message.
//!
//! A warm-up (`--warmup`) runs first and is left out of every figure; messages sent during it are
//! delivered (and read) but not measured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use super::stats::{Latencies, Report, Side, DELIVERY_LATENCY, E2E_LATENCY};

/// How long metadata and admin requests may take, ms.
const ADMIN_TIMEOUT_MS: u64 = 30_000;
/// How long a created topic may take to show up with leaders in metadata, ms.
const TOPIC_READY_TIMEOUT_MS: u64 = 30_000;
/// A producer whose queue is full waits this long before it tries again, µs.
const QUEUE_FULL_BACKOFF_US: u64 = 100;
/// Longest wait for the last delivery reports once sending stopped, s.
const FLUSH_TIMEOUT_S: u64 = 600;
/// One consumer poll waits at most this long, ms.
const CONSUMER_POLL_MS: u64 = 100;
/// consume (--messages, or up to the end offsets): a consumer stops after this long without a
/// message, ms.
const CONSUME_IDLE_MS: u64 = 10_000;
/// e2e: once the producers are done, consumers stop after this long without a message, ms.
const E2E_DRAIN_IDLE_MS: u64 = 5_000;
/// Distinct error messages kept for the report.
const ERROR_SAMPLES_MAX: usize = 5;
/// Consumers' `fetch.queue.backoff.ms`. librdkafka's default, 1000 ms, stops fetching a partition
/// for a second whenever `queued.min.messages` (100,000) wait in the client's queue: with small
/// records a broker that answers faster than the application reads gets that pause more often,
/// and reads slower (100 B records from Spate: 0.3 M msg/s against 1.8-2.0 M with 10 ms). Not
/// what a benchmark of the broker should measure; `-X fetch.queue.backoff.ms=1000` restores it.
const FETCH_QUEUE_BACKOFF_MS: u64 = 10;
/// Payloads are windows into a buffer this much longer than a message, so messages differ, bytes.
const PAYLOAD_VARIETY_BYTES: usize = 4096;

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// A librdkafka property given with `-X key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Property {
    pub key: String,
    pub value: String,
}

/// Everything a run needs, resolved from the command line (defaults filled in).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub bootstrap: String,
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    pub partitions: i32,
    /// Replication factor if the topic has to be created; -1 is the broker's default.
    pub replication_factor: i32,
    /// Payload bytes per message.
    pub message_size: usize,
    pub producers: usize,
    pub consumers: usize,
    /// Target messages per second over all producers; 0 is unlimited.
    pub rate: u64,
    /// `0`, `1` or `all`.
    pub acks: String,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    pub linger_ms: u64,
    pub batch_size: u64,
    /// Measured seconds (after the warm-up); `None` when a message count or (consume) the
    /// current end of the topic ends the run.
    pub duration_s: Option<f64>,
    /// Measured messages (after the warm-up), over all producers (or consumers).
    pub messages: Option<u64>,
    pub warmup_s: f64,
    /// `-X` properties, applied to every client after the settings above.
    pub properties: Vec<Property>,
    /// Transactional producers committing every this many messages.
    pub transaction_records: Option<u64>,
}

impl Settings {
    fn check(&self, mode: Mode) -> Result<()> {
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        if mode != Mode::Consume && self.producers == 0 {
            bail!("--producers must be at least 1");
        }
        if mode != Mode::Produce && self.consumers == 0 {
            bail!("--consumers must be at least 1");
        }
        if let Some(d) = self.duration_s {
            if !(d > 0.0 && d.is_finite()) {
                bail!("--duration must be a positive number of seconds");
            }
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            bail!("--warmup must be zero or a positive number of seconds");
        }
        if self.messages == Some(0) {
            bail!("--messages must be at least 1");
        }
        if self.transaction_records == Some(0) {
            bail!("--transaction-records must be at least 1");
        }
        if self.transaction_records.is_some() && self.acks != "all" {
            bail!("--transaction-records needs --acks all (transactional producers are idempotent)");
        }
        Ok(())
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
}

/// e2e: the record header holding the send time, microseconds since the Unix epoch (i64 BE).
pub const SENT_US_HEADER: &str = "spate-bench-sent-us";

/// Microseconds since the Unix epoch, by the wall clock.
fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// The state one run's threads share. Times are nanoseconds since `t0`.
struct Run {
    t0: Instant,
    /// `t0` by the wall clock, microseconds since the Unix epoch.
    t0_unix_us: i64,
    /// End of the warm-up, ns since `t0`.
    warmup_ns: u64,
    /// Records with a timestamp before this (wall clock, ms) were sent before the run.
    start_unix_ms: i64,
    /// Records with a timestamp from this on (wall clock, ms) were sent after the warm-up.
    warmup_end_unix_ms: i64,
    message_size: u64,

    /// Delivered, warm-up included.
    delivered: AtomicU64,
    /// Delivered and sent after the warm-up.
    measured_delivered: AtomicU64,
    /// Failed: delivery reports with an error, plus sends librdkafka refused.
    failed: AtomicU64,
    last_delivery_ns: AtomicU64,
    delivery: Mutex<Latencies>,
    producers_done: AtomicBool,
    producers_done_ns: AtomicU64,

    /// Read by consumers (e2e: only records of this run), and their payload bytes.
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    measured_consumed: AtomicU64,
    measured_consumed_bytes: AtomicU64,
    last_consume_ns: AtomicU64,
    e2e: Mutex<Latencies>,

    errors: Mutex<Vec<String>>,
}

impl Run {
    fn new(s: &Settings) -> Run {
        let t0_unix_us = unix_us();
        let start_unix_ms = t0_unix_us / 1000;
        Run {
            t0: Instant::now(),
            t0_unix_us,
            warmup_ns: s.warmup().as_nanos() as u64,
            start_unix_ms,
            warmup_end_unix_ms: start_unix_ms + s.warmup().as_millis() as i64,
            message_size: s.message_size as u64,
            delivered: AtomicU64::new(0),
            measured_delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            delivery: Mutex::new(Latencies::new()),
            producers_done: AtomicBool::new(false),
            producers_done_ns: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            measured_consumed: AtomicU64::new(0),
            measured_consumed_bytes: AtomicU64::new(0),
            last_consume_ns: AtomicU64::new(0),
            e2e: Mutex::new(Latencies::new()),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// A time from `now_ns` by the wall clock (microseconds since the Unix epoch), without
    /// reading the wall clock again: the two clocks differ only if the wall clock is stepped
    /// during the run.
    fn unix_us_at(&self, ns: u64) -> i64 {
        self.t0_unix_us + (ns / 1000) as i64
    }

    fn note_error(&self, message: String) {
        let mut e = self.errors.lock().expect("error list lock");
        if e.len() < ERROR_SAMPLES_MAX && !e.contains(&message) {
            e.push(message);
        }
    }

    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.note_error(message);
    }
}

/// The producers' context: delivery reports land here, on the producer's poll thread. The
/// delivery opaque is the send time, ns since the run's `t0`.
struct DeliveryCtx {
    run: Arc<Run>,
}

impl ClientContext for DeliveryCtx {}

impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let run = &self.run;
        match result {
            Ok(_) => {
                run.delivered.fetch_add(1, Ordering::Relaxed);
                let sent_ns = sent_ns as u64;
                if sent_ns >= run.warmup_ns {
                    let now = run.now_ns();
                    run.delivery.lock().expect("histogram lock").record_us(now.saturating_sub(sent_ns) / 1000);
                    run.measured_delivered.fetch_add(1, Ordering::Relaxed);
                    run.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                }
            }
            Err((e, _)) => run.fail(format!("delivery failed: {e}")),
        }
    }
}

/// The send time a bench producer wrote into the record, microseconds since the epoch.
fn sent_us(m: &BorrowedMessage<'_>) -> Option<i64> {
    let h = m.headers()?.iter().find(|h| h.key == SENT_US_HEADER)?;
    Some(i64::from_be_bytes(h.value?.try_into().ok()?))
}

/// Message payloads: random capital letters (compressible about as much as text, like Kafka's
/// perf tool), a different window of one buffer for consecutive messages.
struct Payload {
    bytes: Vec<u8>,
    size: usize,
}

impl Payload {
    fn new(size: usize) -> Payload {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes = (0..size + PAYLOAD_VARIETY_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'A' + (x % 26) as u8
            })
            .collect();
        Payload { bytes, size }
    }

    fn get(&self, i: u64) -> &[u8] {
        let start = (i as usize).wrapping_mul(7919) % PAYLOAD_VARIETY_BYTES;
        &self.bytes[start..start + self.size]
    }
}

fn client_config(s: &Settings, own: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.bootstrap).set("client.id", "spate-bench");
    for (k, v) in own {
        c.set(*k, v);
    }
    for p in &s.properties {
        c.set(&p.key, &p.value);
    }
    c
}

fn producer_config(s: &Settings) -> ClientConfig {
    client_config(
        s,
        &[
            ("acks", s.acks.clone()),
            ("compression.type", s.compression.clone()),
            ("linger.ms", s.linger_ms.to_string()),
            ("batch.size", s.batch_size.to_string()),
        ],
    )
}

fn consumer_config(s: &Settings) -> ClientConfig {
    client_config(
        s,
        &[
            ("group.id", "spate-bench".to_string()),
            ("enable.auto.commit", "false".to_string()),
            ("enable.partition.eof", "false".to_string()),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string()),
        ],
    )
}

/// The topic's partition count and whether every partition has a leader, or `None` if the
/// cluster does not have the topic.
fn partition_count<C: ClientContext>(client: &Client<C>, bootstrap: &str, topic: &str) -> Result<Option<(i32, bool)>> {
    let md = client
        .fetch_metadata(None, Duration::from_millis(ADMIN_TIMEOUT_MS))
        .with_context(|| format!("fetching metadata from {}", bootstrap))?;
    Ok(md.topics().iter().find(|t| t.name() == topic && t.error().is_none()).map(|t| {
        let led = !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0);
        (t.partitions().len() as i32, led)
    }))
}

/// Creates the topic with the admin API unless it exists (an existing topic is left as it is);
/// returns its partition count once every partition has a leader.
pub fn ensure_topic(s: &Settings) -> Result<i32> {
    // librdkafka's mock cluster (`-X test.mock.num.brokers=N`) is private to each client, so an
    // admin client cannot create a topic the producer would see; the mock creates it on first use.
    if s.properties.iter().any(|p| p.key == "test.mock.num.brokers") {
        return Ok(s.partitions);
    }
    let admin: AdminClient<DefaultClientContext> = client_config(s, &[]).create().context("creating the admin client")?;
    let existing = partition_count(admin.inner(), &s.bootstrap, &s.topic)?;
    if existing.is_none() {
        let t = NewTopic::new(&s.topic, s.partitions, TopicReplication::Fixed(s.replication_factor));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_millis(ADMIN_TIMEOUT_MS)));
        let results = futures_lite::future::block_on(admin.create_topics([&t], &opts))
            .with_context(|| format!("creating topic '{}'", s.topic))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("cannot create topic '{name}': {code}"),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(TOPIC_READY_TIMEOUT_MS);
    loop {
        if let Some((n, true)) = partition_count(admin.inner(), &s.bootstrap, &s.topic)? {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!("topic '{}' has no leader for every partition after {TOPIC_READY_TIMEOUT_MS} ms", s.topic);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a producer knows it is done.
#[derive(Clone, Copy)]
enum Quota {
    /// This many messages sent after the warm-up.
    Messages(u64),
    /// Until this time, ns since `t0`.
    Until(u64),
}

/// Sends until the quota is met, at `rate` messages per second (0: as fast as librdkafka takes
/// them), then waits for every delivery report.
#[allow(clippy::too_many_arguments)] // each is one knob of the loop; a struct would only rename them
fn send_loop(p: &ThreadedProducer<DeliveryCtx>, run: &Run, topic: &str, quota: Quota, rate: f64, payload: &Payload, stamp: bool, txn: Option<u64>) {
    let mut measured_sent = 0u64;
    let mut in_txn = 0u64;
    let mut i = 0u64;
    // One clock read per message serves the loop's checks, the send time and the record's
    // timestamp. In a 100 B run on the 2-core VM the producing thread spent a third of its time
    // in clock_gettime (ours and librdkafka's): each read per message lowers the client's ceiling.
    let mut now = run.now_ns();
    loop {
        let done = match quota {
            Quota::Messages(n) => now >= run.warmup_ns && measured_sent >= n,
            Quota::Until(end) => now >= end,
        };
        if done {
            break;
        }
        if rate > 0.0 {
            // Open loop: message i is due at i / rate; behind schedule, send at once.
            let due = (i as f64 / rate * 1e9) as u64;
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
                now = run.now_ns();
            }
        }
        let mut rec = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, 0).payload(payload.get(i));
        let sent_ns = loop {
            rec.delivery_opaque = now as usize;
            let sent_us = run.unix_us_at(now);
            rec.timestamp = Some(sent_us / 1000);
            if stamp {
                let sent_us = sent_us.to_be_bytes();
                rec.headers = Some(OwnedHeaders::new_with_capacity(1).insert(Header { key: SENT_US_HEADER, value: Some(&sent_us[..]) }));
            }
            match p.send(rec) {
                Ok(()) => break now,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_micros(QUEUE_FULL_BACKOFF_US));
                    now = run.now_ns();
                }
                Err((e, _)) => {
                    run.fail(format!("send refused: {e}"));
                    break now;
                }
            }
        };
        if sent_ns >= run.warmup_ns {
            measured_sent += 1;
        }
        i += 1;
        in_txn += 1;
        if txn.is_some_and(|n| in_txn >= n) {
            in_txn = 0;
            let ended = commit(p, Duration::from_secs(FLUSH_TIMEOUT_S)).and_then(|()| p.begin_transaction().map_err(|e| e.to_string()));
            if let Err(e) = ended {
                run.fail(format!("transaction: {e}"));
                return;
            }
        }
        now = run.now_ns();
    }
    if txn.is_some() {
        if let Err(e) = commit(p, Duration::from_secs(FLUSH_TIMEOUT_S)) {
            run.fail(format!("the last transaction: {e}"));
        }
    }
    if let Err(e) = p.flush(Duration::from_secs(FLUSH_TIMEOUT_S)) {
        run.note_error(format!("flush: {e}"));
    }
}

/// Commits the producer's transaction. Not through the `rdkafka` crate's `commit_transaction`:
/// it first flushes in a loop that polls the producer for up to 100 ms at a time, while the
/// `ThreadedProducer`'s own thread takes every delivery report, so each commit waited about
/// 100 ms whatever the broker (ten transactions a second, measured). librdkafka's commit flushes
/// by itself, its queue served by that thread.
fn commit(p: &ThreadedProducer<DeliveryCtx>, timeout: Duration) -> Result<(), String> {
    use rdkafka::bindings as rd;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the handle is the producer's live librdkafka client, valid while `p` is borrowed;
    // rd_kafka_commit_transaction may be called from any thread and returns NULL or an error
    // object that the caller owns: it is read, then destroyed once, here.
    unsafe {
        let err = rd::rd_kafka_commit_transaction(p.client().native_ptr(), ms);
        if err.is_null() {
            return Ok(());
        }
        let msg = std::ffi::CStr::from_ptr(rd::rd_kafka_error_string(err)).to_string_lossy().into_owned();
        rd::rd_kafka_error_destroy(err);
        Err(msg)
    }
}

/// A consumer and what it reads: its partitions with the offset to start at, and (consume) the
/// end offset that counts as caught up.
struct Reader {
    consumer: BaseConsumer,
    ends: HashMap<i32, i64>,
}

/// Creates up to `--consumers` consumers (no more than partitions), each assigned every
/// consumer-count-th partition, from the low watermark (consume) or the high one (e2e).
fn readers(s: &Settings, mode: Mode, partitions: i32) -> Result<Vec<Reader>> {
    let n = s.consumers.min(partitions as usize);
    if n < s.consumers {
        eprintln!("note: {} consumers for {partitions} partitions; {} would have nothing to read", s.consumers, s.consumers - n);
    }
    let mut out = Vec::new();
    for c in 0..n {
        let consumer: BaseConsumer = consumer_config(s).create().context("creating a consumer")?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in (0..partitions).filter(|p| *p as usize % n == c) {
            let (low, high) = consumer
                .fetch_watermarks(&s.topic, p, Duration::from_millis(ADMIN_TIMEOUT_MS))
                .with_context(|| format!("fetching the offsets of {}[{p}]", s.topic))?;
            let start = if mode == Mode::E2e { high } else { low };
            tpl.add_partition_offset(&s.topic, p, Offset::Offset(start)).map_err(|e| anyhow!("{e}"))?;
            if high > start {
                ends.insert(p, high);
            }
        }
        consumer.assign(&tpl).context("assigning partitions")?;
        out.push(Reader { consumer, ends });
    }
    Ok(out)
}

/// How a consumer knows it is done.
#[derive(Clone, Copy)]
enum ReadUntil {
    /// consume: this many messages read after the warm-up, over all consumers.
    Messages(u64),
    /// consume: until this time, ns since `t0`.
    Time(u64),
    /// consume: until each partition reached the end offset it had at the start.
    CaughtUp,
    /// e2e: until every delivered message was read, or nothing came for a while after the
    /// producers were done.
    Drained,
}

fn read_loop(mut r: Reader, run: &Run, until: ReadUntil) {
    let e2e = matches!(until, ReadUntil::Drained);
    let mut last_message_ns = run.now_ns();
    // As in `send_loop`, one clock read per message: the time a poll returned serves the message
    // and the next round's checks (in a 100 B e2e run, clock reads were half this thread's time).
    let mut now = last_message_ns;
    loop {
        let done = match until {
            ReadUntil::Messages(n) => run.measured_consumed.load(Ordering::Relaxed) >= n,
            ReadUntil::Time(end) => now >= end,
            ReadUntil::CaughtUp => r.ends.is_empty(),
            ReadUntil::Drained => {
                run.producers_done.load(Ordering::Acquire)
                    && (run.consumed.load(Ordering::Relaxed) >= run.delivered.load(Ordering::Relaxed)
                        || now.saturating_sub(last_message_ns.max(run.producers_done_ns.load(Ordering::Relaxed)))
                            > E2E_DRAIN_IDLE_MS * 1_000_000)
            }
        };
        // A guard, not a stop condition: a duration is waited out, data or not.
        let may_idle = matches!(until, ReadUntil::Messages(_) | ReadUntil::CaughtUp);
        if may_idle && now.saturating_sub(last_message_ns) > CONSUME_IDLE_MS * 1_000_000 {
            eprintln!("note: a consumer stops: nothing to read for {} s", CONSUME_IDLE_MS / 1000);
            return;
        }
        if done {
            return;
        }
        let polled = r.consumer.poll(Duration::from_millis(CONSUMER_POLL_MS));
        now = run.now_ns();
        match polled {
            None => {}
            Some(Err(e)) => run.note_error(format!("consumer: {e}")),
            Some(Ok(m)) => {
                last_message_ns = now;
                let bytes = m.payload_len() as u64;
                if e2e {
                    let Some(ts) = m.timestamp().to_millis() else { continue };
                    if ts < run.start_unix_ms {
                        continue; // written before this run, by someone else
                    }
                    run.consumed.fetch_add(1, Ordering::Relaxed);
                    run.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
                    if ts >= run.warmup_end_unix_ms {
                        let sent_us = sent_us(&m).unwrap_or(ts * 1000);
                        let latency_us = (run.unix_us_at(now) - sent_us).max(0) as u64;
                        run.e2e.lock().expect("histogram lock").record_us(latency_us);
                        run.measured_consumed.fetch_add(1, Ordering::Relaxed);
                        run.measured_consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
                        run.last_consume_ns.fetch_max(now, Ordering::Relaxed);
                    }
                } else {
                    run.consumed.fetch_add(1, Ordering::Relaxed);
                    run.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
                    if now >= run.warmup_ns {
                        run.measured_consumed.fetch_add(1, Ordering::Relaxed);
                        run.measured_consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
                        run.last_consume_ns.fetch_max(now, Ordering::Relaxed);
                    }
                    if r.ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
                        r.ends.remove(&m.partition());
                    }
                }
            }
        }
    }
}

/// Runs one workload and returns its report. A progress line goes to stderr every second.
pub fn run(mode: Mode, s: &Settings) -> Result<Report> {
    s.check(mode)?;
    let partitions = ensure_topic(s)?;
    if partitions != s.partitions {
        eprintln!("note: using the existing topic '{}', which has {partitions} partitions", s.topic);
    }
    let readers = if mode == Mode::Produce { Vec::new() } else { readers(s, mode, partitions)? };
    if mode == Mode::E2e {
        // One poll each connects the consumers before the producers start (nothing to read yet).
        for r in &readers {
            let _ = r.consumer.poll(Duration::from_millis(CONSUMER_POLL_MS));
        }
    }
    let run = Arc::new(Run::new(s));
    let producers: Vec<ThreadedProducer<DeliveryCtx>> = if mode == Mode::Consume {
        Vec::new()
    } else {
        let all: Vec<ThreadedProducer<DeliveryCtx>> = (0..s.producers)
            .map(|i| {
                let mut c = producer_config(s);
                if s.transaction_records.is_some() {
                    c.set("transactional.id", format!("spate-bench-{}-{i}", std::process::id()));
                }
                c.create_with_context(DeliveryCtx { run: run.clone() })
            })
            .collect::<Result<_, _>>()
            .context("creating a producer")?;
        if s.transaction_records.is_some() {
            for p in &all {
                p.init_transactions(Duration::from_secs(FLUSH_TIMEOUT_S)).context("initializing a transactional producer")?;
                p.begin_transaction().context("beginning a transaction")?;
            }
        }
        all
    };

    let warmup_ns = run.warmup_ns;
    let end_ns = s.duration_s.map(|d| warmup_ns + Duration::from_secs_f64(d).as_nanos() as u64);
    let payload = Arc::new(Payload::new(s.message_size));
    let mut producer_threads: Vec<JoinHandle<()>> = Vec::new();
    let count = producers.len() as u64;
    for (i, p) in producers.into_iter().enumerate() {
        let quota = match (s.messages, end_ns) {
            (Some(n), _) => Quota::Messages(n / count + u64::from((i as u64) < n % count)),
            (None, Some(end)) => Quota::Until(end),
            (None, None) => bail!("a produce workload needs --duration or --messages"),
        };
        let (run, payload, topic) = (run.clone(), payload.clone(), s.topic.clone());
        let rate = s.rate as f64 / count as f64;
        let stamp = matches!(mode, Mode::E2e);
        let txn = s.transaction_records;
        producer_threads.push(std::thread::spawn(move || send_loop(&p, &run, &topic, quota, rate, &payload, stamp, txn)));
    }
    let until = match (mode, s.messages, end_ns) {
        (Mode::E2e, _, _) => ReadUntil::Drained,
        (_, Some(n), _) => ReadUntil::Messages(n),
        (_, None, Some(end)) => ReadUntil::Time(end),
        (_, None, None) => ReadUntil::CaughtUp,
    };
    let consumer_threads: Vec<JoinHandle<()>> = readers
        .into_iter()
        .map(|r| {
            let run = run.clone();
            std::thread::spawn(move || read_loop(r, &run, until))
        })
        .collect();

    let mut progress = Progress::new(mode);
    let mut next_tick = Duration::from_secs(1);
    loop {
        let producers_done = producer_threads.iter().all(|t| t.is_finished());
        if producers_done && !run.producers_done.load(Ordering::Relaxed) {
            run.producers_done_ns.store(run.now_ns(), Ordering::Relaxed);
            run.producers_done.store(true, Ordering::Release);
        }
        if producers_done && consumer_threads.iter().all(|t| t.is_finished()) {
            break;
        }
        if run.t0.elapsed() >= next_tick {
            eprintln!("{}", progress.line(&run));
            next_tick += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in producer_threads.into_iter().chain(consumer_threads) {
        t.join().map_err(|_| anyhow!("a benchmark thread panicked"))?;
    }
    Ok(report(mode, s, partitions, &run))
}

fn report(mode: Mode, s: &Settings, partitions: i32, run: &Run) -> Report {
    let window = |last_ns: &AtomicU64| last_ns.load(Ordering::Relaxed).saturating_sub(run.warmup_ns) as f64 / 1e9;
    let produced = (mode != Mode::Consume).then(|| {
        let n = run.measured_delivered.load(Ordering::Relaxed);
        let latencies = run.delivery.lock().expect("histogram lock");
        Side::new(n, n * run.message_size, window(&run.last_delivery_ns), Some(DELIVERY_LATENCY), &latencies)
    });
    let consumed = (mode != Mode::Produce).then(|| {
        let latencies = run.e2e.lock().expect("histogram lock");
        Side::new(
            run.measured_consumed.load(Ordering::Relaxed),
            run.measured_consumed_bytes.load(Ordering::Relaxed),
            window(&run.last_consume_ns),
            (mode == Mode::E2e).then_some(E2E_LATENCY),
            &latencies,
        )
    });
    let missing = (mode == Mode::E2e)
        .then(|| run.delivered.load(Ordering::Relaxed).saturating_sub(run.consumed.load(Ordering::Relaxed)));
    Report {
        mode: mode.name(),
        settings: s.clone(),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
        topic_partitions: partitions,
        produced,
        consumed,
        errors: run.failed.load(Ordering::Relaxed),
        error_samples: run.errors.lock().expect("error list lock").clone(),
        missing,
    }
}

/// The once-a-second progress line: rates over the last second, p99 so far.
struct Progress {
    mode: Mode,
    delivered: u64,
    consumed: u64,
    consumed_bytes: u64,
}

impl Progress {
    fn new(mode: Mode) -> Progress {
        Progress { mode, delivered: 0, consumed: 0, consumed_bytes: 0 }
    }

    fn line(&mut self, run: &Run) -> String {
        let now = run.now_ns();
        let mut line = format!("[{:>4}s]", now / 1_000_000_000);
        let delivered = run.delivered.load(Ordering::Relaxed);
        let consumed = run.consumed.load(Ordering::Relaxed);
        let consumed_bytes = run.consumed_bytes.load(Ordering::Relaxed);
        let mb = |n: u64| n as f64 * run.message_size as f64 / 1e6;
        let p99 = |l: &Mutex<Latencies>| match l.lock().expect("histogram lock").percentile_ms(99.0) {
            Some(ms) => format!("{} ms", super::stats::format_ms(ms)),
            None => "-".to_string(),
        };
        if self.mode != Mode::Consume {
            let d = delivered - self.delivered;
            line.push_str(&format!(
                " produced {:>9} msg/s {:>8.2} MB/s  p99 {:>9}",
                super::stats::group_thousands(d),
                mb(d),
                p99(&run.delivery)
            ));
        }
        if self.mode != Mode::Produce {
            let c = consumed - self.consumed;
            let mb_c = (consumed_bytes - self.consumed_bytes) as f64 / 1e6;
            line.push_str(&format!(" consumed {:>9} msg/s {:>8.2} MB/s", super::stats::group_thousands(c), mb_c));
            if self.mode == Mode::E2e {
                line.push_str(&format!("  e2e p99 {:>9}", p99(&run.e2e)));
            }
        }
        if self.mode != Mode::Consume {
            line.push_str(&format!("  errors {}", run.failed.load(Ordering::Relaxed)));
        }
        if now < run.warmup_ns {
            line.push_str("  (warm-up)");
        } else if self.mode == Mode::E2e && run.producers_done.load(Ordering::Relaxed) {
            line.push_str("  (draining)");
        }
        self.delivered = delivered;
        self.consumed = consumed;
        self.consumed_bytes = consumed_bytes;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_letters_of_the_asked_size_and_vary() {
        let p = Payload::new(100);
        assert_eq!(p.get(0).len(), 100);
        assert_eq!(p.get(u64::MAX).len(), 100);
        assert!(p.get(0).iter().all(u8::is_ascii_uppercase));
        assert_ne!(p.get(0), p.get(1));
        assert_eq!(Payload::new(0).get(5).len(), 0);
    }
}
