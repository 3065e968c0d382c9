//! `spate cluster info`: the brokers, controller, cluster id and topics Metadata names, each
//! node's roles (the metadata quorum's voters, from DescribeCluster with the controllers'
//! endpoint type where the broker answers it), the partitions each broker holds and leads, and
//! the API versions each broker advertises (ApiVersions, asked of every broker in turn).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::Serialize;

use super::cluster::Cluster;
use super::{error_name, report, table, Output};
use crate::io::client::api_name;

#[derive(Serialize)]
struct InfoJson {
    cluster_id: Option<String>,
    controller_id: Option<i32>,
    /// The metadata quorum's voters (id and controller listener) and its leader; None when the
    /// broker does not say (Kafka's brokers).
    quorum: Option<QuorumJson>,
    brokers: Vec<BrokerJson>,
    topics: Vec<TopicJson>,
    /// Partitions whose ISR is smaller than their replicas, and those led by nobody.
    under_replicated: Vec<PartitionJson>,
    offline: Vec<PartitionJson>,
}

#[derive(Serialize)]
struct PartitionJson {
    topic: String,
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

#[derive(Serialize)]
struct QuorumJson {
    leader: Option<i32>,
    voters: Vec<VoterJson>,
}

#[derive(Serialize)]
struct VoterJson {
    id: i32,
    controller_listener: String,
}

#[derive(Serialize)]
struct BrokerJson {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    /// "broker", and "controller" when it is a voter of the metadata quorum.
    roles: Vec<String>,
    /// Partition replicas this broker holds.
    replicas: usize,
    /// The partitions it leads, as `topic-partition`.
    leads: Vec<String>,
    /// Empty when the broker could not be asked (see `error`).
    api_versions: Vec<ApiJson>,
    error: Option<String>,
}

#[derive(Serialize)]
struct ApiJson {
    api: String,
    key: i16,
    min_version: i16,
    max_version: i16,
}

#[derive(Serialize)]
struct TopicJson {
    topic: String,
    partitions: usize,
    internal: bool,
    /// Kafka's error name when Metadata gave one for the topic.
    error: Option<String>,
}

pub fn info(c: &mut Cluster, out: &Output) -> Result<bool> {
    let md = c.describe_cluster()?;
    let full = c.topics(None)?;
    let quorum = c.controllers()?.map(|(voters, leader)| QuorumJson {
        leader,
        voters: voters.into_iter().map(|(id, controller_listener)| VoterJson { id, controller_listener }).collect(),
    });
    let mut ok = true;
    let mut brokers = Vec::new();
    for b in md.brokers {
        let addr = format!("{}:{}", b.host, b.port);
        let (api_versions, error) = match c.api_versions(&addr) {
            Ok(v) => {
                let apis = v.into_iter().map(|(key, min, max)| ApiJson { api: api_name(key), key, min_version: min, max_version: max });
                (apis.collect(), None)
            }
            Err(e) => {
                report(&format!("asking broker {} ({addr}) for its API versions: {e:#}", b.id));
                ok = false;
                (Vec::new(), Some(format!("{e:#}")))
            }
        };
        let mut roles = vec!["broker".to_string()];
        if quorum.as_ref().is_some_and(|q| q.voters.iter().any(|v| v.id == b.id)) {
            roles.push("controller".to_string());
        }
        let parts = || full.topics.iter().flat_map(|(t, info)| info.partitions.iter().map(move |p| (t, p)));
        let replicas = parts().filter(|(_, p)| p.replicas.contains(&b.id)).count();
        let leads = parts().filter(|(_, p)| p.leader == b.id).map(|(t, p)| format!("{t}-{}", p.partition)).collect();
        brokers.push(BrokerJson { id: b.id, host: b.host, port: b.port, rack: b.rack, roles, replicas, leads, api_versions, error });
    }
    let topics = md
        .topics
        .into_iter()
        .map(|t| TopicJson {
            topic: t.name,
            partitions: t.partitions,
            internal: t.internal,
            error: (t.error != 0).then(|| error_name(t.error)),
        })
        .collect();
    let all = || full.topics.iter().flat_map(|(t, info)| info.partitions.iter().map(move |p| (t, p)));
    let row = |(t, p): (&String, &super::cluster::PartitionInfo)| PartitionJson {
        topic: t.clone(),
        partition: p.partition,
        leader: p.leader,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
    };
    let under_replicated = all().filter(|(_, p)| p.isr.len() < p.replicas.len()).map(row).collect();
    let offline = all().filter(|(_, p)| p.leader == -1).map(row).collect();
    let info = InfoJson { cluster_id: md.cluster_id, controller_id: md.controller, quorum, brokers, topics, under_replicated, offline };
    if out.json {
        out.json(&info);
    } else {
        print!("{}", render(&info));
    }
    Ok(ok)
}

fn render(info: &InfoJson) -> String {
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".to_string());
    let mut s = format!(
        "Cluster id: {}\nController: {}\n",
        dash(info.cluster_id.clone()),
        dash(info.controller_id.map(|c| c.to_string()))
    );
    if let Some(q) = &info.quorum {
        let voters: Vec<String> = q.voters.iter().map(|v| format!("{}@{}", v.id, v.controller_listener)).collect();
        s.push_str(&format!("Metadata quorum: leader {}, voters {}\n", dash(q.leader.map(|l| l.to_string())), voters.join(",")));
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = info
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                format!("{}:{}", b.host, b.port),
                dash(b.rack.clone()),
                b.roles.join(","),
                b.replicas.to_string(),
                b.leads.len().to_string(),
            ]
        })
        .collect();
    s.push_str(&table(&["BROKER", "HOST:PORT", "RACK", "ROLES", "REPLICAS", "LEADERS"], &rows));
    s.push('\n');
    // Who leads what, topic by topic (internal topics summed up in the table above only).
    let mut leads: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in &info.brokers {
        for tp in &b.leads {
            if !tp.starts_with("__") {
                leads.entry(b.id.to_string()).or_default().push(tp.clone());
            }
        }
    }
    if !leads.is_empty() {
        let rows: Vec<Vec<String>> = leads.into_iter().map(|(b, tps)| vec![b, tps.join(" ")]).collect();
        s.push_str(&table(&["BROKER", "LEADS"], &rows));
        s.push('\n');
    }
    let rows: Vec<Vec<String>> = info
        .topics
        .iter()
        .map(|t| {
            vec![
                t.topic.clone(),
                t.partitions.to_string(),
                if t.internal { "yes" } else { "no" }.to_string(),
                dash(t.error.clone()),
            ]
        })
        .collect();
    s.push_str(&table(&["TOPIC", "PARTITIONS", "INTERNAL", "ERROR"], &rows));
    s.push('\n');
    s.push_str(&format!(
        "Replication: {} under-replicated partition(s), {} offline (led by nobody)\n",
        info.under_replicated.len(),
        info.offline.len()
    ));
    let ids = |v: &[i32]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let rows: Vec<Vec<String>> = info
        .offline
        .iter()
        .map(|p| (p, "offline"))
        .chain(info.under_replicated.iter().filter(|p| p.leader != -1).map(|p| (p, "under-replicated")))
        .map(|(p, state)| vec![format!("{}-{}", p.topic, p.partition), state.to_string(), p.leader.to_string(), ids(&p.replicas), ids(&p.isr)])
        .collect();
    if !rows.is_empty() {
        s.push_str(&table(&["PARTITION", "STATE", "LEADER", "REPLICAS", "ISR"], &rows));
    }
    s.push('\n');
    s.push_str(&api_table(&info.brokers));
    s
}

/// One row per API any broker supports, one column of versions per broker ("-": not supported,
/// "?": the broker could not be asked).
fn api_table(brokers: &[BrokerJson]) -> String {
    let keys: BTreeSet<i16> = brokers.iter().flat_map(|b| b.api_versions.iter().map(|a| a.key)).collect();
    let by_broker: Vec<BTreeMap<i16, &ApiJson>> =
        brokers.iter().map(|b| b.api_versions.iter().map(|a| (a.key, a)).collect()).collect();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|&k| {
            let mut row = vec![api_name(k), k.to_string()];
            for (b, apis) in brokers.iter().zip(&by_broker) {
                row.push(match apis.get(&k) {
                    Some(a) => format!("{}-{}", a.min_version, a.max_version),
                    None if b.error.is_some() => "?".to_string(),
                    None => "-".to_string(),
                });
            }
            row
        })
        .collect();
    let mut header = vec!["API".to_string(), "KEY".to_string()];
    header.extend(brokers.iter().map(|b| format!("BROKER-{}", b.id)));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_table_has_a_column_per_broker() {
        let api = |key, min, max| ApiJson { api: api_name(key), key, min_version: min, max_version: max };
        let brokers = vec![
            BrokerJson { id: 1, host: "a".into(), port: 1, rack: None, roles: vec![], replicas: 0, leads: vec![], api_versions: vec![api(0, 3, 11), api(18, 0, 4)], error: None },
            BrokerJson { id: 2, host: "b".into(), port: 2, rack: None, roles: vec![], replicas: 0, leads: vec![], api_versions: vec![api(18, 0, 3)], error: None },
            BrokerJson { id: 3, host: "c".into(), port: 3, rack: None, roles: vec![], replicas: 0, leads: vec![], api_versions: vec![], error: Some("down".into()) },
        ];
        assert_eq!(
            api_table(&brokers),
            "API          KEY  BROKER-1  BROKER-2  BROKER-3\n\
             Produce      0    3-11      -         ?\n\
             ApiVersions  18   0-4       0-3       ?\n"
        );
    }
}
