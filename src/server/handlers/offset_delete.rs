//! OffsetDelete (key 47): deletes a group's committed offsets for some partitions, on the group's
//! coordinating core. Offsets of topics the group's members still subscribe to are refused with
//! GROUP_SUBSCRIBED_TO_TOPIC, as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::super::groups::group_core;
use super::super::shard::{current, Shard};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 0);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut resp = OffsetDeleteResponse::default();
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        resp.error_code = ResponseError::InvalidGroupId.code();
        return resp;
    }
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index)))
        .collect();
    let core = group_core(&group_id, shard.cores);
    let result =
        shard.invoke_on(core, move || async move { current().groups.delete_offsets(&group_id, wanted).await }).await;
    match result {
        Err(code) => resp.error_code = code,
        Ok(results) => {
            let mut results = results.into_iter();
            for t in req.topics {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let (_, code) = results.next().expect("one result per partition asked");
                        OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code)
                    })
                    .collect();
                resp.topics.push(OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions));
            }
        }
    }
    resp
}
