//! DescribeClientQuotas (key 48) and AlterClientQuotas (key 49): the client quotas
//! (`server::quota`) as `kafka-configs --entity-type users|clients` and the Admin clients manage
//! them. Entities are `user` and `client-id` parts, each named or the default (a null name);
//! the keys are `producer_byte_rate`, `consumer_byte_rate` and `request_percentage` (positive
//! numbers). Changes are durable (core 0) before the answer. Refusals, as Kafka: an unknown
//! entity type or key, a value that is not positive, a part given twice: INVALID_REQUEST for
//! that entry (the other entries go on); an unknown match type in a filter: INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::messages::alter_client_quotas_response::{EntityData as AlterEntity, EntryData as AlterEntry};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::super::quota::{Entity, QuotaChange, CLIENT_ID, KEYS, USER};
use super::super::shard::{current, Shard};
use crate::protocol::{code, ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 1);

pub async fn describe(shard: &Rc<Shard>, _version: i16, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    let mut resp = DescribeClientQuotasResponse::default();
    let mut filter = Vec::new();
    for c in &req.components {
        if c.entity_type.as_str() != USER && c.entity_type.as_str() != CLIENT_ID {
            resp.error_code = code(ResponseError::InvalidRequest);
            resp.error_message = Some(StrBytes::from_string(format!("unknown entity type {:?}", c.entity_type.as_str())));
            return resp;
        }
        if !(0..=2).contains(&c.match_type) {
            resp.error_code = code(ResponseError::InvalidRequest);
            resp.error_message = Some(StrBytes::from_string(format!("unknown match type {}", c.match_type)));
            return resp;
        }
        filter.push((c.entity_type.to_string(), c.match_type, c._match.as_ref().map(|m| m.to_string())));
    }
    let image = shard.image();
    resp.entries = Some(
        image
            .quotas
            .describe(&filter, req.strict)
            .into_iter()
            .map(|(e, keys)| {
                EntryData::default()
                    .with_entity(
                        e.parts()
                            .into_iter()
                            .map(|(t, n)| EntityData::default().with_entity_type(StrBytes::from_static_str(t)).with_entity_name(n.map(StrBytes::from_string)))
                            .collect(),
                    )
                    .with_values(keys.iter().map(|(k, v)| ValueData::default().with_key(StrBytes::from_string(k.clone())).with_value(*v)).collect())
            })
            .collect(),
    );
    resp
}

pub async fn alter(shard: &Rc<Shard>, _version: i16, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    let mut resp = AlterClientQuotasResponse::default();
    let mut changes = Vec::new();
    let mut slots = Vec::new();
    for entry in &req.entries {
        let mut out = AlterEntry::default().with_entity(
            entry
                .entity
                .iter()
                .map(|e| AlterEntity::default().with_entity_type(e.entity_type.clone()).with_entity_name(e.entity_name.clone()))
                .collect(),
        );
        let checked = Entity::from_parts(entry.entity.iter().map(|e| (e.entity_type.as_str(), e.entity_name.as_ref().map(|n| n.as_str()))))
            .and_then(|entity| {
                entry
                    .ops
                    .iter()
                    .map(|op| {
                        let key = KEYS.iter().find(|k| **k == op.key.as_str()).ok_or_else(|| format!("unknown quota key {:?} ({})", op.key.as_str(), KEYS.join(", ")))?;
                        if !op.remove && !(op.value.is_finite() && op.value > 0.0) {
                            return Err(format!("{key} must be a positive number, not {}", op.value));
                        }
                        Ok(QuotaChange { entity: entity.clone(), key: key.to_string(), value: (!op.remove).then_some(op.value) })
                    })
                    .collect::<Result<Vec<_>, String>>()
            });
        match checked {
            Ok(c) => {
                slots.push(resp.entries.len());
                changes.extend(c);
            }
            Err(m) => {
                out.error_code = code(ResponseError::InvalidRequest);
                out.error_message = Some(StrBytes::from_string(m));
            }
        }
        resp.entries.push(out);
    }
    if !changes.is_empty() && !req.validate_only {
        if let Err((e, m)) = shard.invoke_on(0, move || async move { current().alter_quotas(changes).await }).await {
            for slot in slots {
                resp.entries[slot].error_code = code(e);
                resp.entries[slot].error_message = Some(StrBytes::from_string(m.clone()));
            }
        }
    }
    resp
}
