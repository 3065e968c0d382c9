//! One file per Kafka API, and the one table ([`SUPPORTED`]) that both dispatches requests and
//! generates the ApiVersions answer, so what is advertised is exactly what is implemented.
//!
//! Error split: bad input from a client (unknown topic, bad CRC, unsupported acks...) becomes a
//! Kafka error code in the response; a request that cannot be decoded, or an API or version not
//! in the table, closes the connection with a log line. Panics are kept for broken invariants.

pub mod acls;
pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod client_quotas;
pub mod authorize;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod describe_configs;
pub mod elect_leaders;
pub mod end_txn;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod reassignments;
pub mod sasl;
pub mod scram_credentials;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;

use super::session::Session;
use super::shard::{current, Shard};
use crate::storage::log::PartitionLog;
use crate::protocol::frame;

/// An implemented API and the versions of it Spate answers.
#[derive(Debug, Clone, Copy)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// Every implemented API. ApiVersions is generated from this table.
pub const SUPPORTED: &[ApiSpec] = &[
    ApiSpec { key: ApiKey::Produce, min: produce::VERSIONS.0, max: produce::VERSIONS.1 },
    ApiSpec { key: ApiKey::Fetch, min: fetch::VERSIONS.0, max: fetch::VERSIONS.1 },
    ApiSpec { key: ApiKey::ListOffsets, min: list_offsets::VERSIONS.0, max: list_offsets::VERSIONS.1 },
    ApiSpec { key: ApiKey::Metadata, min: metadata::VERSIONS.0, max: metadata::VERSIONS.1 },
    ApiSpec { key: ApiKey::OffsetCommit, min: offset_commit::VERSIONS.0, max: offset_commit::VERSIONS.1 },
    ApiSpec { key: ApiKey::OffsetFetch, min: offset_fetch::VERSIONS.0, max: offset_fetch::VERSIONS.1 },
    ApiSpec { key: ApiKey::FindCoordinator, min: find_coordinator::VERSIONS.0, max: find_coordinator::VERSIONS.1 },
    ApiSpec { key: ApiKey::JoinGroup, min: join_group::VERSIONS.0, max: join_group::VERSIONS.1 },
    ApiSpec { key: ApiKey::Heartbeat, min: heartbeat::VERSIONS.0, max: heartbeat::VERSIONS.1 },
    ApiSpec { key: ApiKey::LeaveGroup, min: leave_group::VERSIONS.0, max: leave_group::VERSIONS.1 },
    ApiSpec { key: ApiKey::SyncGroup, min: sync_group::VERSIONS.0, max: sync_group::VERSIONS.1 },
    ApiSpec { key: ApiKey::DescribeGroups, min: describe_groups::VERSIONS.0, max: describe_groups::VERSIONS.1 },
    ApiSpec { key: ApiKey::ListGroups, min: list_groups::VERSIONS.0, max: list_groups::VERSIONS.1 },
    ApiSpec { key: ApiKey::SaslHandshake, min: sasl::HANDSHAKE_VERSIONS.0, max: sasl::HANDSHAKE_VERSIONS.1 },
    ApiSpec { key: ApiKey::ApiVersions, min: api_versions::VERSIONS.0, max: api_versions::VERSIONS.1 },
    ApiSpec { key: ApiKey::CreateTopics, min: create_topics::VERSIONS.0, max: create_topics::VERSIONS.1 },
    ApiSpec { key: ApiKey::DeleteTopics, min: delete_topics::VERSIONS.0, max: delete_topics::VERSIONS.1 },
    ApiSpec { key: ApiKey::DeleteRecords, min: delete_records::VERSIONS.0, max: delete_records::VERSIONS.1 },
    ApiSpec { key: ApiKey::InitProducerId, min: init_producer_id::VERSIONS.0, max: init_producer_id::VERSIONS.1 },
    ApiSpec {
        key: ApiKey::OffsetForLeaderEpoch,
        min: offset_for_leader_epoch::VERSIONS.0,
        max: offset_for_leader_epoch::VERSIONS.1,
    },
    ApiSpec {
        key: ApiKey::AddPartitionsToTxn,
        min: add_partitions_to_txn::VERSIONS.0,
        max: add_partitions_to_txn::VERSIONS.1,
    },
    ApiSpec { key: ApiKey::AddOffsetsToTxn, min: add_offsets_to_txn::VERSIONS.0, max: add_offsets_to_txn::VERSIONS.1 },
    ApiSpec { key: ApiKey::EndTxn, min: end_txn::VERSIONS.0, max: end_txn::VERSIONS.1 },
    ApiSpec { key: ApiKey::WriteTxnMarkers, min: write_txn_markers::VERSIONS.0, max: write_txn_markers::VERSIONS.1 },
    ApiSpec { key: ApiKey::TxnOffsetCommit, min: txn_offset_commit::VERSIONS.0, max: txn_offset_commit::VERSIONS.1 },
    ApiSpec { key: ApiKey::DescribeAcls, min: acls::VERSIONS.0, max: acls::VERSIONS.1 },
    ApiSpec { key: ApiKey::CreateAcls, min: acls::VERSIONS.0, max: acls::VERSIONS.1 },
    ApiSpec { key: ApiKey::DeleteAcls, min: acls::VERSIONS.0, max: acls::VERSIONS.1 },
    ApiSpec { key: ApiKey::DescribeConfigs, min: describe_configs::VERSIONS.0, max: describe_configs::VERSIONS.1 },
    ApiSpec { key: ApiKey::AlterConfigs, min: alter_configs::VERSIONS.0, max: alter_configs::VERSIONS.1 },
    ApiSpec { key: ApiKey::DescribeLogDirs, min: describe_log_dirs::VERSIONS.0, max: describe_log_dirs::VERSIONS.1 },
    ApiSpec { key: ApiKey::SaslAuthenticate, min: sasl::AUTHENTICATE_VERSIONS.0, max: sasl::AUTHENTICATE_VERSIONS.1 },
    ApiSpec {
        key: ApiKey::CreatePartitions,
        min: create_partitions::VERSIONS.0,
        max: create_partitions::VERSIONS.1,
    },
    ApiSpec { key: ApiKey::DeleteGroups, min: delete_groups::VERSIONS.0, max: delete_groups::VERSIONS.1 },
    ApiSpec { key: ApiKey::ElectLeaders, min: elect_leaders::VERSIONS.0, max: elect_leaders::VERSIONS.1 },
    ApiSpec {
        key: ApiKey::IncrementalAlterConfigs,
        min: alter_configs::INCREMENTAL_VERSIONS.0,
        max: alter_configs::INCREMENTAL_VERSIONS.1,
    },
    ApiSpec {
        key: ApiKey::AlterPartitionReassignments,
        min: reassignments::ALTER_VERSIONS.0,
        max: reassignments::ALTER_VERSIONS.1,
    },
    ApiSpec {
        key: ApiKey::ListPartitionReassignments,
        min: reassignments::LIST_VERSIONS.0,
        max: reassignments::LIST_VERSIONS.1,
    },
    ApiSpec { key: ApiKey::OffsetDelete, min: offset_delete::VERSIONS.0, max: offset_delete::VERSIONS.1 },
    ApiSpec { key: ApiKey::DescribeClientQuotas, min: client_quotas::VERSIONS.0, max: client_quotas::VERSIONS.1 },
    ApiSpec { key: ApiKey::AlterClientQuotas, min: client_quotas::VERSIONS.0, max: client_quotas::VERSIONS.1 },
    ApiSpec {
        key: ApiKey::DescribeUserScramCredentials,
        min: scram_credentials::DESCRIBE_VERSIONS.0,
        max: scram_credentials::DESCRIBE_VERSIONS.1,
    },
    ApiSpec {
        key: ApiKey::AlterUserScramCredentials,
        min: scram_credentials::ALTER_VERSIONS.0,
        max: scram_credentials::ALTER_VERSIONS.1,
    },
    ApiSpec { key: ApiKey::DescribeQuorum, min: describe_quorum::VERSIONS.0, max: describe_quorum::VERSIONS.1 },
    ApiSpec { key: ApiKey::DescribeCluster, min: describe_cluster::VERSIONS.0, max: describe_cluster::VERSIONS.1 },
    ApiSpec {
        key: ApiKey::DescribeProducers,
        min: describe_producers::VERSIONS.0,
        max: describe_producers::VERSIONS.1,
    },
    ApiSpec {
        key: ApiKey::DescribeTransactions,
        min: describe_transactions::VERSIONS.0,
        max: describe_transactions::VERSIONS.1,
    },
    ApiSpec { key: ApiKey::ListTransactions, min: list_transactions::VERSIONS.0, max: list_transactions::VERSIONS.1 },
    ApiSpec {
        key: ApiKey::ConsumerGroupHeartbeat,
        min: consumer_group_heartbeat::VERSIONS.0,
        max: consumer_group_heartbeat::VERSIONS.1,
    },
    ApiSpec {
        key: ApiKey::ConsumerGroupDescribe,
        min: consumer_group_describe::VERSIONS.0,
        max: consumer_group_describe::VERSIONS.1,
    },
];

pub fn spec(key: ApiKey) -> Option<&'static ApiSpec> {
    SUPPORTED.iter().find(|s| s.key == key)
}

/// Handles one request and encodes its response frame; `Ok(None)` when no response is owed
/// (acks=0 produce); `Err` (a log line) when the connection must be closed.
pub async fn respond(
    shard: &Rc<Shard>,
    key: ApiKey,
    header: RequestHeader,
    body: Bytes,
    session: &Session,
) -> Result<Option<frame::Frame>, String> {
    let corr = header.correlation_id;
    let started = std::time::Instant::now();
    let request_bytes = body.len();
    let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let mut answer = dispatch(shard, key, &header, body, session).await;
    throttle(shard, session, key, &client_id, request_bytes, started, &mut answer);
    crate::metrics::request(key as i16, api_name(key), started.elapsed().as_secs_f64());
    match &answer {
        Err(_) => crate::metrics::error(api_name(key), "CONNECTION_CLOSED"),
        Ok(Some((resp, _))) => errors::each_code(resp, |code| crate::metrics::error(api_name(key), &errors::code_name(code))),
        Ok(None) => {}
    }
    match answer? {
        None => Ok(None),
        // Fetch record bytes go out by reference; everything else is encoded into one buffer.
        Some((ResponseKind::Fetch(resp), version)) => frame::encode_fetch_response(version, corr, &resp)
            .map(Some)
            .map_err(|e| format!("encoding {key:?} v{version} response failed: {e}")),
        Some((resp, version)) => frame::encode_response(key, version, corr, &resp)
            .map(|b| Some(b.into()))
            .map_err(|e| format!("encoding {key:?} v{version} response failed: {e}")),
    }
}

/// Client quotas (`server::quota`): charges the request to its client's meters on this core and,
/// over a quota, tells the client how long to wait (`throttle_time_ms` of Produce and Fetch) and
/// mutes the connection that long. Produce counts its request's bytes (acks=0 ones too), Fetch
/// its records' bytes, every request its handling time against `request_percentage`.
fn throttle(
    shard: &Shard,
    session: &Session,
    key: ApiKey,
    client_id: &str,
    request_bytes: usize,
    started: std::time::Instant,
    answer: &mut Result<Option<(ResponseKind, i16)>, String>,
) {
    use super::quota::{charge, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE};
    let image = shard.image();
    if image.quotas.is_empty() {
        return;
    }
    let user = session.user.borrow().clone();
    let now = crate::storage::now_ms();
    let mut ms = charge(&image.quotas, &user, client_id, REQUEST_PERCENTAGE, started.elapsed().as_secs_f64() * 1000.0, now);
    let kind = match (key, answer.as_ref().ok().and_then(|a| a.as_ref())) {
        (ApiKey::Produce, _) => Some((PRODUCER_BYTE_RATE, request_bytes as f64)),
        (ApiKey::Fetch, Some((ResponseKind::Fetch(f), _))) => {
            let bytes: usize = f.responses.iter().flat_map(|t| t.partitions.iter()).map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
            Some((CONSUMER_BYTE_RATE, bytes as f64))
        }
        _ => None,
    };
    if let Some((quota, amount)) = kind {
        ms = ms.max(charge(&image.quotas, &user, client_id, quota, amount, now));
    }
    if ms == 0 {
        return;
    }
    crate::metrics::throttled(api_name(key), ms);
    session.muted_until_ms.set(session.muted_until_ms.get().max(now + ms));
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    match answer {
        Ok(Some((ResponseKind::Produce(r), _))) => r.throttle_time_ms = ms,
        Ok(Some((ResponseKind::Fetch(r), _))) => r.throttle_time_ms = ms,
        _ => {}
    }
}

async fn dispatch(
    shard: &Rc<Shard>,
    key: ApiKey,
    header: &RequestHeader,
    mut body: Bytes,
    session: &Session,
) -> Result<Option<(ResponseKind, i16)>, String> {
    let peer = session.peer;
    let v = header.request_api_version;
    if key == ApiKey::ApiVersions {
        return Ok(Some(api_versions::handle(v, body, shard.config.transaction_version)));
    }
    let client = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    let Some(s) = spec(key) else {
        return Err(format!("client {client:?} sent {key:?} v{v}, which Spate does not implement"));
    };
    if v < s.min || v > s.max {
        return Err(format!("client {client:?} sent {key:?} v{v}; supported versions are {}..={}", s.min, s.max));
    }
    let malformed = |e: anyhow::Error| format!("malformed {key:?} v{v} request: {e}");
    if key == ApiKey::Produce {
        // The handler gets the body too, to append the batches in its bytes once the decoded
        // request has let go of them.
        let frame = body.clone();
        let mut req = ProduceRequest::decode(&mut body, v).map_err(malformed)?;
        drop(body);
        let withheld = if shard.config.authorizer { authorize::produce(shard, session, &mut req) } else { Default::default() };
        return Ok(produce::handle(shard, v, req, frame).await.map(|mut r| {
            authorize::produce_answer(withheld, &mut r);
            (ResponseKind::Produce(r), v)
        }));
    }
    let mut req = RequestKind::decode(key, &mut body, v).map_err(malformed)?;
    // The authorizer (see `authorize`): refused whole, or parts withheld and answered refused.
    let mut withheld = authorize::Withheld::default();
    let mut fetch_withheld = None;
    let mut all_topics = false;
    if shard.config.authorizer {
        if let RequestKind::Fetch(r) = &mut req {
            fetch_withheld = Some(authorize::fetch(shard, session, r));
        }
        if let RequestKind::Metadata(r) = &req {
            all_topics = r.topics.is_none();
        }
        if let Some(refused) = authorize::refuse(shard, session, v, &mut req, &mut withheld)? {
            return Ok(Some((refused, v)));
        }
    }
    let mut resp = match req {
        RequestKind::Fetch(r) => Some(ResponseKind::Fetch(fetch::handle(shard, v, r).await)),
        RequestKind::ListOffsets(r) => Some(ResponseKind::ListOffsets(list_offsets::handle(shard, v, r).await)),
        RequestKind::Metadata(r) => Some(ResponseKind::Metadata(metadata::handle(shard, v, r, session.protocol).await)),
        RequestKind::CreateTopics(r) => Some(ResponseKind::CreateTopics(create_topics::handle(shard, v, r).await)),
        RequestKind::DeleteTopics(r) => Some(ResponseKind::DeleteTopics(delete_topics::handle(shard, v, r).await)),
        RequestKind::CreatePartitions(r) => {
            Some(ResponseKind::CreatePartitions(create_partitions::handle(shard, v, r).await))
        }
        RequestKind::DescribeCluster(r) => Some(ResponseKind::DescribeCluster(describe_cluster::handle(shard, v, r, session.protocol).await)),
        RequestKind::ElectLeaders(r) => Some(ResponseKind::ElectLeaders(elect_leaders::handle(shard, v, r).await)),
        RequestKind::AlterPartitionReassignments(r) => {
            Some(ResponseKind::AlterPartitionReassignments(reassignments::alter(shard, v, r).await))
        }
        RequestKind::ListPartitionReassignments(r) => {
            Some(ResponseKind::ListPartitionReassignments(reassignments::list(shard, v, r).await))
        }
        RequestKind::DescribeLogDirs(r) => Some(ResponseKind::DescribeLogDirs(describe_log_dirs::handle(shard, v, r).await)),
        RequestKind::DescribeProducers(r) => Some(ResponseKind::DescribeProducers(describe_producers::handle(shard, v, r).await)),
        RequestKind::DescribeQuorum(r) => Some(ResponseKind::DescribeQuorum(describe_quorum::handle(shard, v, r).await)),
        RequestKind::AlterConfigs(r) => Some(ResponseKind::AlterConfigs(alter_configs::handle(shard, v, r).await)),
        RequestKind::IncrementalAlterConfigs(r) => {
            Some(ResponseKind::IncrementalAlterConfigs(alter_configs::handle_incremental(shard, v, r).await))
        }
        RequestKind::DeleteRecords(r) => Some(ResponseKind::DeleteRecords(delete_records::handle(shard, v, r).await)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            Some(ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(shard, v, r).await))
        }
        RequestKind::DescribeConfigs(r) => {
            Some(ResponseKind::DescribeConfigs(describe_configs::handle(shard, v, r).await))
        }
        RequestKind::OffsetCommit(r) => Some(ResponseKind::OffsetCommit(offset_commit::handle(shard, v, r).await)),
        RequestKind::OffsetFetch(r) => Some(ResponseKind::OffsetFetch(offset_fetch::handle(shard, v, r).await)),
        RequestKind::FindCoordinator(r) => {
            Some(ResponseKind::FindCoordinator(find_coordinator::handle(shard, v, r, session.protocol).await))
        }
        RequestKind::JoinGroup(r) => {
            Some(ResponseKind::JoinGroup(join_group::handle(shard, v, r, client.to_string(), client_host(peer)).await))
        }
        RequestKind::Heartbeat(r) => Some(ResponseKind::Heartbeat(heartbeat::handle(shard, v, r).await)),
        RequestKind::LeaveGroup(r) => Some(ResponseKind::LeaveGroup(leave_group::handle(shard, v, r).await)),
        RequestKind::SyncGroup(r) => Some(ResponseKind::SyncGroup(sync_group::handle(shard, v, r).await)),
        RequestKind::DescribeGroups(r) => Some(ResponseKind::DescribeGroups(describe_groups::handle(shard, v, r).await)),
        RequestKind::ListGroups(r) => Some(ResponseKind::ListGroups(list_groups::handle(shard, v, r).await)),
        RequestKind::InitProducerId(r) => {
            Some(ResponseKind::InitProducerId(init_producer_id::handle(shard, v, r).await))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            Some(ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(shard, v, r).await))
        }
        RequestKind::AddOffsetsToTxn(r) => Some(ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(shard, v, r).await)),
        RequestKind::EndTxn(r) => Some(ResponseKind::EndTxn(end_txn::handle(shard, v, r).await)),
        RequestKind::WriteTxnMarkers(r) => Some(ResponseKind::WriteTxnMarkers(write_txn_markers::handle(shard, v, r).await)),
        RequestKind::TxnOffsetCommit(r) => Some(ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(shard, v, r).await)),
        RequestKind::DescribeTransactions(r) => {
            Some(ResponseKind::DescribeTransactions(describe_transactions::handle(shard, v, r).await))
        }
        RequestKind::ListTransactions(r) => Some(ResponseKind::ListTransactions(list_transactions::handle(shard, v, r).await)),
        RequestKind::DeleteGroups(r) => Some(ResponseKind::DeleteGroups(delete_groups::handle(shard, v, r).await)),
        RequestKind::OffsetDelete(r) => Some(ResponseKind::OffsetDelete(offset_delete::handle(shard, v, r).await)),
        RequestKind::ConsumerGroupHeartbeat(r) => Some(ResponseKind::ConsumerGroupHeartbeat(
            consumer_group_heartbeat::handle(shard, v, r, client.to_string(), client_host(peer)).await,
        )),
        RequestKind::ConsumerGroupDescribe(r) => {
            Some(ResponseKind::ConsumerGroupDescribe(consumer_group_describe::handle(shard, v, r).await))
        }
        RequestKind::DescribeClientQuotas(r) => Some(ResponseKind::DescribeClientQuotas(client_quotas::describe(shard, v, r).await)),
        RequestKind::AlterClientQuotas(r) => Some(ResponseKind::AlterClientQuotas(client_quotas::alter(shard, v, r).await)),
        RequestKind::DescribeAcls(r) => Some(ResponseKind::DescribeAcls(acls::describe(shard, session, v, r).await)),
        RequestKind::CreateAcls(r) => Some(ResponseKind::CreateAcls(acls::create(shard, session, v, r).await)),
        RequestKind::DeleteAcls(r) => Some(ResponseKind::DeleteAcls(acls::delete(shard, session, v, r).await)),
        RequestKind::SaslHandshake(r) => Some(ResponseKind::SaslHandshake(sasl::handshake(shard, session, v, r))),
        RequestKind::SaslAuthenticate(r) => Some(ResponseKind::SaslAuthenticate(sasl::authenticate(shard, session, v, r))),
        RequestKind::DescribeUserScramCredentials(r) => {
            Some(ResponseKind::DescribeUserScramCredentials(scram_credentials::describe(shard, v, r).await))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            Some(ResponseKind::AlterUserScramCredentials(scram_credentials::alter(shard, v, r).await))
        }
        other => unreachable!("{key:?} is in SUPPORTED but has no handler arm: {other:?}"),
    };
    if shard.config.authorizer {
        if let Some(r) = resp.as_mut() {
            authorize::answer(withheld, r);
            authorize::filter_answer(shard, session, all_topics, r);
            if let (Some(w), ResponseKind::Fetch(f)) = (fetch_withheld, r) {
                authorize::fetch_answer(w, f);
            }
        }
    }
    Ok(resp.map(|r| (r, v)))
}

/// The API's name as Kafka spells it ("Produce", "Fetch", ...), for metrics labels.
pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::DescribeProducers => "DescribeProducers",
        ApiKey::DescribeQuorum => "DescribeQuorum",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::WriteTxnMarkers => "WriteTxnMarkers",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DescribeTransactions => "DescribeTransactions",
        ApiKey::ListTransactions => "ListTransactions",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        _ => "Other",
    }
}

/// The Kafka error code for a log error.
pub fn log_error_code(e: &crate::storage::log::LogError) -> crate::protocol::ResponseError {
    use crate::protocol::ResponseError as R;
    use crate::storage::log::LogError as E;
    match e {
        E::OffsetOutOfRange { .. } => R::OffsetOutOfRange,
        E::Storage(_) => R::KafkaStorageError,
        E::OutOfOrderSequence(_) => R::OutOfOrderSequenceNumber,
        E::InvalidProducerEpoch(_) => R::InvalidProducerEpoch,
        E::InvalidRecord(_) => R::InvalidRecord,
        E::FencedLeaderEpoch(_) => R::FencedLeaderEpoch,
        E::CoordinatorFenced(_) => R::TransactionCoordinatorFenced,
        E::VerificationStale(_) => R::NotEnoughReplicas,
    }
}

/// KIP-320: a request naming the leader epoch it knows (`known`; -1: not checked) against the
/// partition's `current` one. An older epoch is FENCED_LEADER_EPOCH (the client refreshes its
/// metadata), a newer one UNKNOWN_LEADER_EPOCH (this broker's metadata is behind).
pub fn leader_epoch_error(known: i32, current: i32) -> Option<crate::protocol::ResponseError> {
    use crate::protocol::ResponseError as R;
    match known {
        k if k < 0 || k == current => None,
        k if k < current => Some(R::FencedLeaderEpoch),
        _ => Some(R::UnknownLeaderEpoch),
    }
}

/// A client's host as Kafka reports it in DescribeGroups: `/` and the address.
pub fn client_host(peer: std::net::SocketAddr) -> String {
    format!("/{}", peer.ip())
}

/// Runs `f` on each of `cores` concurrently and returns the results in the same order.
pub async fn on_cores<R, F, Fut>(shard: &Rc<Shard>, jobs: Vec<(usize, F)>) -> Vec<R>
where
    R: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(core, f)| {
            let shard = shard.clone();
            crate::io::rt::spawn(async move { shard.invoke_on(core, f).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Groups items by the core that owns them, keeping each item's index in the original order.
pub fn group_by_core<T>(cores: usize, items: impl IntoIterator<Item = (usize, T)>) -> Vec<(usize, Vec<(usize, T)>)> {
    let mut groups: Vec<Vec<(usize, T)>> = (0..cores).map(|_| Vec::new()).collect();
    for (i, (core, item)) in items.into_iter().enumerate() {
        groups[core].push((i, item));
    }
    groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).collect()
}

/// Work for one partition of a request: its slot in the response, the partition, and the data
/// the per-partition function needs.
#[derive(Clone)]
pub struct PartWork<T> {
    pub slot: usize,
    pub topic: String,
    pub partition: i32,
    pub data: T,
}

/// Runs `f(log, data)` on the core that owns each partition, every partition concurrently, and
/// returns each result with its slot (in no particular order). `None` when the partition is not
/// on its owner (the topic was deleted meanwhile). Items for one partition start in the order
/// given, which is what keeps pipelined appends in order.
pub async fn on_partitions<T, R, F, Fut>(shard: &Rc<Shard>, work: Vec<PartWork<T>>, f: F) -> Vec<(usize, Option<R>)>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<PartitionLog>, T) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let owned = work.into_iter().map(|w| (shard.owner(&w.topic, w.partition), w));
    let jobs = group_by_core(shard.cores, owned)
        .into_iter()
        .map(|(core, items)| {
            let f = f.clone();
            (core, move || async move {
                let s = current();
                let tasks: Vec<_> = items
                    .into_iter()
                    .map(|(_, w)| {
                        let log = s.partition(&w.topic, w.partition);
                        let f = f.clone();
                        crate::io::rt::spawn(async move {
                            let r = match log {
                                Some(log) => Some(f(log, w.data).await),
                                None => None,
                            };
                            (w.slot, r)
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await);
                }
                out
            })
        })
        .collect();
    on_cores(shard, jobs).await.into_iter().flatten().collect()
}
