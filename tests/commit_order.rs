//! Pipelined asynchronous commits are applied in the order they were sent: the committed offset
//! read back (OffsetFetch, and again after `kill -9`) is always the last one committed, never an
//! older one whose fdatasync happened to wake later. librdkafka's `commit(.., Async)` sends many
//! OffsetCommit requests on one connection within a millisecond, which is what a consumer with
//! asynchronous commits does all day.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{create_topic, flush, producer, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

/// The committers' topic. It stays empty: a consumer polling records would see its commit
/// callbacks only behind them.
const TOPIC: &str = "commits";
/// Where the load goes.
const LOAD_TOPIC: &str = "load";
const PARTITIONS: i32 = 4;
/// Commits per partition per round, sent back to back.
const COMMITS: i64 = 50;
const CONSUMERS: usize = 4;
const ROUNDS: i64 = 15;

fn committer(bootstrap: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// The group's committed offset of every partition, by OffsetFetch.
fn committed(c: &BaseConsumer) -> HashMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(30)).expect("OffsetFetch");
    got.elements().iter().map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1001))).collect()
}

#[test]
fn async_commits_from_several_consumers_on_a_loaded_broker_always_leave_the_last_offset() {
    let mut broker = Broker::start(&["--num-partitions", &PARTITIONS.to_string()]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, TOPIC, PARTITIONS, &[]);

    // Load: a producer writing acks=all as fast as it can, so fdatasyncs of the offsets
    // partitions and the data partitions overlap and cross-core channels stay busy.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, bootstrap) = (stop.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let p = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "0")]);
            let value = vec![7u8; 512];
            let mut sent = 0u64;
            while !stop.load(Ordering::Acquire) {
                match p.send(BaseRecord::<(), _>::to(LOAD_TOPIC).payload(&value)) {
                    Ok(()) => sent += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            flush(&p);
            sent
        })
    };

    let groups: Vec<String> = (0..CONSUMERS).map(|i| format!("async-committer-{i}")).collect();
    let consumers: Vec<BaseConsumer> = groups.iter().map(|g| committer(&bootstrap, g)).collect();
    for c in &consumers {
        // librdkafka holds commits made before it knows the coordinator and sends them later,
        // out of order with the ones after: the client's doing, not the broker's. One
        // synchronous commit first, so every commit below goes out in the order made.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(0)).unwrap();
        c.commit(&tpl, CommitMode::Sync).expect("a first synchronous commit");
    }
    let mut last = 0;
    for round in 0..ROUNDS {
        // Each consumer commits offsets round*COMMITS+1 ..= (round+1)*COMMITS for every
        // partition, one commit per offset, all consumers interleaved. All but the last are
        // asynchronous. The last is synchronous: answers come back in request order, so when it
        // returns every earlier one has been answered too. It is still one more pipelined commit
        // that an earlier one may overtake. (librdkafka reports asynchronous commits' results only
        // to an `offset_commit_cb`, which the rdkafka crate does not set.)
        for n in 1..=COMMITS {
            let offset = round * COMMITS + n;
            for c in &consumers {
                let mut tpl = TopicPartitionList::new();
                for p in 0..PARTITIONS {
                    tpl.add_partition_offset(TOPIC, p, Offset::Offset(offset)).unwrap();
                }
                let mode = if n < COMMITS { CommitMode::Async } else { CommitMode::Sync };
                c.commit(&tpl, mode).unwrap_or_else(|e| panic!("round {round}: commit of {offset} failed: {e}"));
            }
        }
        last = (round + 1) * COMMITS;
        for (c, g) in consumers.iter().zip(&groups) {
            for (p, o) in committed(c) {
                assert_eq!(o, last, "round {round}: group {g} partition {p} reads back {o}, not the last commit {last}");
            }
        }
    }
    stop.store(true, Ordering::Release);
    let sent = load.join().unwrap();
    assert!(sent > 0, "the load producer sent nothing");

    // What the log holds agrees: after kill -9 the replayed offsets are the last ones too.
    drop(consumers);
    broker.kill9();
    broker.restart();
    for g in &groups {
        let c = committer(&bootstrap, g);
        for (p, o) in committed(&c) {
            assert_eq!(o, last, "after kill -9: group {g} partition {p} reads back {o}, not {last}");
        }
    }
}
