//! Real librdkafka clients (the `rdkafka` crate) producing to and consuming from a real broker
//! running on two cores, so partitions owned by the other core are always part of the traffic.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{consume, create_topic, flush, producer, Broker};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

#[test]
fn hundred_thousand_keyed_records_across_six_partitions_come_back_intact() {
    let broker = Broker::start(&[]);
    create_topic(&broker.bootstrap(), "orders", 6, &[]);
    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("batch.num.messages", "2000")]);
    let n = 100_000usize;
    let base_ts = 1_700_000_000_000i64;
    for i in 0..n {
        let key = format!("k{}", i % 1000);
        let value = format!("value-{i}");
        let hv = (i as u32).to_be_bytes();
        loop {
            let rec = BaseRecord::to("orders")
                .key(&key)
                .payload(&value)
                .timestamp(base_ts + i as i64)
                .headers(OwnedHeaders::new().insert(Header { key: "seq", value: Some(&hv[..]) }));
            match p.send(rec) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
    }
    flush(&p);
    let ctx = p.context();
    assert!(ctx.failed.lock().unwrap().is_empty(), "failed deliveries: {:?}", &ctx.failed.lock().unwrap()[..3.min(ctx.failed.lock().unwrap().len())]);
    let acked = ctx.ok.lock().unwrap().clone();
    assert_eq!(acked.len(), n);
    // Every key went to one partition (murmur2 partitioner), and all six were used.
    let mut key_part: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for (part, _, key) in &acked {
        let prev = key_part.insert(key.clone().unwrap(), *part);
        assert!(prev.is_none_or(|p| p == *part), "a key landed on two partitions");
    }
    let used: std::collections::BTreeSet<i32> = key_part.values().copied().collect();
    assert_eq!(used.len(), 6);

    let recs = consume(&broker.bootstrap(), "orders", &[0, 1, 2, 3, 4, 5], Offset::Beginning, n);
    assert_eq!(recs.len(), n);
    let mut next_offset = [0i64; 6];
    let mut last_seq = [-1i64; 6];
    let mut seen = vec![false; n];
    for r in &recs {
        let p = r.partition as usize;
        assert_eq!(r.offset, next_offset[p], "gap or reorder in partition {p}");
        next_offset[p] += 1;
        let (hk, hv) = &r.headers[0];
        assert_eq!(hk, "seq");
        let i = u32::from_be_bytes(hv.clone().unwrap()[..].try_into().unwrap()) as usize;
        assert!(i as i64 > last_seq[p], "records out of produce order in partition {p}");
        last_seq[p] = i as i64;
        assert!(!seen[i], "record {i} twice");
        seen[i] = true;
        assert_eq!(r.key.as_deref(), Some(format!("k{}", i % 1000).as_bytes()));
        assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        assert_eq!(r.timestamp, Some(base_ts + i as i64));
        assert_eq!(key_part[r.key.as_ref().unwrap()], r.partition);
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn every_compression_codec_round_trips() {
    let broker = Broker::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&broker.bootstrap(), &topic, 2, &[]);
        let p = producer(&broker.bootstrap(), &[("acks", "all"), ("compression.codec", codec)]);
        for i in 0..500 {
            let v = format!("{codec} payload {i} {}", "x".repeat(i % 200));
            p.send(BaseRecord::to(&topic).key(&format!("{i}")).payload(&v).partition((i % 2) as i32)).unwrap();
        }
        flush(&p);
        assert_eq!(p.context().ok.lock().unwrap().len(), 500, "{codec}");
        let recs = consume(&broker.bootstrap(), &topic, &[0, 1], Offset::Beginning, 500);
        let mut by_key: BTreeMap<i32, String> = BTreeMap::new();
        for r in recs {
            let k: i32 = String::from_utf8(r.key.unwrap()).unwrap().parse().unwrap();
            by_key.insert(k, String::from_utf8(r.value.unwrap()).unwrap());
        }
        assert_eq!(by_key.len(), 500, "{codec}");
        for (i, v) in by_key {
            assert_eq!(v, format!("{codec} payload {i} {}", "x".repeat(i as usize % 200)));
        }
    }
}

#[test]
fn consumer_seeks_back_and_replays() {
    let broker = Broker::start(&[]);
    let p = producer(&broker.bootstrap(), &[("acks", "1")]);
    for i in 0..100 {
        p.send(BaseRecord::<(), _>::to("replay").payload(&format!("m{i}")).partition(0)).unwrap();
    }
    flush(&p);
    let c = common::consumer(&broker.bootstrap());
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("replay", 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    while got.len() < 100 {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            got.push(common::to_rec(&m.unwrap()));
        }
    }
    c.seek("replay", 0, Offset::Offset(40), Duration::from_secs(10)).unwrap();
    let mut again = Vec::new();
    while again.len() < 60 {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            again.push(common::to_rec(&m.unwrap()));
        }
    }
    assert_eq!(again[0].offset, 40);
    assert_eq!(again, got[40..].to_vec());
}

#[test]
fn tailing_consumer_is_woken_by_appends() {
    let broker = Broker::start(&[]);
    create_topic(&broker.bootstrap(), "tail", 2, &[]);
    let bootstrap = broker.bootstrap();
    let reader = std::thread::spawn(move || consume(&bootstrap, "tail", &[0, 1], Offset::End, 20));
    std::thread::sleep(Duration::from_secs(2));
    let p = producer(&broker.bootstrap(), &[("acks", "1")]);
    for i in 0..20 {
        p.send(BaseRecord::<(), _>::to("tail").payload(&format!("t{i}")).partition(i % 2)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    flush(&p);
    let recs = reader.join().unwrap();
    let mut vals: Vec<String> = recs.iter().map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap()).collect();
    vals.sort_by_key(|v| v[1..].parse::<i32>().unwrap());
    assert_eq!(vals, (0..20).map(|i| format!("t{i}")).collect::<Vec<_>>());
}

#[test]
fn partitions_owned_by_either_core_are_produced_and_fetched() {
    // With two cores, partition p of a topic is owned by core (h + p) % 2, so of any two
    // consecutive partitions one is owned by the core that did not accept a given connection.
    let broker = Broker::start(&["--cores", "2"]);
    create_topic(&broker.bootstrap(), "routed", 2, &[]);
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..200 {
        p.send(BaseRecord::<(), _>::to("routed").payload(&format!("r{i}")).partition(i % 2)).unwrap();
    }
    flush(&p);
    let acked = p.context().ok.lock().unwrap().clone();
    for part in 0..2 {
        let mut offs: Vec<i64> = acked.iter().filter(|a| a.0 == part).map(|a| a.1).collect();
        offs.sort();
        assert_eq!(offs, (0..100).collect::<Vec<_>>(), "partition {part}");
    }
    for part in 0..2 {
        let recs = consume(&broker.bootstrap(), "routed", &[part], Offset::Beginning, 100);
        let vals: Vec<String> = recs.iter().map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap()).collect();
        let want: Vec<String> = (0..200).filter(|i| i % 2 == part).map(|i| format!("r{i}")).collect();
        assert_eq!(vals, want);
    }
    // Both partition directories exist and hold data, whichever core owns them.
    for part in 0..2 {
        let segs = common::segments(&broker.data_dir(), "routed", part);
        assert!(std::fs::metadata(&segs[0]).unwrap().len() > 0);
    }
}

#[test]
fn list_offsets_and_watermarks() {
    let broker = Broker::start(&[]);
    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "0")]);
    for i in 0..10i64 {
        p.send(BaseRecord::<(), _>::to("times").payload("x").partition(0).timestamp(1_000_000 + i * 1000)).unwrap();
        flush(&p);
    }
    let c = common::consumer(&broker.bootstrap());
    let (lo, hi) = c.fetch_watermarks("times", 0, Duration::from_secs(10)).unwrap();
    assert_eq!((lo, hi), (0, 10));
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(1_004_500)).unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(found.find_partition("times", 0).unwrap().offset(), Offset::Offset(5));
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, Offset::Offset(9_999_999)).unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(found.find_partition("times", 0).unwrap().offset(), Offset::End);
}

#[test]
fn catching_up_consumer_reads_from_segment_files() {
    // More than the per-partition in-memory cache (1 MiB), read back in the same broker process,
    // so the oldest batches come from the segment file.
    let broker = Broker::start(&[]);
    let p = producer(&broker.bootstrap(), &[("acks", "1"), ("compression.codec", "none")]);
    let n = 7_000;
    for i in 0..n {
        let v = format!("{i:0>1024}");
        loop {
            match p.send(BaseRecord::<(), _>::to("big").payload(&v).partition(0)) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap().len(), n);
    let recs = consume(&broker.bootstrap(), "big", &[0], Offset::Beginning, n);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.value.as_deref(), Some(format!("{i:0>1024}").as_bytes()));
    }
    let mid = consume(&broker.bootstrap(), "big", &[0], Offset::Offset(1234), 3);
    assert_eq!(mid[0].offset, 1234);
}

#[test]
fn log_append_time_topics_are_stamped_by_the_broker() {
    let broker = Broker::start(&[]);
    create_topic(&broker.bootstrap(), "stamped", 1, &[("message.timestamp.type", "LogAppendTime")]);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("compression.codec", "lz4")]);
    for i in 0..10 {
        p.send(BaseRecord::<(), _>::to("stamped").payload(&format!("s{i}")).timestamp(1_000 + i)).unwrap();
    }
    flush(&p);
    let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let c = common::consumer(&broker.bootstrap());
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("stamped", 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut n = 0;
    while n < 10 {
        let Some(m) = c.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        match rdkafka::message::Message::timestamp(&m) {
            rdkafka::Timestamp::LogAppendTime(t) => assert!((before..=after).contains(&t), "{t} not in [{before}, {after}]"),
            other => panic!("expected LogAppendTime, got {other:?}"),
        }
        n += 1;
    }
}

#[test]
fn a_compacted_topic_keeps_each_keys_latest_value_across_restarts() {
    let mut broker = Broker::start(&["--log-cleaner-backoff-ms", "200"]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "table", 1, &[("cleanup.policy", "compact"), ("segment.bytes", "4096")]);
    // 2000 updates of 20 keys, one record per batch so segments roll every few dozen updates.
    let p = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "0"), ("max.in.flight.requests.per.connection", "1")]);
    for i in 0..2000 {
        let k = format!("key-{}", i % 20);
        let v = format!("value-{i}");
        p.send(BaseRecord::to("table").key(&k).payload(&v)).unwrap();
        if i % 100 == 99 {
            flush(&p);
        }
    }
    flush(&p);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !broker.log().contains("compacted segment") {
        assert!(std::time::Instant::now() < deadline, "the cleaner never ran: {}", broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // let the pass finish its last segments
    use rdkafka::message::Message;
    let check = |bootstrap: &str| {
        // A librdkafka consumer reads across the gaps compaction leaves in the offsets.
        let c = common::consumer(bootstrap);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("table", 0, Offset::Beginning).unwrap();
        c.assign(&tpl).unwrap();
        let mut latest = std::collections::BTreeMap::new();
        let mut read = 0;
        let mut last_offset = -1;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while last_offset < 1999 {
            assert!(std::time::Instant::now() < deadline, "stuck at offset {last_offset} after {read} records");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                assert!(m.offset() > last_offset);
                last_offset = m.offset();
                read += 1;
                let k = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                latest.insert(k, String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
        }
        let want: std::collections::BTreeMap<String, String> =
            (1980..2000).map(|i| (format!("key-{}", i % 20), format!("value-{i}"))).collect();
        assert_eq!(latest, want, "each key's latest value survives");
        read
    };
    let read = check(&bootstrap);
    assert!(read < 1000, "compaction dropped superseded records: {read} of 2000 left");
    broker.restart();
    assert_eq!(check(&broker.bootstrap()), read, "the same records after kill -9 and recovery");
}
