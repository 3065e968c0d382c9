//! Metadata (key 3): brokers (this node), and topics with their partitions, all led by this node
//! at leader epoch 0. Unknown topics are auto-created when both the client and the broker allow
//! it (`auto.create.topics.enable`, `num.partitions`).

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::super::metadata::{validate_topic_name, TopicMeta};
use super::super::shard::{current, NewTopic, Shard};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 13);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: MetadataRequest) -> MetadataResponse {
    let image = shard.image();
    let node = BrokerId(shard.config.node_id);
    let mut resp = MetadataResponse::default();
    resp.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(StrBytes::from_string(shard.config.advertised_host.clone()))
        .with_port(shard.config.advertised_port as i32)];
    if version >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(shard.cluster_id.to_string()));
    }
    if version >= 1 {
        resp.controller_id = node;
    }

    // Which topics: all (null list, or an empty one before v1), or those named / given by id.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let Some(requested) = requested else {
        resp.topics = image.topics.values().map(|t| topic_entry(t, node, version)).collect();
        return resp;
    };
    let auto_create = shard.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut to_create = Vec::new();
    let mut entries: Vec<Result<MetadataResponseTopic, String>> = Vec::new();
    for t in requested {
        // A topic id, when given, names the topic whatever the name says: the Java client's
        // describeTopics by id sends an empty name beside it. Kafka looks up by id first too.
        let name = match (&t.name, version >= 10 && t.topic_id != Uuid::nil()) {
            (_, true) => match image.topic_by_id(&t.topic_id) {
                Some(meta) => meta.name.clone(),
                None => {
                    entries.push(Ok(MetadataResponseTopic::default()
                        .with_name(None)
                        .with_topic_id(t.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code())));
                    continue;
                }
            },
            (Some(n), false) => n.0.to_string(),
            (None, false) => {
                entries.push(Ok(MetadataResponseTopic::default().with_error_code(ResponseError::InvalidRequest.code())));
                continue;
            }
        };
        if let Some(meta) = image.topic(&name) {
            entries.push(Ok(topic_entry(meta, node, version)));
        } else if validate_topic_name(&name).is_err() {
            entries.push(Ok(error_entry(&name, ResponseError::InvalidTopicException)));
        } else if auto_create {
            if !to_create.contains(&name) {
                to_create.push(name.clone());
            }
            entries.push(Err(name));
        } else {
            entries.push(Ok(error_entry(&name, ResponseError::UnknownTopicOrPartition)));
        }
    }
    if !to_create.is_empty() {
        let specs: Vec<NewTopic> = to_create
            .iter()
            .map(|n| NewTopic { name: n.clone(), partitions: shard.config.num_partitions, overrides: Default::default() })
            .collect();
        let results = shard.invoke_on(0, move || async move { current().create_topics(specs).await }).await;
        for (name, r) in to_create.iter().zip(results) {
            match r {
                Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
                // Lost a race with another creator: the topic exists now, which is what we want.
                Err((ResponseError::TopicAlreadyExists, _)) => {}
                Err((code, msg)) => tracing::warn!(topic = %name, ?code, "auto-creating topic failed: {msg}"),
            }
        }
    }
    let image = shard.image();
    resp.topics = entries
        .into_iter()
        .map(|e| match e {
            Ok(t) => t,
            Err(name) => match image.topic(&name) {
                Some(meta) => topic_entry(meta, node, version),
                None => error_entry(&name, ResponseError::LeaderNotAvailable),
            },
        })
        .collect();
    resp
}

fn error_entry(name: &str, e: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_error_code(e.code())
}

fn topic_entry(t: &Arc<TopicMeta>, node: BrokerId, version: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(if version >= 10 { t.id } else { Uuid::nil() })
        .with_is_internal(version >= 1 && t.name == super::super::groups::OFFSETS_TOPIC)
        .with_partitions(
            (0..t.partitions)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(node)
                        .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}
