//! FindCoordinator (key 10): a group is coordinated by the broker leading its
//! `__consumer_offsets` partition (on a single node, this one; on the core that owns that
//! partition, which is Spate's business, not the client's), so in a cluster the groups are
//! spread over the brokers as the partitions are. A transactional id is coordinated, the same
//! way, by the leader of its `__transaction_state` partition (created on the first such lookup).
//! Another coordinator type is INVALID_REQUEST with a message saying so, as Kafka answers a
//! coordinator type it does not know.
//!
//! As in Kafka, the first lookup of a group coordinator creates `__consumer_offsets` (50
//! partitions) and is answered once it exists, COORDINATOR_NOT_AVAILABLE if it cannot be made.
//! Left to the first commit, the creation would run inside a member's session, and on a slow
//! disk hold the answers to its heartbeats for seconds (see `commits_in_flight` in
//! `coordinator::group`).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::super::groups::{ensure_offsets_topic, offsets_partition, OFFSETS_TOPIC};
use crate::config::security::SecurityProtocol;
use super::super::shard::Shard;
use super::super::transactions::{ensure_txn_topic, txn_partition, TXN_TOPIC};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 6);

const KEY_TYPE_GROUP: i8 = 0;
pub const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: FindCoordinatorRequest, protocol: SecurityProtocol) -> FindCoordinatorResponse {
    let key_type = req.key_type;
    let (error, message) = if key_type != KEY_TYPE_GROUP && key_type != KEY_TYPE_TRANSACTION {
        (ResponseError::InvalidRequest.code(), Some(format!("coordinator type {key_type} is not supported by Spate")))
    } else if key_type == KEY_TYPE_GROUP && ensure_offsets_topic(shard).await.is_err() {
        (ResponseError::CoordinatorNotAvailable.code(), None)
    } else if key_type == KEY_TYPE_TRANSACTION && ensure_txn_topic(shard).await.is_err() {
        (ResponseError::CoordinatorNotAvailable.code(), None)
    } else {
        (0, None)
    };
    let message = message.map(StrBytes::from_string);
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = if error == 0 { coordinator(shard, key_type, &key, protocol) } else { Err((error, message.clone())) };
                let c = Coordinator::default().with_key(key);
                match found {
                    Ok((node, host, port)) => c.with_node_id(node).with_host(host).with_port(port),
                    Err((code, msg)) => c.with_error_code(code).with_node_id(BrokerId(-1)).with_port(-1).with_error_message(msg),
                }
            })
            .collect();
    } else {
        let found = if error == 0 { coordinator(shard, key_type, &req.key, protocol) } else { Err((error, message)) };
        match found {
            Ok((node, host, port)) => {
                resp.node_id = node;
                resp.host = host;
                resp.port = port;
            }
            Err((code, msg)) => {
                resp.error_code = code;
                if version >= 1 {
                    resp.error_message = msg;
                }
                resp.node_id = BrokerId(-1);
                resp.port = -1;
            }
        }
    }
    resp
}

type Found = Result<(BrokerId, StrBytes, i32), (i16, Option<StrBytes>)>;

/// The broker leading the group's `__consumer_offsets` partition: this node on a single node;
/// in a cluster whichever broker the image names (COORDINATOR_NOT_AVAILABLE while nobody leads
/// it, as Kafka answers, and clients ask again).
fn coordinator(shard: &Shard, key_type: i8, key: &str, protocol: SecurityProtocol) -> Found {
    let image = shard.image();
    let (topic, partition) = if key_type == KEY_TYPE_TRANSACTION { (TXN_TOPIC, txn_partition(key)) } else { (OFFSETS_TOPIC, offsets_partition(key)) };
    let leader = if image.cluster.is_none() { shard.config.node_id } else { image.topic(topic).map_or(-1, |t| image.leader(t, partition)) };
    match image.broker_address(&shard.config, leader, protocol) {
        Some((host, port)) => Ok((BrokerId(leader), StrBytes::from_string(host), port)),
        None => Err((
            ResponseError::CoordinatorNotAvailable.code(),
            Some(StrBytes::from_string(format!("{topic} partition {partition} has no live leader"))),
        )),
    }
}
