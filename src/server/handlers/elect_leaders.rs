//! ElectLeaders (key 43): preferred-leader election (each partition led by its first replica
//! again, if that replica is live and in the ISR), or unclean election (a partition led by
//! nobody takes a live replica outside its ISR, losing what only the ISR held). In a cluster
//! each election is a metadata record (`MetadataRecord::ElectLeader`) proposed by core 0, so
//! the quorum decides it against the state it applies to; answered once this broker serves
//! the result. Per partition: ELECTION_NOT_NEEDED (already led by its preferred replica, or led
//! at all for an unclean election), PREFERRED_LEADER_NOT_AVAILABLE,
//! ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION. A single node leads every
//! partition already: ELECTION_NOT_NEEDED. `topic_partitions` null means every partition.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::super::shard::{current, Shard};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 2);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let image = shard.image();
    let unclean = version >= 1 && req.election_type == 1;
    let asked: Vec<(String, i32)> = match &req.topic_partitions {
        Some(tps) => tps.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p))).collect(),
        None => image.topics.values().flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p))).collect(),
    };
    let mut outcomes: Vec<Result<(), (ResponseError, String)>> = Vec::with_capacity(asked.len());
    let mut todo = Vec::new();
    for (i, (topic, p)) in asked.iter().enumerate() {
        let known = image.topic(topic).is_some_and(|t| (0..t.partitions).contains(p));
        outcomes.push(if !known {
            Err((ResponseError::UnknownTopicOrPartition, format!("no partition {topic}-{p}")))
        } else if image.cluster.is_none() {
            Err((ResponseError::ElectionNotNeeded, "a single node leads every partition".to_string()))
        } else {
            todo.push((i, topic.clone(), *p));
            Ok(())
        });
    }
    if !todo.is_empty() {
        let slots: Vec<usize> = todo.iter().map(|t| t.0).collect();
        let parts: Vec<(String, i32)> = todo.into_iter().map(|(_, t, p)| (t, p)).collect();
        let results = shard.invoke_on(0, move || async move { current().cluster_elect_leaders(parts, unclean).await }).await;
        for (slot, r) in slots.into_iter().zip(results) {
            outcomes[slot] = r;
        }
    }
    let mut resp = ElectLeadersResponse::default();
    for ((topic, p), outcome) in asked.into_iter().zip(outcomes) {
        let mut r = PartitionResult::default().with_partition_id(p);
        if let Err((code, msg)) = outcome {
            r.error_code = code.code();
            r.error_message = Some(StrBytes::from_string(msg));
        }
        match resp.replica_election_results.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partition_result.push(r),
            None => resp.replica_election_results.push(
                ReplicaElectionResult::default().with_topic(TopicName(StrBytes::from_string(topic))).with_partition_result(vec![r]),
            ),
        }
    }
    resp
}
