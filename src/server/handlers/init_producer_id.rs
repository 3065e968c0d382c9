//! InitProducerId (key 22): gives an idempotent producer its id. Ids are unique for the life of
//! the data directory: each start reserves a new block of 2^32 ids (persisted before serving)
//! and every core hands out ids from it (in a cluster the metadata quorum hands out the blocks).
//! With a transactional id the request goes to that id's transaction coordinator
//! (`server::transactions`): the id keeps its producer id and gets the next epoch, fencing the
//! previous incarnation (KIP-360's expected id and epoch are checked when given).

use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::super::shard::{current, Shard};
use super::super::transactions::{coordinator_elsewhere, txn_core};
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 5);

/// Ids per start: the block number is the id's high 32 bits.
const BLOCK_BITS: u32 = 32;

static NEXT_ID: OnceLock<AtomicI64> = OnceLock::new();

/// Installs this run's block (from [`super::super::metadata::reserve_producer_id_block`]).
pub fn set_block(block: i64) {
    let _ = NEXT_ID.set(AtomicI64::new(block << BLOCK_BITS));
}

/// A producer id no one has had (idempotent producers and new transactional ids).
pub fn next_id() -> Option<i64> {
    let next = NEXT_ID.get()?;
    let id = next.fetch_add(1, Ordering::Relaxed);
    // A block holds 2^32 ids; running past it would reach the next start's block.
    (id & ((1 << BLOCK_BITS) - 1) != (1 << BLOCK_BITS) - 1).then_some(id)
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) {
        let expected = if version >= 3 { (req.producer_id.0, req.producer_epoch) } else { (-1, -1) };
        let timeout = req.transaction_timeout_ms;
        let answer = if id.is_empty() {
            Err(ResponseError::InvalidRequest.code())
        } else if let Some(code) = coordinator_elsewhere(shard, &id) {
            Err(code)
        } else {
            shard
                .invoke_on(txn_core(&id, shard.cores), move || async move {
                    current().transactions.init_producer_id(&id, timeout, expected).await
                })
                .await
        };
        match answer {
            Ok((pid, epoch)) => {
                resp.producer_id = ProducerId(pid);
                resp.producer_epoch = epoch;
            }
            Err(code) => resp.error_code = code,
        }
        return resp;
    }
    // Without a transactional id Kafka always hands out a new id at epoch 0, even when the
    // producer names its current one (KIP-360 epoch bumps).
    match next_id() {
        Some(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        None => resp.error_code = ResponseError::UnknownServerError.code(),
    }
    resp
}
