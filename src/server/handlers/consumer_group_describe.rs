//! ConsumerGroupDescribe (key 69): KIP-848 groups as their coordinating cores see them: epochs,
//! assignor, and each member's subscription, current and target assignment.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName};

use super::super::groups::group_core;
use super::super::metadata::MetadataImage;
use super::super::shard::{current, Shard};
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (0, 1);

fn assignment(image: &MetadataImage, tps: Vec<(uuid::Uuid, Vec<i32>)>) -> Assignment {
    Assignment::default().with_topic_partitions(
        tps.into_iter()
            .map(|(id, partitions)| {
                let name = image.topic_by_id(&id).map(|t| t.name.clone()).unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let image = shard.image();
    let mut resp = ConsumerGroupDescribeResponse::default();
    for g in req.group_ids {
        let id = g.0.to_string();
        let core = group_core(&id, shard.cores);
        let found = shard.invoke_on(core, move || async move { current().groups.consumer_describe(&id) }).await;
        let mut out = DescribedGroup::default().with_group_id(g).with_authorized_operations(i32::MIN);
        match found {
            Err((code, why)) => {
                out.error_code = code;
                out.error_message = Some(StrBytes::from_string(why));
                out.group_state = StrBytes::from_static_str("Dead");
            }
            Ok(d) => {
                out.group_state = StrBytes::from_static_str(d.state);
                out.group_epoch = d.group_epoch;
                out.assignment_epoch = d.assignment_epoch;
                out.assignor_name = StrBytes::from_static_str(d.assignor_name);
                out.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut member = Member::default()
                            .with_member_id(StrBytes::from_string(m.member_id))
                            .with_instance_id(m.instance_id.map(StrBytes::from_string))
                            .with_rack_id(m.rack_id.map(StrBytes::from_string))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(StrBytes::from_string(m.client_id))
                            .with_client_host(StrBytes::from_string(m.client_host))
                            .with_subscribed_topic_names(
                                m.subscribed_topic_names.into_iter().map(|n| TopicName(StrBytes::from_string(n))).collect(),
                            )
                            .with_subscribed_topic_regex(m.subscribed_topic_regex.map(StrBytes::from_string))
                            .with_assignment(assignment(&image, m.assignment))
                            .with_target_assignment(assignment(&image, m.target_assignment));
                        if version >= 1 {
                            member.member_type = m.member_type;
                        }
                        member
                    })
                    .collect();
            }
        }
        resp.groups.push(out);
    }
    resp
}
