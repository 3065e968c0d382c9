//! Heartbeat (key 12): keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::super::groups::{coordinator_elsewhere, group_core};
use super::super::shard::{current, Shard};
use crate::coordinator::group::{Event, Reply};

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let generation = req.generation_id;
    if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        return HeartbeatResponse::default().with_error_code(code);
    }
    let core = group_core(&group_id, shard.cores);
    let reply = shard
        .invoke_on(core, move || async move {
            current().groups.call(&group_id, move |token| Event::Heartbeat { token, member_id, generation }).await
        })
        .await;
    let Reply::Heartbeat { error } = reply else {
        unreachable!("a heartbeat is answered with a heartbeat reply");
    };
    HeartbeatResponse::default().with_error_code(error)
}
