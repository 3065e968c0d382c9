//! `spate quota set|list|remove`: client quotas (produce and fetch byte rates, request time) on
//! any Kafka-compatible broker, through DescribeClientQuotas and AlterClientQuotas, like
//! `kafka-configs --entity-type users|clients`. An entity is a user, a client id, or both; each
//! named or the default (`--default-user`, `--default-client-id`).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::cluster::Cluster;
use super::{describe_error, exit_code, table, ClientArgs, Output};

#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: QuotaCommand,
}

/// The entity a quota is set on.
#[derive(Debug, Args)]
pub struct EntityArgs {
    #[arg(long, conflicts_with = "default_user")]
    pub user: Option<String>,
    /// The default for users without their own quota.
    #[arg(long)]
    pub default_user: bool,
    #[arg(long, conflicts_with = "default_client_id")]
    pub client_id: Option<String>,
    /// The default for client ids without their own quota.
    #[arg(long)]
    pub default_client_id: bool,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set quotas of an entity (the others it has stay).
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Bytes per second a producer may send.
        #[arg(long)]
        producer_byte_rate: Option<f64>,
        /// Bytes per second a consumer may fetch.
        #[arg(long)]
        consumer_byte_rate: Option<f64>,
        /// Percent of one core's time the client's requests may take.
        #[arg(long)]
        request_percentage: Option<f64>,
    },
    /// Every quota: USER, CLIENT-ID, QUOTA, VALUE.
    List,
    /// Remove quotas of an entity: the keys named, or all three.
    Remove {
        #[command(flatten)]
        entity: EntityArgs,
        /// producer_byte_rate, consumer_byte_rate or request_percentage; repeatable.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
}

const KEYS: [&str; 3] = ["producer_byte_rate", "consumer_byte_rate", "request_percentage"];

pub fn run(args: QuotaArgs) -> std::process::ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        QuotaCommand::Set { entity, producer_byte_rate, consumer_byte_rate, request_percentage } => {
            let ops: Vec<(String, Option<f64>)> = [producer_byte_rate, consumer_byte_rate, request_percentage]
                .into_iter()
                .zip(KEYS)
                .filter_map(|(v, k)| v.map(|v| (k.to_string(), Some(v))))
                .collect();
            if ops.is_empty() {
                bail!("give --producer-byte-rate, --consumer-byte-rate or --request-percentage");
            }
            alter(&mut c, &entity, &ops, "set")
        }
        QuotaCommand::List => list(&mut c, &out),
        QuotaCommand::Remove { entity, keys } => {
            let keys: Vec<String> = if keys.is_empty() { KEYS.iter().map(|k| k.to_string()).collect() } else { keys };
            let ops: Vec<(String, Option<f64>)> = keys.into_iter().map(|k| (k, None)).collect();
            alter(&mut c, &entity, &ops, "removed")
        }
    });
    exit_code(result)
}

fn entity(e: &EntityArgs) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    if e.user.is_some() || e.default_user {
        out.push(("user".to_string(), e.user.clone()));
    }
    if e.client_id.is_some() || e.default_client_id {
        out.push(("client-id".to_string(), e.client_id.clone()));
    }
    if out.is_empty() {
        bail!("name the entity: --user, --default-user, --client-id and/or --default-client-id");
    }
    Ok(out)
}

fn shown(entity: &[(String, Option<String>)], t: &str) -> String {
    match entity.iter().find(|(k, _)| k == t) {
        None => "-".to_string(),
        Some((_, None)) => "<default>".to_string(),
        Some((_, Some(n))) => n.clone(),
    }
}

fn alter(c: &mut Cluster, e: &EntityArgs, ops: &[(String, Option<f64>)], done: &str) -> Result<bool> {
    let entity = entity(e)?;
    let (code, message) = c.alter_quotas(&entity, ops)?;
    if code != 0 {
        bail!("{}", describe_error(code, message.as_deref()));
    }
    println!("{done} {} for user {} client-id {}", ops.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "), shown(&entity, "user"), shown(&entity, "client-id"));
    Ok(true)
}

#[derive(Serialize)]
struct Row {
    user: String,
    client_id: String,
    quota: String,
    value: f64,
}

fn list(c: &mut Cluster, out: &Output) -> Result<bool> {
    let mut rows = Vec::new();
    for (entity, values) in c.describe_quotas()? {
        for (k, v) in values {
            rows.push(Row { user: shown(&entity, "user"), client_id: shown(&entity, "client-id"), quota: k, value: v });
        }
    }
    if out.json {
        out.json(&rows);
    } else {
        let cells: Vec<Vec<String>> = rows.into_iter().map(|r| vec![r.user, r.client_id, r.quota, r.value.to_string()]).collect();
        print!("{}", table(&["USER", "CLIENT-ID", "QUOTA", "VALUE"], &cells));
    }
    Ok(true)
}
