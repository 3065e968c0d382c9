//! One consumer group under the KIP-848 "consumer" rebalance protocol (ConsumerGroupHeartbeat,
//! API key 68, v0-1; ConsumerGroupDescribe, key 69), with server-side assignment, as a state
//! machine: [`ConsumerGroup::heartbeat`] takes a request, the topics as the broker knows them and
//! the current time, and returns the response. It keeps no clock and does no I/O; the owning
//! shard calls [`ConsumerGroup::tick`] at [`ConsumerGroup::next_deadline`].
//!
//! The model follows Kafka's group coordinator (`GroupMetadataManager`,
//! `CurrentAssignmentBuilder`):
//! - The **group epoch** is bumped when membership, a subscription, or the partition count of a
//!   subscribed topic changes. A bump already waiting for its target assignment absorbs further
//!   changes (the epoch only has to grow, not count changes).
//! - The **target assignment** is recomputed by the group's assignor ("uniform" or "range") at the
//!   next heartbeat after a bump; its epoch is the **assignment epoch**.
//! - Each member **reconciles** towards its target on its own heartbeats. Partitions it owns that
//!   left its target are revoked first: it stays at its epoch (`UnrevokedPartitions`) and is told
//!   its assignment minus them; once a heartbeat shows them released it moves to the target epoch.
//!   Partitions of its target that another member still holds (assigned or being revoked) are
//!   withheld (`UnreleasedPartitions`) and handed out on a later heartbeat. So no partition is
//!   ever held by two members, which [`ConsumerGroup::check_invariants`] asserts.
//!
//! Regular-expression subscriptions (v1 `SubscribedTopicRegex`) are RE2-like patterns (the
//! `regex` crate's syntax, which is RE2's: no look-around, no back-references) matched against
//! whole topic names, as Kafka matches them; internal topics (`__` names) never match. A member
//! subscribes to its names and every topic its pattern matches; the match is redone against the
//! broker's topics on every heartbeat, so a topic created later joins the subscription and bumps
//! the group epoch like any subscription change. An invalid pattern gets
//! INVALID_REGULAR_EXPRESSION.
//!
//! Simplifications, on purpose: assignors ignore racks; a static member's temporary leave (epoch
//! -2) keeps its assignment for a full session timeout counted from the leave (Kafka counts from
//! the last heartbeat); the previous member epoch is only replaced when the epoch changes. A
//! known member id rejoining with epoch 0 gets its current state back (KAFKA-19233), and must
//! keep its instance id (as Kafka's pending fix for static members rejoining under their own id).
//!
//! Persistence: [`ConsumerGroup::stored`] is what `__consumer_offsets` keeps (Kafka's consumer
//! group records, see `coordinator::offsets`), written after any change by the shard's metadata
//! writer, and [`ConsumerGroup::restore`] is what a new coordinator (after a restart, or a
//! leadership move of the group's partition) starts from: members keep their epochs and
//! partitions and go on without rejoining. The write is not awaited before the reply (Kafka
//! awaits it): a change lost with a failed coordinator makes its member rejoin.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::offsets::{self, ConsumerMemberAssignment, ConsumerMemberMetadata};
use crate::protocol::ResponseError;

/// Kafka's "no error".
pub const NONE: i16 = 0;
/// `MemberEpoch` of a member leaving the group.
pub const LEAVE_EPOCH: i32 = -1;
/// `MemberEpoch` of a static member leaving temporarily (it keeps its assignment while away).
pub const STATIC_LEAVE_EPOCH: i32 = -2;
/// ConsumerGroupDescribe v1 `MemberType` of a member using the consumer protocol.
pub const MEMBER_TYPE_CONSUMER: i8 = 1;

/// Partitions by topic id: an assignment, a target, or what a member reports it owns. Topics
/// with no partitions are left out, so two equal sets compare equal.
pub type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// Partitions as the wire lists them: (topic id, partitions), sorted by topic id.
pub type TopicPartitions = Vec<(Uuid, Vec<i32>)>;

/// How the group sees the cluster's topics; the handler passes the broker's metadata image.
pub trait TopicLookup {
    /// The id and partition count of an existing topic.
    fn topic(&self, name: &str) -> Option<(Uuid, i32)>;
    /// The name of an existing topic (for ConsumerGroupDescribe's topic names).
    fn topic_name(&self, id: Uuid) -> Option<&str>;
    /// Every existing topic's name (regular-expression subscriptions match against them).
    fn topic_names(&self) -> Vec<&str>;
}

/// A regular-expression subscription: the pattern as the client sent it, and compiled to match
/// whole topic names.
#[derive(Debug, Clone)]
struct TopicPattern {
    source: String,
    whole: regex::Regex,
}

impl TopicPattern {
    fn new(source: &str) -> Result<TopicPattern, String> {
        let whole = regex::Regex::new(&format!("^(?:{source})$")).map_err(|e| e.to_string())?;
        Ok(TopicPattern { source: source.to_string(), whole })
    }

    /// Whether a topic belongs to the subscription (never an internal `__` topic).
    fn matches(&self, topic: &str) -> bool {
        !topic.starts_with("__") && self.whole.is_match(topic)
    }
}

/// A server-side assignor (Kafka's `group.consumer.assignors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Balanced and sticky: members with the same subscriptions differ by at most one
    /// partition, and keep what they had where balance allows.
    Uniform,
    /// Per topic, members sorted by id get contiguous ranges; the first `partitions % members`
    /// get one more.
    Range,
}

impl Assignor {
    /// The name clients ask for in `ServerAssignor` and ConsumerGroupDescribe reports.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
    pub fn from_name(name: &str) -> Option<Assignor> {
        [Assignor::Uniform, Assignor::Range].into_iter().find(|a| a.name() == name)
    }
}

/// Broker-wide settings of consumer-protocol groups (Kafka's `group.consumer.*` keys).
#[derive(Debug, Clone)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`: a member silent this long is removed.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: told to members in every reply.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`: members beyond it get GROUP_MAX_SIZE_REACHED.
    pub max_size: Option<usize>,
    /// `group.consumer.assignors`: those members may ask for; the first is the default.
    pub assignors: Vec<Assignor>,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: None,
            assignors: vec![Assignor::Uniform, Assignor::Range],
        }
    }
}

/// A ConsumerGroupHeartbeat request, field for field, plus the API version and the caller.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// The request's API version: from v1 the client generates its member id.
    pub version: i16,
    /// Empty on a v0 first join (the group generates one).
    pub member_id: String,
    /// 0 to join or rejoin, -1 to leave, -2 for a static member's temporary leave, else the
    /// member's current epoch.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 when unchanged; required on a join.
    pub rebalance_timeout_ms: i32,
    /// None when unchanged; names or a regex are required on a join.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// v1: None when unchanged, empty to drop the pattern (see the module doc).
    pub subscribed_topic_regex: Option<String>,
    /// None when unchanged.
    pub server_assignor: Option<String>,
    /// What the member owns; None when unchanged, and empty on a join.
    pub topic_partitions: Option<TopicPartitions>,
    pub client_id: String,
    pub client_host: String,
}

/// A ConsumerGroupHeartbeat response, field for field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub error_code: i16,
    pub error_message: Option<String>,
    /// None on errors, as Kafka answers.
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment; None when unchanged (see [`ConsumerGroup::heartbeat`]).
    pub assignment: Option<TopicPartitions>,
}

/// Where a member is in its reconciliation (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// It has every partition of its target, at the target's epoch.
    Stable,
    /// It must release `pending_revocation` before it moves to the next epoch.
    UnrevokedPartitions,
    /// It is at the target epoch but waits for partitions other members still hold.
    UnreleasedPartitions,
}

/// Everything ConsumerGroupDescribe v0-1 reports of one group (topic names come from
/// [`TopicLookup::topic_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: &'static str,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: TopicPartitions,
    pub target_assignment: TopicPartitions,
    /// Always [`MEMBER_TYPE_CONSUMER`].
    pub member_type: i8,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    /// Sorted, without duplicates.
    subscribed: Vec<String>,
    /// Topics matching this are subscribed too.
    pattern: Option<TopicPattern>,
    server_assignor: Option<Assignor>,
    epoch: i32,
    /// The epoch before the last change, accepted once more in case the reply was lost.
    previous_epoch: i32,
    state: MemberState,
    /// What it may consume now.
    assigned: Partitions,
    /// What it was told to give up and has not yet reported released; still its own.
    pending_revocation: Partitions,
    session_deadline_ms: i64,
    /// OffsetCommits of this member still being written: each keeps the session alive (see
    /// `commits_in_flight` in `coordinator::group`).
    commits_in_flight: u32,
    /// Set while `UnrevokedPartitions`: fenced if it has not revoked by then.
    rebalance_deadline_ms: Option<i64>,
}

impl Member {
    fn new(instance_id: Option<String>) -> Member {
        Member {
            instance_id,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed: Vec::new(),
            pattern: None,
            server_assignor: None,
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: Partitions::new(),
            pending_revocation: Partitions::new(),
            session_deadline_ms: 0,
            commits_in_flight: 0,
            rebalance_deadline_ms: None,
        }
    }

    fn set_epoch(&mut self, epoch: i32) {
        if epoch != self.epoch {
            self.previous_epoch = self.epoch;
            self.epoch = epoch;
        }
    }
}

/// A refused request: the error and Kafka's message for it.
struct Refusal {
    error: ResponseError,
    message: String,
}

fn refuse<T>(error: ResponseError, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal { error, message: message.into() })
}

/// Who a (non-leave) heartbeat is from, once checked.
enum Resolved {
    Known(String),
    New(String),
    /// A static member back under a new member id, taking over its instance's state.
    Replace { old: String, new: String },
}

/// One consumer-protocol group. Owned by the core that coordinates the group (the owner of its
/// `__consumer_offsets` partition); never shared.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: String,
    config: ConsumerGroupConfig,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// The target assignment of `assignment_epoch`, by member id.
    target: BTreeMap<String, Partitions>,
    /// The subscribed topics that exist, by name: (id, partition count), as of the last heartbeat.
    subscribed_topics: BTreeMap<String, (Uuid, i32)>,
    /// The assignor of the current target.
    assignor: Assignor,
    /// Set when what `__consumer_offsets` stores of the group changed (see
    /// [`ConsumerGroup::take_changed`]).
    changed: bool,
}

/// A KIP-848 group as read back from `__consumer_offsets`, for [`ConsumerGroup::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, StoredMember>,
}

/// One member's records; a member with no subscription or no current assignment is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredMember {
    pub metadata: Option<ConsumerMemberMetadata>,
    pub target: Option<offsets::TopicPartitions>,
    pub assignment: Option<ConsumerMemberAssignment>,
}

impl ConsumerGroup {
    pub fn new(id: String, config: ConsumerGroupConfig) -> ConsumerGroup {
        assert!(!config.assignors.is_empty(), "a consumer group needs at least one assignor");
        assert!(config.session_timeout_ms > 0);
        let assignor = config.assignors[0];
        ConsumerGroup {
            id,
            config,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            assignor,
            changed: false,
        }
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// The state as ConsumerGroupDescribe and ListGroups report it.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.state != MemberState::Stable || m.epoch != self.assignment_epoch) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// For OffsetCommit and OffsetFetch: whether `member_id` is a member at exactly
    /// `member_epoch`. Errors are UNKNOWN_MEMBER_ID and STALE_MEMBER_EPOCH. (Kafka also lets a
    /// commit with epoch -1 through when the group is empty: the caller checks that first.)
    pub fn is_member(&self, member_id: &str, member_epoch: i32) -> Result<(), i16> {
        let m = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId.code())?;
        if m.epoch != member_epoch {
            return Err(ResponseError::StaleMemberEpoch.code());
        }
        Ok(())
    }

    /// A member's OffsetCommit is being written: its session cannot expire until
    /// [`ConsumerGroup::commit_ended`].
    pub fn commit_started(&mut self, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.commits_in_flight += 1;
        }
    }

    /// The write of a commit from [`ConsumerGroup::commit_started`] ended, well or not; the
    /// session runs again from `now`.
    pub fn commit_ended(&mut self, member_id: &str, now: i64) {
        let timeout = self.config.session_timeout_ms as i64;
        if let Some(m) = self.members.get_mut(member_id) {
            m.commits_in_flight = m.commits_in_flight.saturating_sub(1);
            m.session_deadline_ms = m.session_deadline_ms.max(now + timeout);
        }
    }

    /// The earliest time at which [`ConsumerGroup::tick`] can remove a member.
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| [(m.commits_in_flight == 0).then_some(m.session_deadline_ms), m.rebalance_deadline_ms])
            .flatten()
            .min()
    }

    /// Removes members whose session expired and members that did not revoke within their
    /// rebalance timeout; returns their ids.
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        let mut removed = Vec::new();
        for (id, m) in &self.members {
            if m.session_deadline_ms <= now_ms && m.commits_in_flight == 0 {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                removed.push(id.clone());
            } else if m.rebalance_deadline_ms.is_some_and(|d| d <= now_ms) {
                tracing::info!(group = %self.id, member = %id, epoch = m.epoch, "member fenced: it did not revoke in time");
                removed.push(id.clone());
            }
        }
        for id in &removed {
            self.remove_member(id);
        }
        self.changed |= !removed.is_empty();
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        removed
    }

    /// Handles one ConsumerGroupHeartbeat. The reply carries the assignment when the member
    /// joins (epoch 0), sends a full request (rebalance timeout, names and owned partitions all
    /// set), reports owned partitions that differ from its assignment, or when its assignment
    /// changed; otherwise None.
    pub fn heartbeat(&mut self, req: Heartbeat, topics: &impl TopicLookup, now_ms: i64) -> HeartbeatReply {
        // What is stored changes with the epochs, the membership or this member's own state: a
        // heartbeat changes no other member without moving an epoch or the member count.
        let asked = req.member_id.clone();
        let shape = |g: &ConsumerGroup| (g.group_epoch, g.assignment_epoch, g.members.len());
        let before = (shape(self), self.stored_fingerprint(&asked));
        let reply = match self.try_heartbeat(req, topics, now_ms) {
            Ok(reply) => reply,
            Err(Refusal { error, message }) => HeartbeatReply {
                error_code: error.code(),
                error_message: Some(message),
                member_id: None,
                member_epoch: 0,
                heartbeat_interval_ms: 0,
                assignment: None,
            },
        };
        let answered = reply.member_id.as_deref().unwrap_or(&asked);
        if before != (shape(self), self.stored_fingerprint(&asked)) || (answered != asked && self.members.contains_key(answered)) {
            self.changed = true;
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        reply
    }

    fn try_heartbeat(&mut self, req: Heartbeat, topics: &impl TopicLookup, now: i64) -> Result<HeartbeatReply, Refusal> {
        self.validate(&req)?;
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&req, now);
        }
        if let Some(max) = self.config.max_size {
            if self.members.len() >= max && !self.members.contains_key(&req.member_id) {
                return refuse(
                    ResponseError::GroupMaxSizeReached,
                    format!("The consumer group has reached its maximum capacity of {max} members."),
                );
            }
        }
        let owned = req.topic_partitions.as_deref().map(to_partitions);
        let member_id = match self.resolve(&req, owned.as_ref())? {
            Resolved::Known(id) => id,
            Resolved::New(id) => {
                tracing::info!(group = %self.id, member = %id, "member joins");
                self.members.insert(id.clone(), Member::new(req.instance_id.clone()));
                id
            }
            Resolved::Replace { old, new } => {
                tracing::info!(group = %self.id, member = %new, replaced = %old, "static member rejoins");
                let mut m = self.members.remove(&old).expect("resolved from the members");
                (m.epoch, m.previous_epoch) = (0, 0);
                self.members.insert(new.clone(), m);
                if let Some(t) = self.target.remove(&old) {
                    self.target.insert(new.clone(), t);
                }
                new
            }
        };

        // Update the member from the request; fields that are None stay as they were.
        let m = self.members.get_mut(&member_id).expect("resolved or inserted");
        if req.member_epoch == 0 && m.epoch == STATIC_LEAVE_EPOCH {
            (m.epoch, m.previous_epoch) = (0, 0);
        }
        if let Some(rack) = req.rack_id {
            m.rack_id = Some(rack);
        }
        if req.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(name) = &req.server_assignor {
            m.server_assignor = Assignor::from_name(name);
        }
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        let mut bump = false;
        if let Some(mut names) = req.subscribed_topic_names.clone() {
            names.sort();
            names.dedup();
            bump |= names != m.subscribed;
            m.subscribed = names;
        }
        if let Some(source) = &req.subscribed_topic_regex {
            // Compiled only when it changed (clients repeat it on full heartbeats).
            if m.pattern.as_ref().map_or("", |p| p.source.as_str()) != source {
                m.pattern = (!source.is_empty()).then(|| TopicPattern::new(source).expect("validate compiled it"));
                bump = true;
            }
        }

        // Bump the group epoch on any change, then recompute the target if it is behind.
        let subscribed_topics = self.resolve_subscribed_topics(topics);
        bump |= self.group_epoch == 0 || subscribed_topics != self.subscribed_topics;
        self.subscribed_topics = subscribed_topics;
        if bump {
            self.bump_group_epoch();
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target();
        }

        // Reconcile the member towards its target.
        let target = self.member_target(&member_id);
        let others = self.held_by_others(&member_id);
        let m = self.members.get_mut(&member_id).expect("still a member");
        let before = m.assigned.clone();
        if reconcile(m, &target, self.assignment_epoch, &others, owned.as_ref()) {
            m.rebalance_deadline_ms =
                (m.state == MemberState::UnrevokedPartitions).then_some(now + m.rebalance_timeout_ms as i64);
        }
        m.session_deadline_ms = now + self.config.session_timeout_ms as i64;

        let full = req.member_epoch == 0
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && owned.is_some());
        let send = full || m.assigned != before || owned.as_ref().is_some_and(|o| *o != m.assigned);
        Ok(HeartbeatReply {
            error_code: NONE,
            error_message: None,
            member_id: Some(member_id),
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment: send.then(|| to_wire(&m.assigned)),
        })
    }

    /// Kafka's request checks, in its order.
    fn validate(&self, req: &Heartbeat) -> Result<(), Refusal> {
        let invalid = ResponseError::InvalidRequest;
        let epoch = req.member_epoch;
        if req.member_id.is_empty() && (req.version >= 1 || epoch > 0 || epoch == LEAVE_EPOCH) {
            return refuse(invalid, "MemberId can't be empty.");
        }
        if req.instance_id.as_deref() == Some("") {
            return refuse(invalid, "InstanceId can't be empty.");
        }
        if req.rack_id.as_deref() == Some("") {
            return refuse(invalid, "RackId can't be empty.");
        }
        if epoch == 0 {
            if req.rebalance_timeout_ms == -1 {
                return refuse(invalid, "RebalanceTimeoutMs must be provided in first request.");
            }
            if req.topic_partitions.as_ref().is_none_or(|tps| !tps.is_empty()) {
                return refuse(invalid, "TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return refuse(
                    invalid,
                    "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                );
            }
        } else if epoch == STATIC_LEAVE_EPOCH {
            if req.instance_id.is_none() {
                return refuse(invalid, "InstanceId can't be null.");
            }
        } else if epoch < STATIC_LEAVE_EPOCH {
            return refuse(invalid, "MemberEpoch is invalid.");
        }
        let known = |source: &str| {
            self.members.get(&req.member_id).and_then(|m| m.pattern.as_ref()).is_some_and(|p| p.source == source)
        };
        if let Some(source) = req.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty() && !known(r)) {
            if let Err(e) = TopicPattern::new(source) {
                return refuse(
                    ResponseError::InvalidRegularExpression,
                    format!("SubscribedTopicRegex `{source}` is not a valid regular expression: {e}"),
                );
            }
        }
        if let Some(name) = &req.server_assignor {
            if !Assignor::from_name(name).is_some_and(|a| self.config.assignors.contains(&a)) {
                let names: Vec<&str> = self.config.assignors.iter().map(|a| a.name()).collect();
                return refuse(
                    ResponseError::UnsupportedAssignor,
                    format!("ServerAssignor {name} is not supported. Supported assignors: {}.", names.join(", ")),
                );
            }
        }
        Ok(())
    }

    /// Finds (or names) the member a heartbeat is from, without changing anything.
    fn resolve(&self, req: &Heartbeat, owned: Option<&Partitions>) -> Result<Resolved, Refusal> {
        if req.member_epoch == 0 {
            let id = if req.member_id.is_empty() { Uuid::new_v4().to_string() } else { req.member_id.clone() };
            if let Some(m) = self.members.get(&id) {
                if m.instance_id != req.instance_id {
                    return refuse(
                        ResponseError::InvalidRequest,
                        format!("Member {id} cannot rejoin with a different instance id."),
                    );
                }
                return Ok(Resolved::Known(id));
            }
            if let Some(instance) = &req.instance_id {
                if let Some((old, m)) = self.static_member(instance) {
                    if m.epoch != STATIC_LEAVE_EPOCH {
                        return refuse(
                            ResponseError::UnreleasedInstanceId,
                            format!(
                                "Static member {id} with instance id {instance} cannot join the group because the \
                                 instance id is owned by {old} member."
                            ),
                        );
                    }
                    return Ok(Resolved::Replace { old: old.clone(), new: id });
                }
            }
            return Ok(Resolved::New(id));
        }
        let m = match &req.instance_id {
            None => match self.members.get(&req.member_id) {
                Some(m) => m,
                None => {
                    return refuse(
                        ResponseError::UnknownMemberId,
                        format!("Member {} is not a member of group {}.", req.member_id, self.id),
                    )
                }
            },
            Some(instance) => self.static_member_of(instance, &req.member_id)?,
        };
        check_epoch(m, req.member_epoch, owned)?;
        Ok(Resolved::Known(req.member_id.clone()))
    }

    /// Epoch -1 (any member) or -2 (a static member, which keeps its assignment while away).
    fn leave(&mut self, req: &Heartbeat, now: i64) -> Result<HeartbeatReply, Refusal> {
        if let Some(instance) = &req.instance_id {
            self.static_member_of(instance, &req.member_id)?;
        } else if !self.members.contains_key(&req.member_id) {
            return refuse(
                ResponseError::UnknownMemberId,
                format!("Member {} is not a member of group {}.", req.member_id, self.id),
            );
        }
        if req.member_epoch == STATIC_LEAVE_EPOCH {
            tracing::info!(group = %self.id, member = %req.member_id, "static member leaves temporarily");
            let m = self.members.get_mut(&req.member_id).expect("checked above");
            // It released everything; on its return it reconciles from its assignment.
            m.set_epoch(STATIC_LEAVE_EPOCH);
            m.state = MemberState::Stable;
            m.pending_revocation.clear();
            m.rebalance_deadline_ms = None;
            m.session_deadline_ms = now + self.config.session_timeout_ms as i64;
        } else {
            tracing::info!(group = %self.id, member = %req.member_id, "member leaves");
            self.remove_member(&req.member_id);
        }
        Ok(HeartbeatReply {
            error_code: NONE,
            error_message: None,
            member_id: Some(req.member_id.clone()),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    fn static_member(&self, instance: &str) -> Option<(&String, &Member)> {
        self.members.iter().find(|(_, m)| m.instance_id.as_deref() == Some(instance))
    }

    /// The static member holding `instance`, which must be `member_id`.
    fn static_member_of(&self, instance: &str, member_id: &str) -> Result<&Member, Refusal> {
        let Some((id, m)) = self.static_member(instance) else {
            return refuse(ResponseError::UnknownMemberId, format!("Instance id {instance} is unknown."));
        };
        if id != member_id {
            return refuse(
                ResponseError::FencedInstanceId,
                format!("Static member {member_id} with instance id {instance} was fenced by member {id}."),
            );
        }
        Ok(m)
    }

    fn bump_group_epoch(&mut self) {
        if self.group_epoch == self.assignment_epoch {
            self.group_epoch += 1;
        }
    }

    fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_none() {
            return;
        }
        self.target.remove(id);
        self.bump_group_epoch();
        if self.members.is_empty() {
            self.assignment_epoch = self.group_epoch;
            self.target.clear();
            self.subscribed_topics.clear();
        }
    }

    /// The topics some member subscribes to that exist, by name: named ones, and those a
    /// member's pattern matches.
    fn resolve_subscribed_topics(&self, topics: &impl TopicLookup) -> BTreeMap<String, (Uuid, i32)> {
        let mut names: BTreeSet<&str> = self.members.values().flat_map(|m| &m.subscribed).map(String::as_str).collect();
        let patterns: Vec<&TopicPattern> = self.members.values().filter_map(|m| m.pattern.as_ref()).collect();
        if !patterns.is_empty() {
            names.extend(topics.topic_names().into_iter().filter(|t| patterns.iter().any(|p| p.matches(t))));
        }
        names.into_iter().filter_map(|n| topics.topic(n).map(|t| (n.to_string(), t))).collect()
    }

    fn subscribed_ids(&self, m: &Member) -> BTreeSet<Uuid> {
        self.subscribed_topics
            .iter()
            .filter(|(name, _)| m.subscribed.binary_search(name).is_ok() || m.pattern.as_ref().is_some_and(|p| p.matches(name)))
            .map(|(_, (id, _))| *id)
            .collect()
    }

    /// Every topic a member subscribes to: by name (existing or not) and by pattern (existing).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        let named = self.members.values().flat_map(|m| m.subscribed.iter().cloned());
        named.chain(self.subscribed_topics.keys().cloned()).collect()
    }

    /// The assignor most members ask for (ties to the earlier in the configuration), else the
    /// default.
    fn preferred_assignor(&self) -> Assignor {
        let votes = |a: &Assignor| self.members.values().filter(|m| m.server_assignor == Some(*a)).count();
        let mut best = self.config.assignors[0];
        for a in &self.config.assignors {
            if votes(a) > votes(&best) {
                best = *a;
            }
        }
        best
    }

    fn compute_target(&mut self) {
        self.assignor = self.preferred_assignor();
        let counts: BTreeMap<Uuid, i32> = self.subscribed_topics.values().copied().collect();
        let specs: Vec<AssignSpec> = self
            .members
            .iter()
            .map(|(id, m)| AssignSpec { topics: self.subscribed_ids(m), previous: self.target.get(id) })
            .collect();
        let result = match self.assignor {
            Assignor::Uniform => assign_uniform(&specs, &counts),
            Assignor::Range => assign_range(&specs, &counts),
        };
        self.target = self.members.keys().cloned().zip(result).collect();
        self.assignment_epoch = self.group_epoch;
        tracing::info!(group = %self.id, epoch = self.assignment_epoch, assignor = self.assignor.name(), "new target assignment");
    }

    /// The member's target, without topics it no longer subscribes to.
    fn member_target(&self, id: &str) -> Partitions {
        let Some(target) = self.target.get(id) else {
            return Partitions::new();
        };
        let subscribed = self.subscribed_ids(&self.members[id]);
        target.iter().filter(|(t, _)| subscribed.contains(*t)).map(|(t, ps)| (*t, ps.clone())).collect()
    }

    /// Partitions other members hold, assigned or pending revocation.
    fn held_by_others(&self, id: &str) -> BTreeSet<(Uuid, i32)> {
        self.members
            .iter()
            .filter(|(other, _)| *other != id)
            .flat_map(|(_, m)| [&m.assigned, &m.pending_revocation])
            .flat_map(|ps| ps.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p))))
            .collect()
    }

    /// Asserts what must hold between any two events: no partition is held by two members, a
    /// member's assigned and pending partitions are disjoint, only an `UnrevokedPartitions`
    /// member has partitions pending, and epochs are ordered.
    pub fn check_invariants(&self) {
        if let Some(broken) = self.broken_invariant() {
            panic!("consumer group {}: {broken}", self.id);
        }
    }

    /// The first invariant of [`ConsumerGroup::check_invariants`] that does not hold.
    fn broken_invariant(&self) -> Option<String> {
        let mut held = BTreeSet::new();
        for (id, m) in &self.members {
            for ps in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in ps {
                    if ps.is_empty() {
                        return Some(format!("{id}: empty partition set of {t}"));
                    }
                    for p in ps {
                        if !held.insert((*t, *p)) {
                            return Some(format!("{t}-{p} held by two members, one of them {id}"));
                        }
                    }
                }
            }
            let unrevoked = m.state == MemberState::UnrevokedPartitions;
            if unrevoked == m.pending_revocation.is_empty() {
                return Some(format!("{id}: state {:?} with {} topics pending revocation", m.state, m.pending_revocation.len()));
            }
            if unrevoked != m.rebalance_deadline_ms.is_some() {
                return Some(format!("{id}: state {:?}, rebalance deadline {:?}", m.state, m.rebalance_deadline_ms));
            }
            if m.epoch > self.assignment_epoch {
                return Some(format!("{id}: epoch {} ahead of the target's {}", m.epoch, self.assignment_epoch));
            }
        }
        if self.assignment_epoch > self.group_epoch {
            return Some(format!("assignment epoch {} ahead of the group epoch {}", self.assignment_epoch, self.group_epoch));
        }
        if !self.target.keys().all(|id| self.members.contains_key(id)) {
            return Some("target of a removed member".to_string());
        }
        None
    }

    /// Whether what `__consumer_offsets` stores of the group changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The group as `__consumer_offsets` stores it: group epoch, assignment epoch, and per
    /// member its subscription, target and current assignment (see `coordinator::offsets`).
    pub fn stored(&self) -> (i32, i32, Vec<(String, ConsumerMemberMetadata, offsets::TopicPartitions, ConsumerMemberAssignment)>) {
        let members = self
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = ConsumerMemberMetadata {
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed.clone(),
                    subscribed_topic_regex: m.pattern.as_ref().map(|p| p.source.clone()),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    server_assignor: m.server_assignor.map(|a| a.name().to_string()),
                };
                let assignment = ConsumerMemberAssignment {
                    member_epoch: m.epoch,
                    previous_member_epoch: m.previous_epoch,
                    state: match m.state {
                        MemberState::Stable => 0,
                        MemberState::UnrevokedPartitions => 1,
                        MemberState::UnreleasedPartitions => 2,
                    },
                    assigned: to_wire(&m.assigned),
                    pending_revocation: to_wire(&m.pending_revocation),
                };
                let target = self.target.get(id).map(to_wire).unwrap_or_default();
                (id.clone(), metadata, target, assignment)
            })
            .collect();
        (self.group_epoch, self.assignment_epoch, members)
    }

    /// The group as a new coordinator finds it in `__consumer_offsets` (see
    /// [`ConsumerGroup::stored`]): members keep their epochs and partitions, their sessions run
    /// from `now`, and a member still revoking gets its rebalance timeout from `now`. Members
    /// whose records are incomplete are left out (they rejoin); stored state that breaks an
    /// invariant gives an empty group at the stored epoch (every member rejoins), with a
    /// warning.
    pub fn restore(id: String, config: ConsumerGroupConfig, stored: StoredGroup, topics: &impl TopicLookup, now: i64) -> ConsumerGroup {
        let mut g = ConsumerGroup::new(id, config);
        g.group_epoch = stored.group_epoch;
        g.assignment_epoch = stored.assignment_epoch.min(stored.group_epoch);
        let session = g.config.session_timeout_ms as i64;
        for (member_id, sm) in stored.members {
            let (Some(meta), Some(current)) = (sm.metadata, sm.assignment) else { continue };
            let state = match current.state {
                0 => MemberState::Stable,
                1 => MemberState::UnrevokedPartitions,
                2 => MemberState::UnreleasedPartitions,
                _ => continue,
            };
            let mut subscribed = meta.subscribed_topic_names;
            subscribed.sort();
            subscribed.dedup();
            let m = Member {
                instance_id: meta.instance_id,
                rack_id: meta.rack_id,
                client_id: meta.client_id,
                client_host: meta.client_host,
                rebalance_timeout_ms: meta.rebalance_timeout_ms,
                subscribed,
                pattern: meta.subscribed_topic_regex.and_then(|r| TopicPattern::new(&r).ok()),
                server_assignor: meta.server_assignor.as_deref().and_then(Assignor::from_name),
                epoch: current.member_epoch,
                previous_epoch: current.previous_member_epoch,
                state,
                assigned: to_partitions(&current.assigned),
                pending_revocation: to_partitions(&current.pending_revocation),
                session_deadline_ms: now + session,
                commits_in_flight: 0,
                rebalance_deadline_ms: (state == MemberState::UnrevokedPartitions).then(|| now + meta.rebalance_timeout_ms.max(0) as i64),
            };
            if let Some(t) = sm.target {
                g.target.insert(member_id.clone(), to_partitions(&t));
            }
            g.members.insert(member_id, m);
        }
        g.subscribed_topics = g.resolve_subscribed_topics(topics);
        g.assignor = g.preferred_assignor();
        if let Some(broken) = g.broken_invariant() {
            tracing::warn!(group = %g.id, %broken, "the stored consumer group is inconsistent; its members rejoin");
            let (epoch, config) = (g.group_epoch, g.config.clone());
            g = ConsumerGroup::new(g.id, config);
            (g.group_epoch, g.assignment_epoch) = (epoch, epoch);
        }
        g
    }

    /// What `__consumer_offsets` stores of one member, to tell whether a heartbeat changed it.
    fn stored_fingerprint(&self, member_id: &str) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let m = self.members.get(member_id)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&m.instance_id, &m.rack_id, &m.client_id, &m.client_host, m.rebalance_timeout_ms, &m.subscribed).hash(&mut h);
        (m.pattern.as_ref().map(|p| &p.source), m.server_assignor.map(Assignor::name), m.epoch, m.previous_epoch).hash(&mut h);
        (m.state as u8, &m.assigned, &m.pending_revocation, self.target.get(member_id)).hash(&mut h);
        Some(h.finish())
    }

    /// Everything ConsumerGroupDescribe reports.
    pub fn describe(&self) -> GroupDescription {
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state_name(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.assignor.name(),
            members: self
                .members
                .iter()
                .map(|(id, m)| DescribedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed.clone(),
                    subscribed_topic_regex: m.pattern.as_ref().map(|p| p.source.clone()),
                    assignment: to_wire(&m.assigned),
                    target_assignment: self.target.get(id).map(to_wire).unwrap_or_default(),
                    member_type: MEMBER_TYPE_CONSUMER,
                })
                .collect(),
        }
    }
}

/// Kafka's member epoch check: a greater epoch is fenced; a smaller one too, unless it is the
/// previous epoch and the member owns only partitions of its assignment (the reply that moved
/// it on was lost).
fn check_epoch(m: &Member, received: i32, owned: Option<&Partitions>) -> Result<(), Refusal> {
    let relation = if received > m.epoch {
        "greater"
    } else if received < m.epoch && (received != m.previous_epoch || !owned.is_some_and(|o| is_subset(o, &m.assigned)))
    {
        "smaller"
    } else {
        return Ok(());
    };
    refuse(
        ResponseError::FencedMemberEpoch,
        format!(
            "The consumer group member has a {relation} member epoch ({received}) than the one known by the group \
             coordinator ({}). The member must abandon all its partitions and rejoin.",
            m.epoch
        ),
    )
}

/// Moves a member one step towards its target (Kafka's `CurrentAssignmentBuilder`): it keeps
/// what stays in its target; if it still owns partitions it must give up, it stays at its epoch
/// until it reports them released; otherwise it moves to `target_epoch` and gets the target
/// partitions that nobody else holds. `owned` None means "not reported", which counts as still
/// owning everything. Returns whether the member changed.
fn reconcile(
    m: &mut Member,
    target: &Partitions,
    target_epoch: i32,
    held_by_others: &BTreeSet<(Uuid, i32)>,
    owned: Option<&Partitions>,
) -> bool {
    let ready = match m.state {
        MemberState::Stable => m.epoch != target_epoch,
        MemberState::UnrevokedPartitions => !owns_any(owned, &m.pending_revocation),
        MemberState::UnreleasedPartitions => true,
    };
    if !ready {
        return false;
    }
    let (mut keep, mut revoke, mut unreleased) = (Partitions::new(), Partitions::new(), false);
    for (t, ps) in &m.assigned {
        for &p in ps {
            let into = if contains(target, *t, p) { &mut keep } else { &mut revoke };
            into.entry(*t).or_default().insert(p);
        }
    }
    let mut add = Partitions::new();
    for (t, ps) in target {
        for &p in ps.iter().filter(|&&p| !contains(&keep, *t, p)) {
            if held_by_others.contains(&(*t, p)) {
                unreleased = true;
            } else {
                add.entry(*t).or_default().insert(p);
            }
        }
    }
    let before = (m.epoch, m.state, m.assigned.clone(), m.pending_revocation.clone());
    if !revoke.is_empty() && owns_any(owned, &revoke) {
        m.state = MemberState::UnrevokedPartitions;
        m.assigned = keep;
        m.pending_revocation = revoke;
    } else {
        for (t, ps) in add {
            keep.entry(t).or_default().extend(ps);
        }
        m.assigned = keep;
        m.pending_revocation.clear();
        m.set_epoch(target_epoch);
        m.state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
    }
    (m.epoch, m.state, &m.assigned, &m.pending_revocation) != (before.0, before.1, &before.2, &before.3)
}

fn contains(ps: &Partitions, t: Uuid, p: i32) -> bool {
    ps.get(&t).is_some_and(|s| s.contains(&p))
}

/// Whether the member still owns any of `set`; not reporting counts as owning.
fn owns_any(owned: Option<&Partitions>, set: &Partitions) -> bool {
    owned.is_none_or(|o| o.iter().any(|(t, ps)| ps.iter().any(|p| contains(set, *t, *p))))
}

fn is_subset(a: &Partitions, b: &Partitions) -> bool {
    a.iter().all(|(t, ps)| ps.iter().all(|p| contains(b, *t, *p)))
}

/// From the wire's (topic id, partitions) list; empty topics dropped.
pub fn to_partitions(list: &[(Uuid, Vec<i32>)]) -> Partitions {
    let mut out = Partitions::new();
    for (t, ps) in list.iter().filter(|(_, ps)| !ps.is_empty()) {
        out.entry(*t).or_default().extend(ps);
    }
    out
}

/// To the wire's (topic id, partitions) list, sorted.
pub fn to_wire(ps: &Partitions) -> TopicPartitions {
    ps.iter().map(|(t, ps)| (*t, ps.iter().copied().collect())).collect()
}

/// One member as an assignor sees it.
struct AssignSpec<'a> {
    /// Subscribed topics that exist.
    topics: BTreeSet<Uuid>,
    /// Its previous target, if any.
    previous: Option<&'a Partitions>,
}

/// The uniform assignor: members keep their previous targets (for partitions that still exist
/// and that they still subscribe to), every other partition goes to the least loaded
/// subscriber, then partitions move one at a time from the most loaded member to the least
/// loaded one that subscribes to their topic, while they differ by two or more. Each move
/// lowers the sum of squared loads, so this ends; members with the same subscriptions end at
/// most one partition apart, having moved no more partitions than balance needs.
fn assign_uniform(members: &[AssignSpec], counts: &BTreeMap<Uuid, i32>) -> Vec<Partitions> {
    let mut out = vec![Partitions::new(); members.len()];
    let mut load = vec![0usize; members.len()];
    let mut taken = BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        for (t, ps) in m.previous.into_iter().flatten().filter(|(t, _)| m.topics.contains(*t)) {
            let n = counts.get(t).copied().unwrap_or(0);
            for &p in ps.iter().filter(|&&p| p < n) {
                if taken.insert((*t, p)) {
                    out[i].entry(*t).or_default().insert(p);
                    load[i] += 1;
                }
            }
        }
    }
    for (&t, &n) in counts {
        for p in (0..n).filter(|p| !taken.contains(&(t, *p))) {
            let least = (0..members.len()).filter(|&i| members[i].topics.contains(&t)).min_by_key(|&i| (load[i], i));
            if let Some(i) = least {
                out[i].entry(t).or_default().insert(p);
                load[i] += 1;
            }
        }
    }
    while let Some((from, to, t, p)) = next_move(members, &out, &load) {
        let ps = out[from].get_mut(&t).expect("the donor has the topic");
        ps.remove(&p);
        if ps.is_empty() {
            out[from].remove(&t);
        }
        out[to].entry(t).or_default().insert(p);
        load[from] -= 1;
        load[to] += 1;
    }
    out
}

/// The next balancing move of [`assign_uniform`]: (from, to, topic, partition).
fn next_move(members: &[AssignSpec], out: &[Partitions], load: &[usize]) -> Option<(usize, usize, Uuid, i32)> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| (load[i], i));
    for &from in order.iter().rev() {
        for &to in &order {
            if load[to] + 2 > load[from] {
                break;
            }
            let movable = out[from].iter().rev().find(|(t, _)| members[to].topics.contains(*t));
            if let Some((t, ps)) = movable {
                return Some((from, to, *t, *ps.last().expect("no empty sets")));
            }
        }
    }
    None
}

/// The range assignor: per topic, the subscribers in member-id order (`members` is in that
/// order) get contiguous ranges, the first `partitions % subscribers` one partition more.
fn assign_range(members: &[AssignSpec], counts: &BTreeMap<Uuid, i32>) -> Vec<Partitions> {
    let mut out = vec![Partitions::new(); members.len()];
    for (&t, &n) in counts {
        let subscribers: Vec<usize> = (0..members.len()).filter(|&i| members[i].topics.contains(&t)).collect();
        if subscribers.is_empty() || n <= 0 {
            continue;
        }
        let (each, extra) = (n as usize / subscribers.len(), n as usize % subscribers.len());
        let mut next = 0i32;
        for (k, &i) in subscribers.iter().enumerate() {
            let len = (each + usize::from(k < extra)) as i32;
            if len > 0 {
                out[i].insert(t, (next..next + len).collect());
            }
            next += len;
        }
        assert_eq!(next, n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FENCED_EPOCH: i16 = 110;
    const UNKNOWN_MEMBER: i16 = 25;
    const UNRELEASED_INSTANCE: i16 = 111;
    const UNSUPPORTED_ASSIGNOR: i16 = 112;
    const STALE_EPOCH: i16 = 113;
    const INVALID_REQUEST: i16 = 42;
    const MAX_SIZE: i16 = 81;
    const FENCED_INSTANCE: i16 = 82;

    const T: Uuid = Uuid::from_u128(1);
    const U: Uuid = Uuid::from_u128(2);

    /// Topics by name: (id, partitions).
    struct Topics(BTreeMap<String, (Uuid, i32)>);

    impl TopicLookup for Topics {
        fn topic(&self, name: &str) -> Option<(Uuid, i32)> {
            self.0.get(name).copied()
        }
        fn topic_name(&self, id: Uuid) -> Option<&str> {
            self.0.iter().find(|(_, (t, _))| *t == id).map(|(n, _)| n.as_str())
        }
        fn topic_names(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    /// "t" (id T) and "u" (id U) with these partition counts; 0 leaves the topic out.
    fn topics(t: i32, u: i32) -> Topics {
        let mut m = BTreeMap::new();
        if t > 0 {
            m.insert("t".to_string(), (T, t));
        }
        if u > 0 {
            m.insert("u".to_string(), (U, u));
        }
        Topics(m)
    }

    fn group() -> ConsumerGroup {
        ConsumerGroup::new("g".into(), ConsumerGroupConfig::default())
    }

    fn join(id: &str, subscribed: &[&str]) -> Heartbeat {
        Heartbeat {
            version: 1,
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 10_000,
            subscribed_topic_names: Some(subscribed.iter().map(|s| s.to_string()).collect()),
            topic_partitions: Some(vec![]),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            ..Heartbeat::default()
        }
    }

    fn hb(id: &str, epoch: i32, owned: &[(Uuid, &[i32])]) -> Heartbeat {
        Heartbeat {
            version: 1,
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            topic_partitions: Some(owned.iter().map(|(t, ps)| (*t, ps.to_vec())).collect()),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            ..Heartbeat::default()
        }
    }

    fn wire(list: &[(Uuid, &[i32])]) -> TopicPartitions {
        list.iter().map(|(t, ps)| (*t, ps.to_vec())).collect()
    }

    /// (epoch, assignment) of a successful reply.
    fn ok(r: HeartbeatReply) -> (i32, Option<TopicPartitions>) {
        assert_eq!(r.error_code, NONE, "refused: {r:?}");
        assert_eq!(r.heartbeat_interval_ms, 5000);
        (r.member_epoch, r.assignment)
    }

    fn error(r: HeartbeatReply) -> i16 {
        assert_ne!(r.error_code, NONE, "accepted: {r:?}");
        assert!(r.error_message.is_some() && r.member_id.is_none());
        r.error_code
    }

    fn state(g: &ConsumerGroup, id: &str) -> (i32, MemberState) {
        let m = &g.members[id];
        (m.epoch, m.state)
    }

    /// One member "a" holding all 4 partitions of "t" at epoch 1.
    fn one_member() -> (ConsumerGroup, Topics) {
        let (mut g, tp) = (group(), topics(4, 0));
        assert_eq!(ok(g.heartbeat(join("a", &["t"]), &tp, 0)), (1, Some(wire(&[(T, &[0, 1, 2, 3])]))));
        (g, tp)
    }

    /// "a" [0, 1] and "b" [2, 3] of "t", both stable at epoch 2.
    fn two_members() -> (ConsumerGroup, Topics) {
        let (mut g, tp) = one_member();
        ok(g.heartbeat(join("b", &["t"]), &tp, 10));
        ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 20));
        ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &tp, 30));
        ok(g.heartbeat(hb("b", 2, &[]), &tp, 40));
        assert_eq!(g.state_name(), "Stable");
        (g, tp)
    }

    /// The group as a new coordinator reads it: `stored()` through the `__consumer_offsets`
    /// records (encoded and decoded), restored at `now`.
    fn through_the_log(g: &ConsumerGroup, tp: &Topics, now: i64) -> ConsumerGroup {
        let (group_epoch, assignment_epoch, members) = g.stored();
        let mut stored = StoredGroup::default();
        for (k, v) in offsets::encode_consumer_group("g", group_epoch, assignment_epoch, members, &["gone".to_string()]) {
            match offsets::decode_record(&k.unwrap(), v.as_deref()).expect("a record this broker wrote decodes") {
                offsets::Record::ConsumerGroupEpoch { epoch, .. } => stored.group_epoch = epoch.unwrap(),
                offsets::Record::ConsumerTargetEpoch { epoch, .. } => stored.assignment_epoch = epoch.unwrap(),
                offsets::Record::ConsumerMember { member, metadata, .. } => stored.members.entry(member).or_default().metadata = metadata,
                offsets::Record::ConsumerTarget { member, partitions, .. } => stored.members.entry(member).or_default().target = partitions,
                offsets::Record::ConsumerAssignment { member, assignment, .. } => {
                    stored.members.entry(member).or_default().assignment = assignment
                }
                other => panic!("not a consumer-group record: {other:?}"),
            }
        }
        assert_eq!(stored.members.get("gone"), Some(&StoredMember::default()), "the departed member's records are tombstones");
        stored.members.remove("gone");
        ConsumerGroup::restore("g".into(), ConsumerGroupConfig::default(), stored, tp, now)
    }

    #[test]
    fn a_restored_group_goes_on_where_it_was_stored_mid_rebalance() {
        // b has joined; a has been told to give up [2, 3] and has not yet.
        let (mut g, tp) = one_member();
        assert!(g.take_changed(), "the first join changed what is stored");
        ok(g.heartbeat(join("b", &["t"]), &tp, 10));
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 20)), (1, Some(wire(&[(T, &[0, 1])]))));
        assert!(g.take_changed());
        assert_eq!(ok(g.heartbeat(hb("b", 2, &[]), &tp, 25)), (2, None));
        assert!(!g.take_changed(), "a heartbeat that changes nothing stores nothing");

        let mut r = through_the_log(&g, &tp, 1_000);
        assert_eq!(r.describe(), g.describe(), "the restored group describes as the stored one");
        assert_eq!((state(&r, "a"), state(&r, "b")), ((1, MemberState::UnrevokedPartitions), (2, MemberState::UnreleasedPartitions)));
        assert!(!r.take_changed(), "restoring is not a change to store");
        // Sessions and a's rebalance timeout run from the restore.
        assert_eq!(r.next_deadline(), Some(1_000 + 10_000));
        assert_eq!(r.tick(1_000 + 9_999), Vec::<String>::new());
        // The members go on with the epochs they have: no rejoin, no new epoch.
        assert_eq!(r.is_member("a", 1), Ok(()));
        assert_eq!(ok(r.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &tp, 1_100)), (2, None));
        assert_eq!(ok(r.heartbeat(hb("b", 2, &[]), &tp, 1_200)), (2, Some(wire(&[(T, &[2, 3])]))));
        assert_eq!((r.group_epoch(), r.state_name()), (2, "Stable"));
        assert!(r.take_changed());
        // A member missing from the log is unknown to the new coordinator: it rejoins.
        let mut gone = through_the_log(&r, &tp, 2_000);
        gone.remove_member("b");
        assert_eq!(error(gone.heartbeat(hb("b", 2, &[(T, &[2, 3])]), &tp, 2_100)), UNKNOWN_MEMBER);
    }

    #[test]
    fn stored_state_that_breaks_an_invariant_restores_an_empty_group() {
        let (g, tp) = two_members();
        let (group_epoch, assignment_epoch, mut members) = g.stored();
        // Both members claim partition 0.
        members[1].3.assigned = wire(&[(T, &[0, 2, 3])]);
        let mut stored = StoredGroup { group_epoch, assignment_epoch, ..StoredGroup::default() };
        for (id, metadata, target, assignment) in members {
            stored.members.insert(id, StoredMember { metadata: Some(metadata), target: Some(target), assignment: Some(assignment) });
        }
        let mut r = ConsumerGroup::restore("g".into(), ConsumerGroupConfig::default(), stored, &tp, 0);
        assert!(!r.has_members());
        assert_eq!((r.group_epoch(), r.assignment_epoch()), (2, 2));
        assert_eq!(ok(r.heartbeat(join("a", &["t"]), &tp, 10)), (3, Some(wire(&[(T, &[0, 1, 2, 3])]))));
    }

    #[test]
    fn first_member_gets_every_partition_at_epoch_1() {
        let (mut g, tp) = one_member();
        assert_eq!(g.state_name(), "Stable");
        assert_eq!((g.group_epoch(), g.assignment_epoch()), (1, 1));
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 100)), (1, None), "nothing changed");
        assert_eq!(g.next_deadline(), Some(45_100));
        // A v0 client lets the group choose its id.
        let mut v0 = join("", &["t"]);
        v0.version = 0;
        let r = g.heartbeat(v0, &tp, 200);
        let id = r.member_id.clone().expect("an id");
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert!(g.has_members() && g.member_ids().contains(&id));
    }

    #[test]
    fn a_second_member_waits_until_the_first_revokes() {
        let (mut g, tp) = one_member();
        // b joins: epoch 2, its target is [2, 3], still held by a.
        assert_eq!(ok(g.heartbeat(join("b", &["t"]), &tp, 10)), (2, Some(vec![])));
        assert_eq!(state(&g, "b"), (2, MemberState::UnreleasedPartitions));
        assert_eq!(g.state_name(), "Reconciling");
        // a is told to keep [0, 1] and stays at epoch 1 until it lets [2, 3] go.
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 20)), (1, Some(wire(&[(T, &[0, 1])]))));
        assert_eq!(state(&g, "a"), (1, MemberState::UnrevokedPartitions));
        assert_eq!(g.is_member("a", 1), Ok(()));
        // b still gets nothing.
        assert_eq!(ok(g.heartbeat(hb("b", 2, &[]), &tp, 25)), (2, None));
        // a, still reporting them, still waits (and is told again what to keep).
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 26)), (1, Some(wire(&[(T, &[0, 1])]))));
        // a released them: it moves to epoch 2 with the same partitions.
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &tp, 30)), (2, None));
        assert_eq!(g.is_member("a", 1), Err(STALE_EPOCH));
        // Now b gets them.
        assert_eq!(ok(g.heartbeat(hb("b", 2, &[]), &tp, 40)), (2, Some(wire(&[(T, &[2, 3])]))));
        assert_eq!(state(&g, "b"), (2, MemberState::Stable));
        assert_eq!(g.state_name(), "Stable");
        let d = g.describe();
        assert_eq!((d.group_epoch, d.assignment_epoch, d.assignor_name, d.state), (2, 2, "uniform", "Stable"));
        assert_eq!(d.members[1].assignment, wire(&[(T, &[2, 3])]));
        assert_eq!(d.members[1].target_assignment, wire(&[(T, &[2, 3])]));
        assert_eq!(d.members[0].subscribed_topic_names, vec!["t".to_string()]);
        assert_eq!(d.members[0].member_type, MEMBER_TYPE_CONSUMER);
    }

    #[test]
    fn a_leaving_members_partitions_go_to_the_other() {
        let (mut g, tp) = two_members();
        let r = g.heartbeat(hb("b", -1, &[]), &tp, 100);
        assert_eq!((r.error_code, r.member_id.as_deref(), r.member_epoch), (NONE, Some("b"), -1));
        assert_eq!(g.group_epoch(), 3);
        assert_eq!(g.state_name(), "Assigning");
        assert_eq!(ok(g.heartbeat(hb("a", 2, &[(T, &[0, 1])]), &tp, 110)), (3, Some(wire(&[(T, &[0, 1, 2, 3])]))));
        assert_eq!(g.state_name(), "Stable");
        assert_eq!(error(g.heartbeat(hb("b", 2, &[]), &tp, 120)), UNKNOWN_MEMBER);
        // The last one out empties the group.
        assert_eq!(g.heartbeat(hb("a", -1, &[]), &tp, 130).error_code, NONE);
        assert_eq!((g.state_name(), g.has_members(), g.next_deadline()), ("Empty", false, None));
        assert_eq!(g.group_epoch(), g.assignment_epoch());
    }

    #[test]
    fn a_silent_member_expires_on_tick() {
        let (mut g, tp) = two_members();
        ok(g.heartbeat(hb("a", 2, &[(T, &[0, 1])]), &tp, 30_000));
        assert_eq!(g.next_deadline(), Some(45_040), "b was last heard at 40");
        assert!(g.tick(45_039).is_empty());
        assert_eq!(g.tick(45_040), vec!["b".to_string()]);
        assert_eq!(g.group_epoch(), 3);
        assert_eq!(ok(g.heartbeat(hb("a", 2, &[(T, &[0, 1])]), &tp, 45_100)), (3, Some(wire(&[(T, &[0, 1, 2, 3])]))));
    }

    #[test]
    fn a_commit_being_written_keeps_the_session_alive() {
        let (mut g, tp) = two_members();
        g.commit_started("b");
        ok(g.heartbeat(hb("a", 2, &[(T, &[0, 1])]), &tp, 40_000));
        assert_eq!(g.next_deadline(), Some(85_000), "only a's session can end: b's commit holds b's");
        assert!(g.tick(50_000).is_empty(), "b's session would have ended at 45,040");
        g.commit_ended("b", 60_000);
        ok(g.heartbeat(hb("a", 2, &[(T, &[0, 1])]), &tp, 80_000));
        assert_eq!(g.next_deadline(), Some(105_000), "b's session runs again from the commit's end");
        assert!(g.tick(104_999).is_empty());
        assert_eq!(g.tick(105_000), vec!["b".to_string()]);
    }

    #[test]
    fn a_member_that_never_revokes_is_fenced_after_its_rebalance_timeout() {
        let (mut g, tp) = one_member();
        ok(g.heartbeat(join("b", &["t"]), &tp, 100));
        ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 200));
        assert_eq!(g.next_deadline(), Some(10_200), "a's rebalance timeout (10 s) from when it was asked");
        // a keeps heartbeating but never lets go.
        for t in [3000, 6000, 9000] {
            assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, t)).0, 1);
            ok(g.heartbeat(hb("b", 2, &[]), &tp, t));
        }
        assert_eq!(g.next_deadline(), Some(10_200), "heartbeats do not extend it");
        assert_eq!(g.tick(10_200), vec!["a".to_string()]);
        assert_eq!(error(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 10_300)), UNKNOWN_MEMBER);
        assert_eq!(ok(g.heartbeat(hb("b", 2, &[]), &tp, 10_400)), (3, Some(wire(&[(T, &[0, 1, 2, 3])]))));
    }

    #[test]
    fn wrong_epochs_are_fenced_and_a_lost_reply_is_forgiven() {
        let (mut g, tp) = two_members();
        assert_eq!(error(g.heartbeat(hb("a", 3, &[(T, &[0, 1])]), &tp, 100)), FENCED_EPOCH, "ahead");
        assert_eq!(error(g.heartbeat(hb("b", 1, &[]), &tp, 100)), FENCED_EPOCH, "b was never at epoch 1");
        // a moved from 1 to 2; a retry at 1 owning a subset of its assignment is accepted...
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0])]), &tp, 100)), (2, Some(wire(&[(T, &[0, 1])]))));
        // ...but not while owning something else, nor without saying what it owns.
        assert_eq!(error(g.heartbeat(hb("a", 1, &[(T, &[0, 2])]), &tp, 100)), FENCED_EPOCH);
        let mut silent = hb("a", 1, &[]);
        silent.topic_partitions = None;
        assert_eq!(error(g.heartbeat(silent, &tp, 100)), FENCED_EPOCH);
        assert_eq!(error(g.heartbeat(hb("ghost", 2, &[]), &tp, 100)), UNKNOWN_MEMBER);
        assert_eq!(error(g.heartbeat(hb("ghost", -1, &[]), &tp, 100)), UNKNOWN_MEMBER);
        assert_eq!(g.is_member("ghost", 2), Err(UNKNOWN_MEMBER));
        // A fenced member rejoins with epoch 0 under its id and gets its state back.
        assert_eq!(ok(g.heartbeat(join("a", &["t"]), &tp, 200)), (2, Some(wire(&[(T, &[0, 1])]))));
        assert_eq!(g.group_epoch(), 2, "nothing changed");
    }

    #[test]
    fn a_static_member_gets_its_partitions_back_after_a_temporary_leave() {
        let (mut g, tp) = (group(), topics(4, 0));
        let mut a = join("a", &["t"]);
        a.instance_id = Some("host-a".into());
        ok(g.heartbeat(a.clone(), &tp, 0));
        ok(g.heartbeat(join("b", &["t"]), &tp, 0));
        ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 0));
        ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &tp, 0));
        ok(g.heartbeat(hb("b", 2, &[]), &tp, 0));
        assert_eq!(g.state_name(), "Stable");

        let mut away = hb("a", -2, &[]);
        away.instance_id = Some("host-a".into());
        let r = g.heartbeat(away, &tp, 1000);
        assert_eq!((r.error_code, r.member_epoch), (NONE, -2));
        assert_eq!(g.group_epoch(), 2, "a temporary leave is no rebalance");
        assert_eq!(ok(g.heartbeat(hb("b", 2, &[(T, &[2, 3])]), &tp, 2000)), (2, None), "b gets nothing of a's");

        // The instance comes back under a new member id and takes over a's partitions.
        let mut back = join("a2", &["t"]);
        back.instance_id = Some("host-a".into());
        assert_eq!(ok(g.heartbeat(back, &tp, 3000)), (2, Some(wire(&[(T, &[0, 1])]))));
        assert_eq!(g.member_ids(), vec!["a2".to_string(), "b".to_string()]);
        assert_eq!(g.state_name(), "Stable");
        let mut old = hb("a", 2, &[(T, &[0, 1])]);
        old.instance_id = Some("host-a".into());
        assert_eq!(error(g.heartbeat(old, &tp, 3100)), FENCED_INSTANCE);

        let mut thief = join("a3", &["t"]);
        thief.instance_id = Some("host-a".into());
        assert_eq!(error(g.heartbeat(thief, &tp, 3200)), UNRELEASED_INSTANCE);
        let mut sneaky = join("b", &["t"]);
        sneaky.instance_id = Some("host-b".into());
        assert_eq!(error(g.heartbeat(sneaky, &tp, 3300)), INVALID_REQUEST, "b cannot become static");

        // Away for longer than the session timeout: its partitions go to b.
        let mut away = hb("a2", -2, &[]);
        away.instance_id = Some("host-a".into());
        assert_eq!(g.heartbeat(away, &tp, 4000).error_code, NONE);
        ok(g.heartbeat(hb("b", 2, &[(T, &[2, 3])]), &tp, 40_000));
        assert_eq!(g.tick(49_000), vec!["a2".to_string()]);
        assert_eq!(ok(g.heartbeat(hb("b", 2, &[(T, &[2, 3])]), &tp, 49_100)), (3, Some(wire(&[(T, &[0, 1, 2, 3])]))));
    }

    #[test]
    fn unknown_assignors_are_refused_and_the_asked_one_is_used() {
        let (mut g, tp) = (group(), topics(5, 0));
        let mut j = join("a", &["t"]);
        j.server_assignor = Some("sticky".into());
        let r = g.heartbeat(j, &tp, 0);
        assert_eq!(r.error_code, UNSUPPORTED_ASSIGNOR);
        assert_eq!(r.error_message.as_deref(), Some("ServerAssignor sticky is not supported. Supported assignors: uniform, range."));
        assert!(!g.has_members());
        for id in ["a", "b"] {
            let mut j = join(id, &["t"]);
            j.server_assignor = Some("range".into());
            ok(g.heartbeat(j, &tp, 0));
        }
        let d = g.describe();
        assert_eq!(d.assignor_name, "range");
        assert_eq!(d.members[0].target_assignment, wire(&[(T, &[0, 1, 2])]));
        assert_eq!(d.members[1].target_assignment, wire(&[(T, &[3, 4])]));
        let only_uniform = ConsumerGroupConfig { assignors: vec![Assignor::Uniform], ..ConsumerGroupConfig::default() };
        let mut g = ConsumerGroup::new("g".into(), only_uniform);
        let mut j = join("a", &["t"]);
        j.server_assignor = Some("range".into());
        assert_eq!(error(g.heartbeat(j, &tp, 0)), UNSUPPORTED_ASSIGNOR);
    }

    /// A pattern subscribes to every whole topic name it matches (never an internal one), and
    /// a matching topic created later joins the subscription at the next heartbeat.
    #[test]
    fn regex_subscriptions_follow_the_topics_that_match() {
        const T2: Uuid = Uuid::from_u128(0x7272);
        const OFFSETS: Uuid = Uuid::from_u128(0x0ff5);
        let mut g = group();
        let mut tp = topics(2, 3);
        tp.0.insert("__consumer_offsets".to_string(), (OFFSETS, 50));
        tp.0.insert("xt".to_string(), (Uuid::from_u128(0x0707), 1)); // a match inside the name is not one
        let mut j = join("a", &[]);
        j.subscribed_topic_names = None;
        j.subscribed_topic_regex = Some("t.*|_.*".into());
        assert_eq!(ok(g.heartbeat(j, &tp, 0)), (1, Some(wire(&[(T, &[0, 1])]))));
        assert_eq!(g.describe().members[0].subscribed_topic_regex.as_deref(), Some("t.*|_.*"));
        tp.0.insert("t2".to_string(), (T2, 2));
        let (epoch, assignment) = ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &tp, 10));
        assert_eq!(epoch, 2, "the new topic bumped the group epoch");
        let mut want = wire(&[(T, &[0, 1]), (T2, &[0, 1])]);
        want.sort();
        assert_eq!(assignment, Some(want));
        assert!(g.subscribed_topic_names().contains("t2") && !g.subscribed_topic_names().contains("u"));
        // Names and a pattern together; an empty pattern drops it.
        let mut change = hb("a", 2, &[(T, &[0, 1]), (T2, &[0, 1])]);
        change.subscribed_topic_names = Some(vec!["u".into()]);
        change.subscribed_topic_regex = Some(String::new());
        let (_, assignment) = ok(g.heartbeat(change, &tp, 20));
        assert_eq!(assignment, Some(vec![]), "t and t2 are revoked first");
    }

    #[test]
    fn invalid_requests_are_refused() {
        let (mut g, tp) = (group(), topics(4, 0));
        let mut j = join("a", &["t"]);
        j.subscribed_topic_names = None;
        assert_eq!(error(g.heartbeat(j, &tp, 0)), INVALID_REQUEST, "no subscription");
        let mut j = join("a", &["t"]);
        j.rebalance_timeout_ms = -1;
        assert_eq!(error(g.heartbeat(j, &tp, 0)), INVALID_REQUEST, "no rebalance timeout");
        let mut j = join("a", &["t"]);
        j.topic_partitions = Some(wire(&[(T, &[0])]));
        assert_eq!(error(g.heartbeat(j, &tp, 0)), INVALID_REQUEST, "owning partitions on a join");
        assert_eq!(error(g.heartbeat(join("", &["t"]), &tp, 0)), INVALID_REQUEST, "v1 needs a member id");
        let mut j = join("a", &[]);
        j.subscribed_topic_regex = Some("t(".into());
        let r = g.heartbeat(j, &tp, 0);
        assert_eq!(r.error_code, ResponseError::InvalidRegularExpression.code());
        assert!(r.error_message.unwrap().contains("not a valid regular expression"));
        assert_eq!(error(g.heartbeat(hb("a", -3, &[]), &tp, 0)), INVALID_REQUEST);
        assert_eq!(error(g.heartbeat(hb("a", -2, &[]), &tp, 0)), INVALID_REQUEST, "static leave without instance");
        assert!(!g.has_members());
        assert_eq!(g.group_epoch(), 0);
    }

    #[test]
    fn a_full_group_refuses_newcomers_only() {
        let config = ConsumerGroupConfig { max_size: Some(1), ..ConsumerGroupConfig::default() };
        let (mut g, tp) = (ConsumerGroup::new("g".into(), config), topics(4, 0));
        ok(g.heartbeat(join("a", &["t"]), &tp, 0));
        assert_eq!(error(g.heartbeat(join("b", &["t"]), &tp, 0)), MAX_SIZE);
        ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1, 2, 3])]), &tp, 0));
    }

    #[test]
    fn a_subscription_change_revokes_the_dropped_topic() {
        let (mut g, tp) = (group(), topics(2, 2));
        assert_eq!(ok(g.heartbeat(join("a", &["t", "u"]), &tp, 0)), (1, Some(wire(&[(T, &[0, 1]), (U, &[0, 1])]))));
        let mut change = hb("a", 1, &[(T, &[0, 1]), (U, &[0, 1])]);
        change.subscribed_topic_names = Some(vec!["u".into()]);
        assert_eq!(ok(g.heartbeat(change, &tp, 10)), (1, Some(wire(&[(U, &[0, 1])]))));
        assert_eq!(g.group_epoch(), 2);
        assert_eq!(state(&g, "a"), (1, MemberState::UnrevokedPartitions));
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(U, &[0, 1])]), &tp, 20)), (2, None));
        assert_eq!(g.state_name(), "Stable");
        // Subscribing to a topic that does not exist assigns nothing and changes nothing else.
        let mut change = hb("a", 2, &[(U, &[0, 1])]);
        change.subscribed_topic_names = Some(vec!["u".into(), "missing".into()]);
        assert_eq!(ok(g.heartbeat(change, &tp, 30)), (3, None));
    }

    #[test]
    fn partition_growth_bumps_the_group_epoch() {
        let (mut g, tp) = (group(), topics(2, 0));
        ok(g.heartbeat(join("a", &["t"]), &tp, 0));
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &tp, 10)), (1, None));
        let grown = topics(4, 0);
        assert_eq!(ok(g.heartbeat(hb("a", 1, &[(T, &[0, 1])]), &grown, 20)), (2, Some(wire(&[(T, &[0, 1, 2, 3])]))));
        assert_eq!(g.group_epoch(), 2);
    }

    fn spec<'a>(topics: &[Uuid], previous: Option<&'a Partitions>) -> AssignSpec<'a> {
        AssignSpec { topics: topics.iter().copied().collect(), previous }
    }

    fn count(ps: &Partitions) -> usize {
        ps.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn uniform_is_balanced_and_sticky_from_three_to_four_members() {
        let counts = BTreeMap::from([(T, 12)]);
        let first = assign_uniform(&[spec(&[T], None), spec(&[T], None), spec(&[T], None)], &counts);
        assert_eq!(first.iter().map(count).collect::<Vec<_>>(), vec![4, 4, 4]);
        let second = assign_uniform(
            &[spec(&[T], Some(&first[0])), spec(&[T], Some(&first[1])), spec(&[T], Some(&first[2])), spec(&[T], None)],
            &counts,
        );
        assert_eq!(second.iter().map(count).collect::<Vec<_>>(), vec![3, 3, 3, 3]);
        for i in 0..3 {
            assert!(is_subset(&second[i], &first[i]), "member {i} only gave partitions up");
        }
        // Back to three: the leaver's three partitions spread, nothing else moves.
        let third = assign_uniform(
            &[spec(&[T], Some(&second[0])), spec(&[T], Some(&second[1])), spec(&[T], Some(&second[3]))],
            &counts,
        );
        assert_eq!(third.iter().map(count).collect::<Vec<_>>(), vec![4, 4, 4]);
        for (now, before) in [(0, 0), (1, 1), (2, 3)] {
            assert!(is_subset(&second[before], &third[now]));
        }
        // Uneven: 7 partitions over two topics and three members.
        let counts = BTreeMap::from([(T, 4), (U, 3)]);
        let uneven = assign_uniform(&[spec(&[T, U], None), spec(&[T, U], None), spec(&[T, U], None)], &counts);
        let mut loads: Vec<usize> = uneven.iter().map(count).collect();
        loads.sort();
        assert_eq!(loads, vec![2, 2, 3]);
        // Only subscribed, existing topics are assigned.
        let partial = assign_uniform(&[spec(&[T], None), spec(&[U, Uuid::from_u128(9)], None)], &counts);
        assert_eq!(partial[0], to_partitions(&wire(&[(T, &[0, 1, 2, 3])])));
        assert_eq!(partial[1], to_partitions(&wire(&[(U, &[0, 1, 2])])));
    }

    #[test]
    fn range_follows_kafka() {
        let counts = BTreeMap::from([(T, 7), (U, 2)]);
        let out = assign_range(&[spec(&[T], None), spec(&[T, U], None), spec(&[T, U], None)], &counts);
        assert_eq!(to_wire(&out[0]), wire(&[(T, &[0, 1, 2])]));
        assert_eq!(to_wire(&out[1]), wire(&[(T, &[3, 4]), (U, &[0])]));
        assert_eq!(to_wire(&out[2]), wire(&[(T, &[5, 6]), (U, &[1])]));
        let few = assign_range(&[spec(&[U], None), spec(&[U], None), spec(&[U], None)], &counts);
        assert_eq!(few.iter().map(count).collect::<Vec<_>>(), vec![1, 1, 0]);
    }

    /// xorshift64: a whole scenario from one seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// A simulated consumer: it consumes `owned`, applies every assignment it is sent at once,
    /// and (for the simulation's sake) learns at once that it was removed on a tick.
    struct Client {
        id: String,
        instance: Option<String>,
        epoch: i32,
        owned: Partitions,
        subscribed: Vec<String>,
        /// A static member after its temporary leave.
        away: bool,
    }

    fn request(c: &Client, resubscribe: Option<Vec<String>>) -> Heartbeat {
        let mut r = if c.epoch == 0 {
            let names: Vec<&str> = c.subscribed.iter().map(String::as_str).collect();
            join(&c.id, &names)
        } else {
            let mut r = hb(&c.id, c.epoch, &[]);
            r.topic_partitions = Some(to_wire(&c.owned));
            r.subscribed_topic_names = resubscribe;
            r
        };
        r.instance_id = c.instance.clone();
        r
    }

    fn send(g: &mut ConsumerGroup, c: &mut Client, tp: &Topics, now: i64, resubscribe: Option<Vec<String>>, why: &str) {
        if let Some(s) = &resubscribe {
            c.subscribed = s.clone();
        }
        let r = g.heartbeat(request(c, resubscribe), tp, now);
        assert_eq!(r.error_code, NONE, "{why}: {r:?}");
        c.epoch = r.member_epoch;
        if let Some(a) = r.assignment {
            c.owned = to_partitions(&a);
        }
    }

    /// No partition is consumed by two clients, and each is held for its client by the group.
    fn check(g: &ConsumerGroup, clients: &[Client], why: &str) {
        g.check_invariants();
        let mut seen = BTreeSet::new();
        for c in clients.iter().filter(|c| !c.away) {
            for (t, ps) in &c.owned {
                for &p in ps {
                    assert!(seen.insert((*t, p)), "{why}: {t}-{p} consumed twice");
                    let m = g.members.get(&c.id).unwrap_or_else(|| panic!("{why}: {} owns but is gone", c.id));
                    assert!(contains(&m.assigned, *t, p) || contains(&m.pending_revocation, *t, p), "{why}");
                }
            }
        }
    }

    /// How often a scenario met each situation, to show the seeds reach them.
    #[derive(Default)]
    struct Seen {
        unrevoked: usize,
        unreleased: usize,
        removed_on_tick: usize,
        static_returns: usize,
    }

    fn simulate(seed: u64, seen: &mut Seen) {
        let mut rng = Rng(seed);
        let config = ConsumerGroupConfig { session_timeout_ms: 10_000, ..ConsumerGroupConfig::default() };
        let mut g = ConsumerGroup::new("g".into(), config);
        let (mut t_count, mut u_count) = (6, 4);
        let subscriptions = [vec!["t".to_string()], vec!["u".to_string()], vec!["t".to_string(), "u".to_string()]];
        let (mut clients, mut now, mut next_id) = (Vec::<Client>::new(), 0i64, 0);
        for step in 0..400 {
            let tp = topics(t_count, u_count);
            let why = format!("seed {seed} step {step}");
            let live: Vec<usize> = (0..clients.len()).filter(|&i| !clients[i].away).collect();
            let joined: Vec<usize> = live.iter().copied().filter(|&i| clients[i].epoch > 0).collect();
            match rng.below(12) {
                0 | 1 if clients.len() < 10 => {
                    next_id += 1;
                    let instance = (rng.below(3) == 0).then(|| format!("i{next_id}"));
                    let subscribed = subscriptions[rng.below(3)].clone();
                    let mut c =
                        Client { id: format!("m{next_id}"), instance, epoch: 0, owned: Partitions::new(), subscribed, away: false };
                    send(&mut g, &mut c, &tp, now, None, &why);
                    clients.push(c);
                }
                2..=6 if !live.is_empty() => {
                    let i = live[rng.below(live.len())];
                    let resubscribe = (rng.below(10) == 0).then(|| subscriptions[rng.below(3)].clone());
                    send(&mut g, &mut clients[i], &tp, now, resubscribe, &why);
                }
                7 if !joined.is_empty() => {
                    let c = clients.remove(joined[rng.below(joined.len())]);
                    let r = g.heartbeat(request(&Client { epoch: LEAVE_EPOCH, ..c }, None), &tp, now);
                    assert_eq!(r.error_code, NONE, "{why}: {r:?}");
                }
                8 => {
                    let statics: Vec<usize> = joined.iter().copied().filter(|&i| clients[i].instance.is_some()).collect();
                    if let Some(&i) = statics.get(rng.below(statics.len().max(1))) {
                        let c = &mut clients[i];
                        let mut r = request(c, None);
                        r.member_epoch = STATIC_LEAVE_EPOCH;
                        assert_eq!(g.heartbeat(r, &tp, now).error_code, NONE, "{why}");
                        (c.away, c.owned, c.epoch) = (true, Partitions::new(), 0);
                    }
                }
                9 => {
                    if let Some(c) = clients.iter_mut().find(|c| c.away) {
                        seen.static_returns += usize::from(g.members.contains_key(&c.id));
                        next_id += 1;
                        (c.id, c.away) = (format!("m{next_id}"), false);
                        send(&mut g, c, &tp, now, None, &why);
                    }
                }
                10 => {
                    now += rng.below(4000) as i64;
                    for id in g.tick(now) {
                        seen.removed_on_tick += 1;
                        let c = clients.iter_mut().find(|c| c.id == id).expect("a client per member");
                        (c.owned, c.epoch) = (Partitions::new(), 0);
                    }
                }
                11 if t_count + u_count < 30 => {
                    if rng.below(2) == 0 {
                        t_count += 1
                    } else {
                        u_count += 1
                    }
                }
                _ => {}
            }
            check(&g, &clients, &why);
            seen.unrevoked += g.members.values().filter(|m| m.state == MemberState::UnrevokedPartitions).count();
            seen.unreleased += g.members.values().filter(|m| m.state == MemberState::UnreleasedPartitions).count();
        }

        // Everyone comes back and heartbeats in turn: the group must settle on its target.
        let tp = topics(t_count, u_count);
        for c in clients.iter_mut().filter(|c| c.away) {
            next_id += 1;
            (c.id, c.away) = (format!("m{next_id}"), false);
            send(&mut g, c, &tp, now, None, &format!("seed {seed} return"));
        }
        for round in 0..10 {
            for c in clients.iter_mut() {
                send(&mut g, c, &tp, now, None, &format!("seed {seed} round {round}"));
            }
            check(&g, &clients, &format!("seed {seed} round {round}"));
        }
        if clients.is_empty() {
            assert_eq!(g.state_name(), "Empty");
            return;
        }
        assert_eq!(g.state_name(), "Stable", "seed {seed}");
        let mut all = BTreeSet::new();
        for c in &clients {
            assert_eq!(c.epoch, g.assignment_epoch(), "seed {seed}");
            assert_eq!(c.owned, g.member_target(&c.id), "seed {seed}");
            all.extend(c.owned.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p))));
        }
        let subscribed: BTreeSet<&String> = clients.iter().flat_map(|c| &c.subscribed).collect();
        let expected = subscribed.iter().map(|n| if n.as_str() == "t" { t_count } else { u_count }).sum::<i32>();
        assert_eq!(all.len(), expected as usize, "seed {seed}: every subscribed partition is consumed");
        for s in &subscriptions {
            let loads: Vec<usize> = clients.iter().filter(|c| c.subscribed == *s).map(|c| count(&c.owned)).collect();
            if let (Some(min), Some(max)) = (loads.iter().min(), loads.iter().max()) {
                assert!(max - min <= 1, "seed {seed}: {s:?} members hold {loads:?}");
            }
        }
    }

    #[test]
    fn random_membership_never_shares_a_partition_and_converges() {
        let mut seen = Seen::default();
        for seed in 1..=40u64 {
            simulate(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), &mut seen);
        }
        assert!(seen.unrevoked > 100 && seen.unreleased > 100, "{} {}", seen.unrevoked, seen.unreleased);
        assert!(seen.removed_on_tick > 10 && seen.static_returns > 10, "{} {}", seen.removed_on_tick, seen.static_returns);
    }
}
