//! AddPartitionsToTxn (key 24): adds partitions to a producer's ongoing transaction at its
//! coordinator (see `server::transactions`). Versions 0-3 are the client's form (one
//! transaction); 4 and 5 are the broker-to-broker form, several transactions at once, with
//! `verify_only` asking whether partitions are in the transaction (KIP-890 part 1), or without
//! it adding them for a client of transaction version 2 (part 2).
//!
//! As in Kafka, a partition of an unknown topic fails the whole request: it gets
//! UNKNOWN_TOPIC_OR_PARTITION and the other partitions OPERATION_NOT_ATTEMPTED.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TransactionalId};

use super::super::shard::{current, Shard};
use super::super::transactions::{coordinator_elsewhere, txn_core};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let mut resp = AddPartitionsToTxnResponse::default();
    if version <= 3 {
        let topics = req.v3_and_below_topics;
        let codes = one(shard, req.v3_and_below_transactional_id, req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &topics, false, false).await;
        resp.results_by_topic_v3_and_below = results(topics, &codes);
        return resp;
    }
    for t in req.transactions {
        let codes = one(shard, t.transactional_id.clone(), t.producer_id.0, t.producer_epoch, &t.topics, t.verify_only, true).await;
        resp.results_by_transaction.push(
            AddPartitionsToTxnResult::default().with_transactional_id(t.transactional_id).with_topic_results(results(t.topics, &codes)),
        );
    }
    resp
}

/// The code of each partition of `topics`, in order. `from_broker`: the broker-to-broker form,
/// whose adds are for clients of transaction version 2 (a leader adding a partition for them).
async fn one(
    shard: &Rc<Shard>,
    id: TransactionalId,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    from_broker: bool,
) -> Vec<i16> {
    let image = shard.image();
    let partitions: Vec<(String, i32)> = topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p))).collect();
    let unknown: Vec<bool> = partitions.iter().map(|(t, p)| !image.topic(t).is_some_and(|m| (0..m.partitions).contains(p))).collect();
    if unknown.iter().any(|u| *u) {
        let code = |u: &bool| if *u { ResponseError::UnknownTopicOrPartition.code() } else { ResponseError::OperationNotAttempted.code() };
        return unknown.iter().map(code).collect();
    }
    let id = id.0.to_string();
    let n = partitions.len();
    if id.is_empty() {
        return vec![ResponseError::InvalidRequest.code(); n];
    }
    if let Some(code) = coordinator_elsewhere(shard, &id) {
        return vec![code; n];
    }
    let core = txn_core(&id, shard.cores);
    if verify_only {
        return shard
            .invoke_on(core, move || async move {
                let t = &current().transactions;
                partitions.iter().map(|tp| t.verify(&id, producer_id, epoch, tp).err().unwrap_or(0)).collect()
            })
            .await;
    }
    let code = shard
        .invoke_on(core, move || async move { current().transactions.add_partitions(&id, producer_id, epoch, partitions, from_broker).await })
        .await
        .err()
        .unwrap_or(0);
    vec![code; n]
}

fn results(topics: Vec<AddPartitionsToTxnTopic>, codes: &[i16]) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut codes = codes.iter();
    topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let code = *codes.next().expect("one code per partition");
                    AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(parts)
        })
        .collect()
}
