//! ListGroups (key 16): every group with members or committed offsets, gathered from every core
//! (each coordinates its own), optionally filtered by state (v4+) and type (v5+).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::super::shard::{current, Shard};
use super::on_cores;
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let jobs = (0..shard.cores).map(|core| (core, || async { current().groups.list() })).collect();
    let mut all: Vec<(String, String, String, &str)> = on_cores(shard, jobs).await.into_iter().flatten().collect();
    all.sort();
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut resp = ListGroupsResponse::default();
    for (id, protocol_type, state, group_type) in all {
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        if version >= 5 && !req.types_filter.is_empty() && !req.types_filter.iter().any(|t| t.eq_ignore_ascii_case(group_type)) {
            continue;
        }
        let mut g = ListedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(id)))
            .with_protocol_type(StrBytes::from_string(protocol_type));
        if version >= 4 {
            g.group_state = StrBytes::from_string(state);
        }
        if version >= 5 {
            g.group_type = StrBytes::from_static_str(group_type);
        }
        resp.groups.push(g);
    }
    resp
}
