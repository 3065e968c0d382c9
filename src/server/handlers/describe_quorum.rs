//! DescribeQuorum (key 55, KIP-595): the metadata quorum as its leader sees it, which is what
//! `kafka-metadata-quorum describe --status / --replication` shows. Kafka's brokers forward it to
//! the active controller; Spate's ask the quorum's leader over the controller network
//! (`ControllerHandle::leader_status`). The log offsets are the metadata log's entry indexes:
//! the high watermark is the committed index, a voter's log end the last entry the leader knows
//! it holds; the leader epoch is the Raft term. Fetch and catch-up times are not tracked: -1.
//! A single node has no quorum and answers INVALID_REQUEST saying so; no leader known (an
//! election, or no majority) is NOT_CONTROLLER, which clients retry.

use std::rc::Rc;

use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName};

use super::super::shard::Shard;
use crate::controller::VoterStatus;
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 2);

/// KRaft's name for the metadata log's topic.
const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(shard: &Rc<Shard>, version: i16, _req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let mut resp = DescribeQuorumResponse::default();
    let message = |m: String| (version >= 2).then(|| StrBytes::from_string(m));
    let Some(link) = &shard.cluster else {
        resp.error_code = ResponseError::InvalidRequest.code();
        resp.error_message = message("this node runs without a metadata quorum (controller_quorum_voters is not set)".into());
        return resp;
    };
    let status = match link.handle.leader_status().await {
        Ok(s) => s,
        Err(e) => {
            resp.error_code = ResponseError::NotController.code();
            resp.error_message = message(format!("no leader of the metadata quorum answered: {e}"));
            return resp;
        }
    };
    let replica = |v: &VoterStatus| {
        ReplicaState::default()
            .with_replica_id(BrokerId(v.id))
            .with_log_end_offset(v.matched.map_or(-1, |m| m as i64))
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(status.leader.unwrap_or(-1)))
        .with_leader_epoch(status.term as i32)
        .with_high_watermark(status.committed.map_or(-1, |c| c as i64))
        .with_current_voters(status.voters.iter().map(replica).collect())
        .with_observers(status.observers.iter().map(replica).collect());
    resp.topics = vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition])];
    if version >= 2 {
        // The voters' controller listeners, under KRaft's usual listener name.
        let voters = shard.config.quorum.as_ref().map(|q| q.voters.clone()).unwrap_or_default();
        resp.nodes = voters
            .iter()
            .map(|v| {
                let (host, port) = v.addr.rsplit_once(':').unwrap_or((v.addr.as_str(), "0"));
                let listener = Listener::default()
                    .with_name(StrBytes::from_static_str("CONTROLLER"))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(port.parse().unwrap_or(0));
                Node::default().with_node_id(BrokerId(v.id)).with_listeners(vec![listener])
            })
            .collect();
    }
    resp
}
