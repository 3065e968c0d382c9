//! InitProducerId (key 22): gives an idempotent producer its id. Ids are unique for the life of
//! the data directory: each start reserves a new block of 2^32 ids (persisted before serving)
//! and every core hands out ids from it. Transactional ids are not supported yet: such requests
//! get INVALID_REQUEST, which clients treat as fatal instead of retrying forever.

use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::super::shard::Shard;
use crate::protocol::ResponseError;

pub const VERSIONS: (i16, i16) = (0, 5);

/// Ids per start: the block number is the id's high 32 bits.
const BLOCK_BITS: u32 = 32;

static NEXT_ID: OnceLock<AtomicI64> = OnceLock::new();

/// Installs this run's block (from [`super::super::metadata::reserve_producer_id_block`]).
pub fn set_block(block: i64) {
    let _ = NEXT_ID.set(AtomicI64::new(block << BLOCK_BITS));
}

fn next_id() -> Option<i64> {
    let next = NEXT_ID.get()?;
    let id = next.fetch_add(1, Ordering::Relaxed);
    // A block holds 2^32 ids; running past it would reach the next start's block.
    (id & ((1 << BLOCK_BITS) - 1) != (1 << BLOCK_BITS) - 1).then_some(id)
}

pub async fn handle(_shard: &Rc<Shard>, _version: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        resp.error_code = ResponseError::InvalidRequest.code();
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
