//! `spate txn list` and `spate txn describe`: transactional ids and their transactions, like
//! Kafka's `kafka-transactions.sh list` and `describe`, on any Kafka-compatible broker.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::cluster::Cluster;
use super::{exit_code, report, table, ClientArgs, Output};

#[derive(Debug, Args)]
pub struct TxnArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TxnCommand,
}

#[derive(Debug, Subcommand)]
pub enum TxnCommand {
    /// Every transactional id of every broker: TRANSACTIONAL-ID, COORDINATOR, PRODUCER-ID, STATE.
    List {
        /// Only ids in this state (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
        /// CompleteAbort, ...); repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
    },
    /// The state of transactional ids at their coordinators: producer id and epoch, timeout,
    /// how long the ongoing transaction has run, and its partitions.
    Describe {
        #[arg(required = true, value_name = "TRANSACTIONAL-ID")]
        ids: Vec<String>,
    },
}

pub fn run(args: TxnArgs) -> std::process::ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        TxnCommand::List { states } => list(&mut c, &out, &states),
        TxnCommand::Describe { ids } => describe(&mut c, &out, &ids),
    });
    exit_code(result)
}

#[derive(Serialize)]
struct ListedJson<'a> {
    transactional_id: &'a str,
    coordinator: i32,
    producer_id: i64,
    state: &'a str,
}

fn list(c: &mut Cluster, out: &Output, states: &[String]) -> Result<bool> {
    let all = c.list_transactions(states)?;
    if out.json {
        let v: Vec<_> = all
            .iter()
            .map(|(coordinator, id, pid, state)| ListedJson { transactional_id: id, coordinator: *coordinator, producer_id: *pid, state })
            .collect();
        out.json(&v);
    } else {
        let rows: Vec<Vec<String>> = all.iter().map(|(c, id, pid, st)| vec![id.clone(), c.to_string(), pid.to_string(), st.clone()]).collect();
        print!("{}", table(&["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"], &rows));
    }
    Ok(true)
}

#[derive(Serialize)]
struct DescribedJson {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    state: String,
    timeout_ms: i32,
    /// When the ongoing transaction began (ms since the epoch), or null.
    start_ms: Option<i64>,
    partitions: Vec<(String, i32)>,
}

fn describe(c: &mut Cluster, out: &Output, ids: &[String]) -> Result<bool> {
    let mut ok = true;
    let mut found = Vec::new();
    for id in ids {
        match c.describe_transaction(id) {
            Ok(t) => found.push(DescribedJson {
                transactional_id: id.clone(),
                producer_id: t.producer_id.0,
                producer_epoch: t.producer_epoch,
                state: t.transaction_state.to_string(),
                timeout_ms: t.transaction_timeout_ms,
                start_ms: (t.transaction_start_time_ms >= 0).then_some(t.transaction_start_time_ms),
                partitions: t.topics.iter().flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p))).collect(),
            }),
            Err(e) => {
                report(&format!("{e:#}"));
                ok = false;
            }
        }
    }
    if out.json {
        out.json(&found);
        return Ok(ok);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|d| {
            let running = d.start_ms.map_or("-".to_string(), |s| format!("{:.1} s", (now - s).max(0) as f64 / 1000.0));
            let parts = if d.partitions.is_empty() {
                "-".to_string()
            } else {
                d.partitions.iter().map(|(t, p)| format!("{t}-{p}")).collect::<Vec<_>>().join(",")
            };
            vec![
                d.transactional_id.clone(),
                d.producer_id.to_string(),
                d.producer_epoch.to_string(),
                d.state.clone(),
                d.timeout_ms.to_string(),
                running,
                parts,
            ]
        })
        .collect();
    print!("{}", table(&["TRANSACTIONAL-ID", "PRODUCER-ID", "EPOCH", "STATE", "TIMEOUT-MS", "RUNNING", "PARTITIONS"], &rows));
    Ok(ok)
}
