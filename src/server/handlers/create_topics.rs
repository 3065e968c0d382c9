//! CreateTopics (key 19): validate every topic (name, partitions, replication factor, configs),
//! then create the valid ones on core 0, which stores them durably and publishes them to every
//! core before answering. `validate_only` checks without creating.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::super::cluster;
use super::super::metadata::validate_topic_name;
use super::super::shard::{current, NewTopic, Shard};
use super::describe_configs::topic_entries;
use crate::config::{limits, TopicConfig};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (2, 7);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let image = shard.image();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results: Vec<(CreatableTopicResult, Option<NewTopic>)> = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default().with_name(t.name.clone());
        let checked = (|| -> Result<(NewTopic, TopicConfig), (ResponseError, String)> {
            if seen[&name] > 1 {
                return Err((ResponseError::InvalidRequest, format!("topic {name:?} appears more than once in the request")));
            }
            validate_topic_name(&name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
            if image.topic(&name).is_some() {
                return Err((ResponseError::TopicAlreadyExists, format!("topic {name:?} already exists")));
            }
            let node = shard.config.node_id;
            let mut placement = None;
            let partitions = if !t.assignments.is_empty() {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err((ResponseError::InvalidRequest, "give either assignments or partitions and replication factor".into()));
                }
                if !t.assignments.iter().enumerate().all(|(i, a)| a.partition_index == i as i32) {
                    return Err((ResponseError::InvalidReplicaAssignment, "assignments must number partitions 0..n in order".into()));
                }
                if image.cluster.is_some() {
                    let lists: Vec<Vec<i32>> = t.assignments.iter().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect();
                    placement = Some(cluster::assigned(&image, &lists).map_err(|m| (ResponseError::InvalidReplicaAssignment, m))?);
                } else if !t.assignments.iter().all(|a| a.broker_ids.iter().map(|b| b.0).eq([node])) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("assignments must place partitions 0..n on node {node} only"),
                    ));
                }
                t.assignments.len() as i32
            } else if t.num_partitions == -1 {
                shard.config.num_partitions
            } else {
                t.num_partitions
            };
            if !(1..=limits::TOPIC_PARTITIONS_MAX).contains(&partitions) {
                return Err((ResponseError::InvalidPartitions, format!("partitions must be 1..={}", limits::TOPIC_PARTITIONS_MAX)));
            }
            // In a cluster the placement checks it against the live brokers.
            let single = image.cluster.is_none() && !matches!(t.replication_factor, -1 | 1);
            if t.assignments.is_empty() && (single || t.replication_factor == 0 || t.replication_factor < -1) {
                let msg = if single {
                    format!("replication factor {} is larger than the 1 available broker", t.replication_factor)
                } else {
                    format!("replication factor {} must be at least 1 (or -1 for the default)", t.replication_factor)
                };
                return Err((ResponseError::InvalidReplicationFactor, msg));
            }
            let replication_factor = match (&placement, t.replication_factor) {
                (Some(p), _) => p.first().map_or(1, |p| p.replicas.len() as i32),
                (None, -1) if image.cluster.is_some() => shard.config.default_replication_factor as i32,
                (None, -1) => 1,
                (None, rf) => rf as i32,
            };
            let mut overrides = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    overrides.insert(c.name.to_string(), v.to_string());
                }
            }
            let config = TopicConfig::resolve(&shard.topic_defaults(), &overrides).map_err(|m| (ResponseError::InvalidConfig, m))?;
            Ok((NewTopic { name: name.clone(), partitions, overrides, placement, replication_factor }, config))
        })();
        match checked {
            Ok((spec, config)) => {
                if version >= 5 {
                    fill(shard, &mut r, &spec, &config);
                }
                results.push((r, (!req.validate_only).then_some(spec)));
            }
            Err((code, msg)) => {
                r.error_code = code.code();
                r.error_message = Some(StrBytes::from_string(msg));
                results.push((r, None));
            }
        }
    }
    let specs: Vec<NewTopic> = results.iter().filter_map(|(_, s)| s.clone()).collect();
    let mut created = if specs.is_empty() {
        Vec::new()
    } else {
        shard.invoke_on(0, move || async move { current().create_topics(specs).await }).await
    }
    .into_iter();
    let mut resp = CreateTopicsResponse::default();
    for (mut r, spec) in results {
        if spec.is_some() {
            match created.next().expect("one result per created topic") {
                Ok(meta) if version >= 7 => r.topic_id = meta.id,
                Ok(_) => {}
                Err((code, msg)) => {
                    r.error_code = code.code();
                    r.error_message = Some(StrBytes::from_string(msg));
                    r.configs = None;
                }
            }
        }
        resp.topics.push(r);
    }
    resp
}

fn fill(shard: &Shard, r: &mut CreatableTopicResult, spec: &NewTopic, config: &TopicConfig) {
    r.num_partitions = spec.partitions;
    r.replication_factor = spec.replication_factor as i16;
    r.configs = Some(
        topic_entries(shard, &shard.image(), config, &spec.overrides)
            .into_iter()
            .map(|e| {
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(e.name))
                    .with_value(Some(StrBytes::from_string(e.value)))
                    .with_config_source(e.source)
            })
            .collect(),
    );
}
