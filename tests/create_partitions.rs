//! CreatePartitions with real clients: a topic grows under a running producer and consumer
//! group, which rebalances onto the new partitions; the old partitions keep their records; the
//! new count survives `kill -9`; refusals carry Kafka's codes.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{admin, create_topic, futures_lite_block_on, group_consumer, producer, Broker, Raw};
use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;

fn partitions(bootstrap: &str, topic: &str) -> usize {
    let md = common::consumer(bootstrap).fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0].partitions().len()
}

#[test]
fn a_topic_grows_under_a_running_producer_and_group() {
    let mut broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let b = broker.bootstrap();
    create_topic(&b, "grow", 2, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let p = producer(&b, &[("acks", "all"), ("topic.metadata.refresh.interval.ms", "500")]);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("key{}", i % 64);
                if p.send(BaseRecord::to("grow").key(&k).payload(&format!("v{i}"))).is_ok() {
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            common::flush(&p);
            assert!(p.context().failed.lock().unwrap().is_empty(), "sends failed: {:?}", p.context().failed.lock().unwrap());
        })
    };
    let c = group_consumer(&b, "grow-group", &[("topic.metadata.refresh.interval.ms", "500")]);
    c.subscribe(&["grow"]).unwrap();
    let mut seen_partitions = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen_partitions.len() < 2 {
        assert!(Instant::now() < deadline, "read only from {seen_partitions:?}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen_partitions.insert(m.partition());
        }
    }

    let r = futures_lite_block_on(admin(&b).create_partitions(&[NewPartitions::new("grow", 4)], &AdminOptions::new())).unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    assert_eq!(partitions(&b, "grow"), 4, "Metadata shows the new partitions once answered");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen_partitions.len() < 4 {
        assert!(Instant::now() < deadline, "the group never read the new partitions: {seen_partitions:?}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen_partitions.insert(m.partition());
        }
    }
    let assigned: BTreeSet<i32> = c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect();
    assert_eq!(assigned, (0..4).collect(), "the member was rebalanced onto all four");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(c);

    // The count survives kill -9, and the new partitions keep what they were given.
    let before: Vec<i64> =
        (0..4).map(|p| common::consumer(&b).fetch_watermarks("grow", p, Duration::from_secs(10)).unwrap().1).collect();
    assert!(before[2] > 0 && before[3] > 0, "{before:?}");
    broker.kill9();
    broker.restart();
    assert_eq!(partitions(&b, "grow"), 4);
    let after: Vec<i64> =
        (0..4).map(|p| common::consumer(&b).fetch_watermarks("grow", p, Duration::from_secs(10)).unwrap().1).collect();
    assert_eq!(before, after);
}

#[test]
fn create_partitions_refusals_and_validate_only() {
    let broker = Broker::start(&[]);
    create_topic(&broker.bootstrap(), "fixed", 3, &[]);
    let mut raw = Raw::connect(broker.port);
    let t = |name: &'static str, count: i32| {
        CreatePartitionsTopic::default().with_name(TopicName(StrBytes::from_static_str(name))).with_count(count).with_assignments(None)
    };
    let ask = |raw: &mut Raw, topics: Vec<CreatePartitionsTopic>, validate_only: bool| -> Vec<i16> {
        let req = CreatePartitionsRequest::default().with_topics(topics).with_timeout_ms(5000).with_validate_only(validate_only);
        let r: CreatePartitionsResponse = raw.call(ApiKey::CreatePartitions, 3, &req, 3);
        r.results.iter().map(|x| x.error_code).collect()
    };
    assert_eq!(
        ask(&mut raw, vec![t("fixed", 3), t("fixed2", 5), t("__consumer_offsets", 60)], false),
        vec![37, 3, 42],
        "INVALID_PARTITIONS, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST"
    );
    let elsewhere = CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(7)]);
    assert_eq!(ask(&mut raw, vec![t("fixed", 4).with_assignments(Some(vec![elsewhere]))], false), vec![39], "INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(ask(&mut raw, vec![t("fixed", 5), t("fixed", 6)], false), vec![42, 42], "a topic twice");
    assert_eq!(ask(&mut raw, vec![t("fixed", 5)], true), vec![0]);
    assert_eq!(partitions(&broker.bootstrap(), "fixed"), 3, "validate_only changed nothing");
    let here = CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]);
    assert_eq!(ask(&mut raw, vec![t("fixed", 4).with_assignments(Some(vec![here]))], false), vec![0]);
    assert_eq!(partitions(&broker.bootstrap(), "fixed"), 4);
}
