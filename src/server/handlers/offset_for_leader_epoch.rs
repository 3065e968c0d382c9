//! OffsetForLeaderEpoch (key 23): the end offset of a leader epoch, which clients use to detect
//! log truncation after a leader change, from the partition's leader-epoch cache
//! (`storage::log::epochs`). A single node has had one epoch, 0, since the start; in a cluster a
//! partition's epoch rises with each change of its leadership.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::super::shard::Shard;
use super::{on_partitions, PartWork};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (2, 4);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let image = shard.image();
    let mut answers: Vec<EpochEndOffset> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let meta = image.topic(t.topic.0.as_str());
        for p in &t.partitions {
            let slot = answers.len();
            answers.push(
                EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
            if let Some(m) = meta.filter(|m| (0..m.partitions).contains(&p.partition)) {
                if !image.leads(m, p.partition) {
                    answers[slot].error_code = ResponseError::NotLeaderOrFollower.code();
                    continue;
                }
                work.push(PartWork {
                    slot,
                    topic: m.name.clone(),
                    partition: p.partition,
                    data: (p.current_leader_epoch, p.leader_epoch),
                });
            }
        }
    }
    let results = on_partitions(shard, work, |log, (current_epoch, asked_epoch): (i32, i32)| async move {
        let mut e = EpochEndOffset::default();
        if let Some(err) = super::leader_epoch_error(current_epoch, log.leader_epoch()) {
            e.error_code = err.code();
        } else if asked_epoch >= 0 {
            (e.leader_epoch, e.end_offset) = log.end_offset_for_epoch(asked_epoch);
        } else {
            e.leader_epoch = -1;
            e.end_offset = -1;
        }
        e
    })
    .await;
    for (slot, e) in results {
        if let Some(e) = e {
            answers[slot] = e.with_partition(answers[slot].partition);
        }
    }
    let mut answers = answers.into_iter();
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let parts = t.partitions.iter().map(|_| answers.next().expect("one answer per partition")).collect();
        resp.topics.push(OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(parts));
    }
    resp
}
