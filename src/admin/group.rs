//! `spate group list`, `describe` and `delete`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::Serialize;

use super::cluster::{Cluster, Described, Tp, LATEST};
use super::{describe_error, report, table, Output};

#[derive(Serialize)]
struct ListedJson<'a> {
    group: &'a str,
    state: &'a str,
    protocol_type: &'a str,
}

pub fn list(c: &mut Cluster, out: &Output, states: &[String]) -> Result<bool> {
    let groups = c.list_groups(states)?;
    if out.json {
        let v: Vec<_> = groups
            .iter()
            .map(|g| ListedJson { group: &g.group, state: &g.state, protocol_type: &g.protocol_type })
            .collect();
        out.json(&v);
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| vec![g.group.clone(), or_dash(&g.state), or_dash(&g.protocol_type)])
            .collect();
        print!("{}", table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows));
    }
    Ok(true)
}

#[derive(Serialize)]
pub struct GroupJson {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberJson>,
    pub partitions: Vec<PartitionJson>,
}

#[derive(Serialize)]
pub struct MemberJson {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<TopicPartitionJson>,
}

#[derive(Serialize)]
pub struct TopicPartitionJson {
    pub topic: String,
    pub partition: i32,
}

/// One row of `describe`: a partition the group committed an offset for or has assigned.
#[derive(Serialize)]
pub struct PartitionJson {
    pub topic: String,
    pub partition: i32,
    /// The committed offset; `None` if the partition is assigned but nothing was committed.
    pub current_offset: Option<i64>,
    /// `None` if the partition's log end could not be read (say, the topic was deleted).
    pub log_end_offset: Option<i64>,
    pub lag: Option<i64>,
    pub consumer_id: Option<String>,
    pub host: Option<String>,
    pub client_id: Option<String>,
}

pub fn describe(c: &mut Cluster, out: &Output, groups: &[String], members: bool) -> Result<bool> {
    let mut ok = true;
    let mut found = Vec::new();
    for g in groups {
        match c.describe_group(g)? {
            None => {
                report(&format!("consumer group '{g}' does not exist ({})", super::error_name(super::cluster::codes::GROUP_ID_NOT_FOUND)));
                ok = false;
            }
            Some(d) => {
                let committed = c.committed(g)?;
                found.push(describe_one(c, g, d, committed)?);
            }
        }
    }
    if out.json {
        out.json(&found);
    } else {
        for (i, g) in found.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", render(g, members));
        }
    }
    Ok(ok)
}

/// Joins a group's members, committed offsets and log ends into rows sorted by topic-partition.
fn describe_one(c: &mut Cluster, group: &str, d: Described, committed: BTreeMap<Tp, i64>) -> Result<GroupJson> {
    let mut owner: BTreeMap<&Tp, usize> = BTreeMap::new();
    for (i, m) in d.members.iter().enumerate() {
        for tp in &m.assignment {
            owner.insert(tp, i);
        }
    }
    let all: BTreeSet<Tp> = committed.keys().chain(owner.keys().copied()).cloned().collect();
    let all: Vec<Tp> = all.into_iter().collect();
    let ends = if all.is_empty() { BTreeMap::new() } else { c.list_offsets(&all, LATEST)? };
    let partitions = all
        .iter()
        .map(|tp| {
            let current = committed.get(tp).copied();
            let end = ends.get(tp).and_then(|r| r.as_ref().ok().copied()).filter(|o| *o >= 0);
            let m = owner.get(tp).map(|&i| &d.members[i]);
            PartitionJson {
                topic: tp.0.clone(),
                partition: tp.1,
                current_offset: current,
                log_end_offset: end,
                lag: current.zip(end).map(|(c, e)| (e - c).max(0)),
                consumer_id: m.map(|m| m.member_id.clone()),
                host: m.map(|m| m.host.clone()),
                client_id: m.map(|m| m.client_id.clone()),
            }
        })
        .collect();
    let members = d
        .members
        .into_iter()
        .map(|m| MemberJson {
            member_id: m.member_id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            host: m.host,
            assignment: m.assignment.into_iter().map(|(topic, partition)| TopicPartitionJson { topic, partition }).collect(),
        })
        .collect();
    Ok(GroupJson {
        group: group.to_string(),
        state: d.state,
        protocol_type: d.protocol_type,
        protocol: d.protocol,
        members,
        partitions,
    })
}

fn render(g: &GroupJson, members: bool) -> String {
    let n = g.members.len();
    let mut s = format!(
        "Group '{}': state {}, {} member{}{}\n",
        g.group,
        g.state,
        n,
        if n == 1 { "" } else { "s" },
        if g.protocol.is_empty() { String::new() } else { format!(", protocol {}/{}", g.protocol_type, g.protocol) },
    );
    s.push('\n');
    let dash = |o: Option<String>| o.filter(|v| !v.is_empty()).unwrap_or_else(|| "-".to_string());
    let mut rows: Vec<Vec<String>> = g
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                dash(p.current_offset.map(|o| o.to_string())),
                dash(p.log_end_offset.map(|o| o.to_string())),
                dash(p.lag.map(|o| o.to_string())),
                dash(p.consumer_id.clone()),
                dash(p.host.clone()),
                dash(p.client_id.clone()),
            ]
        })
        .collect();
    // Members that own nothing still show, as in Kafka's tool.
    for m in g.members.iter().filter(|m| m.assignment.is_empty()) {
        let mut row = vec!["-".to_string(); 5];
        row.extend([m.member_id.clone(), or_dash(&m.host), or_dash(&m.client_id)]);
        rows.push(row);
    }
    s.push_str(&table(
        &["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"],
        &rows,
    ));
    if members {
        s.push('\n');
        let rows: Vec<Vec<String>> = g
            .members
            .iter()
            .map(|m| {
                let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for tp in &m.assignment {
                    by_topic.entry(&tp.topic).or_default().push(tp.partition.to_string());
                }
                let assignment: Vec<String> = by_topic.iter().map(|(t, ps)| format!("{t}({})", ps.join(","))).collect();
                vec![
                    m.member_id.clone(),
                    or_dash(&m.host),
                    or_dash(&m.client_id),
                    m.instance_id.clone().unwrap_or_else(|| "-".to_string()),
                    m.assignment.len().to_string(),
                    if assignment.is_empty() { "-".to_string() } else { assignment.join(" ") },
                ]
            })
            .collect();
        s.push_str(&table(&["CONSUMER-ID", "HOST", "CLIENT-ID", "INSTANCE-ID", "#PARTITIONS", "ASSIGNMENT"], &rows));
    }
    s
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".to_string() } else { s.to_string() }
}

#[derive(Serialize)]
struct DeletedJson {
    group: String,
    deleted: bool,
    error: Option<String>,
}

pub fn delete(c: &mut Cluster, out: &Output, groups: &[String]) -> Result<bool> {
    let mut results: Vec<(&String, Option<i16>)> = Vec::new();
    for g in groups {
        let error = c.delete_group(g)?;
        if let Some(code) = error {
            report(&format!("cannot delete group '{g}': {}", describe_error(code, None)));
        }
        results.push((g, error));
    }
    if out.json {
        let v: Vec<_> = results
            .iter()
            .map(|(g, e)| DeletedJson { group: g.to_string(), deleted: e.is_none(), error: e.map(super::error_name) })
            .collect();
        out.json(&v);
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(g, e)| vec![g.to_string(), e.map_or_else(|| "deleted".to_string(), |code| describe_error(code, None))])
            .collect();
        print!("{}", table(&["GROUP", "RESULT"], &rows));
    }
    Ok(results.iter().all(|(_, e)| e.is_none()))
}
