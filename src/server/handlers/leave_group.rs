//! LeaveGroup (key 13): one member (v0-2) or several (v3+, by member id, or static members by
//! instance id) leave; the group
//! rebalances without them at once instead of waiting for their sessions to expire.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::super::groups::{coordinator_elsewhere, group_core};
use super::super::shard::{current, Shard};
use crate::coordinator::group::{Event, Reply};
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    let instances: Vec<Option<StrBytes>> =
        if version >= 3 { req.members.iter().map(|m| m.group_instance_id.clone()).collect() } else { vec![None] };
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string()))).collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let core = group_core(&group_id, shard.cores);
    let reply = shard
        .invoke_on(core, move || async move {
            current().groups.call(&group_id, move |token| Event::Leave { token, members }).await
        })
        .await;
    let Reply::Leave { results } = reply else {
        unreachable!("a leave is answered with a leave reply");
    };
    let mut resp = LeaveGroupResponse::default();
    if version >= 3 {
        resp.members = results
            .into_iter()
            .zip(instances)
            .map(|((id, error), instance)| {
                MemberResponse::default().with_member_id(StrBytes::from_string(id)).with_group_instance_id(instance).with_error_code(error)
            })
            .collect();
    } else {
        resp.error_code = results.first().map(|r| r.1).unwrap_or(0);
    }
    resp
}
