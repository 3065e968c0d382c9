//! JoinGroup (key 11): hands the request to the group's state machine on its coordinating core
//! and waits (long poll) until the rebalance it joined completes.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::super::groups::{coordinator_elsewhere, group_core};
use super::super::shard::{current, Shard};
use crate::coordinator::group::{Event, JoinRequest, Reply};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 9);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: JoinGroupRequest, client_id: String, client_host: String) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    let mut resp = JoinGroupResponse::default();
    if group_id.is_empty() {
        resp.error_code = ResponseError::InvalidGroupId.code();
        return resp;
    }
    if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        resp.error_code = code;
        return resp;
    }
    let join = JoinRequest {
        token: 0,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id,
        client_host,
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms },
        require_known_member_id: version >= 4,
    };
    let core = group_core(&group_id, shard.cores);
    let reply = shard
        .invoke_on(core, move || async move {
            current().groups.call(&group_id, move |token| Event::Join(JoinRequest { token, ..join })).await
        })
        .await;
    let Reply::Join { error, generation, protocol_type, protocol_name, leader, member_id, members, skip_assignment } = reply else {
        unreachable!("a join is answered with a join reply");
    };
    resp.error_code = error;
    resp.generation_id = generation;
    resp.member_id = StrBytes::from_string(member_id);
    resp.leader = StrBytes::from_string(leader);
    if version >= 9 {
        resp.skip_assignment = skip_assignment;
    }
    if version >= 7 {
        resp.protocol_type = protocol_type.map(StrBytes::from_string);
        resp.protocol_name = protocol_name.map(StrBytes::from_string);
    } else {
        resp.protocol_name = Some(StrBytes::from_string(protocol_name.unwrap_or_default()));
    }
    resp.members = members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_group_instance_id(if version >= 5 { m.instance_id.map(StrBytes::from_string) } else { None })
                .with_metadata(m.metadata)
        })
        .collect();
    resp
}
