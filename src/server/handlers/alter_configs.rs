//! IncrementalAlterConfigs (key 44) and AlterConfigs (key 33) for topics: the new overrides are
//! checked with the same rules as at CreateTopics (INVALID_CONFIG with a message naming the key),
//! then core 0 stores them durably in the topic's `topic.toml` and publishes them, and every
//! partition of the topic takes them at once (retention, flush policy, segment size for the next
//! roll, timestamps for the next append). Incremental: SET, DELETE (back to the broker default),
//! APPEND and SUBTRACT (for the one list-valued key, `cleanup.policy`). AlterConfigs replaces the
//! topic's whole set of overrides, as Kafka's does. `validate_only` checks without changing. As
//! in Kafka, a key named twice in one resource, or a null value where one is needed, is
//! INVALID_REQUEST.
//!
//! Not yet: broker configs at run time (INVALID_REQUEST, saying so), and `__consumer_offsets`,
//! whose records are the groups' state (INVALID_REQUEST: Spate keeps it compacted).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::super::groups::OFFSETS_TOPIC;
use super::super::shard::{current, Shard};
use crate::config::TopicConfig;
use crate::protocol::{ResponseError, StrBytes};

pub const INCREMENTAL_VERSIONS: (i16, i16) = (0, 1);
pub const VERSIONS: (i16, i16) = (0, 2);

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic keys whose value is a comma-separated list (APPEND and SUBTRACT apply to them only).
const LIST_KEYS: &[&str] = &["cleanup.policy"];

/// One resource's outcome: (error code, message).
type Outcome = (i16, Option<String>);

/// What a request asks for one resource, before it is applied.
struct Change {
    name: String,
    /// The topic's new overrides, or the error that refuses them.
    new: Result<BTreeMap<String, String>, (ResponseError, String)>,
}

pub async fn handle_incremental(
    shard: &Rc<Shard>,
    _version: i16,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let image = shard.image();
    let names: Vec<(i8, String)> = req.resources.iter().map(|r| (r.resource_type, r.resource_name.to_string())).collect();
    let changes = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let new = check_resource(r.resource_type, &name, &names).and_then(|()| {
                let mut keys: Vec<&str> = r.configs.iter().map(|c| c.name.as_str()).collect();
                keys.sort_unstable();
                if keys.windows(2).any(|w| w[0] == w[1]) {
                    return Err((ResponseError::InvalidRequest, "Error due to duplicate config keys".to_string()));
                }
                let topic = image.topic(&name).expect("checked");
                let mut o = topic.overrides.clone();
                for c in &r.configs {
                    apply_op(&mut o, c.name.as_str(), c.config_operation, c.value.as_ref().map(|v| v.as_str()), &topic.config)?;
                }
                Ok(o)
            });
            Change { name, new }
        })
        .collect();
    let outcomes = apply(shard, changes, req.validate_only).await;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for (r, (code, msg)) in req.resources.iter().zip(outcomes) {
        resp.responses.push(
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(msg.map(StrBytes::from_string)),
        );
    }
    resp
}

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let names: Vec<(i8, String)> = req.resources.iter().map(|r| (r.resource_type, r.resource_name.to_string())).collect();
    let changes = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let new = check_resource(r.resource_type, &name, &names).and_then(|()| {
                r.configs
                    .iter()
                    .map(|c| match &c.value {
                        Some(v) => Ok((c.name.to_string(), v.to_string())),
                        None => Err((ResponseError::InvalidRequest, "Null value not supported for topic configs".to_string())),
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()
            });
            Change { name, new }
        })
        .collect();
    let outcomes = apply(shard, changes, req.validate_only).await;
    let mut resp = AlterConfigsResponse::default();
    for (r, (code, msg)) in req.resources.iter().zip(outcomes) {
        resp.responses.push(
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(msg.map(StrBytes::from_string)),
        );
    }
    resp
}

/// Whether a resource may be altered at all: a topic that exists, named once in the request.
fn check_resource(resource_type: i8, name: &str, all: &[(i8, String)]) -> Result<(), (ResponseError, String)> {
    if all.iter().filter(|(t, n)| *t == resource_type && n == name).count() > 1 {
        return Err((ResponseError::InvalidRequest, format!("resource {name:?} appears more than once in the request")));
    }
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err((ResponseError::InvalidRequest, "changing broker configs at run time is not supported by Spate yet".into()))
        }
        t => return Err((ResponseError::InvalidRequest, format!("resource type {t} cannot be altered"))),
    }
    if name == OFFSETS_TOPIC {
        return Err((ResponseError::InvalidRequest, format!("{OFFSETS_TOPIC} holds the groups' state; its configs are fixed")));
    }
    match current().image().topic(name) {
        Some(_) => Ok(()),
        None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))),
    }
}

/// Applies one incremental operation to a topic's overrides.
fn apply_op(
    o: &mut BTreeMap<String, String>,
    key: &str,
    op: i8,
    value: Option<&str>,
    effective: &TopicConfig,
) -> Result<(), (ResponseError, String)> {
    let invalid = |m: String| (ResponseError::InvalidConfig, m);
    if !crate::config::TOPIC_CONFIG_KEYS.contains(&key) {
        return Err(invalid(format!("unknown topic config {key:?}")));
    }
    if op != OP_DELETE && value.is_none() {
        return Err((ResponseError::InvalidRequest, format!("Null value not supported for : {key}")));
    }
    match op {
        OP_SET => {
            let v = value.expect("checked above");
            o.insert(key.to_string(), v.to_string());
        }
        OP_DELETE => {
            o.remove(key);
        }
        OP_APPEND | OP_SUBTRACT => {
            if !LIST_KEYS.contains(&key) {
                return Err(invalid(format!("{key}: APPEND and SUBTRACT apply only to list configs ({})", LIST_KEYS.join(", "))));
            }
            let v = value.expect("checked above");
            let current = o.get(key).cloned().unwrap_or_else(|| effective_value(effective, key));
            let mut items: Vec<String> = current.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if op == OP_APPEND {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                } else {
                    items.retain(|i| i != item);
                }
            }
            if items.is_empty() {
                return Err(invalid(format!("{key}: the list would be empty")));
            }
            o.insert(key.to_string(), items.join(","));
        }
        other => return Err((ResponseError::InvalidRequest, format!("{key}: unknown config operation {other}"))),
    }
    Ok(())
}

fn effective_value(c: &TopicConfig, key: &str) -> String {
    c.entries().into_iter().find(|(k, _)| *k == key).map(|(_, v)| v).unwrap_or_default()
}

/// Validates every change, then (unless `validate_only`) applies the valid ones on core 0.
async fn apply(shard: &Rc<Shard>, changes: Vec<Change>, validate_only: bool) -> Vec<Outcome> {
    let defaults = shard.config.topic_defaults.clone();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(changes.len());
    let mut todo: Vec<(usize, String, BTreeMap<String, String>, TopicConfig)> = Vec::new();
    for (i, c) in changes.into_iter().enumerate() {
        let checked = c.new.and_then(|o| {
            let config = TopicConfig::resolve(&defaults, &o).map_err(|m| (ResponseError::InvalidConfig, m))?;
            Ok((o, config))
        });
        match checked {
            Ok((o, config)) => {
                outcomes.push((0, None));
                if !validate_only {
                    todo.push((i, c.name, o, config));
                }
            }
            Err((e, m)) => {
                tracing::debug!(resource = %c.name, "alter configs refused: {m}");
                outcomes.push((e.code(), Some(m)));
            }
        }
    }
    if !todo.is_empty() {
        let slots: Vec<usize> = todo.iter().map(|t| t.0).collect();
        let specs: Vec<_> = todo.into_iter().map(|(_, n, o, c)| (n, o, c)).collect();
        let results = shard.invoke_on(0, move || async move { current().alter_topic_configs(specs).await }).await;
        for (slot, r) in slots.into_iter().zip(results) {
            if let Err((e, m)) = r {
                outcomes[slot] = (e.code(), Some(m));
            }
        }
    }
    outcomes
}
