//! AddOffsetsToTxn (key 25): adds the group's `__consumer_offsets` partition to the producer's
//! transaction, so that its TxnOffsetCommit offsets are committed or dropped with it.

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::super::groups::{ensure_offsets_topic, offsets_partition, OFFSETS_TOPIC};
use super::super::shard::{current, Shard};
use super::super::transactions::{coordinator_elsewhere, txn_core};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let (producer_id, epoch) = (req.producer_id.0, req.producer_epoch);
    let code = if id.is_empty() {
        ResponseError::InvalidRequest.code()
    } else if group.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else if let Some(code) = coordinator_elsewhere(shard, &id) {
        code
    } else if let Err(code) = ensure_offsets_topic(shard).await {
        code
    } else {
        let partition = (OFFSETS_TOPIC.to_string(), offsets_partition(&group));
        shard
            .invoke_on(txn_core(&id, shard.cores), move || async move {
                current().transactions.add_partitions(&id, producer_id, epoch, vec![partition], false).await
            })
            .await
            .err()
            .unwrap_or(0)
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
