//! DeleteRecords (key 21): moves each partition's log start offset forward (offset -1: to the
//! high watermark), on the partition's owning core; segments wholly below it are deleted (see
//! `storage::log::retention`). Answers each partition's new low watermark once the start is
//! durable. As Kafka: OFFSET_OUT_OF_RANGE past the high watermark, UNKNOWN_TOPIC_OR_PARTITION
//! for a partition that does not exist, INVALID_TOPIC_EXCEPTION for the internal
//! `__consumer_offsets` (whose records are the groups' state).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::super::groups::is_internal;
use super::super::shard::Shard;
use super::{log_error_code, on_partitions, PartWork};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 2);

/// (error, low watermark) for one partition.
type Answer = (i16, i64);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let image = shard.image();
    let mut answers: Vec<Answer> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let meta = image.topic(name);
        for p in &t.partitions {
            let slot = answers.len();
            if is_internal(name) {
                answers.push((ResponseError::InvalidTopicException.code(), -1));
                continue;
            }
            answers.push((ResponseError::UnknownTopicOrPartition.code(), -1));
            if let Some(m) = meta.filter(|m| (0..m.partitions).contains(&p.partition_index)) {
                if !image.leads(m, p.partition_index) {
                    answers[slot].0 = ResponseError::NotLeaderOrFollower.code();
                    continue;
                }
                work.push(PartWork { slot, topic: m.name.clone(), partition: p.partition_index, data: p.offset });
            }
        }
    }
    let results = on_partitions(shard, work, |log, offset: i64| async move {
        match log.delete_records(offset).await {
            Ok(low) => (0, low),
            Err(e) => {
                if !matches!(e, crate::storage::log::LogError::OffsetOutOfRange { .. }) {
                    tracing::error!(dir = %log.dir().display(), error = %e, "DeleteRecords failed");
                }
                (log_error_code(&e).code(), -1)
            }
        }
    })
    .await;
    for (slot, a) in results {
        if let Some(a) = a {
            answers[slot] = a;
        }
    }
    let mut answers = answers.into_iter();
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let mut tr = DeleteRecordsTopicResult::default().with_name(t.name);
        for p in t.partitions {
            let (err, low) = answers.next().expect("one answer per partition");
            tr.partitions.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(err)
                    .with_low_watermark(low),
            );
        }
        resp.topics.push(tr);
    }
    resp
}
