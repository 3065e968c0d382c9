//! ListTransactions (key 66): the transactional ids this broker coordinates, gathered from every
//! core, filtered by state names, producer ids, how long the ongoing transaction has run (v1+,
//! `duration_filter` ms) and a regular expression over the id (v2+). An unknown state name is
//! reported back in `unknown_state_filters`, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId};

use super::super::shard::{current, Shard};
use super::on_cores;
use crate::coordinator::transaction::TxnState;
use crate::protocol::{ResponseError, StrBytes};
use crate::storage::now_ms;

pub const VERSIONS: (i16, i16) = (0, 2);

const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let mut resp = ListTransactionsResponse::default();
    let pattern = match req.transactional_id_pattern.as_ref().filter(|p| version >= 2 && !p.is_empty()) {
        None => None,
        Some(p) => match regex::Regex::new(&format!("^(?:{})$", p.as_str())) {
            Ok(r) => Some(r),
            Err(_) => return resp.with_error_code(ResponseError::InvalidRegularExpression.code()),
        },
    };
    let mut states = Vec::new();
    for s in &req.state_filters {
        match STATES.iter().find(|st| st.name() == s.as_str()) {
            Some(st) => states.push(*st),
            None => resp.unknown_state_filters.push(s.clone()),
        }
    }
    let jobs = (0..shard.cores).map(|core| (core, || async { current().transactions.list() })).collect();
    let now = now_ms();
    for d in on_cores(shard, jobs).await.into_iter().flatten() {
        let m = &d.meta;
        if !req.state_filters.is_empty() && !states.contains(&m.state) {
            continue;
        }
        if !req.producer_id_filters.is_empty() && !req.producer_id_filters.contains(&ProducerId(m.producer_id)) {
            continue;
        }
        if version >= 1 && req.duration_filter >= 0 && (m.start_ms < 0 || now - m.start_ms < req.duration_filter) {
            continue;
        }
        if pattern.as_ref().is_some_and(|r| !r.is_match(&d.transactional_id)) {
            continue;
        }
        resp.transaction_states.push(
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(d.transactional_id.clone())))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name())),
        );
    }
    resp
}
