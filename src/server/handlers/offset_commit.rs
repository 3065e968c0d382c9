//! OffsetCommit (key 8): stores a group's consumed positions on the group's coordinating core,
//! if the committer is a member of the current generation (or, for assign()-only consumers,
//! while the group has no members). Offsets for topics that do not exist are refused, and so is
//! metadata over 4096 bytes (OFFSET_METADATA_TOO_LARGE, as Kafka).

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::super::groups::{coordinator_elsewhere, group_core, Committed, Committer};
use super::super::shard::{current, Shard};
use crate::protocol::ResponseError;
use crate::storage::now_ms;

pub const VERSIONS: (i16, i16) = (2, 9);

/// Kafka's `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE
/// (and `__consumer_offsets` strings stay far below their 32767-byte limit).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let image = shard.image();
    let group_id = req.group_id.0.to_string();
    // A negative generation (or member epoch) is a consumer outside group management, using
    // assign(), whatever member id it sends: librdkafka under the consumer protocol sends its
    // own. Kafka accepts such commits while the group has no members, in both protocols.
    let who = if req.generation_id_or_member_epoch < 0 {
        Committer::Simple
    } else {
        Committer::Member { member_id: req.member_id.to_string(), generation: req.generation_id_or_member_epoch }
    };
    let now = now_ms();
    let mut offsets = Vec::new();
    let mut unknown = Vec::new();
    let mut too_large = Vec::new();
    for t in &req.topics {
        let meta = image.topic(t.name.0.as_str());
        for p in &t.partitions {
            if p.committed_metadata.as_ref().is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
                too_large.push((t.name.0.to_string(), p.partition_index));
                continue;
            }
            match meta {
                Some(m) if (0..m.partitions).contains(&p.partition_index) => offsets.push((
                    (m.name.clone(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                        commit_ms: now,
                    },
                )),
                _ => unknown.push((t.name.0.to_string(), p.partition_index)),
            }
        }
    }
    let code = if group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        code
    } else {
        let core = group_core(&group_id, shard.cores);
        shard.invoke_on(core, move || async move { current().groups.commit(&group_id, &who, offsets).await }).await
    };
    let mut resp = OffsetCommitResponse::default();
    for t in req.topics {
        let parts = t
            .partitions
            .iter()
            .map(|p| {
                let key = (t.name.0.to_string(), p.partition_index);
                let error = if too_large.contains(&key) {
                    ResponseError::OffsetMetadataTooLarge.code()
                } else if unknown.contains(&key) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    code
                };
                OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error)
            })
            .collect();
        resp.topics.push(OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts));
    }
    resp
}
