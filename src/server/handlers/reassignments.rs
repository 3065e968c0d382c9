//! AlterPartitionReassignments (key 45) and ListPartitionReassignments (key 46): partitions
//! move to other brokers while they serve. Each move is a metadata record
//! (`MetadataRecord::ReassignPartition`) proposed by core 0: the target replicas are added and
//! copy the log as followers, and once all are in the ISR the replicas not in the target are
//! dropped (their files removed) and leadership moves to the target if it must. Null replicas
//! cancel a move in progress. Per partition: INVALID_REPLICA_ASSIGNMENT (an unregistered or
//! repeated broker, or none), NO_REASSIGNMENT_IN_PROGRESS (a cancel with nothing to cancel),
//! INVALID_REPLICATION_FACTOR (v1 with `allow_replication_factor_change` false and another
//! count), UNKNOWN_TOPIC_OR_PARTITION. A single node has nowhere to move anything:
//! INVALID_REPLICA_ASSIGNMENT unless the target is itself. List answers from the image.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
use kafka_protocol::messages::list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};

use super::super::shard::{current, Shard};
use crate::protocol::{ResponseError, StrBytes};

pub const ALTER_VERSIONS: (i16, i16) = (0, 1);
pub const LIST_VERSIONS: (i16, i16) = (0, 0);

type Outcome = Result<(), (ResponseError, String)>;

pub async fn alter(shard: &Rc<Shard>, version: i16, req: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse {
    let image = shard.image();
    let rf_change = version < 1 || req.allow_replication_factor_change;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut todo = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let target: Option<Vec<i32>> = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let checked = (|| {
                let meta = image
                    .topic(&name)
                    .filter(|m| (0..m.partitions).contains(&p.partition_index))
                    .ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("no partition {name}-{}", p.partition_index)))?;
                if image.cluster.is_none() {
                    return match &target {
                        Some(t) if *t == [shard.config.node_id] => Ok(false),
                        Some(_) => Err((ResponseError::InvalidReplicaAssignment, "a single node holds every partition itself".to_string())),
                        None => Err((ResponseError::NoReassignmentInProgress, "a single node moves no partitions".to_string())),
                    };
                }
                let now = meta.placement.get(p.partition_index as usize).map_or(0, |r| r.replicas.len());
                if let Some(t) = &target {
                    let moving = image.cluster.as_ref().and_then(|c| {
                        c.reassignments.iter().find(|r| r.topic == name && r.partition == p.partition_index).map(|r| r.original.len())
                    });
                    if !rf_change && t.len() != moving.unwrap_or(now) {
                        return Err((
                            ResponseError::InvalidReplicationFactor,
                            format!("{} replicas where the partition has {}, and allow_replication_factor_change is false", t.len(), moving.unwrap_or(now)),
                        ));
                    }
                }
                Ok(true)
            })();
            match checked {
                Ok(true) => {
                    todo.push((outcomes.len(), name.clone(), p.partition_index, target));
                    outcomes.push(Ok(()));
                }
                Ok(false) => outcomes.push(Ok(())),
                Err(e) => outcomes.push(Err(e)),
            }
        }
    }
    if !todo.is_empty() {
        let slots: Vec<usize> = todo.iter().map(|t| t.0).collect();
        let moves: Vec<(String, i32, Option<Vec<i32>>)> = todo.into_iter().map(|(_, n, p, t)| (n, p, t)).collect();
        let results = shard.invoke_on(0, move || async move { current().cluster_reassign(moves).await }).await;
        for (slot, r) in slots.into_iter().zip(results) {
            outcomes[slot] = r;
        }
    }
    let mut outcomes = outcomes.into_iter();
    let mut resp = AlterPartitionReassignmentsResponse::default().with_allow_replication_factor_change(rf_change);
    for t in req.topics {
        let mut tr = ReassignableTopicResponse::default().with_name(t.name);
        for p in t.partitions {
            let mut pr = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            if let Some(Err((code, msg))) = outcomes.next() {
                pr.error_code = code.code();
                pr.error_message = Some(StrBytes::from_string(msg));
            }
            tr.partitions.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}

pub async fn list(shard: &Rc<Shard>, _version: i16, req: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let image = shard.image();
    let ongoing = image.cluster.as_ref().map(|c| c.reassignments.clone()).unwrap_or_default();
    let wanted = |topic: &str, p: i32| match &req.topics {
        None => true,
        Some(ts) => ts.iter().any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&p)),
    };
    let mut resp = ListPartitionReassignmentsResponse::default();
    for r in ongoing.iter().filter(|r| wanted(&r.topic, r.partition)) {
        let replicas = image.topic(&r.topic).and_then(|t| t.placement.get(r.partition as usize)).map(|p| p.replicas.clone()).unwrap_or_default();
        let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
        let pr = OngoingPartitionReassignment::default()
            .with_partition_index(r.partition)
            .with_replicas(ids(replicas))
            .with_adding_replicas(ids(r.adding()))
            .with_removing_replicas(ids(r.removing()));
        match resp.topics.iter_mut().find(|t| t.name.0.as_str() == r.topic) {
            Some(t) => t.partitions.push(pr),
            None => resp
                .topics
                .push(OngoingTopicReassignment::default().with_name(TopicName(StrBytes::from_string(r.topic.clone()))).with_partitions(vec![pr])),
        }
    }
    resp
}
