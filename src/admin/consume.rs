//! `spate consume <topic>`: records to stdout, one per line, read with librdkafka.
//!
//! Without `--group` the partitions are assigned directly and nothing is committed; with it the
//! command joins the group (subscribe), resumes from the group's committed offsets and commits
//! what it printed. It stops at each partition's high watermark as of the start, or with
//! `--follow` keeps waiting; `--to` and `--count` stop it earlier. Ctrl-C stops it too, with
//! exit 0, after printing (and committing) what it has. A one-line summary goes to stderr.

use std::collections::BTreeMap;
use std::io::{BufWriter, ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::librdkafka::{self, parse_property};
use super::record::{self, ConsumedJson, Format, JsonBytes, JsonHeaders};
use super::{report, usage_error, ClientArgs};
use crate::io::client::{catch_interrupts, interrupted};

/// How long metadata, watermark and offsets-for-times lookups may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The group id librdkafka is given without `--group` (never joined, never committed to).
const ASSIGN_GROUP_ID: &str = "spate-cli-unjoined";
/// How often the loop looks at Ctrl-C and flushes its output while no records come.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The topic to read.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// Only this partition; repeatable (default: all).
    #[arg(long = "partition", value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub partitions: Vec<i32>,
    /// Where to start: beginning, end, an offset (42), N before the end (-10), or a time: RFC 3339
    /// (2024-05-01T12:00:00Z) or @ and milliseconds since the epoch (@1714564800000), read as
    /// the first record at or after it. With --group: where partitions the group has no
    /// committed offset for start (beginning or end).
    #[arg(long, value_name = "WHERE", default_value = "beginning", value_parser = parse_from, allow_hyphen_values = true)]
    pub from: From,
    /// Stop before this offset, or before the first record at or after this time (RFC 3339 or
    /// @milliseconds), in each partition.
    #[arg(long, value_name = "OFFSET|TIME", value_parser = parse_to)]
    pub to: Option<To>,
    /// Stop after this many records in all.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Keep waiting for new records (without it, stop at the end of each partition as of the
    /// start). Ctrl-C stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Consume as a member of this group, committing the offsets of what was printed.
    #[arg(long, value_name = "GROUP", conflicts_with = "partitions")]
    pub group: Option<String>,
    /// `text` (the value, and what --print-* ask for) or `json` (one object per line: topic,
    /// partition, offset, timestamp, key, value, headers).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
    /// Text: print the key, then --key-separator, before the value.
    #[arg(long)]
    pub print_key: bool,
    /// Text: print the headers (name=value,...) and a tab first.
    #[arg(long)]
    pub print_headers: bool,
    /// Text: print partition:offset and a tab first.
    #[arg(long)]
    pub print_offset: bool,
    /// Text: what goes between key and value with --print-key.
    #[arg(long, value_name = "SEP", default_value = "\t")]
    pub key_separator: String,
    /// A librdkafka setting, as in kcat (-X fetch.max.bytes=1048576); repeatable.
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

/// `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Beginning,
    End,
    Offset(i64),
    /// N records before the end.
    Tail(i64),
    /// Milliseconds since the epoch.
    Time(i64),
}

/// `--to` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Offset(i64),
    Time(i64),
}

fn parse_from(s: &str) -> std::result::Result<From, String> {
    match s {
        "beginning" | "earliest" => Ok(From::Beginning),
        "end" | "latest" => Ok(From::End),
        _ if s.starts_with('-') => match s[1..].parse::<i64>() {
            Ok(n) if n > 0 => Ok(From::Tail(n)),
            _ => Err("-N must be a positive number of records before the end".to_string()),
        },
        _ => match parse_to(s)? {
            To::Offset(o) => Ok(From::Offset(o)),
            To::Time(t) => Ok(From::Time(t)),
        },
    }
}

fn parse_to(s: &str) -> std::result::Result<To, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(To::Offset).map_err(|e| format!("{e}"));
    }
    match s.strip_prefix('@') {
        Some(ms) if !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) => ms.parse().map(To::Time).map_err(|e| format!("{e}")),
        Some(_) => Err("@ must be followed by milliseconds since the epoch".to_string()),
        None => super::reset::parse_time(s).map(To::Time).map_err(|_| {
            "expected an offset, @ and milliseconds since the epoch, or an RFC 3339 time with a zone \
             (2024-05-01T12:00:00Z)"
                .to_string()
        }),
    }
}

/// One partition's progress.
#[derive(Default)]
struct Progress {
    /// Stop before this offset; `None`: no end (follow mode).
    end: Option<i64>,
    done: bool,
    /// The offset of the last record printed.
    last: Option<i64>,
}

pub fn run(mut args: ConsumeArgs) -> ExitCode {
    if args.json {
        args.format = Format::Json;
    }
    if args.group.is_some() && !matches!(args.from, From::Beginning | From::End) {
        return usage_error("with --group, --from takes beginning or end (partitions with a committed offset resume from it)");
    }
    match consume(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            report(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn consume(args: &ConsumeArgs) -> Result<bool> {
    catch_interrupts()?;
    let reset = if args.from == From::End { "latest" } else { "earliest" };
    let mut defaults = vec![
        ("enable.partition.eof", if args.follow { "false" } else { "true" }),
        ("auto.offset.reset", reset),
        ("allow.auto.create.topics", "false"),
    ];
    match &args.group {
        // Offsets are stored once a record is printed, and committed from there.
        Some(g) => defaults.extend([("group.id", g.as_str()), ("enable.auto.commit", "true"), ("enable.auto.offset.store", "false")]),
        // librdkafka wants a group id even to assign; with no subscribe and no commit the
        // group is never joined nor written to.
        None => defaults.extend([("group.id", ASSIGN_GROUP_ID), ("enable.auto.commit", "false")]),
    }
    let consumer: BaseConsumer =
        librdkafka::config(&args.client.bootstrap_server, &defaults, &args.properties).create().context("creating the librdkafka consumer")?;

    let partitions = partitions(&consumer, args)?;
    let mut progress = BTreeMap::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(&args.topic, p, LOOKUP_TIMEOUT)
            .map_err(|e| anyhow!("reading the end of {}-{p}: {}", args.topic, librdkafka::describe(&e)))?;
        let end = match (args.follow, args.to) {
            (false, Some(To::Offset(o))) => Some(o.min(high)),
            (false, _) => Some(high),
            (true, Some(To::Offset(o))) => Some(o),
            (true, _) => None,
        };
        progress.insert(p, Progress { end, ..Progress::default() });
    }
    match &args.group {
        Some(_) => consumer.subscribe(&[&args.topic]).map_err(|e| anyhow!("subscribing: {}", librdkafka::describe(&e)))?,
        None => {
            let tpl = start_positions(&consumer, args, &partitions, &mut progress)?;
            consumer.assign(&tpl).map_err(|e| anyhow!("assigning partitions: {}", librdkafka::describe(&e)))?;
        }
    }

    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut ok = true;
    let mut total = 0u64;
    let mut warned = Vec::new();
    while !interrupted() && args.count.is_none_or(|c| total < c) && !finished(&consumer, args, &progress) {
        let m = match consumer.poll(POLL_INTERVAL) {
            None => {
                if !flushed(out.flush())? {
                    break;
                }
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(pr) = progress.get_mut(&p) {
                    pr.done |= !args.follow;
                }
                continue;
            }
            Some(Err(e)) => {
                let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_))
                    || matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::UnknownTopicOrPartition
                                | RDKafkaErrorCode::UnknownTopic
                                | RDKafkaErrorCode::UnknownPartition
                                | RDKafkaErrorCode::TopicAuthorizationFailed
                                | RDKafkaErrorCode::GroupAuthorizationFailed
                        )
                    );
                let text = librdkafka::describe(&e);
                if fatal {
                    report(&format!("consuming {}: {text}", args.topic));
                    ok = false;
                    break;
                }
                if !warned.contains(&text) {
                    eprintln!("spate: warning: {text} (still trying)");
                    warned.push(text);
                }
                continue;
            }
            Some(Ok(m)) => m,
        };
        let Some(pr) = progress.get_mut(&m.partition()) else { continue };
        let offset = m.offset();
        let past_time = matches!(args.to, Some(To::Time(t)) if m.timestamp().to_millis().is_some_and(|ts| ts >= t));
        if pr.done || pr.end.is_some_and(|e| offset >= e) || past_time {
            pr.done = true;
            continue;
        }
        if !flushed(write_record(&mut out, args, &m))? {
            break;
        }
        if args.follow && !flushed(out.flush())? {
            break;
        }
        pr.last = Some(offset);
        total += 1;
        if pr.end.is_some_and(|e| offset + 1 >= e) {
            pr.done = true;
        }
        if args.group.is_some() {
            consumer.store_offset_from_message(&m).map_err(|e| anyhow!("storing the offset: {}", librdkafka::describe(&e)))?;
        }
    }
    flushed(out.flush())?;
    drop(out);

    if let Some(g) = &args.group {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing was printed, so there is nothing new to commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                report(&format!("committing the offsets of group '{g}': {}", librdkafka::describe(&e)));
                ok = false;
            }
        }
    }
    eprintln!("{}", summary(&args.topic, total, &progress));
    Ok(ok)
}

/// `consumed 3 records from orders (next offsets 0:4 2:1)`: where to pick up with --from, for
/// each partition that had records.
fn summary(topic: &str, total: u64, progress: &BTreeMap<i32, Progress>) -> String {
    let mut s = format!("consumed {total} record{} from {topic}", if total == 1 { "" } else { "s" });
    let next: Vec<String> = progress.iter().filter_map(|(p, pr)| Some(format!("{p}:{}", pr.last? + 1))).collect();
    if !next.is_empty() {
        s.push_str(&format!(" (next offsets {})", next.join(" ")));
    }
    s
}

/// The partitions to read, checked against Metadata.
fn partitions(consumer: &BaseConsumer, args: &ConsumeArgs) -> Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(&args.topic), LOOKUP_TIMEOUT)
        .map_err(|e| anyhow!("asking for the metadata of {}: {}", args.topic, librdkafka::describe(&e)))?;
    let t = md.topics().iter().find(|t| t.name() == args.topic).ok_or_else(|| anyhow!("Metadata did not mention {}", args.topic))?;
    if let Some(e) = t.error() {
        bail!("topic {}: {}", args.topic, librdkafka::describe_code(e.into()));
    }
    let mut all: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    all.sort_unstable();
    if args.partitions.is_empty() {
        return Ok(all);
    }
    for p in &args.partitions {
        if !all.contains(p) {
            bail!("topic {} has no partition {p} (it has {}): {}", args.topic, all.len(), librdkafka::code_name(RDKafkaErrorCode::UnknownTopicOrPartition));
        }
    }
    let mut chosen = args.partitions.clone();
    chosen.sort_unstable();
    chosen.dedup();
    Ok(chosen)
}

/// Where each partition starts, from `--from`. A partition whose start is already at or past
/// its end is marked done.
fn start_positions(consumer: &BaseConsumer, args: &ConsumeArgs, partitions: &[i32], progress: &mut BTreeMap<i32, Progress>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    let starts: BTreeMap<i32, Offset> = match args.from {
        From::Time(t) => {
            let mut ask = TopicPartitionList::new();
            for &p in partitions {
                ask.add_partition_offset(&args.topic, p, Offset::Offset(t)).expect("a valid offset");
            }
            let found = consumer
                .offsets_for_times(ask, LOOKUP_TIMEOUT)
                .map_err(|e| anyhow!("looking up offsets by time: {}", librdkafka::describe(&e)))?;
            let mut starts = BTreeMap::new();
            for e in found.elements_for_topic(&args.topic) {
                e.error().map_err(|err| anyhow!("looking up the offset by time of {}-{}: {}", args.topic, e.partition(), librdkafka::describe(&err)))?;
                // No record that recent: the end.
                let o = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                    _ => Offset::End,
                };
                starts.insert(e.partition(), o);
            }
            starts
        }
        f => partitions
            .iter()
            .map(|&p| {
                let o = match f {
                    From::Beginning => Offset::Beginning,
                    From::End => Offset::End,
                    From::Offset(o) => Offset::Offset(o),
                    From::Tail(n) => Offset::OffsetTail(n),
                    From::Time(_) => unreachable!("handled above"),
                };
                (p, o)
            })
            .collect(),
    };
    for &p in partitions {
        let start = starts.get(&p).copied().unwrap_or(Offset::End);
        if let (Offset::Offset(s), Some(pr)) = (start, progress.get_mut(&p)) {
            pr.done |= pr.end.is_some_and(|e| s >= e);
        }
        tpl.add_partition_offset(&args.topic, p, start).map_err(|e| anyhow!("{}", librdkafka::describe(&e)))?;
    }
    Ok(tpl)
}

/// True when every partition this consumer reads is done (with a group: once it has some).
fn finished(consumer: &BaseConsumer, args: &ConsumeArgs, progress: &BTreeMap<i32, Progress>) -> bool {
    if args.group.is_none() {
        return progress.values().all(|p| p.done);
    }
    if progress.values().all(|p| !p.done) {
        return false;
    }
    let Ok(assigned) = consumer.assignment() else { return false };
    let assigned = assigned.elements_for_topic(&args.topic);
    !assigned.is_empty() && assigned.iter().all(|e| progress.get(&e.partition()).is_none_or(|p| p.done))
}

/// Ok(false) when stdout was closed (a pipe into `head`): stop quietly.
fn flushed(r: std::io::Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow!("writing to stdout: {e}")),
    }
}

fn write_record(out: &mut impl Write, args: &ConsumeArgs, m: &BorrowedMessage<'_>) -> std::io::Result<()> {
    let headers: record::Headers = m
        .headers()
        .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default();
    if args.format == Format::Json {
        let line = ConsumedJson {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: JsonBytes(m.key()),
            value: JsonBytes(m.payload()),
            headers: JsonHeaders(&headers),
        };
        serde_json::to_writer(&mut *out, &line)?;
        return out.write_all(b"\n");
    }
    let mut line = String::new();
    if args.print_offset {
        line.push_str(&format!("{}:{}\t", m.partition(), m.offset()));
    }
    if args.print_headers {
        let shown: Vec<String> = headers
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{}={}", record::text(k.as_bytes()), record::text(v)),
                None => k.clone(),
            })
            .collect();
        line.push_str(&shown.join(","));
        line.push('\t');
    }
    if args.print_key {
        line.push_str(&record::text(m.key().unwrap_or_default()));
        line.push_str(&args.key_separator);
    }
    line.push_str(&record::text(m.payload().unwrap_or_default()));
    line.push('\n');
    out.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_next_offsets() {
        let mut progress = BTreeMap::new();
        progress.insert(0, Progress { last: Some(3), ..Progress::default() });
        progress.insert(1, Progress::default());
        progress.insert(2, Progress { last: Some(0), ..Progress::default() });
        assert_eq!(summary("t", 5, &progress), "consumed 5 records from t (next offsets 0:4 2:1)");
        assert_eq!(summary("t", 1, &BTreeMap::new()), "consumed 1 record from t");
    }

    #[test]
    fn from_and_to_parse() {
        assert_eq!(parse_from("beginning").unwrap(), From::Beginning);
        assert_eq!(parse_from("latest").unwrap(), From::End);
        assert_eq!(parse_from("42").unwrap(), From::Offset(42));
        assert_eq!(parse_from("-10").unwrap(), From::Tail(10));
        assert_eq!(parse_from("@1714564800000").unwrap(), From::Time(1_714_564_800_000));
        assert_eq!(parse_from("2024-05-01T12:00:00Z").unwrap(), From::Time(1_714_564_800_000));
        assert_eq!(parse_from("2024-05-01T14:00:00.250+02:00").unwrap(), From::Time(1_714_564_800_250));
        assert!(parse_from("-0").is_err());
        assert!(parse_from("@").is_err());
        assert!(parse_from("yesterday").is_err());
        assert_eq!(parse_to("7").unwrap(), To::Offset(7));
        assert_eq!(parse_to("@5").unwrap(), To::Time(5));
        assert!(parse_to("end").is_err());
    }
}
