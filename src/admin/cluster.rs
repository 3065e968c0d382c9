//! The cluster as the admin commands see it: a bootstrap connection, the brokers and the
//! controller Metadata names, each group's coordinator (FindCoordinator), and each partition's
//! leader. Requests go where a Kafka cluster wants them (group requests to the coordinator,
//! ListOffsets and DeleteRecords to the leader, ListGroups to every broker, topic changes to the
//! controller), so the commands work against Kafka as well as Spate.
//!
//! Answers come back as plain Rust values; Kafka error codes stay numbers, named with
//! [`super::error_name`] when shown.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    DescribeTransactionsRequest, IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest, ListTransactionsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, TopicName, TransactionalId,
};
use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::{Decodable, StrBytes};
use uuid::Uuid;

use super::{error_name, kafka_error};
use crate::config::limits::CLIENT_ADMIN_TIMEOUT_MS;
use crate::io::client::Connection;

/// A topic and partition.
pub type Tp = (String, i32);

/// ListOffsets' special timestamps.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// How many times a retriable coordinator error (still loading, not available yet) is retried,
/// and how long to wait between tries.
const COORDINATOR_TRIES: usize = 20;
const COORDINATOR_BACKOFF: Duration = Duration::from_millis(250);

/// Kafka error codes the admin commands react to.
pub mod codes {
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
}

/// A group as ListGroups shows it.
pub struct Listed {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
}

/// A group as DescribeGroups shows it; `None` from [`Cluster::describe_group`] if it does not exist.
pub struct Described {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<Member>,
}

pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// The partitions the member owns, decoded from its consumer-protocol assignment (empty for
    /// groups of another protocol type, or a member not yet assigned).
    pub assignment: Vec<Tp>,
}

/// A topic as Metadata shows it.
pub struct Topic {
    pub error: i16,
    /// Partition index to leader's node id.
    pub partitions: BTreeMap<i32, i32>,
}

/// The cluster as a Metadata request for every topic shows it.
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    /// `None` if the broker names no controller (-1).
    pub controller: Option<i32>,
    pub brokers: Vec<BrokerSummary>,
    /// Sorted by name.
    pub topics: Vec<TopicSummary>,
}

pub struct BrokerSummary {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

pub struct TopicSummary {
    pub name: String,
    pub partitions: usize,
    pub internal: bool,
    pub error: i16,
}

/// A topic as Metadata describes it in full (for `spate topic`).
pub struct TopicInfo {
    /// `None` when the broker sent none (Metadata before v10) or the nil id.
    pub id: Option<Uuid>,
    pub internal: bool,
    /// 0, or the Kafka error code Metadata gave for the topic (UNKNOWN_TOPIC_OR_PARTITION, ...).
    pub error: i16,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionInfo>,
}

pub struct PartitionInfo {
    pub partition: i32,
    /// -1 when there is none.
    pub leader: i32,
    /// -1 when the broker sends none (Metadata before v7).
    pub epoch: i32,
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    pub error: i16,
}

/// A Metadata answer in full: brokers (node id to host:port), the controller, topics by name.
pub struct Topics {
    pub brokers: BTreeMap<i32, String>,
    pub controller: Option<i32>,
    pub topics: BTreeMap<String, TopicInfo>,
}

/// A broker's answer for one item of a batch request: 0 or a Kafka error code, and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub error: i16,
    pub message: Option<String>,
}

/// CreateTopics' answer for one topic; the partition count and replication factor it got come
/// from v5+ brokers.
pub struct Created {
    pub outcome: Outcome,
    pub partitions: Option<i32>,
    pub replicas: Option<i16>,
}

/// One setting of a topic, as DescribeConfigs shows it.
pub struct ConfigEntry {
    pub key: String,
    /// `None` for sensitive values (and settings without a value).
    pub value: Option<String>,
    /// Kafka's ConfigSource number (see `topic::source_name`).
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// IncrementalAlterConfigs' operations, numbered as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterOp {
    Set = 0,
    Delete = 1,
    Append = 2,
    Subtract = 3,
}

/// One ACL binding, with Kafka's codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSpec {
    pub resource_type: i8,
    pub name: String,
    pub pattern: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// An ACL filter, with Kafka's codes (1: ANY; pattern 2: MATCH) and `None` for any name.
#[derive(Debug, Clone, Default)]
pub struct AclFilterSpec {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// Connections to the cluster. Lives on the command's thread.
pub struct Cluster {
    bootstrap: String,
    conns: HashMap<String, Connection>,
    coordinators: HashMap<String, String>,
}

impl Cluster {
    /// Connects to the first of the comma-separated `bootstrap` addresses that answers.
    pub fn connect(bootstrap: &str) -> Result<Cluster> {
        let mut errors = Vec::new();
        for addr in bootstrap.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Connection::open(addr) {
                Ok(c) => {
                    let mut conns = HashMap::new();
                    conns.insert(addr.to_string(), c);
                    return Ok(Cluster { bootstrap: addr.to_string(), conns, coordinators: HashMap::new() });
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if errors.is_empty() {
            bail!("no bootstrap server given");
        }
        bail!("no bootstrap server answered: {}", errors.join("; "))
    }

    fn conn(&mut self, addr: &str) -> Result<&mut Connection> {
        if !self.conns.contains_key(addr) {
            let c = Connection::open(addr)?;
            self.conns.insert(addr.to_string(), c);
        }
        Ok(self.conns.get_mut(addr).expect("inserted above"))
    }

    /// Brokers (node id to host:port) and, for `topics` (none: no topics), their partitions.
    /// Never creates topics (v4+; older brokers may auto-create them).
    pub fn metadata(&mut self, topics: &[String]) -> Result<(BTreeMap<i32, String>, BTreeMap<String, Topic>)> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|v| {
            let mut r = MetadataRequest::default().with_allow_auto_topic_creation(v < 4);
            r.topics = Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone())))))
                    .collect(),
            );
            r
        })?;
        let brokers = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        let topics = resp
            .topics
            .into_iter()
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                let partitions = t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect();
                Some((name, Topic { error: t.error_code, partitions }))
            })
            .collect();
        Ok((brokers, topics))
    }

    /// The whole cluster as Metadata describes it: every broker and every topic.
    pub fn describe_cluster(&mut self) -> Result<ClusterMetadata> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|v| {
            // v0 asks for every topic with an empty list, later versions with none.
            let all = if v == 0 { Some(Vec::new()) } else { None };
            MetadataRequest::default().with_topics(all).with_allow_auto_topic_creation(false)
        })?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, None, "asking for the cluster's metadata"));
        }
        let mut topics: Vec<TopicSummary> = resp
            .topics
            .into_iter()
            .filter_map(|t| {
                Some(TopicSummary { name: t.name?.0.to_string(), partitions: t.partitions.len(), internal: t.is_internal, error: t.error_code })
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterMetadata {
            cluster_id: resp.cluster_id.map(|c| c.to_string()),
            controller: Some(resp.controller_id.0).filter(|c| *c >= 0),
            brokers: resp
                .brokers
                .into_iter()
                .map(|b| BrokerSummary { id: b.node_id.0, host: b.host.to_string(), port: b.port, rack: b.rack.map(|r| r.to_string()) })
                .collect(),
            topics,
        })
    }

    /// The metadata quorum's voters and its active controller, from DescribeCluster with the
    /// controllers' endpoint type (KIP-919), as Spate's brokers answer it. None when the broker
    /// does not (Kafka's brokers answer MISMATCHED_ENDPOINT_TYPE; older ones lack the version).
    pub fn controllers(&mut self) -> Result<Option<(Vec<(i32, String)>, Option<i32>)>> {
        let bootstrap = self.bootstrap.clone();
        let conn = self.conn(&bootstrap)?;
        if conn.version::<DescribeClusterRequest>().map_or(true, |v| v < 1) {
            return Ok(None);
        }
        let (_, resp) = conn.call(|_| DescribeClusterRequest::default().with_endpoint_type(2))?;
        if resp.error_code != 0 {
            return Ok(None);
        }
        let voters = resp.brokers.iter().map(|b| (b.broker_id.0, format!("{}:{}", b.host, b.port))).collect();
        Ok(Some((voters, Some(resp.controller_id.0).filter(|c| *c >= 0))))
    }

    /// Every topic (`names` None) or the named ones, in full, with the brokers and the
    /// controller. Never creates topics (v4+; older brokers may auto-create them).
    pub fn topics(&mut self, names: Option<&[String]>) -> Result<Topics> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|v| {
            let topics = match names {
                Some(names) => Some(names.iter().map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t)))).collect()),
                // v0 asks for every topic with an empty list, later versions with none.
                None if v == 0 => Some(Vec::new()),
                None => None,
            };
            MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(v < 4)
        })?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, None, "asking for the cluster's metadata"));
        }
        let topics = resp
            .topics
            .into_iter()
            .filter_map(|t| {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                        isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                        error: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                let id = Some(t.topic_id).filter(|id| !id.is_nil());
                Some((t.name?.0.to_string(), TopicInfo { id, internal: t.is_internal, error: t.error_code, partitions }))
            })
            .collect();
        Ok(Topics {
            brokers: resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect(),
            controller: Some(resp.controller_id.0).filter(|c| *c >= 0),
            topics,
        })
    }

    /// Where topic changes go, as Kafka's admin client sends them: the controller Metadata names
    /// (under KRaft any broker, which forwards), else the bootstrap broker.
    fn controller(&mut self) -> Result<String> {
        let t = self.topics(Some(&[]))?;
        Ok(t.controller.and_then(|c| t.brokers.get(&c).cloned()).unwrap_or_else(|| self.bootstrap.clone()))
    }

    /// CreateTopics: `partitions` and `replicas` each (-1: the broker's default), the same
    /// `configs` for each; only checked with `validate_only`. Answers by topic.
    pub fn create_topics(
        &mut self,
        topics: &[String],
        partitions: i32,
        replicas: i16,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<BTreeMap<String, Created>> {
        let addr = self.controller()?;
        let (v, resp) = self.conn(&addr)?.call(|_| {
            let configs: Vec<CreatableTopicConfig> = configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig::default().with_name(str_bytes(k)).with_value(Some(str_bytes(v))))
                .collect();
            CreateTopicsRequest::default()
                .with_topics(
                    topics
                        .iter()
                        .map(|t| {
                            CreatableTopic::default()
                                .with_name(topic_name(t))
                                .with_num_partitions(partitions)
                                .with_replication_factor(replicas)
                                .with_configs(configs.clone())
                        })
                        .collect(),
                )
                .with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS)
                .with_validate_only(validate_only)
        })?;
        Ok(resp
            .topics
            .into_iter()
            .map(|t| {
                let created = Created {
                    outcome: Outcome { error: t.error_code, message: t.error_message.map(|m| m.to_string()) },
                    partitions: Some(t.num_partitions).filter(|n| v >= 5 && *n >= 0),
                    replicas: Some(t.replication_factor).filter(|n| v >= 5 && *n >= 0),
                };
                (t.name.0.to_string(), created)
            })
            .collect())
    }

    /// DeleteTopics, by name. Answers by topic.
    pub fn delete_topics(&mut self, topics: &[String]) -> Result<BTreeMap<String, Outcome>> {
        let addr = self.controller()?;
        let (_, resp) = self.conn(&addr)?.call(|v| {
            let r = DeleteTopicsRequest::default().with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS);
            if v >= 6 {
                r.with_topics(topics.iter().map(|t| DeleteTopicState::default().with_name(Some(topic_name(t)))).collect())
            } else {
                r.with_topic_names(topics.iter().map(|t| topic_name(t)).collect())
            }
        })?;
        Ok(resp
            .responses
            .into_iter()
            .filter_map(|r| Some((r.name?.0.to_string(), Outcome { error: r.error_code, message: r.error_message.map(|m| m.to_string()) })))
            .collect())
    }

    /// AlterPartitionReassignments: each partition to its target replicas (`None`: cancel).
    /// Answers by partition.
    pub fn reassign(&mut self, moves: &[(String, i32, Option<Vec<i32>>)]) -> Result<Vec<(String, i32, Outcome)>> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
        let addr = self.controller()?;
        let (_, resp) = self.conn(&addr)?.call(|_| {
            let mut topics: Vec<ReassignableTopic> = Vec::new();
            for (t, p, target) in moves {
                let rp = ReassignablePartition::default()
                    .with_partition_index(*p)
                    .with_replicas(target.as_ref().map(|r| r.iter().map(|b| BrokerId(*b)).collect()));
                match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                    Some(x) => x.partitions.push(rp),
                    None => topics.push(ReassignableTopic::default().with_name(topic_name(t)).with_partitions(vec![rp])),
                }
            }
            kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS)
                .with_allow_replication_factor_change(true)
                .with_topics(topics)
        })?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, resp.error_message.as_ref().map(|m| m.as_str()), "AlterPartitionReassignments"));
        }
        Ok(resp
            .responses
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partitions.into_iter().map(move |p| {
                    (name.clone(), p.partition_index, Outcome { error: p.error_code, message: p.error_message.map(|m| m.to_string()) })
                })
            })
            .collect())
    }

    /// ListPartitionReassignments: (topic, partition, replicas, adding, removing) of every move
    /// in progress.
    #[allow(clippy::type_complexity)]
    pub fn reassignments(&mut self) -> Result<Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)>> {
        let addr = self.controller()?;
        let (_, resp) = self.conn(&addr)?.call(|_| {
            kafka_protocol::messages::ListPartitionReassignmentsRequest::default().with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS)
        })?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, resp.error_message.as_ref().map(|m| m.as_str()), "ListPartitionReassignments"));
        }
        let ids = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect::<Vec<i32>>();
        Ok(resp
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| (name.clone(), p.partition_index, ids(p.replicas), ids(p.adding_replicas), ids(p.removing_replicas)))
            })
            .collect())
    }

    /// ElectLeaders (preferred) for `parts`: answers by partition (0, or the error code).
    pub fn elect_preferred(&mut self, parts: &[(String, i32)]) -> Result<Vec<(String, i32, i16)>> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let addr = self.controller()?;
        let (_, resp) = self.conn(&addr)?.call(|_| {
            let mut tps: Vec<TopicPartitions> = Vec::new();
            for (t, p) in parts {
                match tps.iter_mut().find(|x| x.topic.0.as_str() == t) {
                    Some(x) => x.partitions.push(*p),
                    None => tps.push(TopicPartitions::default().with_topic(topic_name(t)).with_partitions(vec![*p])),
                }
            }
            kafka_protocol::messages::ElectLeadersRequest::default()
                .with_election_type(0)
                .with_topic_partitions(Some(tps))
                .with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS)
        })?;
        Ok(resp
            .replica_election_results
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partition_result.into_iter().map(move |p| (name.clone(), p.partition_id, p.error_code))
            })
            .collect())
    }

    /// CreatePartitions: each topic grows to its new total count (the controller places the new
    /// partitions). Answers by topic.
    pub fn create_partitions(&mut self, counts: &[(String, i32)]) -> Result<BTreeMap<String, Outcome>> {
        let addr = self.controller()?;
        let (_, resp) = self.conn(&addr)?.call(|_| {
            CreatePartitionsRequest::default()
                .with_topics(
                    counts
                        .iter()
                        .map(|(t, n)| CreatePartitionsTopic::default().with_name(topic_name(t)).with_count(*n).with_assignments(None))
                        .collect(),
                )
                .with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS)
        })?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| (r.name.0.to_string(), Outcome { error: r.error_code, message: r.error_message.map(|m| m.to_string()) }))
            .collect())
    }

    /// IncrementalAlterConfigs: the same `ops` (operation, key, value) on each topic. Answers by
    /// topic.
    pub fn alter_topic_configs(&mut self, topics: &[String], ops: &[(AlterOp, String, Option<String>)]) -> Result<BTreeMap<String, Outcome>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            let configs: Vec<AlterableConfig> = ops
                .iter()
                .map(|(op, k, v)| {
                    AlterableConfig::default().with_config_operation(*op as i8).with_name(str_bytes(k)).with_value(v.as_deref().map(str_bytes))
                })
                .collect();
            IncrementalAlterConfigsRequest::default().with_resources(
                topics
                    .iter()
                    .map(|t| {
                        AlterConfigsResource::default()
                            .with_resource_type(RESOURCE_TOPIC)
                            .with_resource_name(str_bytes(t))
                            .with_configs(configs.clone())
                    })
                    .collect(),
            )
        })?;
        Ok(resp
            .responses
            .into_iter()
            .map(|r| (r.resource_name.to_string(), Outcome { error: r.error_code, message: r.error_message.map(|m| m.to_string()) }))
            .collect())
    }

    /// DescribeConfigs: every setting of each topic, sorted by key, or the topic's error.
    pub fn describe_topic_configs(
        &mut self,
        topics: &[String],
    ) -> Result<BTreeMap<String, std::result::Result<Vec<ConfigEntry>, Outcome>>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            DescribeConfigsRequest::default().with_resources(
                topics
                    .iter()
                    .map(|t| DescribeConfigsResource::default().with_resource_type(RESOURCE_TOPIC).with_resource_name(str_bytes(t)).with_configuration_keys(None))
                    .collect(),
            )
        })?;
        Ok(resp
            .results
            .into_iter()
            .map(|r| {
                let answer = if r.error_code != 0 {
                    Err(Outcome { error: r.error_code, message: r.error_message.map(|m| m.to_string()) })
                } else {
                    let mut entries: Vec<ConfigEntry> = r
                        .configs
                        .into_iter()
                        .map(|c| ConfigEntry {
                            key: c.name.to_string(),
                            value: c.value.map(|v| v.to_string()),
                            source: c.config_source,
                            read_only: c.read_only,
                            sensitive: c.is_sensitive,
                        })
                        .collect();
                    entries.sort_by(|a, b| a.key.cmp(&b.key));
                    Ok(entries)
                };
                (r.resource_name.to_string(), answer)
            })
            .collect())
    }

    /// The APIs the broker at `addr` supports: (key, min version, max version).
    pub fn api_versions(&mut self, addr: &str) -> Result<Vec<(i16, i16, i16)>> {
        Ok(self.conn(addr)?.api_versions().to_vec())
    }

    /// The host:port of `group`'s coordinator, retrying while the cluster is still electing one.
    pub fn coordinator(&mut self, group: &str) -> Result<String> {
        self.find_coordinator(0, group)
    }

    /// The host:port of transactional id `id`'s transaction coordinator.
    pub fn txn_coordinator(&mut self, id: &str) -> Result<String> {
        self.find_coordinator(1, id)
    }

    /// FindCoordinator for a group (`key_type` 0) or a transactional id (1).
    fn find_coordinator(&mut self, key_type: i8, group: &str) -> Result<String> {
        let cache_key = format!("{key_type}/{group}");
        if let Some(a) = self.coordinators.get(&cache_key) {
            return Ok(a.clone());
        }
        let what = if key_type == 1 { "transactional id" } else { "group" };
        let bootstrap = self.bootstrap.clone();
        for attempt in 1..=COORDINATOR_TRIES {
            let key = StrBytes::from_string(group.to_string());
            let (v, resp) = self.conn(&bootstrap)?.call(|v| {
                if v >= 4 {
                    FindCoordinatorRequest::default().with_key_type(key_type).with_coordinator_keys(vec![key])
                } else {
                    FindCoordinatorRequest::default().with_key_type(key_type).with_key(key)
                }
            })?;
            let (error, message, host, port) = if v >= 4 {
                let c = resp.coordinators.into_iter().next().ok_or_else(|| anyhow!("FindCoordinator gave no answer"))?;
                (c.error_code, c.error_message, c.host, c.port)
            } else {
                (resp.error_code, resp.error_message, resp.host, resp.port)
            };
            match error {
                0 => {
                    let addr = format!("{host}:{port}");
                    self.coordinators.insert(cache_key, addr.clone());
                    return Ok(addr);
                }
                codes::COORDINATOR_NOT_AVAILABLE | codes::COORDINATOR_LOAD_IN_PROGRESS | codes::NOT_COORDINATOR
                    if attempt < COORDINATOR_TRIES =>
                {
                    std::thread::sleep(COORDINATOR_BACKOFF)
                }
                code => return Err(kafka_error(code, message.as_deref(), &format!("finding the coordinator of {what} '{group}'"))),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Every group of every broker (ListGroups goes to each broker Metadata names, as Kafka's
    /// admin client does), sorted by name; `states` filters (v4+ brokers filter themselves).
    pub fn list_groups(&mut self, states: &[String]) -> Result<Vec<Listed>> {
        let (brokers, _) = self.metadata(&[])?;
        let mut out = Vec::new();
        for addr in brokers.values() {
            let (_, resp) = self.conn(addr)?.call(|v| {
                let filter = if v >= 4 { states.iter().map(|s| StrBytes::from_string(s.clone())).collect() } else { vec![] };
                ListGroupsRequest::default().with_states_filter(filter)
            })?;
            if resp.error_code != 0 {
                return Err(kafka_error(resp.error_code, None, &format!("listing the groups of {addr}")));
            }
            out.extend(resp.groups.into_iter().map(|g| Listed {
                group: g.group_id.0.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
            }));
        }
        // A v0-3 broker has no state filter and no state (empty): filter here too.
        out.retain(|g| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(&g.state)));
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out.dedup_by(|a, b| a.group == b.group);
        Ok(out)
    }

    /// Every transactional id every broker coordinates (ListTransactions to each broker, as
    /// Kafka's admin client does), sorted: (coordinator id, id, producer id, state).
    pub fn list_transactions(&mut self, states: &[String]) -> Result<Vec<(i32, String, i64, String)>> {
        let (brokers, _) = self.metadata(&[])?;
        let mut out = Vec::new();
        for (id, addr) in &brokers {
            let (_, resp) = self.conn(addr)?.call(|_| {
                ListTransactionsRequest::default()
                    .with_state_filters(states.iter().map(|s| StrBytes::from_string(s.clone())).collect())
                    .with_duration_filter(-1)
            })?;
            if resp.error_code != 0 {
                return Err(kafka_error(resp.error_code, None, &format!("listing the transactions of {addr}")));
            }
            out.extend(resp.transaction_states.into_iter().map(|t| (*id, t.transactional_id.0.to_string(), t.producer_id.0, t.transaction_state.to_string())));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Sets and removes SCRAM credentials (AlterUserScramCredentials): upsertions are (user,
    /// Kafka mechanism code, iterations, salt, salted password), deletions (user, mechanism).
    /// Each user's outcome: its error code and message.
    pub fn alter_scram_credentials(
        &mut self,
        upsertions: Vec<(String, i8, i32, Vec<u8>, Vec<u8>)>,
        deletions: Vec<(String, i8)>,
    ) -> Result<Vec<(String, i16, Option<String>)>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            AlterUserScramCredentialsRequest::default()
                .with_upsertions(
                    upsertions
                        .iter()
                        .map(|(u, m, i, salt, salted)| {
                            ScramCredentialUpsertion::default()
                                .with_name(str_bytes(u))
                                .with_mechanism(*m)
                                .with_iterations(*i)
                                .with_salt(salt.clone().into())
                                .with_salted_password(salted.clone().into())
                        })
                        .collect(),
                )
                .with_deletions(deletions.iter().map(|(u, m)| ScramCredentialDeletion::default().with_name(str_bytes(u)).with_mechanism(*m)).collect())
        })?;
        Ok(resp.results.into_iter().map(|r| (r.user.to_string(), r.error_code, r.error_message.map(|m| m.to_string()))).collect())
    }

    /// SCRAM users and their (mechanism code, iterations) (DescribeUserScramCredentials); `users`
    /// empty: every user.
    pub fn describe_scram_credentials(&mut self, users: &[String]) -> Result<Vec<(String, i16, Option<String>, Vec<(i8, i32)>)>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            DescribeUserScramCredentialsRequest::default()
                .with_users((!users.is_empty()).then(|| users.iter().map(|u| UserName::default().with_name(str_bytes(u))).collect()))
        })?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, resp.error_message.as_deref(), "describing SCRAM users"));
        }
        Ok(resp
            .results
            .into_iter()
            .map(|r| {
                let infos = r.credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect();
                (r.user.to_string(), r.error_code, r.error_message.map(|m| m.to_string()), infos)
            })
            .collect())
    }

    /// Creates ACL bindings (CreateAcls); each one's error code and message.
    pub fn create_acls(&mut self, acls: &[AclSpec]) -> Result<Vec<(i16, Option<String>)>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            CreateAclsRequest::default().with_creations(
                acls.iter()
                    .map(|a| {
                        AclCreation::default()
                            .with_resource_type(a.resource_type)
                            .with_resource_name(str_bytes(&a.name))
                            .with_resource_pattern_type(a.pattern)
                            .with_principal(str_bytes(&a.principal))
                            .with_host(str_bytes(&a.host))
                            .with_operation(a.operation)
                            .with_permission_type(a.permission)
                    })
                    .collect(),
            )
        })?;
        Ok(resp.results.into_iter().map(|r| (r.error_code, r.error_message.map(|m| m.to_string()))).collect())
    }

    /// The ACL bindings a filter matches (DescribeAcls); codes of ANY are 1, names None for any.
    pub fn describe_acls(&mut self, f: &AclFilterSpec) -> Result<Vec<AclSpec>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            DescribeAclsRequest::default()
                .with_resource_type_filter(f.resource_type)
                .with_resource_name_filter(f.name.as_deref().map(str_bytes))
                .with_pattern_type_filter(f.pattern)
                .with_principal_filter(f.principal.as_deref().map(str_bytes))
                .with_host_filter(f.host.as_deref().map(str_bytes))
                .with_operation(f.operation)
                .with_permission_type(f.permission)
        })?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, resp.error_message.as_deref(), "describing ACLs"));
        }
        let mut out = Vec::new();
        for r in resp.resources {
            for a in r.acls {
                out.push(AclSpec {
                    resource_type: r.resource_type,
                    name: r.resource_name.to_string(),
                    pattern: r.pattern_type,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission: a.permission_type,
                });
            }
        }
        Ok(out)
    }

    /// Deletes the ACL bindings each filter matches (DeleteAcls): per filter, the bindings deleted
    /// or the error.
    pub fn delete_acls(&mut self, filters: &[AclFilterSpec]) -> Result<Vec<Result<Vec<AclSpec>>>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            DeleteAclsRequest::default().with_filters(
                filters
                    .iter()
                    .map(|f| {
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(f.resource_type)
                            .with_resource_name_filter(f.name.as_deref().map(str_bytes))
                            .with_pattern_type_filter(f.pattern)
                            .with_principal_filter(f.principal.as_deref().map(str_bytes))
                            .with_host_filter(f.host.as_deref().map(str_bytes))
                            .with_operation(f.operation)
                            .with_permission_type(f.permission)
                    })
                    .collect(),
            )
        })?;
        Ok(resp
            .filter_results
            .into_iter()
            .map(|r| {
                if r.error_code != 0 {
                    return Err(kafka_error(r.error_code, r.error_message.as_deref(), "deleting ACLs"));
                }
                Ok(r.matching_acls
                    .into_iter()
                    .map(|a| AclSpec {
                        resource_type: a.resource_type,
                        name: a.resource_name.to_string(),
                        pattern: a.pattern_type,
                        principal: a.principal.to_string(),
                        host: a.host.to_string(),
                        operation: a.operation,
                        permission: a.permission_type,
                    })
                    .collect())
            })
            .collect())
    }

    /// Every client quota (DescribeClientQuotas): (entity as (type, name or None for the
    /// default), [(key, value)]).
    pub fn describe_quotas(&mut self) -> Result<Vec<(Vec<(String, Option<String>)>, Vec<(String, f64)>)>> {
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| DescribeClientQuotasRequest::default())?;
        if resp.error_code != 0 {
            return Err(kafka_error(resp.error_code, resp.error_message.as_deref(), "describing client quotas"));
        }
        Ok(resp
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e.entity.iter().map(|x| (x.entity_type.to_string(), x.entity_name.as_ref().map(|n| n.to_string()))).collect(),
                    e.values.iter().map(|v| (v.key.to_string(), v.value)).collect(),
                )
            })
            .collect())
    }

    /// Sets (`Some`) and removes (`None`) quota keys of one entity (AlterClientQuotas).
    pub fn alter_quotas(&mut self, entity: &[(String, Option<String>)], ops: &[(String, Option<f64>)]) -> Result<(i16, Option<String>)> {
        use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
        let bootstrap = self.bootstrap.clone();
        let (_, resp) = self.conn(&bootstrap)?.call(|_| {
            AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
                .with_entity(entity.iter().map(|(t, n)| EntityData::default().with_entity_type(str_bytes(t)).with_entity_name(n.as_deref().map(str_bytes))).collect())
                .with_ops(ops.iter().map(|(k, v)| OpData::default().with_key(str_bytes(k)).with_value(v.unwrap_or(0.0)).with_remove(v.is_none())).collect())])
        })?;
        let e = resp.entries.into_iter().next().ok_or_else(|| anyhow!("AlterClientQuotas gave no answer"))?;
        Ok((e.error_code, e.error_message.map(|m| m.to_string())))
    }

    /// A transactional id's state at its coordinator (DescribeTransactions).
    pub fn describe_transaction(&mut self, id: &str) -> Result<kafka_protocol::messages::describe_transactions_response::TransactionState> {
        let addr = self.txn_coordinator(id)?;
        let key = TransactionalId(StrBytes::from_string(id.to_string()));
        let (_, resp) = self.conn(&addr)?.call(|_| DescribeTransactionsRequest::default().with_transactional_ids(vec![key]))?;
        let t = resp.transaction_states.into_iter().next().ok_or_else(|| anyhow!("DescribeTransactions gave no answer"))?;
        if t.error_code != 0 {
            return Err(kafka_error(t.error_code, None, &format!("describing transactional id '{id}'")));
        }
        Ok(t)
    }

    /// A group's state and members; `None` if the coordinator does not know it.
    pub fn describe_group(&mut self, group: &str) -> Result<Option<Described>> {
        let addr = self.coordinator(group)?;
        let (_, resp) = self
            .conn(&addr)?
            .call(|_| DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]))?;
        let g = resp.groups.into_iter().next().ok_or_else(|| anyhow!("DescribeGroups gave no answer"))?;
        match g.error_code {
            0 if g.group_state.as_str() == "Dead" => return self.describe_consumer_group(group),
            0 => {}
            codes::GROUP_ID_NOT_FOUND => return self.describe_consumer_group(group),
            code => return Err(kafka_error(code, g.error_message.as_deref(), &format!("describing group '{group}'"))),
        }
        let consumer = g.protocol_type.as_str() == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: if consumer { decode_assignment(m.member_assignment) } else { Vec::new() },
            })
            .collect();
        Ok(Some(Described {
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members,
        }))
    }

    /// A KIP-848 (`group.protocol=consumer`) group through ConsumerGroupDescribe, which
    /// DescribeGroups does not show; `None` if the broker lacks the API or does not know the group.
    fn describe_consumer_group(&mut self, group: &str) -> Result<Option<Described>> {
        let addr = self.coordinator(group)?;
        let conn = self.conn(&addr)?;
        if conn.version::<ConsumerGroupDescribeRequest>().is_err() {
            return Ok(None);
        }
        let (_, resp) = conn.call(|_| {
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))])
        })?;
        let g = resp.groups.into_iter().next().ok_or_else(|| anyhow!("ConsumerGroupDescribe gave no answer"))?;
        match g.error_code {
            0 if g.group_state.as_str() != "Dead" => {}
            0 | codes::GROUP_ID_NOT_FOUND => return Ok(None),
            code => return Err(kafka_error(code, g.error_message.as_deref(), &format!("describing group '{group}'"))),
        }
        let members = g
            .members
            .into_iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                instance_id: m.instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: m
                    .assignment
                    .topic_partitions
                    .into_iter()
                    .flat_map(|t| {
                        let name = t.topic_name.0.to_string();
                        t.partitions.into_iter().map(move |p| (name.clone(), p))
                    })
                    .collect(),
            })
            .collect();
        Ok(Some(Described {
            state: g.group_state.to_string(),
            protocol_type: "consumer".to_string(),
            protocol: g.assignor_name.to_string(),
            members,
        }))
    }

    /// Deletes `group`; `Ok(None)` if deleted, `Ok(Some(code))` with the broker's error otherwise.
    pub fn delete_group(&mut self, group: &str) -> Result<Option<i16>> {
        let addr = self.coordinator(group)?;
        let (_, resp) = self
            .conn(&addr)?
            .call(|_| DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]))?;
        let r = resp.results.into_iter().next().ok_or_else(|| anyhow!("DeleteGroups gave no answer"))?;
        Ok(if r.error_code == 0 { None } else { Some(r.error_code) })
    }

    /// Every committed offset of `group` (partitions with none left out).
    pub fn committed(&mut self, group: &str) -> Result<BTreeMap<Tp, i64>> {
        let addr = self.coordinator(group)?;
        let gid = GroupId(StrBytes::from_string(group.to_string()));
        let conn = self.conn(&addr)?;
        if conn.version::<OffsetFetchRequest>()? < 2 {
            bail!("the broker at {addr} is too old: OffsetFetch v2 or later is needed to list a group's offsets");
        }
        let (v, resp) = conn.call(|v| {
            if v >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(gid).with_topics(None)])
            } else {
                OffsetFetchRequest::default().with_group_id(gid).with_topics(None)
            }
        })?;
        let what = format!("fetching the committed offsets of group '{group}'");
        let mut out = BTreeMap::new();
        let mut add = |topic: &TopicName, partition: i32, offset: i64, error: i16| -> Result<()> {
            if error != 0 {
                return Err(kafka_error(error, None, &format!("{what} ({topic}-{partition})", topic = topic.0)));
            }
            if offset >= 0 {
                out.insert((topic.0.to_string(), partition), offset);
            }
            Ok(())
        };
        if v >= 8 {
            let g = resp.groups.into_iter().next().ok_or_else(|| anyhow!("OffsetFetch gave no answer"))?;
            if g.error_code != 0 {
                return Err(kafka_error(g.error_code, None, &what));
            }
            for t in &g.topics {
                for p in &t.partitions {
                    add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
                }
            }
        } else {
            if resp.error_code != 0 {
                return Err(kafka_error(resp.error_code, None, &what));
            }
            for t in &resp.topics {
                for p in &t.partitions {
                    add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
                }
            }
        }
        Ok(out)
    }

    /// Commits `offsets` for `group` as an admin does (generation -1, no member id), which a
    /// coordinator accepts only while the group has no members. Returns each partition's error
    /// code (0 for success).
    pub fn commit(&mut self, group: &str, offsets: &BTreeMap<Tp, i64>) -> Result<Vec<(Tp, i16)>> {
        let addr = self.coordinator(group)?;
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            topics
                .entry(t.as_str())
                .or_default()
                .push(OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(*o));
        }
        let (_, resp) = self.conn(&addr)?.call(|_| {
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_generation_id_or_member_epoch(-1)
                .with_member_id(StrBytes::from_static_str(""))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetCommitRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partitions(ps)
                        })
                        .collect(),
                )
        })?;
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| ((t.name.0.to_string(), p.partition_index), p.error_code)))
            .collect())
    }

    /// ListOffsets at `timestamp` ([`LATEST`], [`EARLIEST`] or milliseconds) for `partitions`,
    /// asked of each partition's leader. Each answer is the offset (-1 if no record is that
    /// recent) or the Kafka error name.
    pub fn list_offsets(&mut self, partitions: &[Tp], timestamp: i64) -> Result<BTreeMap<Tp, std::result::Result<i64, String>>> {
        let (by_leader, mut out) = self.route(partitions)?;
        for (addr, wanted) in by_leader {
            let (_, resp) = self.conn(&addr).with_context(|| format!("connecting to the leader at {addr}"))?.call(|v| {
                let mut r = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(
                    wanted
                        .iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default().with_name(topic_name(t)).with_partitions(
                                ps.iter()
                                    .map(|p| ListOffsetsPartition::default().with_partition_index(*p).with_timestamp(timestamp))
                                    .collect(),
                            )
                        })
                        .collect(),
                );
                if v >= 10 {
                    r.timeout_ms = crate::config::limits::CLIENT_REQUEST_TIMEOUT_MS as i32;
                }
                r
            })?;
            for t in resp.topics {
                for p in t.partitions {
                    let r = if p.error_code == 0 { Ok(p.offset) } else { Err(error_name(p.error_code)) };
                    out.insert((t.name.0.to_string(), p.partition_index), r);
                }
            }
        }
        for tp in partitions {
            out.entry(tp.clone()).or_insert_with(|| Err("no answer".to_string()));
        }
        Ok(out)
    }

    /// DeleteRecords: each partition's log start moved up to its offset (-1: the high
    /// watermark), asked of each partition's leader. Each answer is the new log start offset
    /// (the low watermark) or the Kafka error name.
    pub fn delete_records(&mut self, offsets: &BTreeMap<Tp, i64>) -> Result<BTreeMap<Tp, std::result::Result<i64, String>>> {
        let partitions: Vec<Tp> = offsets.keys().cloned().collect();
        let (by_leader, mut out) = self.route(&partitions)?;
        for (addr, wanted) in by_leader {
            let (_, resp) = self.conn(&addr).with_context(|| format!("connecting to the leader at {addr}"))?.call(|_| {
                DeleteRecordsRequest::default().with_timeout_ms(CLIENT_ADMIN_TIMEOUT_MS).with_topics(
                    wanted
                        .iter()
                        .map(|(t, ps)| {
                            DeleteRecordsTopic::default().with_name(topic_name(t)).with_partitions(
                                ps.iter()
                                    .map(|p| DeleteRecordsPartition::default().with_partition_index(*p).with_offset(offsets[&(t.clone(), *p)]))
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })?;
            for t in resp.topics {
                for p in t.partitions {
                    let r = if p.error_code == 0 { Ok(p.low_watermark) } else { Err(error_name(p.error_code)) };
                    out.insert((t.name.0.to_string(), p.partition_index), r);
                }
            }
        }
        for tp in partitions {
            out.entry(tp).or_insert_with(|| Err("no answer".to_string()));
        }
        Ok(out)
    }

    /// `partitions` grouped by their leader's address (then topic), for requests a leader must
    /// answer; those that have no leader (unknown topic or partition, none elected) come back
    /// apart, with the Kafka error name.
    #[allow(clippy::type_complexity)]
    fn route(
        &mut self,
        partitions: &[Tp],
    ) -> Result<(BTreeMap<String, BTreeMap<String, Vec<i32>>>, BTreeMap<Tp, std::result::Result<i64, String>>)> {
        let mut names: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        names.sort();
        names.dedup();
        let (brokers, topics) = self.metadata(&names)?;
        let mut failed = BTreeMap::new();
        let mut by_leader: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
        for (t, p) in partitions {
            let leader = match topics.get(t) {
                Some(m) if m.error != 0 => Err(error_name(m.error)),
                Some(m) => match m.partitions.get(p) {
                    Some(&l) if l >= 0 => Ok(l),
                    Some(_) => Err("LEADER_NOT_AVAILABLE".to_string()),
                    None => Err(error_name(codes::UNKNOWN_TOPIC_OR_PARTITION)),
                },
                None => Err(error_name(codes::UNKNOWN_TOPIC_OR_PARTITION)),
            };
            match leader {
                Ok(l) => {
                    let addr = brokers.get(&l).ok_or_else(|| anyhow!("Metadata names leader {l} but not its address"))?;
                    by_leader.entry(addr.clone()).or_default().entry(t.clone()).or_default().push(*p);
                }
                Err(e) => {
                    failed.insert((t.clone(), *p), Err(e));
                }
            }
        }
        Ok((by_leader, failed))
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// The partitions in a consumer-protocol assignment (a version, then the versioned struct);
/// empty if there are none or the bytes are not one.
pub fn decode_assignment(mut bytes: bytes::Bytes) -> Vec<Tp> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    bytes::Buf::advance(&mut bytes, 2);
    // Newer versions only add fields at the end: read them as the newest this crate knows.
    let version = version.min(3);
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let t = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (t.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn assignments_decode_at_their_version() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default().with_topic(TopicName(StrBytes::from_static_str("t"))).with_partitions(vec![2, 0]),
        ]);
        for version in [0i16, 1, 3] {
            let mut b = bytes::BytesMut::new();
            b.put_i16(version);
            a.encode(&mut b, version).unwrap();
            assert_eq!(decode_assignment(b.freeze()), vec![("t".to_string(), 2), ("t".to_string(), 0)]);
        }
        assert!(decode_assignment(bytes::Bytes::new()).is_empty());
        assert!(decode_assignment(bytes::Bytes::from_static(&[0, 0, 0])).is_empty());
    }
}
