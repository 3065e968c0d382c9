//! Produce (key 0): validate each partition's batches on the connection's core (sizes, magic,
//! CRC-32C), then append them on the owning cores, all partitions in parallel. acks=1 answers once
//! the batches are written; acks=-1 (all) also waits for fdatasync under the default flush policy;
//! acks=0 gets no response at all.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::super::shard::Shard;
use super::{on_partitions, PartWork};
use crate::protocol::batch::{self, BatchError, BatchHeader};
use crate::protocol::{ResponseError, StrBytes};
use crate::storage::log::AppendInfo;

pub const VERSIONS: (i16, i16) = (3, 13);

type Outcome = Result<AppendInfo, (ResponseError, String)>;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let image = shard.image();
    let acks_ok = matches!(acks, -1..=1);
    // Per partition, in request order: either an error now, or work for an owning core.
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topic_data {
        let meta = if version >= 13 { image.topic_by_id(&t.topic_id) } else { image.topic(t.name.0.as_str()) };
        for p in &t.partition_data {
            let slot = outcomes.len();
            outcomes.push(None);
            let checked = (|| -> Result<(String, Vec<(Bytes, BatchHeader)>), (ResponseError, String)> {
                if !acks_ok {
                    return Err((ResponseError::InvalidRequiredAcks, format!("acks={acks} is not -1, 0 or 1")));
                }
                let meta = meta.ok_or_else(|| {
                    let e = if version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
                    (e, "unknown topic".to_string())
                })?;
                if p.index < 0 || p.index >= meta.partitions {
                    return Err((ResponseError::UnknownTopicOrPartition, format!("no partition {}", p.index)));
                }
                let records = p.records.as_ref().ok_or((ResponseError::CorruptMessage, "null record set".to_string()))?;
                let batches = batch::split(records).map_err(|e| match e {
                    BatchError::Corrupt(_) => (ResponseError::CorruptMessage, e.to_string()),
                    BatchError::UnsupportedMagic(_) => (ResponseError::UnsupportedForMessageFormat, e.to_string()),
                })?;
                let max = meta.config.message_max_bytes;
                if let Some((b, _)) = batches.iter().find(|(b, _)| b.len() as i64 > max) {
                    return Err((ResponseError::MessageTooLarge, format!("batch of {} bytes exceeds max.message.bytes {max}", b.len())));
                }
                Ok((meta.name.clone(), batches))
            })();
            match checked {
                Ok((topic, data)) => work.push(PartWork { slot, topic, partition: p.index, data }),
                Err(e) => {
                    tracing::debug!(topic = %t.name.0.as_str(), partition = p.index, code = ?e.0, "produce refused: {}", e.1);
                    outcomes[slot] = Some(Err(e));
                }
            }
        }
    }
    let wait_durable = acks == -1;
    let work: Vec<_> = work
        .into_iter()
        .map(|w| PartWork { slot: w.slot, partition: w.partition, data: (w.topic.clone(), w.data), topic: w.topic })
        .collect();
    let results = on_partitions(shard, work, move |log, (topic, batches): (String, Vec<(Bytes, BatchHeader)>)| async move {
        let r = log.append(&batches, wait_durable).await.map_err(|e| (super::log_error_code(&e), e.to_string()));
        if r.is_ok() {
            let bytes = batches.iter().map(|(b, _)| b.len() as u64).sum();
            let records = batches.iter().map(|(_, h)| h.records_count.max(0) as u64).sum();
            crate::metrics::produced(&topic, bytes, records);
        }
        r
    })
    .await;
    for (slot, r) in results {
        outcomes[slot] = Some(r.unwrap_or_else(|| Err((ResponseError::UnknownTopicOrPartition, "topic deleted".to_string()))));
    }
    if acks == 0 {
        return None;
    }
    let mut outcomes = outcomes.into_iter();
    let mut resp = ProduceResponse::default();
    for t in req.topic_data {
        let mut tr = TopicProduceResponse::default().with_name(t.name).with_topic_id(t.topic_id);
        for p in t.partition_data {
            let mut pr = PartitionProduceResponse::default().with_index(p.index);
            match outcomes.next().flatten().expect("one outcome per partition") {
                Ok(a) => {
                    pr.base_offset = a.base_offset;
                    pr.log_append_time_ms = a.log_append_time;
                    if version >= 5 {
                        pr.log_start_offset = a.log_start;
                    }
                }
                Err((code, msg)) => {
                    pr.error_code = code.code();
                    pr.base_offset = -1;
                    if version >= 8 {
                        pr.error_message = Some(StrBytes::from_string(msg));
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    Some(resp)
}
