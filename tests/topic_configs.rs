//! Topic settings changed at run time: IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT)
//! and AlterConfigs, validated as at creation, durable across `kill -9`, reported by
//! DescribeConfigs, and applied to the partitions already open (retention deletes old segments
//! after an alter, with no restart).

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
            (4, "0", vec![op("log.retention.ms", SET, Some("1"))]),
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
