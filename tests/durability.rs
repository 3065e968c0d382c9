//! What survives a crash: topics and records across restarts, every acks=all record across
//! `kill -9` under load, and recovery that truncates a torn or corrupt segment tail (or a batch
//! whose base offset does not follow).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{consume, flush, producer, segments, Broker};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    common::consumer(bootstrap).fetch_watermarks(topic, partition, Duration::from_secs(20)).unwrap().1
}

#[test]
fn topics_and_records_survive_restart() {
    let mut broker = Broker::start(&["--num-partitions", "3"]);
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..300 {
        p.send(BaseRecord::<(), _>::to("durable").payload(&format!("d{i}")).partition(i % 3)).unwrap();
    }
    flush(&p);
    drop(p);
    broker.restart();
    let md = common::consumer(&broker.bootstrap())
        .fetch_metadata(Some("durable"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
    let recs = consume(&broker.bootstrap(), "durable", &[0, 1, 2], Offset::Beginning, 300);
    assert_eq!(recs.len(), 300);
    // New appends continue the offsets.
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    p.send(BaseRecord::<(), _>::to("durable").payload("after").partition(0)).unwrap();
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap()[0].1, 100);
}

#[test]
fn every_acknowledged_record_survives_kill_9_during_acks_all_produce() {
    let mut broker = Broker::start(&["--num-partitions", "4"]);
    let p = Arc::new(producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "1"), ("message.timeout.ms", "5000")]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = common::spawn_numbered_writer(p.clone(), "crash", 4, stop.clone());
    // Let acknowledgements accumulate, then crash the broker mid-stream.
    while p.context().ok.lock().unwrap().len() < 20_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    broker.kill9();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let _ = rdkafka::producer::Producer::flush(&*p, Duration::from_secs(10));
    let acked = p.context().ok.lock().unwrap().clone();
    assert!(acked.len() >= 20_000);
    broker.restart();
    for part in 0..4 {
        let hw = high_watermark(&broker.bootstrap(), "crash", part);
        let recs = consume(&broker.bootstrap(), "crash", &[part], Offset::Beginning, hw as usize);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
        }
        for (_, off, _) in acked.iter().filter(|a| a.0 == part) {
            assert!(*off < hw, "acknowledged offset {off} of partition {part} lost (high watermark {hw})");
            let v = String::from_utf8(recs[*off as usize].value.clone().unwrap()).unwrap();
            let n: u64 = v[1..].parse().unwrap();
            assert_eq!(n % 4, part as u64, "record {v} in the wrong partition");
        }
    }
}

/// Bytes covered by whole batches from the start (the rest is O_DIRECT zero padding).
fn whole_batches_len(b: &[u8]) -> usize {
    let mut at = 0;
    while at + 12 <= b.len() {
        let len = i32::from_be_bytes(b[at + 8..at + 12].try_into().unwrap());
        if len <= 0 || at + 12 + len as usize > b.len() {
            break;
        }
        at += 12 + len as usize;
    }
    at
}

#[test]
fn torn_and_corrupt_tails_are_truncated_on_start() {
    let mut broker = Broker::start(&[]);
    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "0")]);
    for i in 0..50 {
        p.send(BaseRecord::<(), _>::to("torn").payload(&format!("t{i}")).partition(0)).unwrap();
        flush(&p);
    }
    drop(p);
    broker.kill9();
    // A torn write: half a batch header of garbage after the last whole batch.
    let seg = segments(&broker.data_dir(), "torn", 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let logical = whole_batches_len(&bytes);
    bytes.truncate(logical);
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 1, 0, 0xde, 0xad]);
    std::fs::write(&seg, &bytes).unwrap();
    broker.restart();
    assert!(broker.log().contains("truncating torn or corrupt segment tail"), "{}", broker.log());
    assert_eq!(high_watermark(&broker.bootstrap(), "torn", 0), 50);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, logical);

    // A corrupt last batch: one flipped byte fails its CRC; that batch goes.
    broker.kill9();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    broker.restart();
    assert!(broker.log().contains("CRC mismatch"), "{}", broker.log());
    assert_eq!(high_watermark(&broker.bootstrap(), "torn", 0), 49);
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    p.send(BaseRecord::<(), _>::to("torn").payload("new").partition(0)).unwrap();
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap()[0].1, 49);
    let recs = consume(&broker.bootstrap(), "torn", &[0], Offset::Beginning, 50);
    let vals: Vec<String> = recs.iter().map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap()).collect();
    let mut want: Vec<String> = (0..49).map(|i| format!("t{i}")).collect();
    want.push("new".into());
    assert_eq!(vals, want);
    drop(p);

    // A torn header: the last batch's base offset (outside the CRC) reads as zeros, as when a
    // power loss keeps a later block of a write but not the one holding the batch's first bytes.
    // The batch passes its CRC but does not follow offset 48: it is cut, not served as offset 0.
    broker.kill9();
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = last_batch_start(&bytes);
    bytes[last..last + 8].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    broker.restart();
    assert!(broker.log().contains("batch at offset 0 where offset 49 or later was due"), "{}", broker.log());
    assert_eq!(high_watermark(&broker.bootstrap(), "torn", 0), 49);
}

/// Where the last whole batch starts.
fn last_batch_start(b: &[u8]) -> usize {
    let (mut at, mut last) = (0, 0);
    while at < whole_batches_len(b) {
        last = at;
        at += 12 + i32::from_be_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
    }
    last
}

#[test]
fn segments_roll_and_damaged_indexes_are_rebuilt() {
    let mut broker = Broker::start(&["--segment-bytes", "16384"]);
    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "0")]);
    let n = 400;
    for i in 0..n {
        p.send(BaseRecord::<(), _>::to("rolled").payload(&format!("{i:0>100}")).partition(0).timestamp(5_000 + i as i64)).unwrap();
        if i % 10 == 0 {
            flush(&p);
        }
    }
    flush(&p);
    drop(p);
    let segs = segments(&broker.data_dir(), "rolled", 0);
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    broker.kill9();
    // Closed segments have index files; damage one and delete another.
    std::fs::write(segs[0].with_extension("index"), [1, 2, 3]).unwrap();
    std::fs::remove_file(segs[1].with_extension("timeindex")).unwrap();
    broker.restart();
    let recs = consume(&broker.bootstrap(), "rolled", &[0], Offset::Beginning, n);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.value.as_deref(), Some(format!("{i:0>100}").as_bytes()));
    }
    // Fetch from the middle of an older segment, and look up by time across segments.
    let mid = consume(&broker.bootstrap(), "rolled", &[0], Offset::Offset(123), 5);
    assert_eq!(mid[0].offset, 123);
    let c = common::consumer(&broker.bootstrap());
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("rolled", 0, Offset::Offset(5_250)).unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(found.find_partition("rolled", 0).unwrap().offset(), Offset::Offset(250));
}
