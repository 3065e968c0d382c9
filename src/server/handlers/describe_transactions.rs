//! DescribeTransactions (key 65): each transactional id's state at its coordinator (this broker
//! must coordinate it: NOT_COORDINATOR otherwise, TRANSACTIONAL_ID_NOT_FOUND for an id it does
//! not know), as `kafka-transactions describe` and Admin.describeTransactions show it.

use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName};

use super::super::shard::{current, Shard};
use super::super::transactions::{coordinator_elsewhere, txn_core};
use crate::protocol::{ResponseError, StrBytes};

pub const VERSIONS: (i16, i16) = (0, 0);

pub async fn handle(shard: &Rc<Shard>, _version: i16, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let mut resp = DescribeTransactionsResponse::default();
    for id in req.transactional_ids {
        let name = id.0.to_string();
        let mut state = TransactionState::default().with_transactional_id(id).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
        if let Some(code) = coordinator_elsewhere(shard, &name) {
            resp.transaction_states.push(state.with_error_code(code));
            continue;
        }
        let found = {
            let name = name.clone();
            shard.invoke_on(txn_core(&name, shard.cores), move || async move { current().transactions.describe(&name) }).await
        };
        let Some(d) = found else {
            resp.transaction_states.push(state.with_error_code(ResponseError::TransactionalIdNotFound.code()));
            continue;
        };
        let m = d.meta;
        let mut topics: Vec<TopicData> = Vec::new();
        for (t, p) in &m.partitions {
            match topics.last_mut() {
                Some(last) if last.topic.0.as_str() == t => last.partitions.push(*p),
                _ => topics.push(TopicData::default().with_topic(TopicName(StrBytes::from_string(t.clone()))).with_partitions(vec![*p])),
            }
        }
        state = state
            .with_transaction_state(StrBytes::from_static_str(m.state.name()))
            .with_transaction_timeout_ms(m.timeout_ms)
            .with_transaction_start_time_ms(m.start_ms)
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.producer_epoch)
            .with_topics(topics);
        resp.transaction_states.push(state);
    }
    resp
}
