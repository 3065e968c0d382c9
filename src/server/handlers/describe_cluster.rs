//! DescribeCluster (key 60): the cluster id, the brokers (this node alone, or every registered
//! broker of the cluster, fenced ones flagged) and the controller (in a cluster the quorum's
//! leader when it is a broker, see `ClusterLink::controller_id`). Authorized operations, when
//! asked for, are every cluster operation: no authorizer runs yet.
//!
//! With `endpoint_type` 2 (controllers, KIP-919) it lists the metadata quorum's voters at their
//! controller listeners and the quorum's leader, which is how `spate cluster info` shows each
//! node's roles. Kafka answers that only on a controller's own listener (a broker answers
//! MISMATCHED_ENDPOINT_TYPE); Spate's controllers have no Kafka listener, so its brokers answer
//! it. A single node is its own controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::super::shard::Shard;
use crate::config::security::SecurityProtocol;
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (0, 2);

/// Kafka's AclOperation codes that apply to the cluster resource: CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS,
/// DESCRIBE_TOKENS.
const CLUSTER_OPERATIONS: [u8; 9] = [5, 7, 8, 9, 10, 11, 12, 13, 14];

/// KIP-919's endpoint type of the controllers.
const ENDPOINT_CONTROLLERS: i8 = 2;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: DescribeClusterRequest, protocol: SecurityProtocol) -> DescribeClusterResponse {
    let image = shard.image();
    let controllers = version >= 1 && req.endpoint_type == ENDPOINT_CONTROLLERS;
    let (brokers, controller) = match (&image.cluster, &shard.cluster) {
        (Some(_), Some(link)) if controllers => {
            let voters = shard.config.quorum.as_ref().map(|q| q.voters.clone()).unwrap_or_default();
            let brokers = voters
                .iter()
                .map(|v| {
                    let (host, port) = v.addr.rsplit_once(':').unwrap_or((v.addr.as_str(), "-1"));
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(v.id))
                        .with_host(StrBytes::from_string(host.to_string()))
                        .with_port(port.parse().unwrap_or(-1))
                })
                .collect();
            (brokers, link.handle.status().leader.unwrap_or(-1))
        }
        (Some(view), Some(link)) => {
            // Fenced brokers are shown (flagged) from v2, which has the flag; left out before.
            let brokers = view
                .brokers
                .iter()
                .filter(|b| version >= 2 || !b.fenced)
                .filter_map(|b| {
                    let (host, port) = b.address(protocol)?;
                    Some(DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_rack(b.rack.clone().map(StrBytes::from_string))
                        .with_is_fenced(b.fenced))
                })
                .collect();
            (brokers, link.controller_id(&image))
        }
        _ => {
            let (host, port) = shard
                .config
                .advertised_for(protocol)
                .unwrap_or_else(|| (shard.config.advertised_host.clone(), shard.config.advertised_port as i32));
            let broker = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(shard.config.node_id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(None);
            (vec![broker], shard.config.node_id)
        }
    };
    let operations = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS.iter().fold(0i32, |bits, op| bits | (1 << op))
    } else {
        i32::MIN
    };
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(shard.cluster_id.to_string()))
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations)
}
