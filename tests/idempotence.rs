//! The idempotent producer: librdkafka with `enable.idempotence=true` gets a producer id
//! (InitProducerId), and its retries after broker crashes are recognised, so every acknowledged
//! record is in the log exactly once and in order. Also the refusals a misbehaving producer gets.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{flush, producer, Broker, Raw};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

/// Reads every record of `topic`'s `partitions` from the start: (partition, offset, value).
fn read_all(bootstrap: &str, topic: &str, partitions: i32, end: &BTreeMap<i32, i64>) -> Vec<(i32, i64, u64)> {
    let c = common::consumer(bootstrap);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().any(|(p, n)| *n < end.get(p).copied().unwrap_or(0)) {
        assert!(Instant::now() < deadline, "could not read to the end: at {next:?}, end {end:?}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let v: u64 = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
            out.push((m.partition(), m.offset(), v));
            next.insert(m.partition(), m.offset() + 1);
        }
    }
    out
}

#[test]
fn acknowledged_records_survive_repeated_kill9_exactly_once_and_in_order() {
    let mut broker = Broker::start(&["--num-partitions", "3"]);
    let bootstrap = broker.bootstrap();
    let p = Arc::new(producer(
        &bootstrap,
        &[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "2"), ("retry.backoff.ms", "50")],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("k{}", i % 17), i.to_string());
                match p.send(BaseRecord::to("crashloop").key(&k).payload(&v)) {
                    Ok(()) => i += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)), // queue full
                }
                std::thread::sleep(Duration::from_micros(300));
            }
            i
        })
    };
    // Crash the broker again and again while records are in flight. SPATE_CRASH_LOOP_RESTARTS
    // makes the long version (scripts/crash-loop).
    let restarts: usize = std::env::var("SPATE_CRASH_LOOP_RESTARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    for i in 0..restarts {
        std::thread::sleep(Duration::from_millis(500 + (i as u64 * 397) % 700));
        broker.restart();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    flush(&p);
    let acked = p.context().ok.lock().unwrap().clone();
    let failed = p.context().failed.lock().unwrap().clone();
    assert!(sent > 1000, "the producer hardly ran: {sent}");
    assert!(failed.is_empty(), "with retries for 60 s nothing should fail: {failed:?}");
    assert_eq!(acked.len() as u64, sent);

    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, _) in &acked {
        let e = end.entry(*partition).or_default();
        *e = (*e).max(offset + 1);
    }
    let log = read_all(&bootstrap, "crashloop", 3, &end);
    // Exactly once: every value appears once in the whole topic.
    let mut values: Vec<u64> = log.iter().map(|r| r.2).collect();
    values.sort();
    let before = values.len();
    values.dedup();
    assert_eq!(values.len(), before, "a record was written twice");
    assert_eq!(values, (0..sent).collect::<Vec<_>>(), "an acknowledged record is missing");
    // In order per partition, and at the offsets the producer was told.
    let at: BTreeMap<(i32, i64), u64> = log.iter().map(|&(p, o, v)| ((p, o), v)).collect();
    for p in 0..3 {
        let vs: Vec<u64> = log.iter().filter(|r| r.0 == p).map(|r| r.2).collect();
        assert!(vs.windows(2).all(|w| w[0] < w[1]), "partition {p} out of order");
    }
    for (partition, offset, key) in &acked {
        let v = at.get(&(*partition, *offset)).unwrap_or_else(|| panic!("ack at {partition}/{offset} points at nothing"));
        assert_eq!(key.as_deref(), Some(format!("k{}", v % 17).as_bytes()), "ack at {partition}/{offset}");
    }
    assert!(broker.log().contains("spate ready"));
    eprintln!("crash loop: {restarts} kill -9 restarts, {sent} records sent and acknowledged, all present once and in order");
}

/// A produce of one idempotent batch with the raw client; returns (error code, base offset).
fn produce_idem(raw: &mut Raw, pid: i64, epoch: i16, seq: i32, n: usize) -> (i16, i64) {
    produce_with_attributes(raw, pid, epoch, seq, n, 0)
}

/// `produce_idem` of a batch with these attributes (0x10 transactional, 0x30 a control batch).
fn produce_with_attributes(raw: &mut Raw, pid: i64, epoch: i16, seq: i32, n: usize, attributes: i16) -> (i16, i64) {
    let recs: Vec<_> = (0..n).map(|i| (None, Some(bytes::Bytes::from(format!("r{}", seq as usize + i))))).collect();
    let mut b = spate::protocol::batch::build(&recs, 1_000).to_vec();
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("idem")))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(b.into()))])]);
    let r: ProduceResponse = raw.call(ApiKey::Produce, 9, &req, 9);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn producer_ids_are_unique_across_restarts_and_bad_sequences_are_refused() {
    let mut broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    let init = |raw: &mut Raw| -> InitProducerIdResponse {
        raw.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000), 4)
    };
    let a = init(&mut raw);
    let b = init(&mut raw);
    assert_eq!((a.error_code, a.producer_epoch, b.error_code), (0, 0, 0));
    assert_ne!(a.producer_id, b.producer_id);
    // A coordinator type Spate does not know is INVALID_REQUEST, with a message (transactions
    // themselves are tests/transactions.rs').
    let coord: FindCoordinatorResponse =
        raw.call(ApiKey::FindCoordinator, 4, &FindCoordinatorRequest::default().with_key_type(7).with_coordinator_keys(vec![StrBytes::from_static_str("tx")]), 4);
    let c = &coord.coordinators[0];
    assert_eq!(c.error_code, 42, "{c:?}");
    assert!(c.error_message.as_deref().is_some_and(|m| m.contains("not supported")), "{c:?}");

    let pid = a.producer_id.0;
    let topic = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("idem"))));
    let md: MetadataResponse = raw.call(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(Some(vec![topic])).with_allow_auto_topic_creation(true),
        9,
    );
    assert_eq!(md.topics[0].error_code, 0, "auto-created");
    assert_eq!(produce_idem(&mut raw, pid, 0, 0, 3), (0, 0));
    assert_eq!(produce_idem(&mut raw, pid, 0, 3, 2), (0, 3));
    assert_eq!(produce_idem(&mut raw, pid, 0, 0, 3), (0, 0), "a retry gets its first offset back");
    assert_eq!(produce_idem(&mut raw, pid, 0, 9, 1).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_eq!(produce_idem(&mut raw, pid, 1, 0, 1), (0, 5), "a new epoch starts at sequence 0");
    assert_eq!(produce_idem(&mut raw, pid, 0, 5, 1).0, 47, "INVALID_PRODUCER_EPOCH");
    // Markers are the coordinator's to write, and a transactional batch needs a transactional id.
    assert_eq!(produce_with_attributes(&mut raw, pid, 1, -1, 1, 0x30).0, 87, "INVALID_RECORD for a client's control batch");
    assert_eq!(produce_with_attributes(&mut raw, pid, 1, 1, 1, 0x10).0, 48, "INVALID_TXN_STATE for a transactional batch");

    broker.restart();
    let mut raw = Raw::connect(broker.port);
    let c = init(&mut raw);
    assert!(c.producer_id.0 > b.producer_id.0, "ids from before the crash are never handed out again");
    assert_eq!(produce_idem(&mut raw, pid, 1, 0, 1), (0, 5), "the retry is recognised after the crash");
    assert_eq!(produce_idem(&mut raw, pid, 1, 1, 1), (0, 6));
    assert_eq!(produce_idem(&mut raw, c.producer_id.0, 0, 0, 4), (0, 7));

    // DescribeProducers shows both, as the partition's producer state has them; a partition
    // that does not exist is named in its own error.
    let req = DescribeProducersRequest::default().with_topics(vec![describe_producers_request::TopicRequest::default()
        .with_name(TopicName(StrBytes::from_static_str("idem")))
        .with_partition_indexes(vec![0, 5])]);
    let r: DescribeProducersResponse = raw.call(ApiKey::DescribeProducers, 0, &req, 0);
    let parts = &r.topics[0].partitions;
    assert_eq!((parts[0].partition_index, parts[0].error_code), (0, 0));
    let seen: Vec<(i64, i32, i32, i32, i64)> = parts[0]
        .active_producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence, p.coordinator_epoch, p.current_txn_start_offset))
        .collect();
    assert_eq!(seen, vec![(pid, 1, 1, -1, -1), (c.producer_id.0, 0, 3, -1, -1)]);
    // As Kafka: the largest timestamp of the producer's last batch (these batches say 1000).
    assert!(parts[0].active_producers.iter().all(|p| p.last_timestamp == 1_000), "{parts:?}");
    assert_eq!((parts[1].partition_index, parts[1].error_code), (5, 3), "{:?}", parts[1]);
}
