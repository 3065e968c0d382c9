//! `spate produce <topic>`: records from stdin (or `--file`), one per line, written with
//! librdkafka. Text lines are values, or `key SEP value` with `--key-separator`; JSON lines are
//! `{"key","value","headers","partition","timestamp"}` (see [`super::record`]). Records without a
//! partition go where a Java client would put them (murmur2 of the key).
//!
//! At the end a summary goes to stderr (records, bytes, and per partition the offsets written),
//! or to stdout as JSON with `--json`. Every failed record is counted under its Kafka error name;
//! any failure, or an unreadable input line, exits 1.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use serde::Serialize;

use super::librdkafka::{self, parse_property};
use super::record::{self, Format, Record};
use super::{report, table, usage_error, ClientArgs};

/// Delivery timeout unless `-X message.timeout.ms` says otherwise (librdkafka's own is 5 minutes).
const MESSAGE_TIMEOUT_MS: &str = "30000";
/// How long a topic the broker says does not exist is waited for before its records fail
/// (librdkafka's own is 30 s, for clusters where a new topic takes time to reach every broker).
const TOPIC_PROPAGATION_MAX_MS: &str = "3000";
/// How long to wait for room when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The topic to write to.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// Read the records from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// One record per line: `text` (the line is the value) or `json`
    /// ({"key":..,"value":..,"headers":{..},"partition":..}).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Text lines: the key is what comes before the first SEP, the value what follows (a line
    /// without SEP has no key).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record; repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Write every record to this partition (default: by key, as Java clients do; keyless records
    /// are spread).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Acknowledgement to wait for: none (0), the leader (1), all in-sync replicas (all).
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Compress record batches.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Idempotent producer (enable.idempotence): no duplicates or reordering from retries.
    /// Needs --acks all.
    #[arg(long)]
    pub idempotent: bool,
    /// A librdkafka setting, as in kcat (-X linger.ms=50); repeatable.
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Print the summary as JSON on stdout instead of a table on stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all")]
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

fn parse_header(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

/// What the delivery reports said, by partition and by error.
#[derive(Default)]
struct Tally {
    records: u64,
    bytes: u64,
    partitions: BTreeMap<i32, PartitionTally>,
    /// By error name.
    errors: BTreeMap<String, ErrorTally>,
}

#[derive(Default)]
struct PartitionTally {
    records: u64,
    /// Offsets as the broker acknowledged them; none with acks=0.
    first: Option<i64>,
    last: Option<i64>,
}

struct ErrorTally {
    message: String,
    records: u64,
    /// The input line of the first record that failed with it.
    first_line: usize,
}

impl Tally {
    fn delivered(&mut self, partition: i32, offset: i64, bytes: usize) {
        self.records += 1;
        self.bytes += bytes as u64;
        let p = self.partitions.entry(partition).or_default();
        p.records += 1;
        if offset >= 0 {
            p.first = Some(p.first.map_or(offset, |f| f.min(offset)));
            p.last = Some(p.last.map_or(offset, |l| l.max(offset)));
        }
    }

    fn failed(&mut self, code: Option<RDKafkaErrorCode>, e: &KafkaError, line: usize) {
        let (name, message) = match code {
            Some(c) => (librdkafka::code_name(c), librdkafka::description(c)),
            None => ("ERROR".to_string(), e.to_string()),
        };
        let t = self.errors.entry(name).or_insert(ErrorTally { message, records: 0, first_line: line });
        t.records += 1;
        t.first_line = t.first_line.min(line);
    }

    fn failures(&self) -> u64 {
        self.errors.values().map(|e| e.records).sum()
    }
}

/// Receives librdkafka's delivery reports (on the thread that polls); the opaque is the line.
struct Deliveries(Mutex<Tally>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, line: usize) {
        let mut t = self.0.lock().expect("no panics while holding it");
        match r {
            Ok(m) => t.delivered(m.partition(), m.offset(), m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len)),
            Err((e, _)) => t.failed(e.rdkafka_error_code(), e, line),
        }
    }
}

pub fn run(args: ProduceArgs) -> ExitCode {
    if args.idempotent && args.acks != Acks::All {
        return usage_error("--idempotent needs --acks all");
    }
    if args.key_separator.as_deref() == Some("") {
        return usage_error("--key-separator must not be empty");
    }
    if args.key_separator.is_some() && args.format == Format::Json {
        return usage_error("--key-separator is for --format text (JSON records carry their key)");
    }
    match produce(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            report(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn produce(args: &ProduceArgs) -> Result<bool> {
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(BufReader::new(crate::io::client::open_input(path)?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let acks = match args.acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    };
    let compression = format!("{:?}", args.compression).to_lowercase();
    let config = librdkafka::config(
        &args.client.bootstrap_server,
        &[
            ("acks", acks),
            ("compression.codec", &compression),
            ("enable.idempotence", if args.idempotent { "true" } else { "false" }),
            ("partitioner", "murmur2_random"),
            ("message.timeout.ms", MESSAGE_TIMEOUT_MS),
            ("topic.metadata.propagation.max.ms", TOPIC_PROPAGATION_MAX_MS),
        ],
        &args.properties,
    );
    let producer: BaseProducer<Deliveries> =
        config.create_with_context(Deliveries(Mutex::new(Tally::default()))).context("creating the librdkafka producer")?;

    let input_ok = send_all(&producer, args, input);
    producer.flush(Timeout::Never).context("waiting for the last acknowledgements")?;
    let tally = std::mem::take(&mut *producer.context().0.lock().expect("no panics while holding it"));
    summarize(args, &tally);
    Ok(input_ok && tally.failures() == 0)
}

/// Reads and sends every line; false (after reporting it) if the input could not be read.
fn send_all(producer: &BaseProducer<Deliveries>, args: &ProduceArgs, mut input: Box<dyn BufRead>) -> bool {
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                report(&format!("reading the input after line {line}: {e}"));
                return false;
            }
        }
        line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let mut rec = match args.format {
            Format::Text => record::parse_text(&buf, separator),
            Format::Json if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Format::Json => match record::parse_json(&buf) {
                Ok(r) => r,
                Err(e) => {
                    report(&format!("line {line}: not a JSON record ({e}); stopped reading"));
                    return false;
                }
            },
        };
        rec.headers.extend(args.headers.iter().map(|(k, v)| (k.clone(), Some(v.as_bytes().to_vec()))));
        send(producer, args, &rec, line);
        producer.poll(Duration::ZERO);
    }
}

/// Hands one record to librdkafka, waiting while its queue is full; a record it refuses
/// outright is counted as failed.
fn send(producer: &BaseProducer<Deliveries>, args: &ProduceArgs, rec: &Record, line: usize) {
    let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
    for (k, v) in &rec.headers {
        headers = headers.insert(Header { key: k, value: v.as_deref() });
    }
    let mut r: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&args.topic, line).headers(headers);
    if let Some(k) = &rec.key {
        r = r.key(k);
    }
    if let Some(v) = &rec.value {
        r = r.payload(v);
    }
    if let Some(p) = rec.partition.or(args.partition) {
        r = r.partition(p);
    }
    if let Some(ts) = rec.timestamp {
        r = r.timestamp(ts);
    }
    loop {
        match producer.send(r) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                r = back;
                producer.poll(QUEUE_FULL_BACKOFF);
            }
            Err((e, _)) => {
                producer.context().0.lock().expect("no panics while holding it").failed(e.rdkafka_error_code(), &e, line);
                return;
            }
        }
    }
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    topic: &'a str,
    records: u64,
    bytes: u64,
    failed: u64,
    partitions: Vec<PartitionJson>,
    errors: Vec<ErrorJson<'a>>,
}

#[derive(Serialize)]
struct PartitionJson {
    partition: i32,
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    message: &'a str,
    records: u64,
    first_line: usize,
}

fn summarize(args: &ProduceArgs, t: &Tally) {
    for (name, e) in &t.errors {
        let n = e.records;
        report(&format!(
            "{n} record{} not written: {name} ({}); the first at line {}",
            if n == 1 { "" } else { "s" },
            e.message,
            e.first_line
        ));
    }
    if args.json {
        super::Output { json: true }.json(&SummaryJson {
            topic: &args.topic,
            records: t.records,
            bytes: t.bytes,
            failed: t.failures(),
            partitions: t
                .partitions
                .iter()
                .map(|(p, s)| PartitionJson { partition: *p, records: s.records, first_offset: s.first, last_offset: s.last })
                .collect(),
            errors: t
                .errors
                .iter()
                .map(|(name, e)| ErrorJson { error: name, message: &e.message, records: e.records, first_line: e.first_line })
                .collect(),
        });
        return;
    }
    let n = t.records;
    eprintln!("produced {n} record{} ({} bytes) to {}", if n == 1 { "" } else { "s" }, t.bytes, args.topic);
    if !t.partitions.is_empty() {
        eprint!("{}", partition_table(t.partitions.iter().map(|(p, s)| (*p, s.records, s.first, s.last))));
    }
}

/// PARTITION RECORDS FIRST-OFFSET LAST-OFFSET, "-" for unknown offsets (acks=0).
fn partition_table(rows: impl Iterator<Item = (i32, u64, Option<i64>, Option<i64>)>) -> String {
    let dash = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    let rows: Vec<Vec<String>> = rows.map(|(p, n, first, last)| vec![p.to_string(), n.to_string(), dash(first), dash(last)]).collect();
    table(&["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"], &rows)
}
