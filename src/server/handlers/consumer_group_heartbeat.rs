//! ConsumerGroupHeartbeat (key 68): the KIP-848 consumer protocol. Each heartbeat is one step
//! of the group's state machine ([`crate::coordinator::consumer_group`]) on its coordinating
//! core; the answer carries the member's epoch and, when it changed, its assignment, computed on
//! the broker (assignors "uniform" and "range").

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::super::groups::{coordinator_elsewhere, group_core};
use super::super::shard::{current, Shard};
use crate::coordinator::consumer_group::Heartbeat;
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 1);

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    req: ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        resp.error_code = ResponseError::InvalidGroupId.code();
        resp.error_message = Some(StrBytes::from_static_str("GroupId can't be empty."));
        return resp;
    }
    let hb = Heartbeat {
        version,
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req.subscribed_topic_names.map(|v| v.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: req.server_assignor.map(|s| s.to_string()),
        topic_partitions: req.topic_partitions.map(|v| v.into_iter().map(|t| (t.topic_id, t.partitions)).collect()),
        client_id,
        client_host,
    };
    if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        resp.error_code = code;
        return resp;
    }
    let core = group_core(&group_id, shard.cores);
    let reply = shard
        .invoke_on(core, move || async move {
            let s = current();
            let image = s.image();
            s.groups.consumer_heartbeat(&group_id, hb, &image)
        })
        .await;
    resp.error_code = reply.error_code;
    resp.error_message = reply.error_message.map(StrBytes::from_string);
    resp.member_id = reply.member_id.map(StrBytes::from_string);
    resp.member_epoch = reply.member_epoch;
    resp.heartbeat_interval_ms = reply.heartbeat_interval_ms;
    resp.assignment = reply.assignment.map(|tps| {
        Assignment::default().with_topic_partitions(
            tps.into_iter()
                .map(|(id, partitions)| TopicPartitions::default().with_topic_id(id).with_partitions(partitions))
                .collect(),
        )
    });
    resp
}
