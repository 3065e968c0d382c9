//! DeleteTopics (key 20): by name (all versions) or by topic id (v6+). Core 0 removes the topic
//! from the metadata image on every core, then deletes its files.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::super::shard::{current, Shard};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (1, 6);

pub async fn handle(shard: &Rc<Shard>, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let image = shard.image();
    // (name if known, id as asked, immediate error)
    let asked: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => (Some(n.0.to_string()), Uuid::nil()),
                None => (image.topic_by_id(&t.topic_id).map(|m| m.name.clone()), t.topic_id),
            })
            .collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let names: Vec<String> = asked.iter().filter_map(|(n, _)| n.clone()).collect();
    let mut outcomes = if names.is_empty() {
        Vec::new()
    } else {
        shard.invoke_on(0, move || async move { current().delete_topics(names).await }).await
    }
    .into_iter();
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in asked {
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id);
        match name {
            None => r.error_code = ResponseError::UnknownTopicId.code(),
            Some(_) => match outcomes.next().expect("one outcome per named topic") {
                Ok(deleted_id) if version >= 6 => r.topic_id = deleted_id,
                Ok(_) => {}
                Err((code, msg)) => {
                    r.error_code = code.code();
                    if version >= 5 {
                        r.error_message = Some(StrBytes::from_string(msg));
                    }
                }
            },
        }
        resp.responses.push(r);
    }
    resp
}
