//! IncrementalAlterConfigs (key 44) and AlterConfigs (key 33) for topics and for the broker.
//!
//! Topics: the new overrides are checked with the same rules as at CreateTopics (INVALID_CONFIG
//! with a message naming the key), then core 0 stores them durably in the topic's `topic.toml`
//! and publishes them, and every partition of the topic takes them at once (retention, flush
//! policy, segment size for the next roll, timestamps for the next append).
//!
//! The broker (Kafka's dynamic broker configs): the resource named "" changes the value for
//! every broker (DYNAMIC_DEFAULT_BROKER_CONFIG), the one named by this broker's id for this one
//! (DYNAMIC_BROKER_CONFIG, which wins). The keys that may change are
//! [`crate::config::DYNAMIC_BROKER_KEYS`]: the broker-wide defaults of the topic configs
//! (`log.retention.ms`, `log.flush.interval.messages`, ...) and the batch cache; any other broker
//! config is INVALID_CONFIG naming it. Core 0 stores them in `broker-configs.toml` and
//! publishes them, and every partition whose topic does not override the key takes the new value
//! at once (see `Shard::alter_broker_configs`).
//!
//! Incremental: SET, DELETE (back to the layer below), APPEND and SUBTRACT (for the list-valued
//! keys, `cleanup.policy` and `log.cleanup.policy`). AlterConfigs replaces the resource's whole
//! set, as Kafka's does. `validate_only` checks without changing. As in Kafka, a key named twice
//! in one resource, or a null value where one is needed, is INVALID_REQUEST.
//!
//! Not altered: `__consumer_offsets`, whose records are the groups' state (INVALID_REQUEST:
//! Spate keeps it compacted).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::super::groups::is_internal;
use super::super::metadata::MetadataImage;
use super::super::shard::{current, Shard};
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::config::{DynamicBrokerConfig, TopicConfig};
use crate::protocol::{ResponseError, StrBytes};

pub const INCREMENTAL_VERSIONS: (i16, i16) = (0, 1);
pub const VERSIONS: (i16, i16) = (0, 2);

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Keys whose value is a comma-separated list (APPEND and SUBTRACT apply to them only).
const LIST_KEYS: &[&str] = &["cleanup.policy", "log.cleanup.policy"];

/// One resource's outcome: (error code, message).
type Outcome = (i16, Option<String>);
type Refusal = (ResponseError, String);

/// What a resource names.
#[derive(Debug, Clone)]
enum Target {
    Topic(String),
    /// The broker configs of every broker (resource name "").
    BrokerCluster,
    /// This broker's own (resource name: its id).
    BrokerNode,
}

/// What a request asks for one resource, before it is applied: the resource and its new set of
/// configs (the topic's overrides, or the broker layer's values), or why it is refused.
type Change = Result<(Target, BTreeMap<String, String>), Refusal>;

impl Target {
    /// The configs this resource sets now, and each key's value as it applies now (for APPEND).
    fn current(&self, shard: &Shard, image: &MetadataImage) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        match self {
            Target::Topic(name) => {
                let t = image.topic(name).expect("checked by target()");
                let effective = t.config.entries().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                (t.overrides.clone(), effective)
            }
            Target::BrokerCluster | Target::BrokerNode => {
                let set = if matches!(self, Target::BrokerNode) { &image.broker.node } else { &image.broker.cluster };
                let effective =
                    shard.config.effective_broker_entries(&image.broker).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                (set.clone(), effective)
            }
        }
    }
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
            let target = target(shard, &image, r.resource_type, r.resource_name.as_str(), &names)?;
            let mut keys: Vec<&str> = r.configs.iter().map(|c| c.name.as_str()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err((ResponseError::InvalidRequest, "Error due to duplicate config keys".to_string()));
            }
            let (mut set, effective) = target.current(shard, &image);
            for c in &r.configs {
                apply_op(&mut set, &target, c.name.as_str(), c.config_operation, c.value.as_ref().map(|v| v.as_str()), &effective)?;
            }
            Ok((target, set))
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
    let image = shard.image();
    let names: Vec<(i8, String)> = req.resources.iter().map(|r| (r.resource_type, r.resource_name.to_string())).collect();
    let changes = req
        .resources
        .iter()
        .map(|r| {
            let target = target(shard, &image, r.resource_type, r.resource_name.as_str(), &names)?;
            let set = r
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => Ok((c.name.to_string(), v.to_string())),
                    None => Err((ResponseError::InvalidRequest, format!("Null value not supported for : {}", c.name.as_str()))),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            if let Target::Topic(_) = target {
                if let Some(k) = set.keys().find(|k| !crate::config::TOPIC_CONFIG_KEYS.contains(&k.as_str())) {
                    return Err((ResponseError::InvalidConfig, format!("unknown topic config {k:?}")));
                }
            }
            Ok((target, set))
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

/// What a resource names, if it may be altered at all: a topic that exists, or this broker (or
/// every broker), named once in the request.
fn target(shard: &Shard, image: &MetadataImage, resource_type: i8, name: &str, all: &[(i8, String)]) -> Result<Target, Refusal> {
    if all.iter().filter(|(t, n)| *t == resource_type && n == name).count() > 1 {
        return Err((ResponseError::InvalidRequest, format!("resource {name:?} appears more than once in the request")));
    }
    match resource_type {
        RESOURCE_TOPIC if is_internal(name) => {
            Err((ResponseError::InvalidRequest, format!("{name} holds the coordinators' state; its configs are fixed")))
        }
        RESOURCE_TOPIC if image.topic(name).is_some() => Ok(Target::Topic(name.to_string())),
        RESOURCE_TOPIC => Err((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))),
        RESOURCE_BROKER if name.is_empty() => Ok(Target::BrokerCluster),
        RESOURCE_BROKER if name == shard.config.node_id.to_string() => Ok(Target::BrokerNode),
        RESOURCE_BROKER => Err((ResponseError::InvalidRequest, format!("this is broker {}, not {name:?}", shard.config.node_id))),
        t => Err((ResponseError::InvalidRequest, format!("resource type {t} cannot be altered"))),
    }
}

/// Applies one incremental operation to a resource's set of configs.
fn apply_op(
    set: &mut BTreeMap<String, String>,
    target: &Target,
    key: &str,
    op: i8,
    value: Option<&str>,
    effective: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let invalid = |m: String| (ResponseError::InvalidConfig, m);
    // Broker keys are checked with their values, once the whole layer is known.
    if matches!(target, Target::Topic(_)) && !crate::config::TOPIC_CONFIG_KEYS.contains(&key) {
        return Err(invalid(format!("unknown topic config {key:?}")));
    }
    if op != OP_DELETE && value.is_none() {
        return Err((ResponseError::InvalidRequest, format!("Null value not supported for : {key}")));
    }
    match op {
        OP_SET => {
            let v = value.expect("checked above");
            set.insert(key.to_string(), v.to_string());
        }
        OP_DELETE => {
            set.remove(key);
        }
        OP_APPEND | OP_SUBTRACT => {
            if !LIST_KEYS.contains(&key) {
                return Err(invalid(format!("{key}: APPEND and SUBTRACT apply only to list configs ({})", LIST_KEYS.join(", "))));
            }
            let v = value.expect("checked above");
            let current = set.get(key).or_else(|| effective.get(key)).cloned().unwrap_or_default();
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
            set.insert(key.to_string(), items.join(","));
        }
        other => return Err((ResponseError::InvalidRequest, format!("{key}: unknown config operation {other}"))),
    }
    Ok(())
}

/// Checks a change against the configs that apply now (INVALID_CONFIG naming the key).
fn check(shard: &Shard, image: &MetadataImage, target: &Target, set: &BTreeMap<String, String>) -> Result<(), Refusal> {
    let invalid = |m: String| (ResponseError::InvalidConfig, m);
    match target {
        Target::Topic(_) => TopicConfig::resolve(&shard.topic_defaults(), set).map(drop).map_err(invalid),
        Target::BrokerCluster | Target::BrokerNode => {
            let mut broker = image.broker.clone();
            *layer(&mut broker, target) = set.clone();
            shard.config.topic_defaults_with(&broker).map(drop).map_err(invalid)
        }
    }
}

fn layer<'a>(broker: &'a mut DynamicBrokerConfig, target: &Target) -> &'a mut BTreeMap<String, String> {
    match target {
        Target::BrokerNode => &mut broker.node,
        _ => &mut broker.cluster,
    }
}

/// Validates every change, then (unless `validate_only`) applies the valid ones on core 0.
async fn apply(shard: &Rc<Shard>, changes: Vec<Change>, validate_only: bool) -> Vec<Outcome> {
    let image = shard.image();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(changes.len());
    let mut topics: Vec<(usize, String, BTreeMap<String, String>)> = Vec::new();
    let mut brokers: Vec<(usize, Target, BTreeMap<String, String>)> = Vec::new();
    for (i, c) in changes.into_iter().enumerate() {
        match c.and_then(|(target, set)| check(shard, &image, &target, &set).map(|()| (target, set))) {
            Ok((target, set)) => {
                outcomes.push((0, None));
                match target {
                    _ if validate_only => {}
                    Target::Topic(name) => topics.push((i, name, set)),
                    broker => brokers.push((i, broker, set)),
                }
            }
            Err((e, m)) => {
                tracing::debug!("alter configs refused: {m}");
                outcomes.push((e.code(), Some(m)));
            }
        }
    }
    if !topics.is_empty() {
        let slots: Vec<usize> = topics.iter().map(|t| t.0).collect();
        let specs: Vec<_> = topics.into_iter().map(|(_, n, o)| (n, o)).collect();
        let results = shard.invoke_on(0, move || async move { current().alter_topic_configs(specs).await }).await;
        for (slot, r) in slots.into_iter().zip(results) {
            if let Err((e, m)) = r {
                outcomes[slot] = (e.code(), Some(m));
            }
        }
    }
    for (slot, target, set) in brokers {
        let r = shard
            .invoke_on(0, move || async move { current().alter_broker_configs(move |b| *layer(b, &target) = set).await })
            .await;
        if let Err((e, m)) = r {
            outcomes[slot] = (e.code(), Some(m));
        }
    }
    outcomes
}
