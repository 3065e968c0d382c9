//! The log start offset with real clients: DeleteRecords through librdkafka's admin API, time
//! retention deleting segments under a live producer and consumer, and `kill -9` while records
//! are being deleted (the log stays readable and its start consistent).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{admin, consume, create_topic, flush, futures_lite_block_on, producer, segments, Broker, Raw};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    common::consumer(bootstrap).fetch_watermarks(topic, partition, Duration::from_secs(20)).unwrap()
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, n: usize) {
    let p = producer(bootstrap, &[("acks", "all"), ("batch.num.messages", "20")]);
    for i in 0..n {
        p.send(BaseRecord::<(), _>::to(topic).payload(&format!("r{i:06}-{}", "x".repeat(100))).partition(i as i32 % partitions))
            .unwrap();
    }
    flush(&p);
}

fn delete_before(bootstrap: &str, topic: &str, offsets: &[(i32, Offset)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, *o).unwrap();
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    futures_lite_block_on(admin(bootstrap).delete_records(&tpl, &opts)).expect("DeleteRecords request")
}

#[test]
fn delete_records_moves_the_start_and_consumers_follow_it() {
    let mut broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "dr", 2, &[("segment.bytes", "4096")]);
    produce(&b, "dr", 2, 400);
    let before = segments(&broker.data_dir(), "dr", 0).len();
    assert!(before > 3, "small segments: {before}");

    let r = delete_before(&b, "dr", &[(0, Offset::Offset(150)), (1, Offset::End)]);
    let got: Vec<(i32, Offset, Option<KafkaError>)> =
        r.elements().iter().map(|e| (e.partition(), e.offset(), e.error().err())).collect();
    assert_eq!(got, vec![(0, Offset::Offset(150), None), (1, Offset::Offset(200), None)]);
    assert_eq!(watermarks(&b, "dr", 0), (150, 200));
    assert_eq!(watermarks(&b, "dr", 1), (200, 200));
    assert!(segments(&broker.data_dir(), "dr", 0).len() < before, "segments below the start were deleted");

    // A consumer asking for the beginning starts at the new start; one asking below it is
    // reset by auto.offset.reset.
    let recs = consume(&b, "dr", &[0], Offset::Beginning, 50);
    assert_eq!(recs[0].offset, 150);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "dr-reset")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dr", 0, Offset::Offset(10)).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        assert!(Instant::now() < deadline, "nothing read after the reset");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            break rdkafka::Message::offset(&m);
        }
    };
    assert_eq!(first, 150, "reset to the earliest offset");

    // Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    let r = delete_before(&b, "dr", &[(0, Offset::Offset(500))]);
    let errs: Vec<Option<RDKafkaErrorCode>> = r.elements().iter().map(|e| e.error().err().and_then(|e| e.rdkafka_error_code())).collect();
    assert_eq!(errs, vec![Some(RDKafkaErrorCode::OffsetOutOfRange)]);
    // What librdkafka checks itself before asking (unknown partitions), asked raw: an unknown
    // partition, an unknown topic, and the groups' own topic, which is refused.
    let mut raw = Raw::connect(broker.port);
    let topic = |name: &'static str, p: i32| {
        DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(p).with_offset(1)])
    };
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![topic("dr", 7), topic("nope", 0), topic("__consumer_offsets", 0)]);
    let resp: DeleteRecordsResponse = raw.call(ApiKey::DeleteRecords, 2, &req, 2);
    let codes: Vec<(i16, i64)> = resp.topics.iter().map(|t| (t.partitions[0].error_code, t.partitions[0].low_watermark)).collect();
    assert_eq!(codes, vec![(3, -1), (3, -1), (17, -1)], "UNKNOWN_TOPIC_OR_PARTITION twice, INVALID_TOPIC_EXCEPTION");

    // The start survives a kill -9, and appends go on after it.
    broker.kill9();
    broker.restart();
    assert_eq!(watermarks(&b, "dr", 0), (150, 200));
    produce(&b, "dr", 2, 10);
    assert_eq!(watermarks(&b, "dr", 1), (200, 205));
}

/// Time retention with a short `retention.ms` and small segments: while a producer writes and a
/// consumer tails the partition, closed segments are deleted and the earliest offset advances;
/// the consumer reads on without an error and without going backwards.
#[test]
fn time_retention_deletes_old_segments_under_a_live_producer_and_consumer() {
    let broker = Broker::start(&["--log-retention-check-interval-ms", "200"]);
    let b = broker.bootstrap();
    create_topic(&b, "aging", 1, &[("segment.bytes", "16384"), ("retention.ms", "1500")]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let p = producer(&b, &[("acks", "all")]);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = format!("a{i:08}-{}", "y".repeat(200));
                if p.send(BaseRecord::<(), _>::to("aging").payload(&v)).is_ok() {
                    i += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            flush(&p);
        })
    };
    let c = common::consumer(&b);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("aging", 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let (mut last, mut read, mut start_seen) = (-1i64, 0u64, 0i64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while start_seen == 0 || read < 2000 {
        assert!(Instant::now() < deadline, "retention never moved the start ({read} records read, start {start_seen})");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let o = rdkafka::Message::offset(&m);
                assert!(o > last, "offset {o} after {last}");
                last = o;
                read += 1;
            }
            Some(Err(e)) => panic!("consumer error while retention ran: {e}"),
            None => {}
        }
        if read % 500 == 0 {
            start_seen = watermarks(&b, "aging", 0).0;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let log = broker.log();
    assert!(log.contains("deleting segment below the log start offset"), "{log}");
    // Retention goes on running: a segment may be between leaving the log and losing its file
    // as we look, so look until one look agrees (a deletion takes milliseconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (low, high) = watermarks(&b, "aging", 0);
        assert!(low > 0 && low <= high, "({low}, {high})");
        let below: Vec<_> = segments(&broker.data_dir(), "aging", 0)
            .into_iter()
            .filter(|seg| {
                let base: i64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                base < low && !seg_holds_from(seg, base, low)
            })
            .collect();
        if below.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "segments wholly below the start {low} stay: {below:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -9` at several moments of a DeleteRecords (sent raw, its answer never awaited): after
/// the restart the start is the old one or the new one, every record from it to the end is
/// there, in order, and no segment file lies wholly below it.
#[test]
fn kill_9_during_delete_records_leaves_a_readable_log_with_a_consistent_start() {
    let mut broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "torn", 1, &[("segment.bytes", "4096")]);
    let mut end = 0;
    let mut start = 0;
    for (round, delay_us) in [0u64, 200, 1000, 3000, 10_000].into_iter().enumerate() {
        produce(&b, "torn", 1, 300);
        end += 300;
        let target = start + 250;
        let mut raw = Raw::connect(broker.port);
        let req = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("torn")))
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(target)])]);
        raw.send(ApiKey::DeleteRecords, 2, &req);
        std::thread::sleep(Duration::from_micros(delay_us));
        broker.kill9();
        broker.restart();
        let (low, high) = watermarks(&b, "torn", 0);
        assert_eq!(high, end, "round {round}: records lost");
        assert!(low == start || low == target, "round {round}: start {low}, expected {start} or {target}");
        let recs = consume(&b, "torn", &[0], Offset::Beginning, (end - low) as usize);
        let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (low..end).collect::<Vec<_>>(), "round {round}: not every record from the start");
        for seg in segments(&broker.data_dir(), "torn", 0) {
            let base: i64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            assert!(base >= low || seg_holds_from(&seg, base, low), "round {round}: {} lies below the start {low}", seg.display());
        }
        start = low;
    }
    let bases: BTreeSet<String> = segments(&broker.data_dir(), "torn", 0).iter().map(|p| p.display().to_string()).collect();
    assert!(!bases.is_empty());
}

/// Whether a segment that begins below the log start still holds records at or after it (its
/// successor's base, or the end, is past the start). Segments are named by base offset, so the
/// next segment's name bounds this one's records.
fn seg_holds_from(seg: &std::path::Path, base: i64, low: i64) -> bool {
    let dir = seg.parent().unwrap();
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str()?.parse().ok())
        .collect();
    bases.sort();
    bases.dedup();
    bases.into_iter().find(|b| *b > base).is_none_or(|next| next > low)
}
