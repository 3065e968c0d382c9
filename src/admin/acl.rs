//! `spate acl create|list|delete`: Kafka ACL bindings on any Kafka-compatible broker, through
//! CreateAcls, DescribeAcls and DeleteAcls, in the shape of `kafka-acls` and rpk's `rpk
//! security acl`: principals with `--allow-principal`/`--deny-principal`, operations with
//! `--operation`, the resource with `--topic`, `--group`, `--transactional-id` or `--cluster`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::cluster::{AclFilterSpec, AclSpec, Cluster};
use super::{describe_error, exit_code, report, table, ClientArgs, Output};

#[derive(Debug, Args)]
pub struct AclArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AclCommand,
}

/// The resource an ACL names.
#[derive(Debug, Args, Default)]
pub struct ResourceArgs {
    /// A topic (or, with --resource-pattern-type prefixed, a prefix of topic names); `*` for all.
    #[arg(long)]
    pub topic: Option<String>,
    /// A consumer group (or prefix); `*` for all.
    #[arg(long)]
    pub group: Option<String>,
    /// A transactional id (or prefix); `*` for all.
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// The cluster (for CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, IDEMPOTENT_WRITE, ...).
    #[arg(long)]
    pub cluster: bool,
    /// literal or prefixed (create); also any or match (list, delete).
    #[arg(long, default_value = "literal")]
    pub resource_pattern_type: String,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add ACLs: every principal given gets every operation given on the resource.
    Create {
        #[command(flatten)]
        resource: ResourceArgs,
        /// A principal allowed (User:alice, User:*); repeatable.
        #[arg(long = "allow-principal")]
        allow: Vec<String>,
        /// A principal denied; repeatable.
        #[arg(long = "deny-principal")]
        deny: Vec<String>,
        /// The host the ACLs apply to.
        #[arg(long, default_value = "*")]
        host: String,
        /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
        /// ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL; repeatable.
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
    },
    /// The ACLs matching the filter (all without one): TYPE, NAME, PATTERN, PRINCIPAL, HOST,
    /// OPERATION, PERMISSION.
    List {
        #[command(flatten)]
        resource: ResourceArgs,
        #[arg(long)]
        principal: Option<String>,
    },
    /// Delete the ACLs matching the filter (prints them).
    Delete {
        #[command(flatten)]
        resource: ResourceArgs,
        #[arg(long)]
        principal: Option<String>,
        /// Limit to this operation.
        #[arg(long)]
        operation: Option<String>,
    },
}

pub fn run(args: AclArgs) -> std::process::ExitCode {
    let out = Output { json: args.json };
    let result = Cluster::connect(&args.client.bootstrap_server).and_then(|mut c| match args.command {
        AclCommand::Create { resource, allow, deny, host, operations } => create(&mut c, &out, &resource, &allow, &deny, &host, &operations),
        AclCommand::List { resource, principal } => list(&mut c, &out, &resource, principal),
        AclCommand::Delete { resource, principal, operation } => delete(&mut c, &out, &resource, principal, operation),
    });
    exit_code(result)
}

const OPERATIONS: [(&str, i8); 13] = [
    ("ALL", 2),
    ("READ", 3),
    ("WRITE", 4),
    ("CREATE", 5),
    ("DELETE", 6),
    ("ALTER", 7),
    ("DESCRIBE", 8),
    ("CLUSTER_ACTION", 9),
    ("DESCRIBE_CONFIGS", 10),
    ("ALTER_CONFIGS", 11),
    ("IDEMPOTENT_WRITE", 12),
    ("CREATE_TOKENS", 13),
    ("DESCRIBE_TOKENS", 14),
];
const RESOURCE_TYPES: [(&str, i8); 4] = [("TOPIC", 2), ("GROUP", 3), ("CLUSTER", 4), ("TRANSACTIONAL_ID", 5)];
const PATTERNS: [(&str, i8); 4] = [("ANY", 1), ("MATCH", 2), ("LITERAL", 3), ("PREFIXED", 4)];

fn operation(s: &str) -> Result<i8> {
    let s = s.to_ascii_uppercase().replace('-', "_");
    let s = if s == "IDEMPOTENTWRITE" { "IDEMPOTENT_WRITE".to_string() } else { s };
    OPERATIONS.iter().find(|(n, _)| *n == s).map(|(_, c)| *c).ok_or_else(|| {
        anyhow::anyhow!("unknown operation {s:?}: one of {}", OPERATIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))
    })
}

fn name_of(table: &[(&'static str, i8)], code: i8) -> String {
    table.iter().find(|(_, c)| *c == code).map_or_else(|| code.to_string(), |(n, _)| n.to_string())
}

fn pattern(s: &str) -> Result<i8> {
    PATTERNS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, c)| *c)
        .ok_or_else(|| anyhow::anyhow!("unknown resource pattern type {s:?}: literal, prefixed, any or match"))
}

/// The resource's type code and name; None when no resource is named (a filter for any).
fn resource(r: &ResourceArgs) -> Result<Option<(i8, String)>> {
    let named: Vec<(i8, String)> = [
        r.topic.clone().map(|n| (2, n)),
        r.group.clone().map(|n| (3, n)),
        r.transactional_id.clone().map(|n| (5, n)),
        r.cluster.then(|| (4, "kafka-cluster".to_string())),
    ]
    .into_iter()
    .flatten()
    .collect();
    match named.len() {
        0 => Ok(None),
        1 => Ok(named.into_iter().next()),
        _ => bail!("name one resource: --topic, --group, --transactional-id or --cluster"),
    }
}

#[derive(Serialize)]
struct AclJson {
    resource_type: String,
    name: String,
    pattern: String,
    principal: String,
    host: String,
    operation: String,
    permission: String,
}

fn json(a: &AclSpec) -> AclJson {
    AclJson {
        resource_type: name_of(&RESOURCE_TYPES, a.resource_type),
        name: a.name.clone(),
        pattern: name_of(&PATTERNS, a.pattern),
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation: name_of(&OPERATIONS, a.operation),
        permission: if a.permission == 3 { "ALLOW" } else { "DENY" }.to_string(),
    }
}

fn print(out: &Output, acls: &[AclSpec]) {
    let rows: Vec<AclJson> = acls.iter().map(json).collect();
    if out.json {
        out.json(&rows);
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|a| vec![a.resource_type, a.name, a.pattern, a.principal, a.host, a.operation, a.permission])
        .collect();
    print!("{}", table(&["TYPE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"], &cells));
}

fn create(c: &mut Cluster, out: &Output, r: &ResourceArgs, allow: &[String], deny: &[String], host: &str, ops: &[String]) -> Result<bool> {
    let Some((resource_type, name)) = resource(r)? else { bail!("name the resource: --topic, --group, --transactional-id or --cluster") };
    let pattern = pattern(&r.resource_pattern_type)?;
    if !matches!(pattern, 3 | 4) {
        bail!("--resource-pattern-type: literal or prefixed for create");
    }
    if allow.is_empty() && deny.is_empty() {
        bail!("give --allow-principal or --deny-principal");
    }
    let mut acls = Vec::new();
    for (principals, permission) in [(allow, 3), (deny, 2)] {
        for p in principals {
            for o in ops {
                acls.push(AclSpec {
                    resource_type,
                    name: name.clone(),
                    pattern,
                    principal: p.clone(),
                    host: host.to_string(),
                    operation: operation(o)?,
                    permission,
                });
            }
        }
    }
    let results = c.create_acls(&acls)?;
    let mut ok = true;
    let mut created = Vec::new();
    for (a, (code, message)) in acls.into_iter().zip(results) {
        if code == 0 {
            created.push(a);
        } else {
            ok = false;
            report(&format!("{} {} on {} {}: {}", a.principal, name_of(&OPERATIONS, a.operation), name_of(&RESOURCE_TYPES, a.resource_type), a.name, describe_error(code, message.as_deref())));
        }
    }
    print(out, &created);
    Ok(ok)
}

fn filter(r: &ResourceArgs, principal: Option<String>, op: Option<String>, default_pattern: i8) -> Result<AclFilterSpec> {
    let (resource_type, name) = match resource(r)? {
        Some((t, n)) => (t, Some(n)),
        None => (1, None),
    };
    let pattern = if r.resource_pattern_type.eq_ignore_ascii_case("literal") && name.is_none() { default_pattern } else { pattern(&r.resource_pattern_type)? };
    Ok(AclFilterSpec {
        resource_type,
        name,
        pattern,
        principal,
        host: None,
        operation: op.as_deref().map(operation).transpose()?.unwrap_or(1),
        permission: 1,
    })
}

fn list(c: &mut Cluster, out: &Output, r: &ResourceArgs, principal: Option<String>) -> Result<bool> {
    let f = filter(r, principal, None, 1)?;
    print(out, &c.describe_acls(&f)?);
    Ok(true)
}

fn delete(c: &mut Cluster, out: &Output, r: &ResourceArgs, principal: Option<String>, op: Option<String>) -> Result<bool> {
    let f = filter(r, principal, op, 1)?;
    if f.resource_type == 1 && f.principal.is_none() && f.operation == 1 {
        bail!("refusing to delete every ACL: name a resource, --principal or --operation");
    }
    let mut deleted = Vec::new();
    for r in c.delete_acls(&[f])? {
        deleted.extend(r?);
    }
    print(out, &deleted);
    if !out.json {
        println!("deleted {} ACL(s)", deleted.len());
    }
    Ok(true)
}
