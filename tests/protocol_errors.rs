//! Bad input gets the right Kafka error code, or a closed connection with a log line; the broker
//! and other clients go on. Requests are built with the kafka-protocol codec by hand, since real
//! clients never send most of these.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{batch, Broker, Raw};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create(raw: &mut Raw, topics: Vec<CreatableTopic>, validate_only: bool) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(5000).with_validate_only(validate_only);
    raw.call(ApiKey::CreateTopics, 7, &req, 7)
}

fn topic(n: &str, partitions: i32, rf: i16) -> CreatableTopic {
    CreatableTopic::default().with_name(name(n)).with_num_partitions(partitions).with_replication_factor(rf)
}

fn produce(raw: &mut Raw, t: &str, partition: i32, acks: i16, records: Bytes) -> i16 {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(name(t))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])]);
    let resp: ProduceResponse = raw.call(ApiKey::Produce, 9, &req, 9);
    resp.responses[0].partition_responses[0].error_code
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A request frame built by hand: key, version, correlation id 1, null client id, an optional
/// empty tag buffer (flexible header), then `body`.
fn hand_frame(key: i16, version: i16, flexible: bool, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(1);
    b.put_i16(-1);
    if flexible {
        b.put_u8(0);
    }
    b.put_slice(body);
    let mut f = BytesMut::new();
    f.put_i32(b.len() as i32);
    f.put_slice(&b);
    f
}

#[test]
fn api_versions_advertises_exactly_what_is_implemented() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
    assert_eq!(r.error_code, 0);
    let keys: Vec<(i16, i16, i16)> = r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
    assert_eq!(
        keys,
        vec![
            (0, 3, 13),
            (1, 4, 18),
            (2, 1, 10),
            (3, 0, 13),
            (8, 2, 9),
            (9, 1, 9),
            (10, 0, 6),
            (11, 0, 9),
            (12, 0, 4),
            (13, 0, 5),
            (14, 0, 5),
            (15, 0, 6),
            (16, 0, 5),
            (17, 0, 1),
            (18, 0, 4),
            (19, 2, 7),
            (20, 1, 6),
            (21, 0, 2),
            (22, 0, 5),
            (23, 2, 4),
            (24, 0, 5),
            (25, 0, 4),
            (26, 0, 5),
            (27, 1, 1),
            (28, 0, 5),
            (29, 1, 3),
            (30, 1, 3),
            (31, 1, 3),
            (32, 1, 4),
            (33, 0, 2),
            (35, 1, 4),
            (36, 0, 2),
            (37, 0, 3),
            (42, 0, 2),
            (43, 0, 2),
            (44, 0, 1),
            (45, 0, 1),
            (46, 0, 0),
            (47, 0, 0),
            (48, 0, 1),
            (49, 0, 1),
            (50, 0, 0),
            (51, 0, 0),
            (55, 0, 2),
            (60, 0, 2),
            (61, 0, 0),
            (65, 0, 0),
            (66, 0, 2),
            (68, 0, 1),
            (69, 0, 1)
        ]
    );
    // The features (KIP-584): transaction.version, supported 0-2, finalized at 2 by default.
    let features = |r: &ApiVersionsResponse| {
        let supported: Vec<(String, i16, i16)> =
            r.supported_features.iter().map(|f| (f.name.to_string(), f.min_version, f.max_version)).collect();
        let finalized: Vec<(String, i16, i16)> =
            r.finalized_features.iter().map(|f| (f.name.to_string(), f.min_version_level, f.max_version_level)).collect();
        (supported, finalized, r.finalized_features_epoch)
    };
    let (supported, finalized, epoch) = features(&r);
    assert_eq!(supported, vec![("transaction.version".to_string(), 0, 2)]);
    assert_eq!(finalized, vec![("transaction.version".to_string(), 2, 2)]);
    assert!(epoch > 0, "a finalized features epoch clients accept: {epoch}");
    // A newer ApiVersions than ours: v0 answer with UNSUPPORTED_VERSION and the list (KIP-511).
    let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 99, &ApiVersionsRequest::default(), 0);
    assert_eq!(r.error_code, code(ResponseError::UnsupportedVersion));
    assert_eq!(r.api_keys.len(), keys.len());

    // At transaction version 1 the feature says so, and EndTxn and TxnOffsetCommit stop at v4.
    let v1 = Broker::start(&["--transaction-version", "1"]);
    let mut raw = Raw::connect(v1.port);
    let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
    assert_eq!(features(&r).1, vec![("transaction.version".to_string(), 1, 1)]);
    let max = |key: i16| r.api_keys.iter().find(|k| k.api_key == key).map(|k| k.max_version);
    assert_eq!((max(26), max(28), max(0)), (Some(4), Some(4), Some(13)), "EndTxn, TxnOffsetCommit, Produce");
}

#[test]
fn produce_errors_clients_rely_on() {
    let broker = Broker::start(&["--message-max-bytes", "2000"]);
    let mut raw = Raw::connect(broker.port);
    let r = create(&mut raw, vec![topic("p", 1, 1)], false);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(produce(&mut raw, "p", 0, 1, batch(3)), 0);
    assert_eq!(produce(&mut raw, "p", 0, 2, batch(3)), code(ResponseError::InvalidRequiredAcks));
    assert_eq!(produce(&mut raw, "nope", 0, 1, batch(3)), code(ResponseError::UnknownTopicOrPartition));
    assert_eq!(produce(&mut raw, "p", 7, 1, batch(3)), code(ResponseError::UnknownTopicOrPartition));
    let mut bad = batch(3).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(produce(&mut raw, "p", 0, -1, bad.into()), code(ResponseError::CorruptMessage));
    let mut old = batch(3).to_vec();
    old[16] = 1;
    assert_eq!(produce(&mut raw, "p", 0, 1, old.into()), code(ResponseError::UnsupportedForMessageFormat));
    let truncated = batch(3).slice(0..40);
    assert_eq!(produce(&mut raw, "p", 0, 1, truncated), code(ResponseError::CorruptMessage));
    assert_eq!(produce(&mut raw, "p", 0, 1, batch(400)), code(ResponseError::MessageTooLarge));
    // Batches that do not fit in one segment, as Kafka refuses them.
    let seg = CreatableTopicConfig::default().with_name(StrBytes::from_static_str("segment.bytes")).with_value(Some(StrBytes::from_static_str("200")));
    let r = create(&mut raw, vec![topic("tiny-segments", 1, 1).with_configs(vec![seg])], false);
    assert_eq!(r.topics[0].error_code, 0);
    assert!(batch(20).len() > 200 && batch(20).len() < 2000);
    assert_eq!(produce(&mut raw, "tiny-segments", 0, 1, batch(20)), code(ResponseError::RecordListTooLarge));
    assert_eq!(produce(&mut raw, "tiny-segments", 0, 1, batch(3)), 0);
    // Nothing refused was appended: the one good batch is all there is.
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(name("p"))
            .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)]),
    ]);
    let r: ListOffsetsResponse = raw.call(ApiKey::ListOffsets, 7, &req, 7);
    assert_eq!(r.topics[0].partitions[0].offset, 3);
}

#[test]
fn fetch_out_of_range_and_unknown_topic() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, vec![topic("f", 1, -1)], false);
    assert_eq!(produce(&mut raw, "f", 0, -1, batch(5)), 0);
    let fetch = |raw: &mut Raw, t: &str, offset: i64| -> i16 {
        let req = FetchRequest::default().with_max_wait_ms(10).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic(name(t))
            .with_partitions(vec![FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(1 << 20)])]);
        let r: FetchResponse = raw.call(ApiKey::Fetch, 11, &req, 11);
        r.responses[0].partitions[0].error_code
    };
    assert_eq!(fetch(&mut raw, "f", 0), 0);
    assert_eq!(fetch(&mut raw, "f", 5), 0);
    assert_eq!(fetch(&mut raw, "f", 6), code(ResponseError::OffsetOutOfRange));
    assert_eq!(fetch(&mut raw, "f", -1), code(ResponseError::OffsetOutOfRange));
    assert_eq!(fetch(&mut raw, "missing", 0), code(ResponseError::UnknownTopicOrPartition));
}

#[test]
fn create_topics_validation() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    let r = create(&mut raw, vec![topic("ok", 2, 1)], true);
    assert_eq!((r.topics[0].error_code, r.topics[0].num_partitions), (0, 2));
    let r = create(&mut raw, vec![topic("ok", 2, 1)], false);
    assert_eq!(r.topics[0].error_code, 0, "validate_only must not have created it");
    let cfg = |k: &str, v: &str| CreatableTopicConfig::default().with_name(StrBytes::from_string(k.into())).with_value(Some(StrBytes::from_string(v.into())));
    let r = create(
        &mut raw,
        vec![
            topic("ok", 1, 1),
            topic("bad name!", 1, 1),
            topic("rf3", 1, 3),
            topic("zero", 0, 1),
            topic("badcfg", 1, 1).with_configs(vec![cfg("segment.bytes", "lots")]),
            topic("unknowncfg", 1, 1).with_configs(vec![cfg("no.such.config", "1")]),
        ],
        false,
    );
    let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        vec![
            code(ResponseError::TopicAlreadyExists),
            code(ResponseError::InvalidTopicException),
            code(ResponseError::InvalidReplicationFactor),
            code(ResponseError::InvalidPartitions),
            code(ResponseError::InvalidConfig),
            code(ResponseError::InvalidConfig),
        ]
    );
    assert!(r.topics[4].error_message.as_ref().unwrap().contains("segment.bytes"));
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let broker = Broker::start(&[]);
    // A length prefix far over the request limit: refused before allocating.
    let mut raw = Raw::connect(broker.port);
    raw.send_bytes(&i32::MAX.to_be_bytes());
    assert!(raw.closed_by_broker());
    // A negative length.
    let mut raw = Raw::connect(broker.port);
    raw.send_bytes(&(-5i32).to_be_bytes());
    assert!(raw.closed_by_broker());
    // An unknown API key, an API Spate does not implement (DescribeDelegationToken v0: null
    // owners), and a garbage body for one it does.
    let describe_tokens = [0xff, 0xff, 0xff, 0xff];
    for f in [hand_frame(999, 0, false, &[]), hand_frame(41, 0, false, &describe_tokens), hand_frame(0, 9, false, &[0xff; 4])] {
        let mut raw = Raw::connect(broker.port);
        raw.send_bytes(&f);
        assert!(raw.closed_by_broker());
    }
    // A frame cut short by the client going away.
    let mut raw = Raw::connect(broker.port);
    raw.send_bytes(&[0, 0, 0, 100, 0, 18]);
    drop(raw);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The broker is still serving.
    let mut raw = Raw::connect(broker.port);
    let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
    assert_eq!(r.error_code, 0);
    let log = broker.log();
    for expected in ["request frame size refused", "unknown API key 999", "does not implement", "malformed Produce v9", "closed inside a request frame"] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
}

/// Sends 50 produce requests to `topic` without reading, alternating over its 4 partitions (so
/// both cores answer), then reads the 50 responses: correlation ids must come back in order and
/// the offsets follow `round` earlier such rounds.
fn pipeline_produces(raw: &mut Raw, topic: &str, round: i64) {
    let mut wire = BytesMut::new();
    for i in 0..50 {
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(i % 4).with_records(Some(batch(2)))])]);
        let mut body = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = 0;
        h.request_api_version = 9;
        h.correlation_id = 1000 + i;
        kafka_protocol::protocol::Encodable::encode(&h, &mut body, 2).unwrap();
        kafka_protocol::protocol::Encodable::encode(&req, &mut body, 9).unwrap();
        wire.put_i32(body.len() as i32);
        wire.put_slice(&body);
    }
    raw.send_bytes(&wire);
    for i in 0..50 {
        let mut f = raw.read_frame().unwrap();
        let h = <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut f, 1).unwrap();
        assert_eq!(h.correlation_id, 1000 + i);
        let r = <ProduceResponse as kafka_protocol::protocol::Decodable>::decode(&mut f, 9).unwrap();
        let p = &r.responses[0].partition_responses[0];
        let per_round = if i % 4 < 2 { 26 } else { 24 }; // 13 or 12 requests of 2 records
        assert_eq!((p.error_code, p.base_offset), (0, round * per_round + (i / 4) as i64 * 2));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start(&["--num-partitions", "4"]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, vec![topic("pipe", 4, 1)], false);
    pipeline_produces(&mut raw, "pipe", 0);
}

/// Busy poll on: a client that waits for each answer is served by polling, one that pipelines
/// still has its requests answered in order, one that pauses or long-polls is served from the
/// ring, and a connection closed while it is polled ends cleanly.
#[test]
fn busy_poll_serves_quick_pausing_and_pipelining_clients() {
    // The largest window (10 ms), so that even a loaded test machine's client counts as quick.
    let broker = Broker::start(&["--num-partitions", "4", "--connection-busy-poll-us", "10000"]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, vec![topic("bp", 4, 1)], false);
    let api_versions = |raw: &mut Raw| {
        let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
        assert_eq!(r.error_code, 0);
    };
    let busy_polls = || {
        let m = broker.metrics();
        let sum = |name: &str| common::metric_sum(&m, name);
        (sum("spate_busy_poll_found_total"), sum("spate_busy_poll_missed_total"))
    };
    // Round trips until one is found by polling. On a loaded machine a client may take longer
    // than the window to come back for a while, so this tries up to 50 times 20.
    for _ in 0..50 {
        (0..20).for_each(|_| api_versions(&mut raw));
        if busy_polls().0 > 0.0 {
            break;
        }
    }
    assert!(busy_polls().0 > 0.0, "no request was found by busy polling in 1,000 round trips");
    // The client starts pipelining: all answered, in order.
    pipeline_produces(&mut raw, "bp", 0);
    // Quick again once it stops pipelining; then it pauses longer than the window: the poll runs
    // out (counted as missed) and the request is served from the ring. Up to 20 tries, each
    // after quick round trips (a loaded machine can make the client look slow or pipelining).
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..20 {
        (0..10).for_each(|_| api_versions(&mut raw));
        std::thread::sleep(Duration::from_millis(50));
        api_versions(&mut raw);
        if busy_polls().1 > 0.0 {
            break;
        }
    }
    assert!(busy_polls().1 > 0.0, "no busy poll ran out of time: {:?}", busy_polls());
    // A long poll on an empty partition is answered when its wait ends, then requests go on.
    let fetch = FetchRequest::default().with_max_wait_ms(300).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
        FetchTopic::default().with_topic(name("bp")).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(26)
            .with_partition_max_bytes(1 << 20)]),
    ]);
    let t = Instant::now();
    let r: FetchResponse = raw.call(ApiKey::Fetch, 12, &fetch, 12);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
    assert!(t.elapsed() >= Duration::from_millis(250), "the long poll returned early: {:?}", t.elapsed());
    pipeline_produces(&mut raw, "bp", 1);
    // Closed while (possibly) being polled: the broker goes on serving others.
    for _ in 0..20 {
        let mut c = Raw::connect(broker.port);
        let _: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
        drop(c);
    }
    let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
    assert_eq!(r.error_code, 0);
}

#[test]
fn offset_for_leader_epoch_and_topic_admin() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, vec![topic("e", 1, 1)], false);
    assert_eq!(produce(&mut raw, "e", 0, -1, batch(7)), 0);
    let ask = |raw: &mut Raw, current: i32, epoch: i32| {
        let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name("e"))
            .with_partitions(vec![OffsetForLeaderPartition::default().with_partition(0).with_current_leader_epoch(current).with_leader_epoch(epoch)])]);
        let r: OffsetForLeaderEpochResponse = raw.call(ApiKey::OffsetForLeaderEpoch, 4, &req, 4);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    assert_eq!(ask(&mut raw, 0, 0), (0, 0, 7));
    assert_eq!(ask(&mut raw, -1, 0), (0, 0, 7));
    assert_eq!(ask(&mut raw, 0, 3), (0, -1, -1));
    assert_eq!(ask(&mut raw, 2, 0).0, code(ResponseError::UnknownLeaderEpoch));

    // DescribeConfigs shows the override as a topic config and the rest as defaults.
    let cfg = CreatableTopicConfig::default().with_name(StrBytes::from_static_str("retention.ms")).with_value(Some(StrBytes::from_static_str("1000")));
    create(&mut raw, vec![topic("c", 2, 1).with_configs(vec![cfg])], false);
    let req = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("c")),
        describe_configs_request::DescribeConfigsResource::default().with_resource_type(4).with_resource_name(StrBytes::from_static_str("0")),
        describe_configs_request::DescribeConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("nope")),
    ]);
    let r: DescribeConfigsResponse = raw.call(ApiKey::DescribeConfigs, 4, &req, 4);
    let get = |i: usize, k: &str| r.results[i].configs.iter().find(|c| c.name.as_str() == k).map(|c| (c.value.clone().unwrap().to_string(), c.config_source));
    assert_eq!(get(0, "retention.ms"), Some(("1000".to_string(), 1)));
    assert_eq!(get(0, "segment.bytes"), Some(("1073741824".to_string(), 5)));
    assert_eq!(get(1, "num.partitions").unwrap().0, "1");
    assert_eq!(r.results[2].error_code, code(ResponseError::UnknownTopicOrPartition));

    // DeleteTopics: the topic goes, from metadata and from disk; a second delete is an error.
    let req = DeleteTopicsRequest::default().with_topic_names(vec![name("c")]).with_timeout_ms(5000);
    let r: DeleteTopicsResponse = raw.call(ApiKey::DeleteTopics, 5, &req, 5);
    assert_eq!(r.responses[0].error_code, 0);
    assert!(!broker.data_dir().join("topics").join("c").exists());
    let r: DeleteTopicsResponse = raw.call(ApiKey::DeleteTopics, 5, &req, 5);
    assert_eq!(r.responses[0].error_code, code(ResponseError::UnknownTopicOrPartition));
    let md: MetadataResponse = raw.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None), 12);
    let names: Vec<String> = md.topics.iter().map(|t| t.name.clone().unwrap().0.to_string()).collect();
    assert_eq!(names, vec!["e".to_string()]);
}

#[test]
fn huge_array_counts_are_refused_not_fatal() {
    // A request whose array count claims far more elements than the bytes that follow used to
    // abort the process inside the codec (allocation failure). It must only close the connection.
    let broker = Broker::start(&[]);
    for (key, version, flexible, count) in [
        (3i16, 1i16, false, vec![0x7f, 0xff, 0xff, 0xff]),      // Metadata v1, INT32 count
        (3, 12, true, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),      // Metadata v12, compact count
        (0, 3, false, vec![0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x13, 0x88, 0x7f, 0xff, 0xff, 0xff]), // Produce v3
    ] {
        let mut raw = Raw::connect(broker.port);
        raw.send_bytes(&hand_frame(key, version, flexible, &count));
        assert!(raw.closed_by_broker(), "key {key} v{version}");
    }
    let mut raw = Raw::connect(broker.port);
    let r: ApiVersionsResponse = raw.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
    assert_eq!(r.error_code, 0, "broker must still be serving");
}

#[test]
fn describe_cluster_names_this_node_and_the_cluster_id() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    let md: MetadataResponse = raw.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![])), 12);
    for version in 0..=2 {
        let req = DescribeClusterRequest::default().with_include_cluster_authorized_operations(version == 2);
        let r: DescribeClusterResponse = raw.call(ApiKey::DescribeCluster, version, &req, version);
        assert_eq!(r.error_code, 0);
        assert_eq!(Some(r.cluster_id.clone()), md.cluster_id, "v{version}: the cluster id Metadata gives");
        assert_eq!(r.controller_id, BrokerId(0));
        let b: Vec<(i32, String, i32)> = r.brokers.iter().map(|b| (b.broker_id.0, b.host.to_string(), b.port)).collect();
        assert_eq!(b, vec![(0, "127.0.0.1".to_string(), broker.port as i32)], "v{version}");
        if version == 2 {
            assert_ne!(r.cluster_authorized_operations, i32::MIN, "operations asked for");
            assert!(!r.brokers[0].is_fenced);
        } else {
            assert_eq!(r.cluster_authorized_operations, i32::MIN, "operations not asked for");
        }
    }
}

#[test]
fn describe_log_dirs_reports_each_partitions_bytes() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, vec![topic("sized", 2, 1)], false);
    assert_eq!(produce(&mut raw, "sized", 1, -1, batch(50)), 0);
    let ask = |raw: &mut Raw, topics: Option<Vec<DescribableLogDirTopic>>| -> DescribeLogDirsResponse {
        raw.call(ApiKey::DescribeLogDirs, 4, &DescribeLogDirsRequest::default().with_topics(topics), 4)
    };
    let r = ask(&mut raw, None);
    assert_eq!(r.results.len(), 1);
    let dir = &r.results[0];
    assert_eq!(dir.log_dir.as_str(), broker.data_dir().display().to_string());
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes, "{dir:?}");
    let sized = dir.topics.iter().find(|t| t.name.0.as_str() == "sized").expect("the topic is listed");
    let sizes: Vec<(i32, i64)> = sized.partitions.iter().map(|p| (p.partition_index, p.partition_size)).collect();
    assert_eq!(sizes[0], (0, 0), "{sizes:?}");
    assert_eq!(sizes[1], (1, batch(50).len() as i64), "{sizes:?}");
    // Only what is asked for, and nothing for what does not exist.
    let one = DescribableLogDirTopic::default().with_topic(name("sized")).with_partitions(vec![1, 9]);
    let none = DescribableLogDirTopic::default().with_topic(name("nope")).with_partitions(vec![0]);
    let r = ask(&mut raw, Some(vec![none, one]));
    let listed: Vec<(String, Vec<i32>)> =
        r.results[0].topics.iter().map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect())).collect();
    assert_eq!(listed, vec![("sized".to_string(), vec![1])]);
}
