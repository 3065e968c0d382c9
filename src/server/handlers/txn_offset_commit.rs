//! TxnOffsetCommit (key 28): a transactional producer's offsets for a group, committed with its
//! transaction (`Groups::txn_commit`). From version 3 the consumer's member id and generation
//! come along and are checked as OffsetCommit checks them (KIP-447); generation -1 skips that.
//! From version 4 the coordinator checks with the transaction coordinator that the group's
//! `__consumer_offsets` partition is in the producer's transaction (KIP-890 part 1); from version
//! 5 (transaction version 2, whose clients send no AddOffsetsToTxn) it adds it there (part 2).

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::super::groups::{coordinator_elsewhere, group_core, offsets_partition, Committed, Committer, OFFSETS_TOPIC};
use super::super::transactions::check_partition;
use super::super::shard::{current, Shard};
use super::offset_commit::OFFSET_METADATA_MAX_BYTES;
use crate::protocol::ResponseError;
use crate::storage::now_ms;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let image = shard.image();
    let group_id = req.group_id.0.to_string();
    let who = (version >= 3 && req.generation_id >= 0)
        .then(|| Committer::Member { member_id: req.member_id.to_string(), generation: req.generation_id });
    let (producer_id, epoch) = (req.producer_id.0, req.producer_epoch);
    let now = now_ms();
    let mut offsets = Vec::new();
    let mut refused: Vec<((String, i32), i16)> = Vec::new();
    for t in &req.topics {
        let meta = image.topic(t.name.0.as_str());
        for p in &t.partitions {
            let key = (t.name.0.to_string(), p.partition_index);
            if p.committed_metadata.as_ref().is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
                refused.push((key, ResponseError::OffsetMetadataTooLarge.code()));
            } else if !meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                refused.push((key, ResponseError::UnknownTopicOrPartition.code()));
            } else {
                let committed = Committed {
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                    commit_ms: now,
                };
                offsets.push((key, committed));
            }
        }
    }
    let code = if group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else if let Some(code) = coordinator_elsewhere(shard, &group_id) {
        code
    } else if let Err(code) = in_transaction(shard, version, &req, &group_id).await {
        code
    } else {
        let core = group_core(&group_id, shard.cores);
        shard
            .invoke_on(core, move || async move { current().groups.txn_commit(&group_id, producer_id, epoch, who.as_ref(), offsets).await })
            .await
    };
    let mut resp = TxnOffsetCommitResponse::default();
    for t in req.topics {
        let parts = t
            .partitions
            .iter()
            .map(|p| {
                let key = (t.name.0.to_string(), p.partition_index);
                let error = refused.iter().find(|(k, _)| *k == key).map_or(code, |(_, c)| *c);
                TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error)
            })
            .collect();
        resp.topics.push(TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(parts));
    }
    resp
}

/// KIP-890 from version 4: the group's `__consumer_offsets` partition is in the producer's
/// transaction (checked, or added from version 5) before its offsets are taken.
async fn in_transaction(shard: &Rc<Shard>, version: i16, req: &TxnOffsetCommitRequest, group_id: &str) -> Result<(), i16> {
    if version < 4 {
        return Ok(());
    }
    let id = req.transactional_id.0.to_string();
    if id.is_empty() {
        return Err(ResponseError::InvalidRequest.code());
    }
    let (producer_id, epoch) = (req.producer_id.0, req.producer_epoch);
    check_partition(shard, &id, producer_id, epoch, OFFSETS_TOPIC, offsets_partition(group_id), version >= 5).await.map_err(|code| {
        tracing::debug!(transactional_id = %id, group = %group_id, code, "transactional offsets refused: the group is not in the transaction");
        match ResponseError::try_from_code(code) {
            Some(ResponseError::ProducerFenced) => ResponseError::InvalidProducerEpoch.code(),
            _ => code,
        }
    })
}
