//! DescribeLogDirs (key 35): the one log directory (the data directory), each partition's bytes
//! on disk (its segment files, as each owning core counts them), and from v4 the filesystem's
//! total and usable bytes. Offset lag is 0: there are no future replicas to catch up.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::super::shard::Shard;
use super::{on_partitions, PartWork};
use crate::io::fs;
use crate::protocol::StrBytes;

pub const VERSIONS: (i16, i16) = (1, 4);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let image = shard.image();
    // Every partition of every topic (a null list), or those asked for that exist.
    let wanted: Vec<(String, i32)> = match &req.topics {
        None => image.topics.values().flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p))).collect(),
        Some(ts) => ts
            .iter()
            .filter_map(|t| image.topic(t.topic.0.as_str()).map(|m| (m, t)))
            .flat_map(|(m, t)| t.partitions.iter().filter(|p| (0..m.partitions).contains(*p)).map(move |p| (m.name.clone(), *p)))
            .collect(),
    };
    let work = wanted.iter().enumerate().map(|(slot, (t, p))| PartWork { slot, topic: t.clone(), partition: *p, data: () }).collect();
    let sizes = on_partitions(shard, work, |log, ()| async move { log.disk_stats().bytes as i64 }).await;
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (slot, size) in sizes {
        let Some(size) = size else { continue };
        let (t, p) = &wanted[slot];
        by_topic.entry(t.clone()).or_default().push(
            DescribeLogDirsPartition::default().with_partition_index(*p).with_partition_size(size).with_offset_lag(0).with_is_future_key(false),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default().with_name(TopicName(StrBytes::from_string(name))).with_partitions(parts)
        })
        .collect();
    let (total, usable) = match fs::space(&shard.config.data_dir) {
        Ok((t, a)) => (t as i64, a as i64),
        Err(e) => {
            tracing::warn!(dir = %shard.config.data_dir.display(), error = %e, "could not read the data directory's filesystem size");
            (-1, -1)
        }
    };
    let dir = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(shard.config.data_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![dir])
}
