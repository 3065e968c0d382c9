//! A topic's `compression.type`: batches that arrive in another codec are stored recompressed
//! in the topic's (checked in the stored bytes, through a raw Fetch), every record reads back
//! unchanged through librdkafka, `producer` keeps each batch as it came, the setting can change
//! at run time (topic and broker-wide), and a batch that does not decompress within the bound is
//! refused with INVALID_RECORD.

mod common;

use common::{consume, create_topic, flush, producer, set_config, Broker, Raw};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;
use spate::protocol::batch;

const CODECS: [(&str, i16); 5] = [("none", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)];

/// The codec of every batch stored in partition 0 of `topic`, read with a raw Fetch.
fn stored_codecs(raw: &mut Raw, topic: &str) -> Vec<i16> {
    let req = FetchRequest::default().with_max_wait_ms(10).with_min_bytes(1).with_max_bytes(16 << 20).with_topics(vec![FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(16 << 20)])]);
    let r: FetchResponse = raw.call(ApiKey::Fetch, 11, &req, 11);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let records = p.records.clone().unwrap_or_default();
    let mut codecs = Vec::new();
    let end = batch::scan(&records, |_, h| codecs.push(h.compression()));
    assert!(end.problem.is_none(), "{:?}", end.problem);
    codecs
}

/// Produces `n` records per client codec to `topic`, each codec in its own batches.
fn produce_every_codec(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for (codec, _) in CODECS {
        let p = producer(bootstrap, &[("compression.codec", codec), ("acks", "all")]);
        for i in 0..n {
            let v = format!("{codec}-{i:04}-{}", "abc".repeat(i % 40));
            p.send(BaseRecord::<(), _>::to(topic).payload(&v).partition(0)).unwrap();
            sent.push(v);
        }
        flush(&p);
        assert!(p.context().failed.lock().unwrap().is_empty(), "{codec}: {:?}", p.context().failed.lock().unwrap());
    }
    sent
}

fn values(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    consume(bootstrap, topic, &[0], Offset::Beginning, n).into_iter().map(|r| String::from_utf8(r.value.unwrap()).unwrap()).collect()
}


#[test]
fn every_compression_type_stores_one_codec_and_reads_back() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let mut raw = Raw::connect(broker.port);
    for (name, codec) in [("uncompressed", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("ct-{name}");
        create_topic(&b, &topic, 1, &[("compression.type", name)]);
        let sent = produce_every_codec(&b, &topic, 300);
        let codecs = stored_codecs(&mut raw, &topic);
        assert!(codecs.len() >= CODECS.len() && codecs.iter().all(|c| *c == codec), "{name}: stored {codecs:?}");
        assert_eq!(values(&b, &topic, sent.len()), sent, "{name}");
    }
    // `producer` keeps each batch in the codec it came in.
    create_topic(&b, "ct-producer", 1, &[]);
    let sent = produce_every_codec(&b, "ct-producer", 50);
    let mut codecs = stored_codecs(&mut raw, "ct-producer");
    codecs.dedup();
    assert_eq!(codecs, vec![0, 1, 2, 3, 4]);
    assert_eq!(values(&b, "ct-producer", sent.len()), sent);
    let m = broker.metrics();
    assert!(common::metric_sum(&m, "spate_recompressed_batches_total") >= 20.0, "{m}");
}

#[test]
fn compression_type_changes_at_run_time_and_bad_batches_are_refused() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let mut raw = Raw::connect(broker.port);
    create_topic(&b, "later", 1, &[]);
    let p = producer(&b, &[("compression.codec", "gzip")]);
    // Compressible, so that librdkafka does compress them (it sends a batch that would not
    // shrink uncompressed).
    let v = |s: &str| format!("{s}-{}", "x".repeat(500));
    p.send(BaseRecord::<(), _>::to("later").payload(&v("before")).partition(0)).unwrap();
    flush(&p);
    // The broker-wide default, then the topic's own value (which wins).
    assert_eq!(set_config(&mut raw, 4, "", "compression.type", "lz4"), 0);
    p.send(BaseRecord::<(), _>::to("later").payload(&v("broker-wide")).partition(0)).unwrap();
    flush(&p);
    assert_eq!(set_config(&mut raw, 2, "later", "compression.type", "zstd"), 0);
    p.send(BaseRecord::<(), _>::to("later").payload(&v("topic")).partition(0)).unwrap();
    flush(&p);
    assert_eq!(stored_codecs(&mut raw, "later"), vec![1, 3, 4]);
    assert_eq!(values(&b, "later", 3), vec![v("before"), v("broker-wide"), v("topic")]);
    assert_eq!(set_config(&mut raw, 2, "later", "compression.type", "brotli"), 40, "INVALID_CONFIG");

    // A gzip batch whose records are not gzip: refused with INVALID_RECORD, nothing stored.
    let mut bad = batch::build(&[(None, Some(bytes::Bytes::from_static(b"not compressed at all")))], 1_000).to_vec();
    bad[21..23].copy_from_slice(&1i16.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![produce_request::TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("later")))
        .with_partition_data(vec![produce_request::PartitionProduceData::default().with_index(0).with_records(Some(bad.into()))])]);
    let r: ProduceResponse = raw.call(ApiKey::Produce, 9, &req, 9);
    let pr = &r.responses[0].partition_responses[0];
    assert_eq!(pr.error_code, 87, "{pr:?}");
    assert!(pr.error_message.as_deref().is_some_and(|m| m.contains("recompressing the batch as zstd")), "{pr:?}");
    assert_eq!(stored_codecs(&mut raw, "later").len(), 3);
}
