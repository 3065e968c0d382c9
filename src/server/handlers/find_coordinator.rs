//! FindCoordinator (key 10): every group is coordinated by this node (on the core that owns its
//! `__consumer_offsets` partition, which is Spate's business, not the client's). Transaction
//! coordinators do not exist yet: a lookup of one is INVALID_REQUEST with a message saying so, as
//! Kafka answers a coordinator type it does not know. Not COORDINATOR_NOT_AVAILABLE: clients
//! retry that (franz-go for as long as its context lasts, the Java client until `max.block.ms`),
//! so a transactional producer would hang instead of failing (found by the Go suite).
//!
//! As in Kafka, the first lookup of a group coordinator creates `__consumer_offsets` (50
//! partitions) and is answered once it exists, COORDINATOR_NOT_AVAILABLE if it cannot be made.
//! Left to the first commit, the creation would run inside a member's session, and on a slow
//! disk hold the answers to its heartbeats for seconds (see `commits_in_flight` in
//! `coordinator::group`).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::super::groups::ensure_offsets_topic;
use super::super::shard::Shard;
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 6);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let (node, host, port) = (BrokerId(shard.config.node_id), shard.config.advertised_host.clone(), shard.config.advertised_port as i32);
    let (error, message) = if req.key_type != KEY_TYPE_GROUP {
        let what = if req.key_type == KEY_TYPE_TRANSACTION { "transaction coordinators are" } else { "this coordinator type is" };
        (ResponseError::InvalidRequest.code(), Some(format!("{what} not supported by Spate yet")))
    } else if ensure_offsets_topic(shard).await.is_ok() {
        (0, None)
    } else {
        (ResponseError::CoordinatorNotAvailable.code(), None)
    };
    let message = message.map(StrBytes::from_string);
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key).with_error_code(error);
                if error == 0 {
                    c.with_node_id(node).with_host(StrBytes::from_string(host.clone())).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1).with_error_message(message.clone())
                }
            })
            .collect();
    } else if error == 0 {
        resp.node_id = node;
        resp.host = StrBytes::from_string(host);
        resp.port = port;
    } else {
        resp.error_code = error;
        if version >= 1 {
            resp.error_message = message;
        }
        resp.node_id = BrokerId(-1);
        resp.port = -1;
    }
    resp
}
