//! `spate topic create|list|describe|alter-config|add-partitions|delete|trim-prefix`: topics on
//! any Kafka-compatible broker, in the shape of Redpanda's `rpk topic`. Each command is a request
//! or two of [`Cluster`]: CreateTopics, Metadata, DescribeConfigs and ListOffsets,
//! IncrementalAlterConfigs, CreatePartitions, DeleteTopics, DeleteRecords (to each partition's
//! leader). Every topic or partition gets its own status, `OK` or Kafka's error name and the
//! broker's message, and the command exits 1 if any failed.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use uuid::Uuid;

use super::cluster::{AlterOp, Cluster, Outcome, PartitionInfo, TopicInfo, Tp, EARLIEST, LATEST};
use super::{describe_error, error_name, report, table, ClientArgs, Output};

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create topics: TOPIC STATUS.
    Create {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// Partitions of each topic (-1: the broker's default).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1..))]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i16).range(-1..))]
        replicas: i16,
        /// A topic setting, as in `-c cleanup.policy=compact`; repeatable.
        #[arg(short = 'c', long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Have the broker validate the request and create nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List topics: TOPIC PARTITIONS REPLICAS.
    List {
        /// Include internal topics (`__consumer_offsets`, ...).
        #[arg(short, long)]
        internal: bool,
        /// One row per partition: TOPIC PARTITION LEADER EPOCH REPLICAS.
        #[arg(short, long)]
        detailed: bool,
    },
    /// Describe topics: summary, settings and partitions (all three unless some are picked).
    Describe {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// The summary: NAME, ID, INTERNAL, PARTITIONS, REPLICAS.
        #[arg(short = 's', long)]
        print_summary: bool,
        /// Every setting: KEY VALUE SOURCE (DescribeConfigs).
        #[arg(short = 'c', long)]
        print_configs: bool,
        /// Each partition: leader, epoch, replicas, log start offset and high watermark.
        #[arg(short = 'p', long)]
        print_partitions: bool,
    },
    /// Change topic settings (IncrementalAlterConfigs): TOPIC STATUS.
    #[command(group(ArgGroup::new("ops").required(true).multiple(true).args(["set", "delete", "append", "subtract"])))]
    AlterConfig {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// Set a setting; repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove a setting, back to the broker's default; repeatable.
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        /// Add a value to a list setting (`cleanup.policy`); repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        append: Vec<(String, String)>,
        /// Remove a value from a list setting; repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        subtract: Vec<(String, String)>,
    },
    /// Add partitions to topics (CreatePartitions): TOPIC PARTITIONS STATUS.
    AddPartitions {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// How many partitions to add to each topic.
        #[arg(short, long, required = true, value_parser = clap::value_parser!(i32).range(1..))]
        num: i32,
    },
    /// Delete topics: TOPIC STATUS.
    Delete {
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
    },
    /// Delete a topic's records below an offset (DeleteRecords): TOPIC PARTITION
    /// NEW-START-OFFSET ERROR.
    TrimPrefix {
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// The new log start offset, or `end` for each partition's high watermark.
        #[arg(short, long, value_name = "OFFSET|end", value_parser = parse_trim_offset)]
        offset: i64,
        /// Only these partitions (comma-separated, or repeated); default all.
        #[arg(short, long, value_name = "P,...", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(0..))]
        partitions: Vec<i32>,
    },
}

fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

/// DeleteRecords' offset: a number, or -1 (the high watermark) for `end`.
fn parse_trim_offset(s: &str) -> std::result::Result<i64, String> {
    match s {
        "end" => Ok(-1),
        _ => s.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| "expected an offset (0 or more) or `end`".to_string()),
    }
}

/// Runs a `spate topic` command: 0 if everything succeeded, 1 otherwise.
pub fn run(args: TopicArgs) -> std::process::ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        TopicCommand::Create { topics, partitions, replicas, configs, dry_run } => {
            create(&mut c, &out, &dedup(topics), partitions, replicas, &configs, dry_run)
        }
        TopicCommand::List { internal, detailed } => list(&mut c, &out, internal, detailed),
        TopicCommand::Describe { topics, print_summary, print_configs, print_partitions } => {
            let all = !(print_summary || print_configs || print_partitions);
            let sections = Sections { summary: all || print_summary, configs: all || print_configs, partitions: all || print_partitions };
            describe(&mut c, &out, &dedup(topics), sections)
        }
        TopicCommand::AlterConfig { topics, set, delete, append, subtract } => {
            let with = |op, kvs: Vec<(String, String)>| kvs.into_iter().map(move |(k, v)| (op, k, Some(v)));
            let ops: Vec<_> = with(AlterOp::Set, set)
                .chain(delete.into_iter().map(|k| (AlterOp::Delete, k, None)))
                .chain(with(AlterOp::Append, append))
                .chain(with(AlterOp::Subtract, subtract))
                .collect();
            alter_config(&mut c, &out, &dedup(topics), &ops)
        }
        TopicCommand::AddPartitions { topics, num } => add_partitions(&mut c, &out, &dedup(topics), num),
        TopicCommand::Delete { topics } => delete(&mut c, &out, &dedup(topics)),
        TopicCommand::TrimPrefix { topic, offset, partitions } => trim_prefix(&mut c, &out, &topic, offset, &partitions),
    });
    super::exit_code(result)
}

/// The names in the order given, each once (a broker refuses a batch naming a topic twice).
fn dedup(mut names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// One topic's answer to a topic change, for `--json`.
#[derive(Serialize)]
struct StatusJson {
    topic: String,
    /// Kafka's error name; `None` when it worked.
    error: Option<String>,
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<i16>,
}

impl StatusJson {
    fn new(topic: &str, o: &Outcome) -> StatusJson {
        StatusJson {
            topic: topic.to_string(),
            error: (o.error != 0).then(|| error_name(o.error)),
            message: o.message.clone().filter(|m| o.error != 0 && !m.is_empty()),
            partitions: None,
            replicas: None,
        }
    }

    /// `OK`, or Kafka's error name with the broker's message.
    fn status(&self) -> String {
        match &self.error {
            None => "OK".to_string(),
            Some(name) => match &self.message {
                Some(m) => format!("{name} ({m})"),
                None => name.clone(),
            },
        }
    }
}

/// Prints the statuses (TOPIC [PARTITIONS] STATUS, or JSON); true if all are OK.
fn print_statuses(out: &Output, statuses: &[StatusJson], with_partitions: bool) -> bool {
    if out.json {
        out.json(&statuses);
    } else {
        let rows: Vec<Vec<String>> = statuses
            .iter()
            .map(|s| {
                let mut row = vec![s.topic.clone()];
                if with_partitions {
                    row.push(dash(s.partitions.filter(|_| s.error.is_none())));
                }
                row.push(s.status());
                row
            })
            .collect();
        let header: &[&str] = if with_partitions { &["TOPIC", "PARTITIONS", "STATUS"] } else { &["TOPIC", "STATUS"] };
        print!("{}", table(header, &rows));
    }
    statuses.iter().all(|s| s.error.is_none())
}

/// Each asked topic's outcome; a topic the broker did not answer for fails the command.
fn answered<T>(mut answers: BTreeMap<String, T>, topics: &[String], api: &str) -> Result<Vec<(String, T)>> {
    topics
        .iter()
        .map(|t| match answers.remove(t) {
            Some(a) => Ok((t.clone(), a)),
            None => bail!("{api} gave no answer for topic '{t}'"),
        })
        .collect()
}

fn create(
    c: &mut Cluster,
    out: &Output,
    topics: &[String],
    partitions: i32,
    replicas: i16,
    configs: &[(String, String)],
    dry_run: bool,
) -> Result<bool> {
    let created = answered(c.create_topics(topics, partitions, replicas, configs, dry_run)?, topics, "CreateTopics")?;
    let statuses: Vec<StatusJson> = created
        .iter()
        .map(|(t, r)| StatusJson { partitions: r.partitions, replicas: r.replicas, ..StatusJson::new(t, &r.outcome) })
        .collect();
    let ok = print_statuses(out, &statuses, false);
    if dry_run {
        eprintln!("dry run: the broker validated the request and created nothing");
    }
    Ok(ok)
}

fn delete(c: &mut Cluster, out: &Output, topics: &[String]) -> Result<bool> {
    let deleted = answered(c.delete_topics(topics)?, topics, "DeleteTopics")?;
    let statuses: Vec<StatusJson> = deleted.iter().map(|(t, o)| StatusJson::new(t, o)).collect();
    Ok(print_statuses(out, &statuses, false))
}

fn alter_config(c: &mut Cluster, out: &Output, topics: &[String], ops: &[(AlterOp, String, Option<String>)]) -> Result<bool> {
    let altered = answered(c.alter_topic_configs(topics, ops)?, topics, "IncrementalAlterConfigs")?;
    let statuses: Vec<StatusJson> = altered.iter().map(|(t, o)| StatusJson::new(t, o)).collect();
    Ok(print_statuses(out, &statuses, false))
}

/// Adds `num` partitions to each topic's current count (Metadata), as `rpk topic add-partitions`.
fn add_partitions(c: &mut Cluster, out: &Output, topics: &[String], num: i32) -> Result<bool> {
    let meta = c.topics(Some(topics))?.topics;
    let mut statuses = Vec::new();
    let mut counts = Vec::new();
    for t in topics {
        match meta.get(t) {
            Some(m) if m.error == 0 => counts.push((t.clone(), m.partitions.len() as i32 + num)),
            m => {
                let error = m.map_or(super::cluster::codes::UNKNOWN_TOPIC_OR_PARTITION, |m| m.error);
                statuses.push((t.clone(), StatusJson::new(t, &Outcome { error, message: None })));
            }
        }
    }
    if !counts.is_empty() {
        let names: Vec<String> = counts.iter().map(|(t, _)| t.clone()).collect();
        let grown = answered(c.create_partitions(&counts)?, &names, "CreatePartitions")?;
        for ((t, o), (_, n)) in grown.iter().zip(&counts) {
            statuses.push((t.clone(), StatusJson { partitions: Some(*n), ..StatusJson::new(t, o) }));
        }
    }
    // In the order asked.
    statuses.sort_by_key(|(t, _)| topics.iter().position(|x| x == t));
    let statuses: Vec<StatusJson> = statuses.into_iter().map(|(_, s)| s).collect();
    Ok(print_statuses(out, &statuses, true))
}

/// A topic for `list` and `describe --json`.
#[derive(Serialize)]
struct TopicJson {
    topic: String,
    /// Kafka's form of the topic id (URL-safe base64); `None` if the broker sent none.
    id: Option<String>,
    internal: bool,
    partition_count: usize,
    replication_factor: usize,
    /// Kafka's error name for the topic (Metadata's, or DescribeConfigs').
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configs: Option<Vec<ConfigJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<Vec<PartitionJson>>,
}

#[derive(Serialize)]
struct ConfigJson {
    key: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

#[derive(Serialize)]
struct PartitionJson {
    partition: i32,
    leader: i32,
    epoch: i32,
    replicas: Vec<i32>,
    /// Only in `describe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_start_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    high_watermark: Option<i64>,
    /// Kafka's error name: Metadata's for the partition, or ListOffsets'.
    error: Option<String>,
}

impl TopicJson {
    fn new(name: &str, t: &TopicInfo) -> TopicJson {
        TopicJson {
            topic: name.to_string(),
            id: t.id.as_ref().map(kafka_uuid),
            internal: t.internal,
            partition_count: t.partitions.len(),
            replication_factor: t.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(0),
            error: (t.error != 0).then(|| error_name(t.error)),
            configs: None,
            partitions: None,
        }
    }
}

impl PartitionJson {
    fn new(p: &PartitionInfo) -> PartitionJson {
        PartitionJson {
            partition: p.partition,
            leader: p.leader,
            epoch: p.epoch,
            replicas: p.replicas.clone(),
            log_start_offset: None,
            high_watermark: None,
            error: (p.error != 0).then(|| error_name(p.error)),
        }
    }

    fn row(&self) -> Vec<String> {
        let replicas: Vec<String> = self.replicas.iter().map(i32::to_string).collect();
        vec![self.partition.to_string(), self.leader.to_string(), self.epoch.to_string(), replicas.join(",")]
    }
}

fn list(c: &mut Cluster, out: &Output, internal: bool, detailed: bool) -> Result<bool> {
    let meta = c.topics(None)?;
    let topics: Vec<TopicJson> = meta
        .topics
        .iter()
        .filter(|(_, t)| internal || !t.internal)
        .map(|(name, t)| TopicJson {
            partitions: detailed.then(|| t.partitions.iter().map(PartitionJson::new).collect()),
            ..TopicJson::new(name, t)
        })
        .collect();
    let ok = topics.iter().all(|t| t.error.is_none());
    if out.json {
        out.json(&topics);
        return Ok(ok);
    }
    if detailed {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().flatten().map(|p| [vec![t.topic.clone()], p.row()].concat()))
            .collect();
        print!("{}", table(&["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS"], &rows));
        for t in topics.iter().filter(|t| t.error.is_some()) {
            report(&format!("topic '{}': {}", t.topic, t.error.as_deref().unwrap_or_default()));
        }
        return Ok(ok);
    }
    // An ERROR column only when some topic has an error.
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            let mut row = vec![t.topic.clone(), t.partition_count.to_string(), t.replication_factor.to_string()];
            if !ok {
                row.push(dash(t.error.clone()));
            }
            row
        })
        .collect();
    let header: &[&str] = if ok { &["TOPIC", "PARTITIONS", "REPLICAS"] } else { &["TOPIC", "PARTITIONS", "REPLICAS", "ERROR"] };
    print!("{}", table(header, &rows));
    Ok(ok)
}

/// What `describe` prints.
#[derive(Clone, Copy)]
struct Sections {
    summary: bool,
    configs: bool,
    partitions: bool,
}

fn describe(c: &mut Cluster, out: &Output, topics: &[String], sections: Sections) -> Result<bool> {
    let meta = c.topics(Some(topics))?.topics;
    let mut ok = true;
    let mut found: Vec<TopicJson> = Vec::new();
    for name in topics {
        let Some(t) = meta.get(name) else {
            bail!("Metadata gave no answer for topic '{name}'");
        };
        let mut j = TopicJson::new(name, t);
        if t.error != 0 {
            report(&format!("topic '{name}': {}", describe_error(t.error, None)));
            ok = false;
        } else if sections.partitions {
            j.partitions = Some(t.partitions.iter().map(PartitionJson::new).collect());
        }
        found.push(j);
    }
    let known: Vec<String> = found.iter().filter(|t| t.error.is_none()).map(|t| t.topic.clone()).collect();
    if sections.configs && !known.is_empty() {
        let mut configs = c.describe_topic_configs(&known)?;
        for t in found.iter_mut().filter(|t| t.error.is_none()) {
            match configs.remove(&t.topic) {
                Some(Ok(entries)) => {
                    t.configs = Some(
                        entries
                            .into_iter()
                            .map(|e| ConfigJson { key: e.key, value: e.value, source: source_name(e.source), read_only: e.read_only, sensitive: e.sensitive })
                            .collect(),
                    )
                }
                Some(Err(o)) => {
                    report(&format!("the settings of topic '{}': {}", t.topic, describe_error(o.error, o.message.as_deref())));
                    t.error = Some(error_name(o.error));
                    ok = false;
                }
                None => bail!("DescribeConfigs gave no answer for topic '{}'", t.topic),
            }
        }
    }
    if sections.partitions {
        ok &= add_offsets(c, &mut found)?;
    }
    if out.json {
        out.json(&found);
    } else {
        let shown: Vec<&TopicJson> = found.iter().filter(|t| t.error.is_none()).collect();
        let many = shown.len() > 1;
        let headers = many || [sections.summary, sections.configs, sections.partitions].iter().filter(|s| **s).count() > 1;
        let mut blocks = Vec::new();
        for t in shown {
            blocks.extend(render(t, sections, headers, many));
        }
        print!("{}", blocks.join("\n"));
    }
    Ok(ok)
}

/// Each partition's log start offset and high watermark (ListOffsets earliest and latest, from
/// its leader); false if any could not be read.
fn add_offsets(c: &mut Cluster, topics: &mut [TopicJson]) -> Result<bool> {
    let tps: Vec<Tp> =
        topics.iter().flat_map(|t| t.partitions.iter().flatten().map(|p| (t.topic.clone(), p.partition))).collect();
    if tps.is_empty() {
        return Ok(true);
    }
    let starts = c.list_offsets(&tps, EARLIEST)?;
    let ends = c.list_offsets(&tps, LATEST)?;
    let mut ok = true;
    for t in topics.iter_mut() {
        for p in t.partitions.iter_mut().flatten() {
            let tp = (t.topic.clone(), p.partition);
            match (&starts[&tp], &ends[&tp]) {
                (Ok(s), Ok(e)) => (p.log_start_offset, p.high_watermark) = (Some(*s), Some(*e)),
                (Err(e), _) | (_, Err(e)) => {
                    p.error.get_or_insert_with(|| e.clone());
                    ok = false;
                }
            }
        }
    }
    Ok(ok)
}

/// The sections of one topic, each a block of text; a section's header names the topic when
/// several topics are shown.
fn render(t: &TopicJson, sections: Sections, headers: bool, many: bool) -> Vec<String> {
    let head = |name: &str| {
        if !headers {
            return String::new();
        }
        let title = if many { format!("{name} ({})", t.topic) } else { name.to_string() };
        format!("{title}\n{}\n", "=".repeat(title.chars().count()))
    };
    let mut blocks = Vec::new();
    if sections.summary {
        let rows = vec![
            vec!["ID".to_string(), dash(t.id.clone())],
            vec!["INTERNAL".to_string(), t.internal.to_string()],
            vec!["PARTITIONS".to_string(), t.partition_count.to_string()],
            vec!["REPLICAS".to_string(), t.replication_factor.to_string()],
        ];
        blocks.push(head("SUMMARY") + &table(&["NAME", &t.topic], &rows));
    }
    if let Some(configs) = t.configs.as_ref().filter(|_| sections.configs) {
        let rows: Vec<Vec<String>> = configs
            .iter()
            .map(|e| {
                let value = match &e.value {
                    Some(v) => v.clone(),
                    None if e.sensitive => "(sensitive)".to_string(),
                    None => "-".to_string(),
                };
                vec![e.key.clone(), value, e.source.to_string()]
            })
            .collect();
        blocks.push(head("CONFIGS") + &table(&["KEY", "VALUE", "SOURCE"], &rows));
    }
    if let Some(partitions) = &t.partitions {
        let rows: Vec<Vec<String>> = partitions
            .iter()
            .map(|p| {
                let mut row = p.row();
                let failed = || p.error.clone().unwrap_or_else(|| "-".to_string());
                row.push(p.log_start_offset.map_or_else(failed, |o| o.to_string()));
                row.push(p.high_watermark.map_or_else(failed, |o| o.to_string()));
                row
            })
            .collect();
        let header = ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "LOG-START-OFFSET", "HIGH-WATERMARK"];
        blocks.push(head("PARTITIONS") + &table(&header, &rows));
    }
    blocks
}

#[derive(Serialize)]
struct TrimmedJson {
    topic: String,
    partition: i32,
    new_start_offset: Option<i64>,
    error: Option<String>,
}

/// DeleteRecords up to `offset` (-1: the high watermark) on `partitions` of `topic` (none: all).
fn trim_prefix(c: &mut Cluster, out: &Output, topic: &str, offset: i64, partitions: &[i32]) -> Result<bool> {
    let meta = c.topics(Some(&[topic.to_string()]))?.topics;
    let t = match meta.get(topic) {
        Some(t) if t.error == 0 => t,
        t => {
            let error = t.map_or(super::cluster::codes::UNKNOWN_TOPIC_OR_PARTITION, |t| t.error);
            bail!("topic '{topic}': {}", describe_error(error, None));
        }
    };
    let mut wanted: Vec<i32> = if partitions.is_empty() { t.partitions.iter().map(|p| p.partition).collect() } else { partitions.to_vec() };
    wanted.sort();
    wanted.dedup();
    let offsets: BTreeMap<Tp, i64> = wanted.iter().map(|p| ((topic.to_string(), *p), offset)).collect();
    let trimmed: Vec<TrimmedJson> = c
        .delete_records(&offsets)?
        .into_iter()
        .map(|((topic, partition), r)| TrimmedJson { topic, partition, new_start_offset: r.as_ref().ok().copied(), error: r.err() })
        .collect();
    if out.json {
        out.json(&trimmed);
    } else {
        let rows: Vec<Vec<String>> = trimmed
            .iter()
            .map(|r| vec![r.topic.clone(), r.partition.to_string(), dash(r.new_start_offset), dash(r.error.clone())])
            .collect();
        print!("{}", table(&["TOPIC", "PARTITION", "NEW-START-OFFSET", "ERROR"], &rows));
    }
    Ok(trimmed.iter().all(|r| r.error.is_none()))
}

/// Kafka's name for a config source (the admin client's `ConfigEntry.ConfigSource`), from
/// DescribeConfigs' number for it.
pub fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "DYNAMIC_CLIENT_METRICS_CONFIG",
        8 => "DYNAMIC_GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// A Kafka Uuid as Kafka prints it: its 16 bytes in URL-safe base64 without padding.
pub fn kafka_uuid(id: &Uuid) -> String {
    let standard = super::record::base64_encode(id.as_bytes());
    standard.trim_end_matches('=').replace('+', "-").replace('/', "_")
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_as_kafka_prints_them() {
        assert_eq!(kafka_uuid(&Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(kafka_uuid(&Uuid::from_bytes([0xff; 16])), "_____________________w");
        let id = Uuid::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(kafka_uuid(&id), "AAECAwQFBgcICQoLDA0ODw");
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(parse_key_value("cleanup.policy=compact"), Ok(("cleanup.policy".into(), "compact".into())));
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("k").is_err());
        assert_eq!(parse_trim_offset("end"), Ok(-1));
        assert_eq!(parse_trim_offset("42"), Ok(42));
        assert!(parse_trim_offset("-1").is_err());
        assert!(parse_trim_offset("start").is_err());
        assert_eq!(dedup(vec!["b".into(), "a".into(), "b".into()]), ["b", "a"]);
    }

    #[test]
    fn config_sources_have_kafkas_names() {
        assert_eq!(source_name(1), "DYNAMIC_TOPIC_CONFIG");
        assert_eq!(source_name(4), "STATIC_BROKER_CONFIG");
        assert_eq!(source_name(5), "DEFAULT_CONFIG");
        assert_eq!(source_name(0), "UNKNOWN");
    }
}
