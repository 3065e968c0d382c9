//! DescribeGroups (key 15): state, protocol and members (with their subscriptions and
//! assignments) of each group, asked of the core that coordinates it. An unknown group is "Dead"
//! (before v6) or GROUP_ID_NOT_FOUND (v6), as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::super::groups::group_core;
use super::super::shard::{current, Shard};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 6);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for g in req.groups {
        let id = g.0.to_string();
        let core = group_core(&id, shard.cores);
        let found = shard.invoke_on(core, move || async move { current().groups.describe(&id) }).await;
        let mut out = DescribedGroup::default().with_group_id(g);
        match found {
            Some(d) => {
                out.group_state = StrBytes::from_string(d.state);
                out.protocol_type = StrBytes::from_string(d.protocol_type);
                out.protocol_data = StrBytes::from_string(d.protocol);
                out.members = d
                    .members
                    .into_iter()
                    .map(|(member_id, instance_id, client_id, host, metadata, assignment)| {
                        DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(member_id))
                            .with_group_instance_id(if version >= 4 { instance_id.map(StrBytes::from_string) } else { None })
                            .with_client_id(StrBytes::from_string(client_id))
                            .with_client_host(StrBytes::from_string(host))
                            .with_member_metadata(metadata)
                            .with_member_assignment(assignment)
                    })
                    .collect();
            }
            None if version >= 6 => {
                out.error_code = ResponseError::GroupIdNotFound.code();
                out.error_message = Some(StrBytes::from_static_str("group not found"));
            }
            None => out.group_state = StrBytes::from_static_str("Dead"),
        }
        resp.groups.push(out);
    }
    resp
}
