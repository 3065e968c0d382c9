//! DeleteGroups (key 42): removes empty groups and their committed offsets (tombstones in
//! `__consumer_offsets`); NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND for unknown.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::super::groups::group_core;
use super::super::shard::{current, Shard};

pub const VERSIONS: (i16, i16) = (0, 2);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for g in req.groups_names {
        let id = g.0.to_string();
        let core = group_core(&id, shard.cores);
        let code = shard.invoke_on(core, move || async move { current().groups.delete(&id).await }).await;
        resp.results.push(DeletableGroupResult::default().with_group_id(g).with_error_code(code));
    }
    resp
}
