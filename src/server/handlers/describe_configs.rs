//! DescribeConfigs (key 32): a topic's effective settings (its overrides marked as topic configs,
//! the rest as defaults), the broker's settings, and a consumer group's (Kafka 4.0's GROUP
//! resource: the consumer-protocol session and heartbeat, which Spate sets for all groups from
//! the broker's settings), optionally filtered by key.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::super::shard::Shard;
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (1, 4);

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
/// Kafka's ConfigSource values.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
/// Kafka's ConfigType values.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = shard.image();
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let entries: Result<Vec<(String, String, i8, bool)>, (ResponseError, String)> = match res.resource_type {
            RESOURCE_TOPIC => match image.topic(&name) {
                Some(t) => Ok(t
                    .config
                    .entries()
                    .into_iter()
                    .map(|(k, v)| {
                        let src = if t.overrides.contains_key(k) { SOURCE_TOPIC } else { SOURCE_DEFAULT };
                        (k.to_string(), v, src, false)
                    })
                    .collect()),
                None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))),
            },
            RESOURCE_BROKER if name.is_empty() || name == shard.config.node_id.to_string() => Ok(shard
                .config
                .broker_entries()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v, SOURCE_STATIC_BROKER, true))
                .collect()),
            RESOURCE_BROKER => Err((ResponseError::InvalidRequest, format!("this is broker {}, not {name:?}", shard.config.node_id))),
            RESOURCE_GROUP if name.is_empty() => Err((ResponseError::InvalidGroupId, "a group id is required".to_string())),
            // Any group id: the settings apply to every group, as Kafka's defaults do to a group
            // with no settings of its own. Read-only until IncrementalAlterConfigs exists.
            RESOURCE_GROUP => {
                let g = &shard.config.groups;
                Ok(vec![
                    ("consumer.session.timeout.ms".to_string(), g.consumer_session_timeout_ms.to_string(), SOURCE_DEFAULT, true),
                    ("consumer.heartbeat.interval.ms".to_string(), g.consumer_heartbeat_interval_ms.to_string(), SOURCE_DEFAULT, true),
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
                    .filter(|(k, ..)| wanted(k))
                    .map(|(k, v, source, read_only)| {
                        let config_type = if v.parse::<i64>().is_ok() {
                            TYPE_LONG
                        } else if v == "true" || v == "false" {
                            TYPE_BOOLEAN
                        } else {
                            TYPE_STRING
                        };
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_string(k))
                            .with_value(Some(StrBytes::from_string(v)))
                            .with_read_only(read_only)
                            .with_config_source(source)
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
