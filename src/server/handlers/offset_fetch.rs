//! OffsetFetch (key 9): a group's committed offsets, for the partitions asked or (null topics)
//! all of them; -1 where nothing was committed. One group per request before v8, several after.
//! With `require_stable` (v7+, KIP-447: read_committed consumers), a partition with offsets of a
//! transaction not yet ended is UNSTABLE_OFFSET_COMMIT, and the consumer asks again.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::super::groups::{coordinator_elsewhere, group_core, Committed};
use super::super::shard::{current, Shard};
use crate::protocol::{ResponseError, StrBytes};
use std::collections::BTreeSet;

pub const VERSIONS: (i16, i16) = (1, 9);

type Found = Vec<((String, i32), Option<Committed>)>;

/// The committed offsets, and the partitions whose offsets are unstable (if asked to tell).
async fn fetch(shard: &Rc<Shard>, group_id: String, wanted: Option<Vec<(String, i32)>>, stable: bool) -> (Found, BTreeSet<(String, i32)>) {
    let core = group_core(&group_id, shard.cores);
    shard
        .invoke_on(core, move || async move {
            let groups = &current().groups;
            let unstable = if stable { groups.unstable_partitions(&group_id) } else { BTreeSet::new() };
            (groups.fetch(&group_id, wanted), unstable)
        })
        .await
}

/// UNSTABLE_OFFSET_COMMIT for a partition of a transaction not yet ended, else 0.
fn stability(unstable: &BTreeSet<(String, i32)>, topic: &str, p: i32) -> i16 {
    if unstable.contains(&(topic.to_string(), p)) {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

/// Groups the answers by topic, in first-seen order.
fn by_topic(found: Found) -> Vec<(String, Vec<(i32, Option<Committed>)>)> {
    let mut out: Vec<(String, Vec<(i32, Option<Committed>)>)> = Vec::new();
    for ((topic, partition), c) in found {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, parts)) => parts.push((partition, c)),
            None => out.push((topic, vec![(partition, c)])),
        }
    }
    out
}

fn name(s: String) -> TopicName {
    TopicName(StrBytes::from_string(s))
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version < 8 {
        if let Some(code) = coordinator_elsewhere(shard, req.group_id.0.as_str()) {
            resp.error_code = code;
            return resp;
        }
        let wanted = req
            .topics
            .map(|ts| ts.into_iter().flat_map(|t| t.partition_indexes.into_iter().map(move |p| (t.name.0.to_string(), p))).collect());
        let (found, unstable) = fetch(shard, req.group_id.0.to_string(), wanted, version >= 7 && req.require_stable).await;
        for (topic, parts) in by_topic(found) {
            let partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let error = stability(&unstable, &topic, p);
                    let c = if error != 0 { Committed::none() } else { c.unwrap_or_else(Committed::none) };
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(error)
                        .with_committed_offset(c.offset)
                        .with_committed_leader_epoch(if version >= 5 { c.leader_epoch } else { -1 })
                        .with_metadata(Some(StrBytes::from_string(c.metadata)))
                })
                .collect();
            resp.topics.push(OffsetFetchResponseTopic::default().with_name(name(topic)).with_partitions(partitions));
        }
        return resp;
    }
    for g in req.groups {
        let wanted = g
            .topics
            .map(|ts| ts.into_iter().flat_map(|t| t.partition_indexes.into_iter().map(move |p| (t.name.0.to_string(), p))).collect());
        if let Some(code) = coordinator_elsewhere(shard, g.group_id.0.as_str()) {
            resp.groups.push(OffsetFetchResponseGroup::default().with_group_id(GroupId(g.group_id.0)).with_error_code(code));
            continue;
        }
        let (found, unstable) = fetch(shard, g.group_id.0.to_string(), wanted, req.require_stable).await;
        let topics = by_topic(found)
            .into_iter()
            .map(|(topic, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(p, c)| {
                        let error = stability(&unstable, &topic, p);
                        let c = if error != 0 { Committed::none() } else { c.unwrap_or_else(Committed::none) };
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(p)
                            .with_error_code(error)
                            .with_committed_offset(c.offset)
                            .with_committed_leader_epoch(c.leader_epoch)
                            .with_metadata(Some(StrBytes::from_string(c.metadata)))
                    })
                    .collect();
                OffsetFetchResponseTopics::default().with_name(name(topic)).with_partitions(partitions)
            })
            .collect();
        resp.groups.push(OffsetFetchResponseGroup::default().with_group_id(GroupId(g.group_id.0)).with_topics(topics));
    }
    resp
}
