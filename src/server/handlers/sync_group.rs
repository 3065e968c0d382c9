//! SyncGroup (key 14): the leader hands in the assignment; every member waits (long poll) for
//! its own part.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::super::groups::{coordinator_elsewhere, group_core};
use super::super::shard::{current, Shard};
use crate::coordinator::group::{Event, Reply};
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let generation = req.generation_id;
    let assignments: Vec<(String, bytes::Bytes)> =
        req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
    if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        return SyncGroupResponse::default().with_error_code(code);
    }
    let core = group_core(&group_id, shard.cores);
    let reply = shard
        .invoke_on(core, move || async move {
            current()
                .groups
                .call(&group_id, move |token| Event::Sync { token, member_id, generation, assignments })
                .await
        })
        .await;
    let Reply::Sync { error, protocol_type, protocol_name, assignment } = reply else {
        unreachable!("a sync is answered with a sync reply");
    };
    let mut resp = SyncGroupResponse::default().with_error_code(error).with_assignment(assignment);
    if version >= 5 {
        resp.protocol_type = protocol_type.map(StrBytes::from_string);
        resp.protocol_name = protocol_name.map(StrBytes::from_string);
    }
    resp
}
