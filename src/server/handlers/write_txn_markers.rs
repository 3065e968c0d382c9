//! WriteTxnMarkers (key 27): another broker's transaction coordinator asks this one to write
//! COMMIT or ABORT markers to partitions it leads (`transactions::write_markers_here`). Each
//! partition's code: NOT_LEADER_OR_FOLLOWER where this broker does not lead it (the
//! coordinator retries with fresher metadata), TRANSACTION_COORDINATOR_FENCED or
//! INVALID_PRODUCER_EPOCH where a newer marker has been written.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::super::shard::Shard;
use super::super::transactions::write_markers_here;
use crate::protocol::batch::Marker;

pub const VERSIONS: (i16, i16) = (1, 1);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut resp = WriteTxnMarkersResponse::default();
    for m in req.markers {
        let marker = Marker { commit: m.transaction_result, coordinator_epoch: m.coordinator_epoch };
        let partitions: Vec<(String, i32)> = m.topics.iter().flat_map(|t| t.partition_indexes.iter().map(|p| (t.name.0.to_string(), *p))).collect();
        let codes = write_markers_here(shard, m.producer_id.0, m.producer_epoch, marker, partitions).await;
        let mut codes = codes.into_iter();
        let topics = m
            .topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partition_indexes
                    .iter()
                    .map(|p| {
                        let (_, code) = codes.next().expect("one code per partition");
                        WritableTxnMarkerPartitionResult::default().with_partition_index(*p).with_error_code(code)
                    })
                    .collect();
                WritableTxnMarkerTopicResult::default().with_name(t.name).with_partitions(parts)
            })
            .collect();
        resp.markers.push(WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics));
    }
    resp
}
