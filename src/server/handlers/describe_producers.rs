//! DescribeProducers (key 61): the idempotent producers each partition remembers (id, epoch,
//! last sequence, the largest timestamp of its last batch), as `kafka-transactions describe-producers` and the admin clients'
//! `describeProducers` show them, read on each partition's owning core. Without transactions
//! there is no coordinator epoch and no open transaction: those fields are -1.

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::super::shard::Shard;
use super::{on_partitions, PartWork};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 0);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let image = shard.image();
    let mut work = Vec::new();
    let mut topics: Vec<TopicResponse> = Vec::new();
    for t in &req.topics {
        let meta = image.topic(t.name.0.as_str());
        let mut out = TopicResponse::default().with_name(t.name.clone());
        for &p in &t.partition_indexes {
            let mut r = PartitionResponse::default().with_partition_index(p);
            match meta {
                Some(m) if (0..m.partitions).contains(&p) && !image.leads(m, p) => {
                    r.error_code = ResponseError::NotLeaderOrFollower.code();
                    r.error_message = Some(StrBytes::from_string(format!("{}-{p} is not led by this broker", t.name.0.as_str())));
                }
                Some(m) if (0..m.partitions).contains(&p) => {
                    work.push(PartWork { slot: work.len(), topic: m.name.clone(), partition: p, data: (topics.len(), out.partitions.len()) })
                }
                _ => {
                    r.error_code = ResponseError::UnknownTopicOrPartition.code();
                    r.error_message = Some(StrBytes::from_string(format!("{}-{p} does not exist", t.name.0.as_str())));
                }
            }
            out.partitions.push(r);
        }
        topics.push(out);
    }
    let places: Vec<(usize, usize)> = work.iter().map(|w| w.data).collect();
    let found = on_partitions(shard, work, |log, _| async move { log.active_producers() }).await;
    for (slot, producers) in found {
        let (t, p) = places[slot];
        let r = &mut topics[t].partitions[p];
        match producers {
            Some(list) => {
                r.active_producers = list
                    .into_iter()
                    .map(|a| {
                        ProducerState::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_producer_epoch(a.epoch as i32)
                            .with_last_sequence(a.last_sequence)
                            .with_last_timestamp(a.last_timestamp)
                            .with_coordinator_epoch(a.coordinator_epoch)
                            .with_current_txn_start_offset(a.txn_start_offset)
                    })
                    .collect()
            }
            None => {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
                r.error_message = Some(StrBytes::from_static_str("the topic was deleted"));
            }
        }
    }
    DescribeProducersResponse::default().with_topics(topics)
}
