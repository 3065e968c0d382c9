//! Where a new topic's partitions go (KRaft's replica placer, in spirit): over the unfenced
//! brokers, leaders balanced, replicas of one partition on distinct brokers and, when racks are
//! set, on as many racks as there are. Pure: the proposer computes it from the metadata it has
//! applied and the state machine checks only that every replica is a registered broker, so a
//! stale view can unbalance a placement but never make it wrong.

use std::collections::BTreeMap;

use super::metadata::{ClusterMetadata, PartitionRecord};

/// Replicas for `count` new partitions with `replication_factor` replicas each. The brokers are
/// ordered rack by rack in turn (Kafka's rack-alternated list: a, b, c, a, b, c...), so that
/// consecutive brokers sit on different racks; partition i is led by the i-th broker of that
/// list after the one that leads fewest partitions now, and its followers are the next ones.
pub fn place(meta: &ClusterMetadata, count: usize, replication_factor: usize) -> Result<Vec<PartitionRecord>, String> {
    let brokers = rack_alternated(meta);
    if replication_factor == 0 {
        return Err("the replication factor must be at least 1".into());
    }
    if brokers.len() < replication_factor {
        return Err(format!(
            "replication factor {replication_factor} is larger than the {} broker(s) registered and unfenced",
            brokers.len()
        ));
    }
    let mut led: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for p in meta.topics.values().flat_map(|t| t.partitions.iter()) {
        if let Some(n) = led.get_mut(&p.leader) {
            *n += 1;
        }
    }
    // The first broker with the fewest leaderships starts, so that topic after topic the
    // leaders stay even.
    let start = (0..brokers.len()).min_by_key(|&i| led[&brokers[i]]).unwrap_or(0);
    Ok((0..count)
        .map(|i| {
            let replicas: Vec<i32> = (0..replication_factor).map(|j| brokers[(start + i + j) % brokers.len()]).collect();
            PartitionRecord { leader: replicas[0], leader_epoch: 0, isr: replicas.clone(), replicas, partition_epoch: 0 }
        })
        .collect())
}

/// The unfenced brokers, taken one rack at a time in turn (racks by name, brokers by id; the
/// brokers without a rack form one rack of their own).
fn rack_alternated(meta: &ClusterMetadata) -> Vec<i32> {
    let mut racks: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in meta.brokers.values().filter(|b| !b.fenced) {
        racks.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    let deepest = racks.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest).flat_map(|i| racks.values().filter_map(move |ids| ids.get(i).copied()).collect::<Vec<_>>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::MetadataRecord;
    use uuid::Uuid;

    fn cluster(brokers: &[(i32, Option<&str>, bool)]) -> ClusterMetadata {
        let mut m = ClusterMetadata::new();
        for (i, (id, rack, fenced)) in brokers.iter().enumerate() {
            let r = MetadataRecord::RegisterBroker {
                id: *id,
                listeners: vec![],
                rack: rack.map(str::to_string),
                incarnation: Uuid::new_v4(),
                fenced: *fenced,
            };
            m.apply(i as u64 + 1, &r).unwrap();
        }
        m
    }

    fn create(m: &mut ClusterMetadata, name: &str, partitions: Vec<PartitionRecord>) {
        let index = m.applied_index + 1;
        let r = MetadataRecord::CreateTopic { name: name.into(), id: Uuid::new_v4(), partitions, configs: Default::default() };
        m.apply(index, &r).unwrap();
    }

    #[test]
    fn leaders_are_spread_evenly_over_live_brokers_topic_after_topic() {
        let mut m = cluster(&[(1, None, false), (2, None, false), (3, None, false), (4, None, true)]);
        let p = place(&m, 3, 1).unwrap();
        assert_eq!(p.iter().map(|p| p.leader).collect::<Vec<_>>(), vec![1, 2, 3], "the fenced broker gets nothing");
        assert!(p.iter().all(|p| p.replicas == vec![p.leader] && p.isr == p.replicas));
        create(&mut m, "a", p);
        // Two topics of two partitions: the second starts where the first left off.
        let p = place(&m, 2, 1).unwrap();
        create(&mut m, "b", p);
        let p = place(&m, 4, 1).unwrap();
        create(&mut m, "c", p);
        let mut led = BTreeMap::new();
        for p in m.topics.values().flat_map(|t| t.partitions.iter()) {
            *led.entry(p.leader).or_insert(0) += 1;
        }
        assert_eq!(led, BTreeMap::from([(1, 3), (2, 3), (3, 3)]), "nine partitions, three each");
    }

    #[test]
    fn replicas_are_distinct_and_cross_racks() {
        let m =
            cluster(&[(1, Some("a"), false), (2, Some("a"), false), (3, Some("b"), false), (4, Some("b"), false), (5, Some("c"), false)]);
        assert_eq!(rack_alternated(&m), vec![1, 3, 5, 2, 4]);
        for p in place(&m, 10, 3).unwrap() {
            let mut r = p.replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "{p:?}");
            let racks: std::collections::BTreeSet<_> = p.replicas.iter().map(|id| m.brokers[id].rack.clone()).collect();
            assert!(racks.len() >= 2, "replicas {:?} on racks {racks:?}", p.replicas);
        }
    }

    #[test]
    fn too_few_brokers_is_refused_with_the_count() {
        let m = cluster(&[(1, None, false), (2, None, true)]);
        let e = place(&m, 1, 2).unwrap_err();
        assert!(e.contains("1 broker(s)"), "{e}");
        assert!(place(&ClusterMetadata::new(), 1, 1).is_err());
        assert!(place(&m, 1, 0).is_err());
    }
}
