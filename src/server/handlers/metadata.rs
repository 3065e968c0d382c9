//! Metadata (key 3): the brokers (this node alone, or every live broker of the cluster), and
//! topics with their partitions' leaders, replicas and leader epochs from the image (on a single
//! node all led here at epoch 0; in a cluster, LEADER_NOT_AVAILABLE for a partition led by nobody). Unknown topics are auto-created when both the client and the broker allow
//! it (`auto.create.topics.enable`, `num.partitions`).

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::super::metadata::{validate_topic_name, MetadataImage, TopicMeta};
use crate::config::security::SecurityProtocol;
use super::super::shard::{current, NewTopic, Shard};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 13);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: MetadataRequest, protocol: SecurityProtocol) -> MetadataResponse {
    let image = shard.image();
    let mut resp = MetadataResponse::default();
    resp.brokers = brokers(shard, &image, version, protocol);
    if version >= 2 {
        resp.cluster_id = Some(StrBytes::from_string(shard.cluster_id.to_string()));
    }
    if version >= 1 {
        resp.controller_id = BrokerId(shard.cluster.as_ref().map_or(shard.config.node_id, |c| c.controller_id(&image)));
    }

    // Which topics: all (null list, or an empty one before v1), or those named / given by id.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let Some(requested) = requested else {
        resp.topics = image.topics.values().map(|t| topic_entry(&image, t, version)).collect();
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
            entries.push(Ok(topic_entry(&image, meta, version)));
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
    // `__consumer_offsets` is made as the group coordinator makes it (its partition count,
    // compaction and `offsets_topic_replication_factor`), never as a plain auto-created topic.
    if let Some(i) = to_create.iter().position(|n| n == super::super::groups::OFFSETS_TOPIC) {
        to_create.remove(i);
        if let Err(code) = super::super::groups::ensure_offsets_topic(shard).await {
            tracing::warn!(code, "creating {} for a Metadata request failed", super::super::groups::OFFSETS_TOPIC);
        }
    }
    // So is `__transaction_state`, as its coordinators make it.
    if let Some(i) = to_create.iter().position(|n| n == super::super::transactions::TXN_TOPIC) {
        to_create.remove(i);
        if let Err(code) = super::super::transactions::ensure_txn_topic(shard).await {
            tracing::warn!(code, "creating {} for a Metadata request failed", super::super::transactions::TXN_TOPIC);
        }
    }
    if !to_create.is_empty() {
        let specs: Vec<NewTopic> = to_create
            .iter()
            .map(|n| NewTopic {
                name: n.clone(),
                partitions: shard.config.num_partitions,
                overrides: Default::default(),
                placement: None,
                replication_factor: -1,
            })
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
                Some(meta) => topic_entry(&image, meta, version),
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

fn topic_entry(image: &MetadataImage, t: &Arc<TopicMeta>, version: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(if version >= 10 { t.id } else { Uuid::nil() })
        .with_is_internal(version >= 1 && super::super::groups::is_internal(&t.name))
        .with_partitions((0..t.partitions).map(|p| partition_entry(image, t, p, version)).collect())
}

fn partition_entry(image: &MetadataImage, t: &TopicMeta, p: i32, version: i16) -> MetadataResponsePartition {
    let leader = image.leader(t, p);
    let (replicas, isr) = match usize::try_from(p).ok().and_then(|i| t.placement.get(i)) {
        Some(r) => (r.replicas.clone(), r.isr.clone()),
        None => (vec![image.node_id], vec![image.node_id]),
    };
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    // A replica on a fenced broker is offline, as Kafka reports it.
    let offline: Vec<i32> =
        if image.cluster.is_some() { replicas.iter().copied().filter(|r| image.broker(*r).is_none()).collect() } else { Vec::new() };
    MetadataResponsePartition::default()
        .with_error_code(if leader == -1 { ResponseError::LeaderNotAvailable.code() } else { 0 })
        .with_partition_index(p)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(if version >= 7 { image.leader_epoch(t, p) } else { -1 })
        .with_replica_nodes(ids(replicas))
        .with_isr_nodes(ids(isr))
        .with_offline_replicas(if version >= 5 { ids(offline) } else { Vec::new() })
}

/// Every live broker in a cluster; this node alone otherwise. Each at its address on the
/// listener the client came in by; a broker without that listener is left out, as Kafka does.
fn brokers(shard: &Shard, image: &MetadataImage, version: i16, protocol: SecurityProtocol) -> Vec<MetadataResponseBroker> {
    let entry = |id: i32, (host, port): (String, i32), rack: Option<String>| {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(StrBytes::from_string(host))
            .with_port(port)
            .with_rack(if version >= 1 { rack.map(StrBytes::from_string) } else { None })
    };
    match &image.cluster {
        None => image
            .broker_address(&shard.config, shard.config.node_id, protocol)
            .map(|a| entry(shard.config.node_id, a, None))
            .into_iter()
            .collect(),
        Some(c) => c
            .brokers
            .iter()
            .filter(|b| !b.fenced)
            .filter_map(|b| Some(entry(b.id, b.address(protocol)?, b.rack.clone())))
            .collect(),
    }
}
