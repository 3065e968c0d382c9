//! DescribeConfigs (key 32): a topic's effective settings, the broker's, and a consumer group's
//! (Kafka 4.0's GROUP resource: the consumer-protocol session and heartbeat, which Spate sets for
//! all groups from the broker's settings), optionally filtered by key.
//!
//! Each value carries its source and, when asked (`include_synonyms`), its synonyms as Kafka
//! lists them: every layer that sets it, the one that applies first. For a topic config:
//! the topic's own override (TOPIC_CONFIG), then the broker config it defaults to
//! (`retention.ms` -> `log.retention.ms`) as changed at run time for this broker
//! (DYNAMIC_BROKER_CONFIG) or for all (DYNAMIC_DEFAULT_BROKER_CONFIG), as given at start
//! (STATIC_BROKER_CONFIG), and its default (DEFAULT_CONFIG). The broker resource named by this
//! broker's id describes every broker config; named "" it describes the cluster-wide dynamic
//! ones only, as Kafka's does.

use std::rc::Rc;
use std::sync::LazyLock;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::super::metadata::MetadataImage;
use super::super::shard::Shard;
use crate::config::{broker_synonym, dynamic_key, BrokerEntry, Config, ServeArgs, TopicConfig};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (1, 4);

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
/// Kafka's ConfigSource values.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
/// Kafka's ConfigType values.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

/// One described value: its name, value, source, whether it is read-only, and its synonyms
/// (name, value, source), the applying one first.
pub struct Entry {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub synonyms: Vec<(&'static str, String, i8)>,
}

/// The broker configs as they would be with no setting given: the DEFAULT_CONFIG synonyms.
static DEFAULTS: LazyLock<Vec<BrokerEntry>> = LazyLock::new(|| {
    Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() })
        .expect("the built-in defaults are valid")
        .broker_entries()
});

/// The layers under a broker config, the applying one first: dynamic for this broker, dynamic
/// for all, static, default.
fn broker_layers(config: &Config, image: &MetadataImage, e: &BrokerEntry) -> Vec<(&'static str, String, i8)> {
    let mut layers = Vec::new();
    if let Some(v) = image.broker.node.get(e.name) {
        layers.push((e.name, v.clone(), SOURCE_DYNAMIC_BROKER));
    }
    if let Some(v) = image.broker.cluster.get(e.name) {
        layers.push((e.name, v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER));
    }
    let default = DEFAULTS.iter().find(|d| d.name == e.name).map_or_else(|| e.value.clone(), |d| d.value.clone());
    if config.is_given(e) {
        layers.push((e.name, e.value.clone(), SOURCE_STATIC_BROKER));
        layers.push((e.name, default, SOURCE_DEFAULT));
    } else {
        // Settings computed at start (the listeners, the data directory) are their own default.
        layers.push((e.name, e.value.clone(), SOURCE_DEFAULT));
    }
    layers
}

/// Every broker config of this broker, with sources and synonyms.
fn broker_entries(config: &Config, image: &MetadataImage) -> Vec<Entry> {
    config
        .broker_entries()
        .iter()
        .map(|e| {
            let synonyms = broker_layers(config, image, e);
            let (_, value, source) = synonyms[0].clone();
            Entry { name: e.name, value, source, read_only: dynamic_key(e.name).is_none(), synonyms }
        })
        .collect()
}

/// A topic's configs (`config` resolved from `overrides`), with sources and synonyms.
pub fn topic_entries(
    shard: &Shard,
    image: &MetadataImage,
    config: &TopicConfig,
    overrides: &std::collections::BTreeMap<String, String>,
) -> Vec<Entry> {
    let broker = shard.config.broker_entries();
    config
        .entries()
        .into_iter()
        .map(|(name, value)| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(name) {
                synonyms.push((name, v.clone(), SOURCE_TOPIC));
            }
            if let Some(e) = broker_synonym(name).and_then(|b| broker.iter().find(|e| e.name == b)) {
                synonyms.extend(broker_layers(&shard.config, image, e));
            }
            let source = synonyms.first().map_or(SOURCE_DEFAULT, |s| s.2);
            Entry { name, value, source, read_only: false, synonyms }
        })
        .collect()
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = shard.image();
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let entries: Result<Vec<Entry>, (ResponseError, String)> = match res.resource_type {
            RESOURCE_TOPIC => match image.topic(&name) {
                Some(t) => Ok(topic_entries(shard, &image, &t.config, &t.overrides)),
                None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))),
            },
            RESOURCE_BROKER if name.is_empty() => Ok(image
                .broker
                .cluster
                .iter()
                .filter_map(|(k, v)| {
                    let key = dynamic_key(k)?;
                    let synonyms = vec![(key.name, v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER)];
                    Some(Entry { name: key.name, value: v.clone(), source: SOURCE_DYNAMIC_DEFAULT_BROKER, read_only: false, synonyms })
                })
                .collect()),
            RESOURCE_BROKER if name == shard.config.node_id.to_string() => Ok(broker_entries(&shard.config, &image)),
            RESOURCE_BROKER => Err((ResponseError::InvalidRequest, format!("this is broker {}, not {name:?}", shard.config.node_id))),
            RESOURCE_GROUP if name.is_empty() => Err((ResponseError::InvalidGroupId, "a group id is required".to_string())),
            // Any group id: the settings apply to every group, as Kafka's defaults do to a group
            // with no settings of its own. Read-only until IncrementalAlterConfigs exists.
            RESOURCE_GROUP => {
                let g = &shard.config.groups;
                let fixed = |name, value: String| Entry {
                    name,
                    synonyms: vec![(name, value.clone(), SOURCE_DEFAULT)],
                    value,
                    source: SOURCE_DEFAULT,
                    read_only: true,
                };
                Ok(vec![
                    fixed("consumer.session.timeout.ms", g.consumer_session_timeout_ms.to_string()),
                    fixed("consumer.heartbeat.interval.ms", g.consumer_heartbeat_interval_ms.to_string()),
                ])
            }
            other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
        };
        match entries {
            Ok(list) => {
                // Null (or, leniently, empty) asks for every key.
                let wanted = |k: &str| {
                    res.configuration_keys.as_ref().is_none_or(|keys| keys.is_empty() || keys.iter().any(|w| w.as_str() == k))
                };
                out.configs = list
                    .into_iter()
                    .filter(|e| wanted(e.name))
                    .map(|e| {
                        let config_type = if e.value.parse::<i64>().is_ok() {
                            TYPE_LONG
                        } else if e.value == "true" || e.value == "false" {
                            TYPE_BOOLEAN
                        } else {
                            TYPE_STRING
                        };
                        let synonyms = if req.include_synonyms {
                            e.synonyms
                                .into_iter()
                                .map(|(n, v, s)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(StrBytes::from_static_str(n))
                                        .with_value(Some(StrBytes::from_string(v)))
                                        .with_source(s)
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(e.name))
                            .with_value(Some(StrBytes::from_string(e.value)))
                            .with_read_only(e.read_only)
                            .with_config_source(e.source)
                            .with_synonyms(synonyms)
                            .with_config_type(if version >= 3 { config_type } else { 0 })
                    })
                    .collect();
            }
            Err((code, msg)) => {
                out.error_code = code.code();
                out.error_message = Some(StrBytes::from_string(msg));
            }
        }
        resp.results.push(out);
    }
    resp
}
