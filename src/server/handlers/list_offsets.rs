//! ListOffsets (key 2): earliest (-2, and -4 earliest-local), latest (-1: the high watermark, or
//! for `read_committed` the last stable offset), max timestamp (-3), or the first offset whose
//! timestamp is at least a given one; as in Kafka, an offset found by timestamp at or past what
//! the isolation level may read is not answered.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::super::shard::Shard;
use super::{on_partitions, PartWork};
use crate::protocol::ResponseError;
use crate::storage::log::{LogError, PartitionLog};

pub const VERSIONS: (i16, i16) = (1, 10);

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// (error, offset, timestamp, leader epoch) for one partition.
type Answer = (i16, i64, i64, i32);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let image = shard.image();
    let mut answers: Vec<Answer> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let meta = image.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = answers.len();
            answers.push((ResponseError::UnknownTopicOrPartition.code(), -1, -1, -1));
            if let Some(m) = meta.filter(|m| (0..m.partitions).contains(&p.partition_index)) {
                if !image.leads(m, p.partition_index) {
                    answers[slot].0 = ResponseError::NotLeaderOrFollower.code();
                    continue;
                }
                let known = if version >= 4 { p.current_leader_epoch } else { -1 };
                if let Some(e) = super::leader_epoch_error(known, image.leader_epoch(m, p.partition_index)) {
                    answers[slot].0 = e.code();
                    continue;
                }
                work.push(PartWork { slot, topic: m.name.clone(), partition: p.partition_index, data: p.timestamp });
            }
        }
    }
    let committed = req.isolation_level == 1;
    let results = on_partitions(shard, work, move |log, ts: i64| async move {
        let o = log.offsets();
        let readable = if committed { log.last_stable_offset() } else { o.high_watermark };
        // The leader epoch of the answer, as Kafka gives it: the latest epoch for the end, else
        // the epoch the offset found was written in.
        let answer: Answer = match ts {
            LATEST => (0, readable, -1, log.leader_epoch()),
            EARLIEST | EARLIEST_LOCAL => (0, o.log_start, -1, log.epoch_at(o.log_start)),
            MAX_TIMESTAMP => found(&log, log.max_timestamp().await, readable),
            t if t >= 0 => found(&log, log.offset_for_timestamp(t).await, readable),
            _ => (ResponseError::InvalidRequest.code(), -1, -1, -1),
        };
        answer
    })
    .await;
    for (slot, a) in results {
        if let Some(a) = a {
            answers[slot] = a;
        }
    }
    let mut answers = answers.into_iter();
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default().with_name(t.name);
        for p in t.partitions {
            let (err, offset, timestamp, epoch) = answers.next().expect("one answer per partition");
            tr.partitions.push(
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(err)
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(if err == 0 && offset >= 0 && version >= 4 { epoch } else { -1 }),
            );
        }
        resp.topics.push(tr);
    }
    resp
}

/// The answer to a lookup by timestamp: (error, offset, timestamp, epoch), -1s when nothing
/// matched below `readable`.
fn found(log: &PartitionLog, r: Result<Option<(i64, i64)>, LogError>, readable: i64) -> Answer {
    match r {
        Ok(Some((offset, ts))) if offset < readable => (0, offset, ts, log.epoch_at(offset)),
        Ok(_) => (0, -1, -1, -1),
        Err(e) => {
            tracing::error!(dir = %log.dir().display(), error = %e, "timestamp lookup failed");
            (ResponseError::KafkaStorageError.code(), -1, -1, -1)
        }
    }
}
