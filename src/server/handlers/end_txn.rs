//! EndTxn (key 26): commits or aborts the producer's ongoing transaction. Answered once the
//! coordinator has written PrepareCommit or PrepareAbort; the markers follow (see
//! `server::transactions`). Version 5 (transaction version 2, KIP-890 part 2) is not offered.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::super::shard::{current, Shard};
use super::super::transactions::{coordinator_elsewhere, txn_core};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let code = if id.is_empty() {
        ResponseError::InvalidRequest.code()
    } else if let Some(code) = coordinator_elsewhere(shard, &id) {
        code
    } else {
        shard
            .invoke_on(txn_core(&id, shard.cores), move || async move {
                current().transactions.end_txn(&id, producer_id, epoch, commit).await
            })
            .await
            .err()
            .unwrap_or(0)
    };
    EndTxnResponse::default().with_error_code(code)
}
