//! EndTxn (key 26): commits or aborts the producer's ongoing transaction. Answered once the
//! coordinator has written PrepareCommit or PrepareAbort; the markers follow (see
//! `server::transactions`). Version 5 is transaction version 2 (KIP-890 part 2): every EndTxn
//! bumps the producer's epoch, and the answer carries the producer id and epoch to go on with.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::super::shard::{current, Shard};
use super::super::transactions::{coordinator_elsewhere, txn_core};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let version2 = version >= 5;
    let result = if id.is_empty() {
        Err(ResponseError::InvalidRequest.code())
    } else if let Some(code) = coordinator_elsewhere(shard, &id) {
        Err(code)
    } else {
        shard
            .invoke_on(txn_core(&id, shard.cores), move || async move {
                current().transactions.end_txn(&id, producer_id, epoch, commit, version2).await
            })
            .await
    };
    let resp = EndTxnResponse::default();
    match result {
        Ok((pid, epoch)) => resp.with_producer_id(ProducerId(pid)).with_producer_epoch(epoch),
        Err(code) => resp.with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1),
    }
}
