//! `spate bench ...`: load generation and measurement against any Kafka-compatible broker (Spate
//! or Kafka), for comparisons and for linger.ms / batch.size tuning studies.
//!
//! - `produce`, `consume`, `e2e` ([`workload`]): one run, a progress line every second on stderr,
//!   then a table (or one JSON object with `--json`) on stdout ([`stats`]).
//! - `sweep` ([`sweep`]): the produce or e2e workload over a grid of knobs, written to a directory
//!   as CSV, markdown and SVG plots ([`plot`]).
//!
//! The clients are librdkafka's (the `rdkafka` crate): the same client users run, so a figure here
//! is one a user can reproduce with their own application, and nothing of ours sits on the hot
//! path. Exit code 1 when any message failed (or, e2e, never arrived), or on an error; 2 for
//! usage errors (clap).
//!
//! Architecture invariant: a client program, like `admin`: it reaches brokers only over the wire
//! and never imports `server`, `storage` or `coordinator` (checked by `tests/tidy.rs`). Its report
//! files are written through `io::report`.

pub mod plot;
pub mod stats;
pub mod sweep;
pub mod workload;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use workload::{Mode, Property, Settings};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as possible (or at --rate): throughput, send -> delivery-report latency.
    Produce(RunArgs),
    /// Read the topic from its beginning (catch-up): messages and MB per second.
    ///
    /// Stops after --messages, after --duration, or (neither given) at the end offsets the
    /// partitions had when it started.
    Consume(RunArgs),
    /// Produce at --rate while consuming: end-to-end latency from each record's send time (a
    /// microsecond header the producer writes) to the moment a consumer sees it (same host clock).
    E2e(RunArgs),
    /// The produce (or e2e) workload for every combination of the given knobs; writes
    /// results.csv, report.md and SVG plots to --out.
    Sweep(sweep::SweepArgs),
}

/// Options every bench command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Broker(s) to bootstrap from: host:port, comma-separated; any Kafka-compatible broker.
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        env = "SPATE_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: String,
    /// Topic to use; created with --partitions if missing, an existing one is left alone.
    #[arg(long, default_value = "spate-bench")]
    pub topic: String,
    /// Partitions of the topic if it is created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Replication factor of the topic if it is created (-1: the broker's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,
    /// Producer clients, each on its own thread.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer clients (consume, e2e), each assigned every N-th partition.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Target messages per second over all producers; 0 is as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Measured seconds, after the warm-up [default: 10 for produce, e2e and sweep].
    #[arg(long, value_name = "SECONDS", conflicts_with = "messages")]
    pub duration: Option<f64>,
    /// Measured messages over all producers (consume: over all consumers), after the warm-up.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Seconds run first and left out of every figure.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub warmup: f64,
    /// A librdkafka property for every client, applied after the options above; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<Property>,
    /// Transactional producers: each commits a transaction every N messages (its own
    /// `transactional.id`; needs --acks all). Latency is still each message's, send to delivery.
    #[arg(long, value_name = "N")]
    pub transaction_records: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The producer knobs of a single run.
#[derive(Debug, Clone, Args)]
pub struct Knobs {
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub message_size: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_negative_numbers = true)]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: String,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// librdkafka batch.size, bytes.
    #[arg(long, default_value_t = 1_000_000, value_name = "BYTES")]
    pub batch_size: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { message_size: 1024, acks: "all".into(), compression: "none".into(), linger_ms: 5, batch_size: 1_000_000 }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub knobs: Knobs,
}

/// Seconds a produce, e2e or sweep run lasts when neither --duration nor --messages is given.
const DEFAULT_DURATION_S: f64 = 10.0;

impl CommonArgs {
    /// The settings of a run in `mode` with `knobs`, defaults filled in.
    pub fn settings(&self, mode: Mode, knobs: &Knobs) -> Settings {
        let duration_s = match (self.duration, self.messages, mode) {
            (Some(d), _, _) => Some(d),
            (None, None, Mode::Produce | Mode::E2e) => Some(DEFAULT_DURATION_S),
            (None, _, _) => None,
        };
        Settings {
            bootstrap: self.bootstrap_server.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            message_size: knobs.message_size,
            producers: self.producers,
            consumers: self.consumers,
            rate: self.rate,
            acks: knobs.acks.clone(),
            compression: knobs.compression.clone(),
            linger_ms: knobs.linger_ms,
            batch_size: knobs.batch_size,
            duration_s,
            messages: self.messages,
            warmup_s: self.warmup,
            properties: self.properties.clone(),
            transaction_records: self.transaction_records,
        }
    }
}

/// `0`, `1`, `all` (or `-1`, Kafka's spelling of all).
pub fn parse_acks(s: &str) -> Result<String, String> {
    match s {
        "0" | "1" | "all" => Ok(s.to_string()),
        "-1" => Ok("all".to_string()),
        _ => Err("one of 0, 1, all".to_string()),
    }
}

/// The codecs librdkafka is built with here: snappy and lz4 are built in, gzip comes from libz,
/// zstd from the `zstd` feature of `rdkafka`.
pub const COMPRESSION: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

pub fn parse_compression(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if COMPRESSION.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!("one of {}", COMPRESSION.join(", ")))
    }
}

/// `key=value`, the key not empty.
pub fn parse_property(s: &str) -> Result<Property, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok(Property { key: k.trim().to_string(), value: v.to_string() }),
        _ => Err("expected KEY=VALUE, e.g. -X socket.nagle.disable=true".to_string()),
    }
}

/// An error line on stderr.
pub fn report_error(message: &str) {
    crate::admin::report(message);
}

/// Runs a `spate bench` command.
pub fn run(args: BenchArgs) -> ExitCode {
    let result = match args.command {
        BenchCommand::Produce(a) => single(Mode::Produce, &a),
        BenchCommand::Consume(a) => single(Mode::Consume, &a),
        BenchCommand::E2e(a) => single(Mode::E2e, &a),
        BenchCommand::Sweep(a) => sweep::run(&a),
    };
    result.unwrap_or_else(|e| {
        report_error(&format!("{e:#}"));
        ExitCode::FAILURE
    })
}

fn single(mode: Mode, a: &RunArgs) -> Result<ExitCode> {
    let s = a.common.settings(mode, &a.knobs);
    let r = workload::run(mode, &s)?;
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("plain data serializes"));
    } else {
        print!("{}", r.table());
    }
    if r.ok() {
        return Ok(ExitCode::SUCCESS);
    }
    let missing = r.missing.filter(|m| *m > 0).map_or(String::new(), |m| format!(", {m} never consumed"));
    report_error(&format!("{} messages failed{missing}", r.errors));
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn parse(args: &[&str]) -> BenchCommand {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).unwrap().command
    }

    #[test]
    fn options_parse_with_defaults() {
        let BenchCommand::Produce(a) = parse(&["produce", "-b", "h:1", "--acks", "-1", "-X", "a.b=c=d", "-X", "x=", "--compression", "LZ4"]) else {
            panic!()
        };
        let s = a.common.settings(Mode::Produce, &a.knobs);
        assert_eq!(s.bootstrap, "h:1");
        assert_eq!(s.acks, "all");
        assert_eq!(s.compression, "lz4");
        assert_eq!(s.duration_s, Some(DEFAULT_DURATION_S));
        assert_eq!((s.linger_ms, s.batch_size, s.message_size), (5, 1_000_000, 1024));
        assert_eq!(s.properties, vec![
            Property { key: "a.b".into(), value: "c=d".into() },
            Property { key: "x".into(), value: "".into() }
        ]);
        let BenchCommand::Consume(a) = parse(&["consume"]) else { panic!() };
        assert_eq!(a.common.settings(Mode::Consume, &a.knobs).duration_s, None);
        let BenchCommand::E2e(a) = parse(&["e2e", "--messages", "5"]) else { panic!() };
        assert_eq!(a.common.settings(Mode::E2e, &a.knobs).duration_s, None);
    }

    #[test]
    fn bad_options_are_refused() {
        let bad = |args: &[&str]| Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).is_err();
        assert!(bad(&["produce", "--acks", "2"]));
        assert!(bad(&["produce", "--compression", "brotli"]));
        assert!(bad(&["produce", "-X", "novalue"]));
        assert!(bad(&["produce", "--duration", "1", "--messages", "1"]));
        assert!(bad(&["sweep", "--linger-ms", "0,5"])); // --out is required
    }

    #[test]
    fn sweep_lists_split_on_commas() {
        let BenchCommand::Sweep(a) = parse(&[
            "sweep", "--linger-ms", "0,5,20", "--batch-size", "16384,131072", "--acks", "1,all", "--out", "/tmp/x",
        ]) else {
            panic!()
        };
        assert_eq!(a.linger_ms, vec![0, 5, 20]);
        assert_eq!(a.batch_size, vec![16384, 131072]);
        assert_eq!(a.acks, vec!["1", "all"]);
        assert_eq!(a.compression, vec!["none"]);
        assert_eq!(a.message_size, vec![1024]);
        assert_eq!(a.mode, sweep::SweepMode::Produce);
    }
}
