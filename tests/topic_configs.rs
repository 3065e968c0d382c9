//! Topic settings changed at run time: IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT)
//! and AlterConfigs, validated as at creation, durable across `kill -9`, reported by
//! DescribeConfigs, and applied to the partitions already open (retention deletes old segments
//! after an alter, with no restart). The broker's own configs change at run time too (Kafka's
//! dynamic broker configs, cluster-wide and per broker), reported with their sources and
//! synonyms.

mod common;

use std::time::{Duration, Instant};

use common::{create_topic, producer, segments, Broker, Raw};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

fn op(key: &'static str, operation: i8, value: Option<&'static str>) -> AlterableConfig {
    AlterableConfig::default()
        .with_name(StrBytes::from_static_str(key))
        .with_config_operation(operation)
        .with_value(value.map(StrBytes::from_static_str))
}

fn incremental(raw: &mut Raw, resources: Vec<(i8, &'static str, Vec<AlterableConfig>)>, validate_only: bool) -> Vec<(i16, String)> {
    let req = IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(
        resources
            .into_iter()
            .map(|(t, n, c)| AlterConfigsResource::default().with_resource_type(t).with_resource_name(StrBytes::from_static_str(n)).with_configs(c))
            .collect(),
    );
    let r: IncrementalAlterConfigsResponse = raw.call(ApiKey::IncrementalAlterConfigs, 1, &req, 1);
    r.responses.iter().map(|x| (x.error_code, x.error_message.as_deref().unwrap_or("").to_string())).collect()
}

/// (value, source) of a topic's config as DescribeConfigs reports it.
fn describe(raw: &mut Raw, topic: &'static str, key: &str) -> (String, i8) {
    let req = DescribeConfigsRequest::default().with_resources(vec![describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str(topic))]);
    let r: DescribeConfigsResponse = raw.call(ApiKey::DescribeConfigs, 4, &req, 4);
    let c = r.results[0].configs.iter().find(|c| c.name.as_str() == key).unwrap_or_else(|| panic!("no {key}"));
    (c.value.as_deref().unwrap().to_string(), c.config_source)
}

const TOPIC_SOURCE: i8 = 1;
const DEFAULT_SOURCE: i8 = 5;

#[test]
fn incremental_and_full_alters_validate_persist_and_describe() {
    let mut broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "conf", 2, &[("retention.ms", "1000000")]);
    let mut raw = Raw::connect(broker.port);

    let r = incremental(&mut raw, vec![(2, "conf", vec![op("retention.ms", SET, Some("60000")), op("segment.bytes", SET, Some("1048576"))])], false);
    assert_eq!(r, vec![(0, String::new())]);
    assert_eq!(describe(&mut raw, "conf", "retention.ms"), ("60000".into(), TOPIC_SOURCE));
    assert_eq!(describe(&mut raw, "conf", "segment.bytes"), ("1048576".into(), TOPIC_SOURCE));

    // DELETE goes back to the broker default; APPEND and SUBTRACT edit the list-valued key.
    let r = incremental(&mut raw, vec![(2, "conf", vec![op("segment.bytes", DELETE, None), op("cleanup.policy", APPEND, Some("compact"))])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    assert_eq!(describe(&mut raw, "conf", "segment.bytes"), ("1073741824".into(), DEFAULT_SOURCE));
    assert_eq!(describe(&mut raw, "conf", "cleanup.policy"), ("delete,compact".into(), TOPIC_SOURCE));
    let r = incremental(&mut raw, vec![(2, "conf", vec![op("cleanup.policy", SUBTRACT, Some("delete"))])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    assert_eq!(describe(&mut raw, "conf", "cleanup.policy"), ("compact".into(), TOPIC_SOURCE));

    // Refused, each with a message naming what is wrong, and nothing changed by any of them.
    let refusals = incremental(
        &mut raw,
        vec![
            (2, "conf", vec![op("retention.ms", SET, Some("soon"))]),
            (2, "conf2", vec![op("retention.ms", SET, Some("1"))]),
            (2, "nope", vec![op("retention.ms", SET, Some("1"))]),
            (4, "7", vec![op("log.retention.ms", SET, Some("1"))]),
            (2, "__consumer_offsets", vec![op("cleanup.policy", SET, Some("delete"))]),
        ],
        false,
    );
    let codes: Vec<i16> = refusals.iter().map(|r| r.0).collect();
    assert_eq!(codes, vec![40, 3, 3, 42, 42], "{refusals:?}");
    assert!(refusals[0].1.contains("retention.ms"), "{refusals:?}");
    let r = incremental(&mut raw, vec![(2, "conf", vec![op("segment.bytes", APPEND, Some("1"))]), (2, "conf", vec![])], false);
    assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![42, 42], "a resource twice: {r:?}");
    let r = incremental(&mut raw, vec![(2, "conf", vec![op("segment.bytes", APPEND, Some("1"))])], false);
    assert_eq!(r[0].0, 40, "APPEND of a non-list key: {r:?}");
    let r = incremental(&mut raw, vec![(2, "conf", vec![op("no.such.key", SET, Some("1"))])], false);
    assert_eq!(r[0].0, 40, "{r:?}");
    assert_eq!(describe(&mut raw, "conf", "retention.ms"), ("60000".into(), TOPIC_SOURCE));

    // validate_only checks and changes nothing.
    let r = incremental(&mut raw, vec![(2, "conf", vec![op("retention.ms", SET, Some("5"))])], true);
    assert_eq!(r[0].0, 0);
    assert_eq!(describe(&mut raw, "conf", "retention.ms").0, "60000");

    // AlterConfigs replaces the whole set: what it does not name goes back to the default.
    let req = AlterConfigsRequest::default().with_resources(vec![alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("conf"))
        .with_configs(vec![alter_configs_request::AlterableConfig::default()
            .with_name(StrBytes::from_static_str("max.message.bytes"))
            .with_value(Some(StrBytes::from_static_str("5000")))])]);
    let r: AlterConfigsResponse = raw.call(ApiKey::AlterConfigs, 2, &req, 2);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(describe(&mut raw, "conf", "max.message.bytes"), ("5000".into(), TOPIC_SOURCE));
    assert_eq!(describe(&mut raw, "conf", "retention.ms").1, DEFAULT_SOURCE);
    assert_eq!(describe(&mut raw, "conf", "cleanup.policy"), ("delete".into(), DEFAULT_SOURCE));

    // The new limit holds for produce at once, and everything survives kill -9.
    let big = vec![b'x'; 6000];
    let p = producer(&b, &[("acks", "all"), ("message.timeout.ms", "5000")]);
    p.send(BaseRecord::<(), _>::to("conf").payload(&big).partition(0)).unwrap();
    common::flush(&p);
    assert_eq!(p.context().failed.lock().unwrap().len(), 1, "a record over the new max.message.bytes is refused");
    drop(p);
    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    assert_eq!(describe(&mut raw, "conf", "max.message.bytes"), ("5000".into(), TOPIC_SOURCE));
}

/// Retention switched on by an alter reaches the partitions already open: old segments go
/// without a restart.
#[test]
fn an_altered_retention_applies_to_open_partitions() {
    let broker = Broker::start(&["--log-retention-check-interval-ms", "200"]);
    let b = broker.bootstrap();
    create_topic(&b, "later", 1, &[("segment.bytes", "4096")]);
    let p = producer(&b, &[("acks", "all"), ("batch.size", "2000")]);
    for i in 0..400 {
        p.send(BaseRecord::<(), _>::to("later").payload(&format!("{i:05}-{}", "z".repeat(90)))).unwrap();
    }
    common::flush(&p);
    let before = segments(&broker.data_dir(), "later", 0).len();
    assert!(before > 5, "{before} segments");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(segments(&broker.data_dir(), "later", 0).len(), before, "nothing is deleted under the default retention");
    let mut raw = Raw::connect(broker.port);
    let r = incremental(&mut raw, vec![(2, "later", vec![op("retention.bytes", SET, Some("8192"))])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments(&broker.data_dir(), "later", 0).len() > 4 {
        assert!(Instant::now() < deadline, "retention.bytes set by an alter deleted nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let low = common::consumer(&b).fetch_watermarks("later", 0, Duration::from_secs(10)).unwrap().0;
    assert!(low > 0, "the start moved: {low}");
}

/// Everything DescribeConfigs says of one key: value, source, read-only, and the synonyms
/// (name, value, source); None if the key is not in the answer.
type Described = (String, i8, bool, Vec<(String, String, i8)>);

fn describe_full(raw: &mut Raw, resource_type: i8, name: &'static str, key: &str) -> Option<Described> {
    let req = DescribeConfigsRequest::default().with_include_synonyms(true).with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_static_str(name)),
    ]);
    let r: DescribeConfigsResponse = raw.call(ApiKey::DescribeConfigs, 4, &req, 4);
    assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0].error_message);
    let c = r.results[0].configs.iter().find(|c| c.name.as_str() == key)?;
    let synonyms = c
        .synonyms
        .iter()
        .map(|s| (s.name.to_string(), s.value.as_deref().unwrap_or("").to_string(), s.source))
        .collect();
    Some((c.value.as_deref().unwrap().to_string(), c.config_source, c.read_only, synonyms))
}

const DYNAMIC_BROKER: i8 = 2;
const DYNAMIC_DEFAULT_BROKER: i8 = 3;
const STATIC_BROKER: i8 = 4;

fn syn(name: &str, value: &str, source: i8) -> (String, String, i8) {
    (name.to_string(), value.to_string(), source)
}

/// Broker configs changed at run time: a cluster-wide `log.retention.bytes` reaches every
/// open partition whose topic does not set its own, a per-broker value wins over it, read-only
/// and unknown keys are refused naming the key, and every layer is reported as Kafka reports
/// it (source and synonyms) and survives kill -9.
#[test]
fn broker_configs_change_at_run_time_with_sources_and_synonyms() {
    let mut broker = Broker::start(&["--log-retention-check-interval-ms", "200", "--log-retention-bytes", "1000000000"]);
    let b = broker.bootstrap();
    create_topic(&b, "dyn", 1, &[("segment.bytes", "4096")]);
    create_topic(&b, "own", 1, &[("segment.bytes", "4096"), ("retention.bytes", "1000000")]);
    let mut raw = Raw::connect(broker.port);
    let static_layers = vec![syn("log.retention.bytes", "1000000000", STATIC_BROKER), syn("log.retention.bytes", "-1", DEFAULT_SOURCE)];
    assert_eq!(describe_full(&mut raw, 2, "dyn", "retention.bytes"), Some(("1000000000".into(), STATIC_BROKER, false, static_layers.clone())));
    let p = producer(&b, &[("acks", "all"), ("batch.size", "2000")]);
    for i in 0..400 {
        for t in ["dyn", "own"] {
            p.send(BaseRecord::<(), _>::to(t).payload(&format!("{i:05}-{}", "z".repeat(90)))).unwrap();
        }
    }
    common::flush(&p);
    let own_segments = segments(&broker.data_dir(), "own", 0).len();
    assert!(own_segments > 5 && segments(&broker.data_dir(), "dyn", 0).len() > 5);

    // Cluster-wide: every broker's default ("" names them all).
    let r = incremental(&mut raw, vec![(4, "", vec![op("log.retention.bytes", SET, Some("8192"))])], false);
    assert_eq!(r, vec![(0, String::new())]);
    let mut layers = vec![syn("log.retention.bytes", "8192", DYNAMIC_DEFAULT_BROKER)];
    layers.extend(static_layers.clone());
    assert_eq!(describe_full(&mut raw, 2, "dyn", "retention.bytes"), Some(("8192".into(), DYNAMIC_DEFAULT_BROKER, false, layers.clone())));
    let own = describe_full(&mut raw, 2, "own", "retention.bytes").unwrap();
    assert_eq!((own.0.as_str(), own.1, &own.3[0]), ("1000000", TOPIC_SOURCE, &syn("retention.bytes", "1000000", TOPIC_SOURCE)));
    assert_eq!(own.3[1..], layers[..], "the topic's override first, then the broker's layers");
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments(&broker.data_dir(), "dyn", 0).len() > 4 {
        assert!(Instant::now() < deadline, "a cluster-wide log.retention.bytes deleted nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(segments(&broker.data_dir(), "own", 0).len(), own_segments, "a topic with its own retention.bytes keeps it");

    // This broker's own value wins over the cluster-wide one.
    let r = incremental(&mut raw, vec![(4, "0", vec![op("log.retention.bytes", SET, Some("16384"))])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    let mut node_layers = vec![syn("log.retention.bytes", "16384", DYNAMIC_BROKER)];
    node_layers.extend(layers.clone());
    assert_eq!(describe_full(&mut raw, 2, "dyn", "retention.bytes").unwrap().0, "16384");
    assert_eq!(describe_full(&mut raw, 4, "0", "log.retention.bytes"), Some(("16384".into(), DYNAMIC_BROKER, false, node_layers.clone())));
    let np = describe_full(&mut raw, 4, "0", "num.partitions").unwrap();
    assert_eq!((np.1, np.2), (DEFAULT_SOURCE, true), "num.partitions is read-only: {np:?}");
    // The broker named "" describes the cluster-wide dynamic configs only.
    assert_eq!(describe_full(&mut raw, 4, "", "log.retention.bytes").unwrap().1, DYNAMIC_DEFAULT_BROKER);
    assert!(describe_full(&mut raw, 4, "", "num.partitions").is_none());

    // APPEND on the broker's list-valued key starts from the value that applies.
    let r = incremental(&mut raw, vec![(4, "", vec![op("log.cleanup.policy", APPEND, Some("compact"))])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    let cp = describe_full(&mut raw, 2, "dyn", "cleanup.policy").unwrap();
    assert_eq!((cp.0.as_str(), cp.1), ("delete,compact", DYNAMIC_DEFAULT_BROKER));
    let r = incremental(&mut raw, vec![(4, "", vec![op("batch.cache.max.bytes", SET, Some("1048576"))])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    assert_eq!(describe_full(&mut raw, 4, "0", "batch.cache.max.bytes").unwrap().0, "1048576");
    let shown = broker.admin_get("/v1/config");
    assert!(shown.contains("\"log.retention.bytes\": \"16384\"") && shown.contains("\"batch.cache.max.bytes\": \"1048576\""), "{shown}");

    // Refused, naming the key, and nothing changed.
    let refusals: Vec<(i16, String)> = [
        (4, "0", op("num.partitions", SET, Some("3"))),
        (4, "", op("log.retention.ms", SET, Some("soon"))),
        (4, "", op("no.such.config", SET, Some("1"))),
        (4, "7", op("log.retention.ms", SET, Some("1"))),
    ]
    .into_iter()
    .map(|(t, n, c)| incremental(&mut raw, vec![(t, n, vec![c])], false).remove(0))
    .collect();
    assert_eq!(refusals.iter().map(|r| r.0).collect::<Vec<_>>(), vec![40, 40, 40, 42], "{refusals:?}");
    assert!(refusals[0].1.contains("num.partitions cannot be changed at run time"), "{refusals:?}");
    assert!(refusals[1].1.starts_with("log.retention.ms: "), "{refusals:?}");
    assert!(refusals[2].1.contains("no.such.config"), "{refusals:?}");
    assert_eq!(describe_full(&mut raw, 2, "dyn", "retention.ms").unwrap().1, DEFAULT_SOURCE);

    // Durable: after kill -9 every layer is back, and DELETE on this broker's layer uncovers
    // the cluster-wide value.
    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    assert_eq!(describe_full(&mut raw, 4, "0", "log.retention.bytes"), Some(("16384".into(), DYNAMIC_BROKER, false, node_layers)));
    let r = incremental(&mut raw, vec![(4, "0", vec![op("log.retention.bytes", DELETE, None)])], false);
    assert_eq!(r[0].0, 0, "{r:?}");
    assert_eq!(describe_full(&mut raw, 2, "dyn", "retention.bytes"), Some(("8192".into(), DYNAMIC_DEFAULT_BROKER, false, layers)));
    // A topic created now starts from the altered defaults.
    create_topic(&broker.bootstrap(), "fresh", 1, &[]);
    assert_eq!(describe_full(&mut raw, 2, "fresh", "cleanup.policy").unwrap().0, "delete,compact");
}
