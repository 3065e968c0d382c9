//! The `spate` client commands, for any Kafka-compatible broker (Spate or Kafka):
//! - `spate group ...`: consumer-group administration, like Kafka's `kafka-consumer-groups.sh`
//!   ([`group`] for list, describe and delete; [`reset`] for reset-offsets);
//! - `spate produce` and `spate consume` ([`produce`], [`consume`]): records from stdin and to
//!   stdout, one per line, through librdkafka ([`librdkafka`], [`record`]);
//! - `spate cluster info` ([`cluster_info`]): brokers, controller, topics and API versions;
//! - `spate topic ...` ([`topic`]): create, list, describe, alter-config, add-partitions, delete
//!   and trim-prefix, like Redpanda's `rpk topic`;
//! - `spate txn list|describe` ([`txn`]): transactional ids, like `kafka-transactions.sh`.
//!
//! The group, topic and cluster commands ask the cluster through [`cluster::Cluster`], which speaks the
//! Kafka protocol over the blocking `io::client`. Output is for people by default (aligned
//! tables), JSON with `--json`; errors go to stderr with Kafka's error name, and the exit code is
//! 1 if anything failed (2 for usage errors).
//!
//! Architecture invariant: no broker code here; this module knows the server only through the
//! wire.

pub mod acl;
pub mod cluster;
pub mod cluster_info;
pub mod consume;
pub mod group;
pub mod librdkafka;
pub mod produce;
pub mod quota;
pub mod rebalance;
pub mod record;
pub mod reset;
pub mod topic;
pub mod txn;
pub mod user;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::protocol::ResponseError;
use cluster::Cluster;

/// The broker to talk to, for the commands that need nothing else in common.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Broker(s) to bootstrap from: host:port, comma-separated; any Kafka-compatible broker.
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        global = true,
        env = "SPATE_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: String,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, cluster id, topics and their partition counts, under-replicated and
    /// offline partitions, and the API versions each broker supports.
    Info,
    /// Spreads the partitions' replicas (and preferred leaders) evenly over the live brokers,
    /// moving as few as it can (AlterPartitionReassignments), and follows the moves.
    Rebalance {
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Return once the moves are proposed instead of following them to the end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Moves every replica off broker N (to the live brokers holding fewest), so that it can
    /// be stopped and removed, and follows the moves.
    Decommission {
        /// The broker to empty.
        broker: i32,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        no_wait: bool,
    },
}

/// Runs `spate cluster info`: 0 if every broker answered, 1 otherwise.
pub fn run_cluster(args: ClusterArgs) -> ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        ClusterCommand::Info => cluster_info::info(&mut c, &out),
        ClusterCommand::Rebalance { dry_run, no_wait } => rebalance::rebalance(&mut c, &out, dry_run, !no_wait),
        ClusterCommand::Decommission { broker, dry_run, no_wait } => rebalance::decommission(&mut c, &out, broker, dry_run, !no_wait),
    });
    exit_code(result)
}

/// A client command's exit code: 0 if it all worked, 1 if something failed (a whole-command
/// failure reported here, on stderr).
pub fn exit_code(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            report(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups: GROUP, STATE, PROTOCOL-TYPE.
    List {
        /// Only groups in this state (Stable, Empty, PreparingRebalance, CompletingRebalance, ...);
        /// repeatable.
        #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
        states: Vec<String>,
    },
    /// Show each partition's committed offset, log-end offset, lag and owner.
    Describe {
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
        /// Also list the members and their assignments.
        #[arg(long)]
        members: bool,
    },
    /// Delete groups that have no active members, with their committed offsets.
    Delete {
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets; only a plan unless --execute.
    ///
    /// The group must have no active members. Prints the plan (TOPIC PARTITION OLD NEW) and
    /// commits it only with --execute. New offsets are clamped to each partition's log.
    ResetOffsets(reset::ResetArgs),
}

/// Group states as Kafka names them (ListGroups' state filter is case-sensitive on some brokers).
const STATES: &[&str] = &[
    "Stable",
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Dead",
    "Assigning",
    "Reconciling",
    "NotReady",
    "Unknown",
];

fn parse_state(s: &str) -> Result<String, String> {
    STATES
        .iter()
        .find(|k| k.eq_ignore_ascii_case(s))
        .map(|k| k.to_string())
        .ok_or_else(|| format!("unknown group state; one of {}", STATES.join(", ")))
}

/// Runs a `spate group` command: 0 if everything succeeded, 1 otherwise.
pub fn run(args: GroupArgs) -> ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        GroupCommand::List { states } => group::list(&mut c, &out, &states),
        GroupCommand::Describe { groups, members } => group::describe(&mut c, &out, &groups, members),
        GroupCommand::Delete { groups } => group::delete(&mut c, &out, &groups),
        GroupCommand::ResetOffsets(a) => reset::run(&mut c, &out, &a),
    });
    exit_code(result)
}

/// How results are printed.
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn json<T: Serialize>(&self, value: &T) {
        println!("{}", serde_json::to_string_pretty(value).expect("plain data serializes"));
    }
}

/// An error line on stderr.
pub fn report(message: &str) {
    eprintln!("spate: error: {message}");
}

/// A usage error clap cannot see (options that do not go together): reported, exit 2.
pub fn usage_error(message: &str) -> ExitCode {
    report(message);
    ExitCode::from(2)
}

/// `rows` under `header`, each column as wide as its widest cell plus two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = table_line(&widths, header.iter().copied());
    for r in rows {
        out.push_str(&table_line(&widths, r.iter().map(String::as_str)));
    }
    out
}

fn table_line<'a>(widths: &[usize], cells: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for (i, c) in cells.enumerate() {
        let w = widths.get(i).copied().unwrap_or(0);
        s.push_str(&format!("{c:<w$}  "));
    }
    let mut s = s.trim_end().to_string();
    s.push('\n');
    s
}

/// Kafka's name for an error code: `NON_EMPTY_GROUP` for 68.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = e.to_string();
            let mut s = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    s.push('_');
                }
                s.push(ch.to_ascii_uppercase());
            }
            s
        }
    }
}

/// What an error means for these commands, in a few words.
pub fn error_hint(code: i16) -> Option<&'static str> {
    use cluster::codes::*;
    match code {
        GROUP_ID_NOT_FOUND => Some("group does not exist"),
        NON_EMPTY_GROUP | UNKNOWN_MEMBER_ID | REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => {
            Some("group has active members; stop the consumers first")
        }
        COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS | NOT_COORDINATOR => Some("no coordinator; try again"),
        _ => None,
    }
}

/// `NAME (hint or broker's message)`.
pub fn describe_error(code: i16, message: Option<&str>) -> String {
    let name = error_name(code);
    match (message.filter(|m| !m.is_empty()), error_hint(code)) {
        (_, Some(h)) => format!("{name} ({h})"),
        (Some(m), None) => format!("{name} ({m})"),
        (None, None) => name,
    }
}

/// An error from the broker while `doing` something.
pub fn kafka_error(code: i16, message: Option<&str>, doing: &str) -> anyhow::Error {
    anyhow::anyhow!("{doing}: {}", describe_error(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(68), "NON_EMPTY_GROUP");
        assert_eq!(error_name(25), "UNKNOWN_MEMBER_ID");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
        assert_eq!(describe_error(69, Some("group not found")), "GROUP_ID_NOT_FOUND (group does not exist)");
        assert_eq!(describe_error(29, Some("no")), "TOPIC_AUTHORIZATION_FAILED (no)");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER", "C"], &[vec!["xyz".into(), "1".into(), "-".into()]]);
        assert_eq!(t, "A    LONGER  C\nxyz  1       -\n");
    }

    #[test]
    fn states_parse_case_insensitively() {
        assert_eq!(parse_state("stable").unwrap(), "Stable");
        assert_eq!(parse_state("PREPARINGREBALANCE").unwrap(), "PreparingRebalance");
        assert!(parse_state("sleepy").is_err());
    }
}
