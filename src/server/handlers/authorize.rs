//! What each API asks the authorizer, by Kafka's table (`KafkaApis`), applied around the
//! handlers when `authorizer = "acl"`:
//!
//! - [`refuse`]: a request the principal may not make at all is answered here, with the error
//!   Kafka gives (GROUP_, TRANSACTIONAL_ID_, CLUSTER_AUTHORIZATION_FAILED), and never reaches its
//!   handler;
//! - [`Withheld`]: the topics (or groups, coordinator keys) of a request the principal may not
//!   touch are taken out before the handler runs and put back in its answer with
//!   TOPIC_AUTHORIZATION_FAILED (or the resource's code), so the rest of the request is served;
//! - [`filter_answer`]: what a principal may not describe is left out of an answer (Metadata
//!   for every topic, ListGroups, ListTransactions), quietly, and DescribeCluster's authorized
//!   operations are the principal's.
//!
//! An API added later without its own line here needs the cluster's ALTER with the authorizer
//! on, and a principal without it has its connection closed with a log line naming it: stricter
//! than Kafka, never looser.

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;

use super::super::acl::{Operation, ResourceType};
use super::super::acl::CLUSTER_NAME;
use super::super::authz::{allowed, cluster_allowed, permits};
use super::super::session::Session;
use super::super::shard::Shard;
use super::find_coordinator::KEY_TYPE_TRANSACTION;
use crate::protocol::{code, ResponseError, StrBytes};

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;
const TXN_DENIED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;

/// Parts of a request taken out before its handler, to be answered as refused.
#[derive(Default)]
pub struct Withheld {
    /// Topics (by name, as the request named them, with their id) and their partitions.
    topics: Vec<(TopicName, uuid::Uuid, Vec<i32>, ResponseError)>,
    /// Groups, coordinator keys or other named resources.
    names: Vec<(StrBytes, ResponseError)>,
    /// Config resources: (resource type, name).
    configs: Vec<(i8, StrBytes, ResponseError)>,
}

/// The operation and resource a config resource of DescribeConfigs or (Incremental)AlterConfigs
/// is checked as: topics (2) as themselves, groups (32) as groups, brokers (4) and broker
/// loggers (8) as the cluster.
fn config_allowed(shard: &Shard, session: &Session, op: Operation, resource_type: i8, name: &str) -> bool {
    match resource_type {
        2 => topic(shard, session, op, name),
        32 => group(shard, session, op, name),
        _ => cluster_allowed(shard, session, op),
    }
}

fn topic(shard: &Shard, session: &Session, op: Operation, name: &str) -> bool {
    allowed(shard, session, op, ResourceType::Topic, name)
}

fn group(shard: &Shard, session: &Session, op: Operation, name: &str) -> bool {
    allowed(shard, session, op, ResourceType::Group, name)
}

fn txn(shard: &Shard, session: &Session, op: Operation, name: &str) -> bool {
    allowed(shard, session, op, ResourceType::TransactionalId, name)
}

/// A topic's name from a request that may name it by id (v13 Produce, Fetch): the id's topic,
/// or (unknown id) None, which the handler answers.
fn topic_name(shard: &Shard, name: &TopicName, id: uuid::Uuid) -> Option<String> {
    if !name.is_empty() || id.is_nil() {
        return Some(name.to_string());
    }
    shard.image().topic_by_id(&id).map(|t| t.name.clone())
}

/// Produce: WRITE on the transactional id (every partition TRANSACTIONAL_ID_AUTHORIZATION_FAILED
/// without it) and on each topic.
pub fn produce(shard: &Shard, session: &Session, req: &mut ProduceRequest) -> Withheld {
    let mut w = Withheld::default();
    let txn_denied = req.transactional_id.as_ref().is_some_and(|t| !txn(shard, session, Operation::Write, t.as_str()));
    req.topic_data.retain(|t| {
        let refused = if txn_denied {
            Some(TXN_DENIED)
        } else {
            topic_name(shard, &t.name, t.topic_id).filter(|n| !topic(shard, session, Operation::Write, n)).map(|_| TOPIC_DENIED)
        };
        if let Some(e) = refused {
            w.topics.push((t.name.clone(), t.topic_id, t.partition_data.iter().map(|p| p.index).collect(), e));
        }
        refused.is_none()
    });
    w
}

pub fn produce_answer(w: Withheld, resp: &mut ProduceResponse) {
    for (name, id, partitions, e) in w.topics {
        resp.responses.push(
            TopicProduceResponse::default().with_name(name).with_topic_id(id).with_partition_responses(
                partitions
                    .into_iter()
                    .map(|p| PartitionProduceResponse::default().with_index(p).with_error_code(code(e)).with_base_offset(-1).with_log_start_offset(-1))
                    .collect(),
            ),
        );
    }
}

/// Whether a fetch comes from a follower (its replica id set).
fn from_follower(req: &FetchRequest) -> bool {
    req.replica_id.0 >= 0 || req.replica_state.replica_id.0 >= 0
}

fn fetch_error(partition: i32, e: ResponseError) -> PartitionData {
    PartitionData::default().with_partition_index(partition).with_error_code(code(e)).with_high_watermark(-1).with_last_stable_offset(-1).with_log_start_offset(-1)
}

/// Fetch: READ on each topic; a follower's fetch CLUSTER_ACTION (every partition
/// TOPIC_AUTHORIZATION_FAILED without it, as Kafka answers).
pub fn fetch(shard: &Shard, session: &Session, req: &mut FetchRequest) -> Withheld {
    let mut w = Withheld::default();
    let follower = from_follower(req);
    let follower_denied = follower && !cluster_allowed(shard, session, Operation::ClusterAction);
    req.topics.retain(|t| {
        let denied = follower_denied
            || (!follower && topic_name(shard, &t.topic, t.topic_id).is_some_and(|n| !topic(shard, session, Operation::Read, &n)));
        if denied {
            w.topics.push((t.topic.clone(), t.topic_id, t.partitions.iter().map(|p| p.partition).collect(), TOPIC_DENIED));
        }
        !denied
    });
    w
}

pub fn fetch_answer(w: Withheld, resp: &mut FetchResponse) {
    for (name, id, partitions, e) in w.topics {
        resp.responses.push(
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_topic_id(id)
                .with_partitions(partitions.into_iter().map(|p| fetch_error(p, e)).collect()),
        );
    }
}

/// The whole-request checks, and the withholding of named parts, for the APIs decoded as
/// [`RequestKind`]. `Ok(Some(answer))`: refused whole; `Err`: the connection is to be closed.
pub fn refuse(shard: &Shard, session: &Session, version: i16, req: &mut RequestKind, w: &mut Withheld) -> Result<Option<ResponseKind>, String> {
    use Operation as O;
    let cluster = |op| cluster_allowed(shard, session, op);
    let answer = match req {
        RequestKind::Metadata(r) => {
            if let Some(topics) = &mut r.topics {
                let image = shard.image();
                topics.retain(|t| {
                    let Some(name) = t.name.as_ref().map(|n| n.to_string()).or_else(|| image.topic_by_id(&t.topic_id).map(|t| t.name.clone())) else {
                        return true;
                    };
                    let ok = topic(shard, session, O::Describe, &name);
                    if !ok {
                        w.topics.push((TopicName(StrBytes::from_string(name)), t.topic_id, Vec::new(), TOPIC_DENIED));
                    }
                    ok
                });
                // Auto-creation needs CREATE on the cluster or on the topic: a missing topic
                // the principal may not create is refused, the others go on.
                if r.allow_auto_topic_creation && shard.config.auto_create_topics {
                    let cluster_create = permits(shard, session, O::Create, ResourceType::Cluster, CLUSTER_NAME);
                    topics.retain(|t| {
                        let Some(n) = t.name.as_ref() else { return true };
                        let ok = cluster_create || image.topic(n.as_str()).is_some() || topic(shard, session, O::Create, n.as_str());
                        if !ok {
                            w.topics.push((n.clone(), t.topic_id, Vec::new(), TOPIC_DENIED));
                        }
                        ok
                    });
                }
            }
            None
        }
        RequestKind::ListOffsets(r) => {
            r.topics.retain(|t| {
                let ok = topic(shard, session, O::Describe, t.name.as_str());
                if !ok {
                    w.topics.push((t.name.clone(), uuid::Uuid::nil(), t.partitions.iter().map(|p| p.partition_index).collect(), TOPIC_DENIED));
                }
                ok
            });
            None
        }
        RequestKind::OffsetCommit(r) => {
            if !group(shard, session, O::Read, r.group_id.as_str()) {
                let mut resp = OffsetCommitResponse::default();
                resp.topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_topic_id(t.topic_id).with_partitions(
                            t.partitions.iter().map(|p| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code(GROUP_DENIED))).collect(),
                        )
                    })
                    .collect();
                Some(ResponseKind::OffsetCommit(resp))
            } else {
                r.topics.retain(|t| {
                    let ok = topic(shard, session, O::Read, t.name.as_str());
                    if !ok {
                        w.topics.push((t.name.clone(), t.topic_id, t.partitions.iter().map(|p| p.partition_index).collect(), TOPIC_DENIED));
                    }
                    ok
                });
                None
            }
        }
        RequestKind::OffsetFetch(r) => {
            if version >= 8 {
                let denied: Vec<GroupId> =
                    r.groups.iter().filter(|g| !group(shard, session, O::Describe, g.group_id.as_str())).map(|g| g.group_id.clone()).collect();
                r.groups.retain(|g| !denied.contains(&g.group_id));
                w.names.extend(denied.into_iter().map(|g| (g.0, GROUP_DENIED)));
                None
            } else if !group(shard, session, O::Describe, r.group_id.as_str()) {
                Some(ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_error_code(code(GROUP_DENIED))))
            } else {
                None
            }
        }
        RequestKind::FindCoordinator(r) => {
            let check = |key: &str| {
                if r.key_type == KEY_TYPE_TRANSACTION {
                    (!txn(shard, session, O::Describe, key)).then_some(TXN_DENIED)
                } else {
                    (!group(shard, session, O::Describe, key)).then_some(GROUP_DENIED)
                }
            };
            if version < 4 {
                check(r.key.as_str()).map(|e| {
                    ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default().with_error_code(code(e)).with_node_id(BrokerId(-1)).with_port(-1),
                    )
                })
            } else {
                let keys = std::mem::take(&mut r.coordinator_keys);
                for k in keys {
                    match check(k.as_str()) {
                        Some(e) => w.names.push((k, e)),
                        None => r.coordinator_keys.push(k),
                    }
                }
                None
            }
        }
        RequestKind::JoinGroup(r) => (!group(shard, session, O::Read, r.group_id.as_str()))
            .then(|| ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(code(GROUP_DENIED)).with_generation_id(-1))),
        RequestKind::SyncGroup(r) => (!group(shard, session, O::Read, r.group_id.as_str()))
            .then(|| ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code(GROUP_DENIED)))),
        RequestKind::Heartbeat(r) => (!group(shard, session, O::Read, r.group_id.as_str()))
            .then(|| ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code(GROUP_DENIED)))),
        RequestKind::LeaveGroup(r) => (!group(shard, session, O::Read, r.group_id.as_str()))
            .then(|| ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(code(GROUP_DENIED)))),
        RequestKind::ConsumerGroupHeartbeat(r) => (!group(shard, session, O::Read, r.group_id.as_str())).then(|| {
            ResponseKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::default().with_error_code(code(GROUP_DENIED)))
        }),
        RequestKind::DescribeGroups(r) => {
            let groups = std::mem::take(&mut r.groups);
            for g in groups {
                if group(shard, session, O::Describe, g.as_str()) {
                    r.groups.push(g);
                } else {
                    w.names.push((g.0, GROUP_DENIED));
                }
            }
            None
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            let groups = std::mem::take(&mut r.group_ids);
            for g in groups {
                if group(shard, session, O::Describe, g.as_str()) {
                    r.group_ids.push(g);
                } else {
                    w.names.push((g.0, GROUP_DENIED));
                }
            }
            None
        }
        RequestKind::DeleteGroups(r) => {
            let groups = std::mem::take(&mut r.groups_names);
            for g in groups {
                if group(shard, session, O::Delete, g.as_str()) {
                    r.groups_names.push(g);
                } else {
                    w.names.push((g.0, GROUP_DENIED));
                }
            }
            None
        }
        RequestKind::CreateTopics(r) => {
            // CREATE on the cluster, else on each topic (the cluster's asked quietly, as Kafka).
            if !permits(shard, session, O::Create, ResourceType::Cluster, CLUSTER_NAME) {
                r.topics.retain(|t| {
                    let ok = topic(shard, session, O::Create, t.name.as_str());
                    if !ok {
                        w.topics.push((t.name.clone(), uuid::Uuid::nil(), Vec::new(), TOPIC_DENIED));
                    }
                    ok
                });
            }
            None
        }
        RequestKind::DeleteTopics(r) => {
            let image = shard.image();
            r.topic_names.retain(|n| {
                let ok = topic(shard, session, O::Delete, n.as_str());
                if !ok {
                    w.topics.push((n.clone(), uuid::Uuid::nil(), Vec::new(), TOPIC_DENIED));
                }
                ok
            });
            r.topics.retain(|t| {
                let name = t.name.as_ref().map(|n| n.to_string()).or_else(|| image.topic_by_id(&t.topic_id).map(|t| t.name.clone()));
                let ok = name.as_ref().is_none_or(|n| topic(shard, session, O::Delete, n));
                if !ok {
                    w.topics.push((t.name.clone().unwrap_or_default(), t.topic_id, Vec::new(), TOPIC_DENIED));
                }
                ok
            });
            None
        }
        RequestKind::InitProducerId(r) => match &r.transactional_id {
            Some(t) if !txn(shard, session, O::Write, t.as_str()) => {
                Some(ResponseKind::InitProducerId(InitProducerIdResponse::default().with_error_code(code(TXN_DENIED)).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)))
            }
            Some(_) => None,
            None if permits(shard, session, O::IdempotentWrite, ResourceType::Cluster, CLUSTER_NAME) || may_write_some_topic(shard, session) => None,
            // Asked again, so that the refusal is logged and counted.
            None if cluster(O::IdempotentWrite) => None,
            None => Some(ResponseKind::InitProducerId(
                InitProducerIdResponse::default().with_error_code(code(CLUSTER_DENIED)).with_producer_id(ProducerId(-1)).with_producer_epoch(-1),
            )),
        },
        RequestKind::EndTxn(r) => (!txn(shard, session, O::Write, r.transactional_id.as_str()))
            .then(|| ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code(TXN_DENIED)).with_producer_id(ProducerId(-1)).with_producer_epoch(-1))),
        RequestKind::AddOffsetsToTxn(r) => {
            if !txn(shard, session, O::Write, r.transactional_id.as_str()) {
                Some(ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code(TXN_DENIED))))
            } else if !group(shard, session, O::Read, r.group_id.as_str()) {
                Some(ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code(GROUP_DENIED))))
            } else {
                None
            }
        }
        RequestKind::AddPartitionsToTxn(r) if version <= 3 => {
            let denied_txn = !txn(shard, session, O::Write, r.v3_and_below_transactional_id.as_str());
            let denied_topics: Vec<&TopicName> =
                r.v3_and_below_topics.iter().map(|t| &t.name).filter(|n| !topic(shard, session, O::Write, n.as_str())).collect();
            if denied_txn || !denied_topics.is_empty() {
                // Kafka: the refused topics get their code, the others OPERATION_NOT_ATTEMPTED.
                let results = r
                    .v3_and_below_topics
                    .iter()
                    .map(|t| {
                        let e = if denied_txn {
                            TXN_DENIED
                        } else if denied_topics.contains(&&t.name) {
                            TOPIC_DENIED
                        } else {
                            ResponseError::OperationNotAttempted
                        };
                        AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                            t.partitions.iter().map(|p| AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(code(e))).collect(),
                        )
                    })
                    .collect();
                Some(ResponseKind::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)))
            } else {
                None
            }
        }
        RequestKind::AddPartitionsToTxn(_) => (!cluster(O::ClusterAction))
            .then(|| ResponseKind::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_error_code(code(CLUSTER_DENIED)))),
        RequestKind::DescribeLogDirs(_) => (!cluster(O::Describe))
            .then(|| ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_error_code(code(CLUSTER_DENIED)))),
        RequestKind::ElectLeaders(_) => (!cluster(O::Alter))
            .then(|| ResponseKind::ElectLeaders(ElectLeadersResponse::default().with_error_code(code(CLUSTER_DENIED)))),
        RequestKind::AlterPartitionReassignments(_) => (!cluster(O::Alter)).then(|| {
            ResponseKind::AlterPartitionReassignments(AlterPartitionReassignmentsResponse::default().with_error_code(code(CLUSTER_DENIED)))
        }),
        RequestKind::ListPartitionReassignments(_) => (!cluster(O::Describe)).then(|| {
            ResponseKind::ListPartitionReassignments(ListPartitionReassignmentsResponse::default().with_error_code(code(CLUSTER_DENIED)))
        }),
        RequestKind::DescribeQuorum(_) => (!cluster(O::Describe))
            .then(|| ResponseKind::DescribeQuorum(DescribeQuorumResponse::default().with_error_code(code(CLUSTER_DENIED)))),
        RequestKind::DescribeClientQuotas(_) => (!cluster(O::DescribeConfigs)).then(|| {
            ResponseKind::DescribeClientQuotas(DescribeClientQuotasResponse::default().with_error_code(code(CLUSTER_DENIED)))
        }),
        RequestKind::AlterClientQuotas(r) if !cluster(O::AlterConfigs) => {
            use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
            Some(ResponseKind::AlterClientQuotas(AlterClientQuotasResponse::default().with_entries(
                r.entries
                    .iter()
                    .map(|e| {
                        EntryData::default()
                            .with_error_code(code(CLUSTER_DENIED))
                            .with_entity(e.entity.iter().map(|x| EntityData::default().with_entity_type(x.entity_type.clone()).with_entity_name(x.entity_name.clone())).collect())
                    })
                    .collect(),
            )))
        }
        RequestKind::DescribeUserScramCredentials(_) => (!cluster(O::Describe)).then(|| {
            ResponseKind::DescribeUserScramCredentials(DescribeUserScramCredentialsResponse::default().with_error_code(code(CLUSTER_DENIED)))
        }),
        RequestKind::AlterUserScramCredentials(r) if !cluster(O::Alter) => {
            let mut users: Vec<StrBytes> = r.deletions.iter().map(|d| d.name.clone()).chain(r.upsertions.iter().map(|u| u.name.clone())).collect();
            users.sort();
            users.dedup();
            Some(ResponseKind::AlterUserScramCredentials(AlterUserScramCredentialsResponse::default().with_results(
                users
                    .into_iter()
                    .map(|u| {
                        kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                            .with_user(u)
                            .with_error_code(code(CLUSTER_DENIED))
                    })
                    .collect(),
            )))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            if r.replica_id.0 >= 0 && !cluster(O::ClusterAction) {
                let topics = std::mem::take(&mut r.topics);
                w.topics.extend(topics.into_iter().map(|t| (t.topic, uuid::Uuid::nil(), t.partitions.iter().map(|p| p.partition).collect(), CLUSTER_DENIED)));
            } else if r.replica_id.0 < 0 {
                r.topics.retain(|t| {
                    let ok = topic(shard, session, O::Describe, t.topic.as_str());
                    if !ok {
                        w.topics.push((t.topic.clone(), uuid::Uuid::nil(), t.partitions.iter().map(|p| p.partition).collect(), TOPIC_DENIED));
                    }
                    ok
                });
            }
            None
        }
        RequestKind::DeleteRecords(r) => {
            r.topics.retain(|t| {
                let ok = topic(shard, session, O::Delete, t.name.as_str());
                if !ok {
                    w.topics.push((t.name.clone(), uuid::Uuid::nil(), t.partitions.iter().map(|p| p.partition_index).collect(), TOPIC_DENIED));
                }
                ok
            });
            None
        }
        RequestKind::CreatePartitions(r) => {
            r.topics.retain(|t| {
                let ok = topic(shard, session, O::Alter, t.name.as_str());
                if !ok {
                    w.topics.push((t.name.clone(), uuid::Uuid::nil(), Vec::new(), TOPIC_DENIED));
                }
                ok
            });
            None
        }
        RequestKind::DescribeProducers(r) => {
            r.topics.retain(|t| {
                let ok = topic(shard, session, O::Read, t.name.as_str());
                if !ok {
                    w.topics.push((t.name.clone(), uuid::Uuid::nil(), t.partition_indexes.clone(), TOPIC_DENIED));
                }
                ok
            });
            None
        }
        RequestKind::DescribeConfigs(r) => {
            r.resources.retain(|c| {
                let ok = config_allowed(shard, session, O::DescribeConfigs, c.resource_type, c.resource_name.as_str());
                if !ok {
                    w.configs.push((c.resource_type, c.resource_name.clone(), config_denied(c.resource_type)));
                }
                ok
            });
            None
        }
        RequestKind::AlterConfigs(r) => {
            r.resources.retain(|c| {
                let ok = config_allowed(shard, session, O::AlterConfigs, c.resource_type, c.resource_name.as_str());
                if !ok {
                    w.configs.push((c.resource_type, c.resource_name.clone(), config_denied(c.resource_type)));
                }
                ok
            });
            None
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            r.resources.retain(|c| {
                let ok = config_allowed(shard, session, O::AlterConfigs, c.resource_type, c.resource_name.as_str());
                if !ok {
                    w.configs.push((c.resource_type, c.resource_name.clone(), config_denied(c.resource_type)));
                }
                ok
            });
            None
        }
        RequestKind::DescribeTransactions(r) => {
            let ids = std::mem::take(&mut r.transactional_ids);
            for id in ids {
                if txn(shard, session, O::Describe, id.as_str()) {
                    r.transactional_ids.push(id);
                } else {
                    w.names.push((id.0, TXN_DENIED));
                }
            }
            None
        }
        RequestKind::TxnOffsetCommit(r) => {
            let whole = if !txn(shard, session, O::Write, r.transactional_id.as_str()) {
                Some(TXN_DENIED)
            } else if !group(shard, session, O::Read, r.group_id.as_str()) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            match whole {
                Some(e) => Some(ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                                .with_partition_index(p.partition_index)
                                                .with_error_code(code(e))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ))),
                None => {
                    r.topics.retain(|t| {
                        let ok = topic(shard, session, O::Read, t.name.as_str());
                        if !ok {
                            w.topics.push((t.name.clone(), uuid::Uuid::nil(), t.partitions.iter().map(|p| p.partition_index).collect(), TOPIC_DENIED));
                        }
                        ok
                    });
                    None
                }
            }
        }
        RequestKind::OffsetDelete(r) => {
            if !group(shard, session, O::Delete, r.group_id.as_str()) {
                Some(ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code(GROUP_DENIED))))
            } else {
                r.topics.retain(|t| {
                    let ok = topic(shard, session, O::Read, t.name.as_str());
                    if !ok {
                        w.topics.push((t.name.clone(), uuid::Uuid::nil(), t.partitions.iter().map(|p| p.partition_index).collect(), TOPIC_DENIED));
                    }
                    ok
                });
                None
            }
        }
        RequestKind::WriteTxnMarkers(r) if !cluster(O::ClusterAction) => {
            use kafka_protocol::messages::write_txn_markers_response::*;
            Some(ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(
                r.markers
                    .iter()
                    .map(|m| {
                        WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(
                            m.topics
                                .iter()
                                .map(|t| {
                                    WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(
                                        t.partition_indexes
                                            .iter()
                                            .map(|p| WritableTxnMarkerPartitionResult::default().with_partition_index(*p).with_error_code(code(CLUSTER_DENIED)))
                                            .collect(),
                                    )
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            )))
        }
        // Checked in their handlers (ALTER or DESCRIBE on the cluster), or free for everyone.
        // Anyone may describe the cluster, as in Kafka (its authorized operations are the
        // principal's own, see `filter_answer`).
        RequestKind::DescribeCluster(_)
        | RequestKind::WriteTxnMarkers(_)
        | RequestKind::AlterClientQuotas(_)
        | RequestKind::Fetch(_)
        | RequestKind::AlterUserScramCredentials(_)
        | RequestKind::DescribeAcls(_)
        | RequestKind::CreateAcls(_)
        | RequestKind::DeleteAcls(_)
        | RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_)
        | RequestKind::ApiVersions(_)
        | RequestKind::ListGroups(_)
        | RequestKind::ListTransactions(_) => None,
        // An API with no line above (one added later): the cluster's ALTER, or the connection
        // is closed.
        _ => {
            if !cluster(O::Alter) {
                return Err(format!(
                    "{} may not send this request: with the ACL authorizer, Spate checks it as ALTER on the cluster",
                    session.principal()
                ));
            }
            None
        }
    };
    Ok(answer)
}

/// The code a refused config resource gets.
fn config_denied(resource_type: i8) -> ResponseError {
    match resource_type {
        2 => TOPIC_DENIED,
        32 => GROUP_DENIED,
        _ => CLUSTER_DENIED,
    }
}

/// Kafka's "WRITE on any topic" for an idempotent producer without IDEMPOTENT_WRITE: an ALLOW
/// for WRITE (or ALL) on some topic for the principal (or everyone), from any host or its own.
fn may_write_some_topic(shard: &Shard, session: &Session) -> bool {
    let principal = session.principal();
    let host = &session.host;
    shard.image().acls.all().into_iter().any(|b| {
        b.allow
            && b.resource_type == ResourceType::Topic
            && matches!(b.operation, Operation::Write | Operation::All)
            && (b.principal == *principal || b.principal == "User:*")
            && (b.host == *host || b.host == "*")
    })
}

/// Puts the withheld parts back into the answer, refused.
pub fn answer(w: Withheld, resp: &mut ResponseKind) {
    match resp {
        ResponseKind::Metadata(r) => {
            for (name, id, _, e) in w.topics {
                r.topics.push(MetadataResponseTopic::default().with_name(Some(name)).with_topic_id(id).with_error_code(code(e)));
            }
        }
        ResponseKind::ListOffsets(r) => {
            for (name, _, partitions, e) in w.topics {
                r.topics.push(ListOffsetsTopicResponse::default().with_name(name).with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| ListOffsetsPartitionResponse::default().with_partition_index(p).with_error_code(code(e)).with_timestamp(-1).with_offset(-1).with_leader_epoch(-1))
                        .collect(),
                ));
            }
        }
        ResponseKind::OffsetCommit(r) => {
            for (name, id, partitions, e) in w.topics {
                r.topics.push(OffsetCommitResponseTopic::default().with_name(name).with_topic_id(id).with_partitions(
                    partitions.into_iter().map(|p| OffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(code(e))).collect(),
                ));
            }
        }
        ResponseKind::OffsetFetch(r) => {
            for (g, e) in w.names {
                r.groups.push(
                    kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(GroupId(g)).with_error_code(code(e)),
                );
            }
        }
        ResponseKind::FindCoordinator(r) => {
            for (k, e) in w.names {
                r.coordinators.push(Coordinator::default().with_key(k).with_error_code(code(e)).with_node_id(BrokerId(-1)).with_port(-1));
            }
        }
        ResponseKind::DescribeGroups(r) => {
            for (g, e) in w.names {
                r.groups.push(DescribedGroup::default().with_group_id(GroupId(g)).with_error_code(code(e)));
            }
        }
        ResponseKind::ConsumerGroupDescribe(r) => {
            for (g, e) in w.names {
                r.groups.push(
                    kafka_protocol::messages::consumer_group_describe_response::DescribedGroup::default().with_group_id(GroupId(g)).with_error_code(code(e)),
                );
            }
        }
        ResponseKind::DeleteGroups(r) => {
            for (g, e) in w.names {
                r.results.push(DeletableGroupResult::default().with_group_id(GroupId(g)).with_error_code(code(e)));
            }
        }
        ResponseKind::CreateTopics(r) => {
            for (name, _, _, e) in w.topics {
                r.topics.push(
                    CreatableTopicResult::default()
                        .with_name(name)
                        .with_error_code(code(e))
                        .with_error_message(Some(StrBytes::from_static_str("Authorization failed.")))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for (name, id, _, e) in w.topics {
                r.responses.push(DeletableTopicResult::default().with_name(Some(name)).with_topic_id(id).with_error_code(code(e)));
            }
        }
        ResponseKind::OffsetForLeaderEpoch(r) => {
            use kafka_protocol::messages::offset_for_leader_epoch_response::*;
            for (name, _, partitions, e) in w.topics {
                r.topics.push(OffsetForLeaderTopicResult::default().with_topic(name).with_partitions(
                    partitions.into_iter().map(|p| EpochEndOffset::default().with_partition(p).with_error_code(code(e)).with_leader_epoch(-1).with_end_offset(-1)).collect(),
                ));
            }
        }
        ResponseKind::DeleteRecords(r) => {
            use kafka_protocol::messages::delete_records_response::*;
            for (name, _, partitions, e) in w.topics {
                r.topics.push(DeleteRecordsTopicResult::default().with_name(name).with_partitions(
                    partitions.into_iter().map(|p| DeleteRecordsPartitionResult::default().with_partition_index(p).with_error_code(code(e)).with_low_watermark(-1)).collect(),
                ));
            }
        }
        ResponseKind::CreatePartitions(r) => {
            use kafka_protocol::messages::create_partitions_response::*;
            for (name, _, _, e) in w.topics {
                r.results.push(CreatePartitionsTopicResult::default().with_name(name).with_error_code(code(e)));
            }
        }
        ResponseKind::DescribeProducers(r) => {
            use kafka_protocol::messages::describe_producers_response::*;
            for (name, _, partitions, e) in w.topics {
                r.topics.push(TopicResponse::default().with_name(name).with_partitions(
                    partitions.into_iter().map(|p| PartitionResponse::default().with_partition_index(p).with_error_code(code(e))).collect(),
                ));
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            use kafka_protocol::messages::describe_configs_response::*;
            for (t, name, e) in w.configs {
                r.results.push(DescribeConfigsResult::default().with_resource_type(t).with_resource_name(name).with_error_code(code(e)));
            }
        }
        ResponseKind::AlterConfigs(r) => {
            use kafka_protocol::messages::alter_configs_response::*;
            for (t, name, e) in w.configs {
                r.responses.push(AlterConfigsResourceResponse::default().with_resource_type(t).with_resource_name(name).with_error_code(code(e)));
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            use kafka_protocol::messages::incremental_alter_configs_response::*;
            for (t, name, e) in w.configs {
                r.responses.push(AlterConfigsResourceResponse::default().with_resource_type(t).with_resource_name(name).with_error_code(code(e)));
            }
        }
        ResponseKind::DescribeTransactions(r) => {
            use kafka_protocol::messages::describe_transactions_response::*;
            for (id, e) in w.names {
                r.transaction_states.push(TransactionState::default().with_transactional_id(TransactionalId(id)).with_error_code(code(e)).with_producer_id(ProducerId(-1)).with_producer_epoch(-1));
            }
        }
        ResponseKind::TxnOffsetCommit(r) => {
            use kafka_protocol::messages::txn_offset_commit_response::*;
            for (name, _, partitions, e) in w.topics {
                r.topics.push(TxnOffsetCommitResponseTopic::default().with_name(name).with_partitions(
                    partitions.into_iter().map(|p| TxnOffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(code(e))).collect(),
                ));
            }
        }
        ResponseKind::OffsetDelete(r) => {
            use kafka_protocol::messages::offset_delete_response::*;
            for (name, _, partitions, e) in w.topics {
                r.topics.push(OffsetDeleteResponseTopic::default().with_name(name).with_partitions(
                    partitions.into_iter().map(|p| OffsetDeleteResponsePartition::default().with_partition_index(p).with_error_code(code(e))).collect(),
                ));
            }
        }
        _ => {}
    }
}

/// The operations on the cluster Kafka reports in authorized operations.
const CLUSTER_OPERATIONS: [Operation; 9] = [
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
    Operation::CreateTokens,
    Operation::DescribeTokens,
];

/// Leaves out of an answer what the principal may not describe: every topic's Metadata, and
/// ListGroups and ListTransactions without DESCRIBE on the cluster.
pub fn filter_answer(shard: &Shard, session: &Session, asked_all_topics: bool, resp: &mut ResponseKind) {
    match resp {
        ResponseKind::Metadata(r) if asked_all_topics => {
            r.topics.retain(|t| t.name.as_ref().is_some_and(|n| permits(shard, session, Operation::Describe, ResourceType::Topic, n.as_str())));
        }
        ResponseKind::DescribeCluster(r) if r.cluster_authorized_operations != i32::MIN => {
            r.cluster_authorized_operations = CLUSTER_OPERATIONS
                .iter()
                .filter(|op| permits(shard, session, **op, ResourceType::Cluster, CLUSTER_NAME))
                .fold(0, |bits, op| bits | (1 << (*op as i32)));
        }
        ResponseKind::ListGroups(r) if !cluster_allowed(shard, session, Operation::Describe) => {
            r.groups.retain(|g| group(shard, session, Operation::Describe, g.group_id.as_str()));
        }
        ResponseKind::ListTransactions(r) => {
            r.transaction_states.retain(|t| txn(shard, session, Operation::Describe, t.transactional_id.as_str()));
        }
        _ => {}
    }
}
