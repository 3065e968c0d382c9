//! DescribeCluster (key 60): the cluster id, this node as the one broker and as the controller
//! (until the cluster of issue 21 exists), never fenced. Authorized operations, when asked for,
//! are every cluster operation: no authorizer runs yet.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::super::shard::Shard;
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (0, 2);

/// Kafka's AclOperation codes that apply to the cluster resource: CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS,
/// DESCRIBE_TOKENS.
const CLUSTER_OPERATIONS: [u8; 9] = [5, 7, 8, 9, 10, 11, 12, 13, 14];

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let node = BrokerId(shard.config.node_id);
    let broker = DescribeClusterBroker::default()
        .with_broker_id(node)
        .with_host(StrBytes::from_string(shard.config.advertised_host.clone()))
        .with_port(shard.config.advertised_port as i32)
        .with_rack(None);
    let operations = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS.iter().fold(0i32, |bits, op| bits | (1 << op))
    } else {
        i32::MIN
    };
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(shard.cluster_id.to_string()))
        .with_controller_id(node)
        .with_brokers(vec![broker])
        .with_cluster_authorized_operations(operations)
}
