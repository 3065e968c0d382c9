//! `spate user create|list|delete`: SCRAM users (SASL's credentials) on any Kafka-compatible
//! broker, through DescribeUserScramCredentials and AlterUserScramCredentials, like Kafka's
//! `kafka-configs --entity-type users` and rpk's `rpk security user`. The password is salted
//! and hashed here (PBKDF2, as Kafka's admin client does): it never crosses the wire.

use std::io::BufRead;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::cluster::Cluster;
use super::{describe_error, exit_code, report, table, ClientArgs, Output};
use crate::protocol::sasl::{self, ScramMechanism, MAX_ITERATIONS};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or set a new password for one, with a credential per mechanism.
    Create {
        #[arg(value_name = "USER")]
        user: String,
        /// The password; without it, the first line of stdin is read.
        #[arg(long, env = "SPATE_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable); default both. PLAIN clients are checked
        /// against either.
        #[arg(long = "mechanism", value_name = "MECHANISM")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = 4096)]
        iterations: i32,
    },
    /// Every SCRAM user: USER, MECHANISMS (with their iterations).
    List,
    /// Delete users' credentials (every mechanism, or those named).
    Delete {
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
        #[arg(long = "mechanism", value_name = "MECHANISM")]
        mechanisms: Vec<String>,
    },
}

pub fn run(args: UserArgs) -> std::process::ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        UserCommand::Create { user, password, mechanisms, iterations } => create(&mut c, &out, &user, password, &mechanisms, iterations),
        UserCommand::List => list(&mut c, &out),
        UserCommand::Delete { users, mechanisms } => delete(&mut c, &out, &users, &mechanisms),
    });
    exit_code(result)
}

fn mechanisms(names: &[String]) -> Result<Vec<ScramMechanism>> {
    if names.is_empty() {
        return Ok(ScramMechanism::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            ScramMechanism::from_name(&n.to_ascii_uppercase())
                .ok_or_else(|| anyhow::anyhow!("unknown mechanism {n:?}: SCRAM-SHA-256 or SCRAM-SHA-512"))
        })
        .collect()
}

#[derive(Serialize)]
struct Outcome {
    user: String,
    ok: bool,
    error: Option<String>,
}

/// Prints each user's outcome; false when any failed.
fn outcomes(out: &Output, results: Vec<(String, i16, Option<String>)>, done: &str) -> bool {
    let mut ok = true;
    let mut json = Vec::new();
    for (user, code, message) in results {
        let error = (code != 0).then(|| describe_error(code, message.as_deref()));
        if let Some(e) = &error {
            ok = false;
            if !out.json {
                report(&format!("user {user}: {e}"));
            }
        } else if !out.json {
            println!("{done} user {user}");
        }
        json.push(Outcome { user, ok: error.is_none(), error });
    }
    if out.json {
        out.json(&json);
    }
    ok
}

fn create(c: &mut Cluster, out: &Output, user: &str, password: Option<String>, names: &[String], iterations: i32) -> Result<bool> {
    let mechs = mechanisms(names)?;
    if !(4096..=MAX_ITERATIONS).contains(&iterations) {
        bail!("--iterations {iterations}: it must be 4096 to {MAX_ITERATIONS}");
    }
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        bail!("empty password (give --password, or a line on stdin)");
    }
    let upsertions = mechs
        .iter()
        .map(|m| {
            let (salt, salted) = sasl::salt_password(*m, password.as_bytes(), iterations);
            (user.to_string(), m.kafka_type(), iterations, salt, salted)
        })
        .collect();
    let results = c.alter_scram_credentials(upsertions, Vec::new())?;
    Ok(outcomes(out, results, "created"))
}

fn delete(c: &mut Cluster, out: &Output, users: &[String], names: &[String]) -> Result<bool> {
    let mut deletions = Vec::new();
    if names.is_empty() {
        // Every mechanism each user has.
        for (user, code, message, infos) in c.describe_scram_credentials(users)? {
            if code != 0 {
                report(&format!("user {user}: {}", describe_error(code, message.as_deref())));
                return Ok(false);
            }
            deletions.extend(infos.into_iter().map(|(m, _)| (user.clone(), m)));
        }
    } else {
        for m in mechanisms(names)? {
            deletions.extend(users.iter().map(|u| (u.clone(), m.kafka_type())));
        }
    }
    let results = c.alter_scram_credentials(Vec::new(), deletions)?;
    Ok(outcomes(out, results, "deleted"))
}

#[derive(Serialize)]
struct Listed {
    user: String,
    mechanisms: Vec<(String, i32)>,
}

fn list(c: &mut Cluster, out: &Output) -> Result<bool> {
    let mut listed = Vec::new();
    for (user, code, message, infos) in c.describe_scram_credentials(&[])? {
        if code != 0 {
            report(&format!("user {user}: {}", describe_error(code, message.as_deref())));
            continue;
        }
        let mechanisms = infos
            .into_iter()
            .map(|(m, i)| (ScramMechanism::from_kafka_type(m).map_or_else(|| format!("mechanism {m}"), |m| m.name().to_string()), i))
            .collect();
        listed.push(Listed { user, mechanisms });
    }
    if out.json {
        out.json(&listed);
    } else {
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|l| vec![l.user.clone(), l.mechanisms.iter().map(|(m, i)| format!("{m} ({i} iterations)")).collect::<Vec<_>>().join(", ")])
            .collect();
        print!("{}", table(&["USER", "MECHANISMS"], &rows));
    }
    Ok(true)
}
