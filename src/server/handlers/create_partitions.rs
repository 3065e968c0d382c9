//! CreatePartitions (key 37): a topic grows to a new partition count. Core 0 stores the count
//! durably and publishes it; each core opens the new partitions it owns (the shard table spreads
//! them over the cores as it does a new topic's), and Metadata shows them once answered. Existing
//! partitions keep their data and their core. As in Kafka, a keyed producer's partitioner then
//! maps some keys to new partitions. Errors as Kafka's: INVALID_PARTITIONS (not larger, or past
//! the limit), INVALID_REPLICA_ASSIGNMENT (an assignment naming another node),
//! UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST (a topic twice); `__consumer_offsets` is refused
//! (its partition count places the groups).

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::super::groups::is_internal;
use super::super::shard::{current, Shard};
use crate::config::limits;
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 3);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let image = shard.image();
    let node = shard.config.node_id;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut outcomes: Vec<Result<(), (ResponseError, String)>> = Vec::new();
    let mut todo: Vec<(usize, String, i32)> = Vec::new();
    for (i, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let checked = (|| {
            if seen[&name] > 1 {
                return Err((ResponseError::InvalidRequest, format!("topic {name:?} appears more than once in the request")));
            }
            if is_internal(&name) {
                return Err((ResponseError::InvalidRequest, format!("{name}'s partition count places the groups or transactional ids; it is fixed")));
            }
            let Some(meta) = image.topic(&name) else {
                return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist")));
            };
            if t.count <= meta.partitions {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("topic {name:?} has {} partitions; the new count {} must be larger", meta.partitions, t.count),
                ));
            }
            if t.count > limits::TOPIC_PARTITIONS_MAX {
                return Err((ResponseError::InvalidPartitions, format!("partitions must be at most {}", limits::TOPIC_PARTITIONS_MAX)));
            }
            if let Some(a) = &t.assignments {
                let added = (t.count - meta.partitions) as usize;
                if a.len() != added || !a.iter().all(|x| x.broker_ids.iter().map(|b| b.0).eq([node])) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("give one assignment per new partition ({added}), each on node {node} only"),
                    ));
                }
            }
            Ok(())
        })();
        if checked.is_ok() && !req.validate_only {
            todo.push((i, name, t.count));
        }
        outcomes.push(checked);
    }
    if !todo.is_empty() {
        let slots: Vec<usize> = todo.iter().map(|t| t.0).collect();
        let growths: Vec<(String, i32)> = todo.into_iter().map(|(_, n, c)| (n, c)).collect();
        let results = shard.invoke_on(0, move || async move { current().create_partitions(growths).await }).await;
        for (slot, r) in slots.into_iter().zip(results) {
            outcomes[slot] = r;
        }
    }
    let mut resp = CreatePartitionsResponse::default();
    for (t, outcome) in req.topics.iter().zip(outcomes) {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if let Err((e, m)) = outcome {
            tracing::debug!(topic = %t.name.0.as_str(), "CreatePartitions refused: {m}");
            r.error_code = e.code();
            r.error_message = Some(StrBytes::from_string(m));
        }
        resp.results.push(r);
    }
    resp
}
