//! One consumer group under the classic protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup),
//! as a state machine: [`Group::handle`] takes an event and the current time and returns the
//! replies to send. It keeps no clock and does no I/O; the owning shard calls it with
//! [`Event::Tick`] at [`Group::next_deadline`].
//!
//! States follow Kafka's coordinator:
//! - `Empty`: no members (offsets may still be committed).
//! - `PreparingRebalance`: waiting for every member to (re)join, up to the rebalance timeout (or,
//!   for a group that was empty, for the initial rebalance delay so that more members can arrive).
//! - `CompletingRebalance`: joins answered (the leader got the member list); waiting for the
//!   leader's SyncGroup with the assignment.
//! - `Stable`: assignment handed out; members heartbeat.
//!
//! JoinGroup and SyncGroup are long polls: a request may be answered later, by another event.
//! Requests are identified by a [`Token`] the caller chooses; every reply names its token.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::offsets::{GroupSnapshot, MemberSnapshot};
use crate::protocol::ResponseError;

/// Identifies one waiting request; chosen by the caller, echoed in its reply.
pub type Token = u64;

/// Kafka's "no error"; other codes are `ResponseError::X.code()`.
pub const NONE: i16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

/// Broker-wide group settings (Kafka's `group.*` keys).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long an empty group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `offsets.retention.minutes`, in ms: how long committed offsets outlive an empty group
    /// (or, in a group with members, a topic no member subscribes to any more).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: i64,
    /// KIP-848 groups: `group.consumer.session.timeout.ms` and
    /// `group.consumer.heartbeat.interval.ms`.
    pub consumer_session_timeout_ms: i32,
    pub consumer_heartbeat_interval_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub token: Token,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and its id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone)]
pub enum Event {
    Join(JoinRequest),
    Sync { token: Token, member_id: String, generation: i32, assignments: Vec<(String, Bytes)> },
    Heartbeat { token: Token, member_id: String, generation: i32 },
    /// Members leaving: (member id, instance id). A static member may be named by its instance
    /// id alone (an empty member id), as the AdminClient's removeMembersFromConsumerGroup does.
    Leave { token: Token, members: Vec<(String, Option<String>)> },
    /// Time passed: expire sessions, finish rebalances whose wait is over.
    Tick,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join {
        error: i16,
        generation: i32,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        leader: String,
        member_id: String,
        /// The whole group, for the leader only; empty for everyone else.
        members: Vec<JoinedMember>,
        /// The leader is told the members but keeps the assignment it has (a static leader
        /// rejoined a stable group, KIP-814).
        skip_assignment: bool,
    },
    Sync { error: i16, protocol_type: Option<String>, protocol_name: Option<String>, assignment: Bytes },
    Heartbeat { error: i16 },
    /// One result per member id asked to leave.
    Leave { results: Vec<(String, i16)> },
}

/// The only action: answer the waiting request `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub token: Token,
    pub reply: Reply,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat_ms: i64,
    /// Order of first join: the earliest remaining member leads when the leader is gone.
    joined_seq: u64,
    join_token: Option<Token>,
    sync_token: Option<Token>,
    /// Joined the current generation but has not sent its SyncGroup yet.
    awaiting_sync: bool,
    /// OffsetCommits of this member still being written. Each keeps the session alive, as a
    /// JoinGroup or SyncGroup wait does: the broker answers a connection's requests in order,
    /// so the answer to the member's next heartbeat waits behind a slow commit (a disk stall, a
    /// first commit that must create `__consumer_offsets`), and the client sends no other
    /// meanwhile.
    commits_in_flight: u32,
}

impl Member {
    /// Whether a request of the member's that the broker has not answered yet (a JoinGroup or
    /// SyncGroup wait, a commit being written) holds its session open: it cannot expire now.
    fn session_held(&self) -> bool {
        self.join_token.is_some() || self.sync_token.is_some() || self.commits_in_flight > 0
    }
}

/// One group's membership. Owned by the core that coordinates the group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    config: GroupConfig,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending_members: BTreeMap<String, i64>,
    /// In PreparingRebalance: when to stop waiting, and whether this is an empty group's first
    /// rebalance (which waits the full initial delay for more members).
    rebalance_deadline_ms: i64,
    initial_rebalance: bool,
    /// After a rebalance: members that have not sent SyncGroup by then are removed (Kafka's
    /// pending-sync timeout, the rebalance timeout), so a leader that never syncs cannot leave
    /// the group stuck in CompletingRebalance.
    sync_deadline_ms: Option<i64>,
    next_seq: u64,
}

fn join_error(token: Token, error: i16, member_id: &str) -> Action {
    Action {
        token,
        reply: Reply::Join {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        },
    }
}

fn sync_error(token: Token, error: i16) -> Action {
    Action { token, reply: Reply::Sync { error, protocol_type: None, protocol_name: None, assignment: Bytes::new() } }
}

impl Group {
    pub fn new(id: String, config: GroupConfig) -> Group {
        Group {
            id,
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_rebalance: false,
            sync_deadline_ms: None,
            next_seq: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    /// The state as Kafka names it in ListGroups and DescribeGroups.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }
    /// A member's OffsetCommit is being written: its session cannot expire until
    /// [`Group::commit_ended`] (see `Member::commits_in_flight`).
    pub fn commit_started(&mut self, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.commits_in_flight += 1;
        }
    }

    /// The write of a commit from [`Group::commit_started`] ended, well or not. The commit
    /// counts as a heartbeat, as in Kafka, so the session runs again from `now`.
    pub fn commit_ended(&mut self, member_id: &str, now: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.commits_in_flight = m.commits_in_flight.saturating_sub(1);
            m.last_heartbeat_ms = m.last_heartbeat_ms.max(now);
        }
    }

    /// Whether `member_id` belongs to the current generation.
    pub fn is_member(&self, member_id: &str, generation: i32) -> bool {
        self.members.contains_key(member_id) && generation == self.generation
    }

    /// The earliest time at which a [`Event::Tick`] can change something.
    pub fn next_deadline(&self) -> Option<i64> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.session_held())
            .map(|m| m.last_heartbeat_ms + m.session_timeout_ms as i64);
        let pending = self.pending_members.values().copied();
        let rebalance = (self.state == GroupState::PreparingRebalance).then_some(self.rebalance_deadline_ms);
        sessions.chain(pending).chain(rebalance).chain(self.sync_deadline_ms).min()
    }

    pub fn handle(&mut self, event: Event, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Join(j) => self.join(j, now, &mut out),
            Event::Sync { token, member_id, generation, assignments } => {
                self.sync(token, &member_id, generation, assignments, now, &mut out)
            }
            Event::Heartbeat { token, member_id, generation } => {
                let error = self.heartbeat(&member_id, generation, now);
                out.push(Action { token, reply: Reply::Heartbeat { error } });
            }
            Event::Leave { token, members } => self.leave(token, members, now, &mut out),
            Event::Tick => self.expire(now, &mut out),
        }
        if self.sync_deadline_ms.is_some() && !self.members.values().any(|m| m.awaiting_sync) {
            self.sync_deadline_ms = None;
        }
        self.try_complete_join(now, &mut out);
        out
    }

    fn join(&mut self, j: JoinRequest, now: i64, out: &mut Vec<Action>) {
        let c = self.config;
        if j.session_timeout_ms < c.min_session_timeout_ms || j.session_timeout_ms > c.max_session_timeout_ms {
            return out.push(join_error(j.token, ResponseError::InvalidSessionTimeout.code(), &j.member_id));
        }
        if j.protocol_type.is_empty() || j.protocols.is_empty() {
            return out.push(join_error(j.token, ResponseError::InconsistentGroupProtocol.code(), &j.member_id));
        }
        let others: Vec<&Member> = self.members.iter().filter(|(id, _)| **id != j.member_id).map(|(_, m)| m).collect();
        if !others.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(j.protocol_type.as_str());
            let shared = j.protocols.iter().any(|(p, _)| others.iter().all(|m| m.protocols.iter().any(|(q, _)| q == p)));
            if !same_type || !shared {
                return out.push(join_error(j.token, ResponseError::InconsistentGroupProtocol.code(), &j.member_id));
            }
        }
        let member_id = if j.member_id.is_empty() {
            // A static member rejoining under a new id replaces (fences) its old incarnation.
            let old = j.instance_id.as_deref().and_then(|inst| self.static_member(inst));
            let new_id = format!("{}-{}", if j.client_id.is_empty() { "member" } else { &j.client_id }, self.fresh_suffix());
            if let Some(old_id) = old {
                if self.state == GroupState::Stable && self.protocol.as_ref().is_some_and(|p| j.protocols.iter().any(|(q, _)| q == p)) {
                    return self.replace_static_member(&old_id, new_id, j, now, out);
                }
                self.remove_member(&old_id, ResponseError::FencedInstanceId.code(), out);
            } else if j.require_known_member_id {
                self.pending_members.insert(new_id.clone(), now + j.session_timeout_ms as i64);
                return out.push(join_error(j.token, ResponseError::MemberIdRequired.code(), &new_id));
            }
            new_id
        } else if self.members.contains_key(&j.member_id) || self.pending_members.remove(&j.member_id).is_some() {
            j.member_id.clone()
        } else {
            return out.push(join_error(j.token, ResponseError::UnknownMemberId.code(), &j.member_id));
        };
        let seq = self.fresh_seq();
        let member = self.members.entry(member_id.clone()).or_insert_with(|| Member {
            instance_id: j.instance_id.clone(),
            client_id: j.client_id.clone(),
            client_host: j.client_host.clone(),
            session_timeout_ms: j.session_timeout_ms,
            rebalance_timeout_ms: j.rebalance_timeout_ms,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_heartbeat_ms: now,
            joined_seq: seq,
            join_token: None,
            sync_token: None,
            awaiting_sync: false,
            commits_in_flight: 0,
        });
        member.protocols = j.protocols;
        member.session_timeout_ms = j.session_timeout_ms;
        member.rebalance_timeout_ms = j.rebalance_timeout_ms;
        member.last_heartbeat_ms = now;
        if let Some(old) = member.join_token.replace(j.token) {
            out.push(join_error(old, ResponseError::RebalanceInProgress.code(), &member_id));
        }
        if self.members.len() == 1 {
            // The first member (of a new or emptied group) sets the type; it outlives emptying.
            self.protocol_type = Some(j.protocol_type);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, out);
        }
    }

    /// A static member rejoined a stable group under a new member id, still supporting the
    /// group's protocol: as in Kafka (KIP-345), it takes its old incarnation's place, assignment
    /// and leadership at the current generation, with no rebalance, so the other members keep
    /// their partitions. The old incarnation is fenced: its waiting requests get
    /// FENCED_INSTANCE_ID and its member id is unknown from now on.
    fn replace_static_member(&mut self, old_id: &str, new_id: String, j: JoinRequest, now: i64, out: &mut Vec<Action>) {
        let mut m = self.members.remove(old_id).expect("the old incarnation is a member");
        let fenced = ResponseError::FencedInstanceId.code();
        if let Some(t) = m.join_token.take() {
            out.push(join_error(t, fenced, old_id));
        }
        if let Some(t) = m.sync_token.take() {
            out.push(sync_error(t, fenced));
        }
        m.client_id = j.client_id;
        m.client_host = j.client_host;
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.protocols = j.protocols;
        m.last_heartbeat_ms = now;
        m.awaiting_sync = false;
        m.commits_in_flight = 0;
        self.members.insert(new_id.clone(), m);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        let protocol = self.protocol.clone().expect("a stable group has a protocol");
        let leader = self.leader.clone().expect("a stable group has a leader");
        let members = if leader == new_id { self.joined_members(&protocol) } else { Vec::new() };
        tracing::info!(group = %self.id, instance = ?self.members[&new_id].instance_id, old = %old_id, new = %new_id, "static member rejoined; no rebalance");
        out.push(Action {
            token: j.token,
            reply: Reply::Join {
                error: NONE,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: Some(protocol),
                skip_assignment: leader == new_id,
                leader,
                member_id: new_id,
                members,
            },
        });
    }

    fn sync(&mut self, token: Token, member_id: &str, generation: i32, assignments: Vec<(String, Bytes)>, now: i64, out: &mut Vec<Action>) {
        let Some(m) = self.members.get_mut(member_id) else {
            return out.push(sync_error(token, ResponseError::UnknownMemberId.code()));
        };
        if generation != self.generation {
            return out.push(sync_error(token, ResponseError::IllegalGeneration.code()));
        }
        if matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable) {
            m.awaiting_sync = false;
        }
        match self.state {
            GroupState::Empty => out.push(sync_error(token, ResponseError::UnknownMemberId.code())),
            GroupState::PreparingRebalance => out.push(sync_error(token, ResponseError::RebalanceInProgress.code())),
            GroupState::Stable => {
                m.last_heartbeat_ms = now;
                let assignment = m.assignment.clone();
                out.push(self.sync_ok(token, assignment));
            }
            GroupState::CompletingRebalance => {
                m.last_heartbeat_ms = now;
                if let Some(old) = m.sync_token.replace(token) {
                    out.push(sync_error(old, ResponseError::RebalanceInProgress.code()));
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    let waiting: Vec<(Token, Bytes)> = self
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync_token.take().map(|t| (t, m.assignment.clone())))
                        .collect();
                    for (t, a) in waiting {
                        out.push(self.sync_ok(t, a));
                    }
                }
            }
        }
    }

    fn sync_ok(&self, token: Token, assignment: Bytes) -> Action {
        Action {
            token,
            reply: Reply::Sync {
                error: NONE,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol.clone(),
                assignment,
            },
        }
    }

    fn heartbeat(&mut self, member_id: &str, generation: i32, now: i64) -> i16 {
        let state = self.state;
        let Some(m) = self.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if generation != self.generation {
            return ResponseError::IllegalGeneration.code();
        }
        m.last_heartbeat_ms = now;
        match state {
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    fn leave(&mut self, token: Token, members: Vec<(String, Option<String>)>, now: i64, out: &mut Vec<Action>) {
        let mut results = Vec::new();
        let mut removed = false;
        for (id, instance) in members {
            // A static member is found by its instance id; a member id given with it must match
            // (FENCED_INSTANCE_ID otherwise), as in Kafka.
            let found = match &instance {
                Some(inst) => match self.static_member(inst) {
                    Some(found) if id.is_empty() || found == id => Ok(found),
                    Some(_) => Err(ResponseError::FencedInstanceId.code()),
                    None => Err(ResponseError::UnknownMemberId.code()),
                },
                None if self.members.contains_key(&id) => Ok(id.clone()),
                None => Err(ResponseError::UnknownMemberId.code()),
            };
            match found {
                Ok(member) => {
                    self.remove_member(&member, ResponseError::UnknownMemberId.code(), out);
                    removed = true;
                    results.push((id, NONE));
                }
                Err(code) => results.push((id, code)),
            }
        }
        out.push(Action { token, reply: Reply::Leave { results } });
        if removed {
            self.after_removal(now, out);
        }
    }

    /// Drops members whose session expired (members waiting in JoinGroup or SyncGroup are kept
    /// alive by the wait, as in Kafka, and so are members with a commit being written), pending
    /// member ids never used, and members that did not sync in time.
    fn expire(&mut self, now: i64, out: &mut Vec<Action>) {
        self.pending_members.retain(|_, deadline| *deadline > now);
        let mut expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.session_held())
            .filter(|(_, m)| m.last_heartbeat_ms + m.session_timeout_ms as i64 <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(id, ResponseError::UnknownMemberId.code(), out);
        }
        if self.sync_deadline_ms.is_some_and(|d| d <= now) {
            self.sync_deadline_ms = None;
            let unsynced: Vec<String> =
                self.members.iter().filter(|(_, m)| m.awaiting_sync).map(|(id, _)| id.clone()).collect();
            for id in unsynced {
                tracing::info!(group = %self.id, member = %id, "member did not sync in time");
                self.remove_member(&id, ResponseError::UnknownMemberId.code(), out);
                expired.push(id);
            }
        }
        if !expired.is_empty() {
            self.after_removal(now, out);
        }
    }

    /// Removes a member, answering its waiting requests with `error`.
    fn remove_member(&mut self, id: &str, error: i16, out: &mut Vec<Action>) {
        if let Some(m) = self.members.remove(id) {
            if let Some(t) = m.join_token {
                out.push(join_error(t, error, id));
            }
            if let Some(t) = m.sync_token {
                out.push(sync_error(t, error));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn after_removal(&mut self, now: i64, out: &mut Vec<Action>) {
        if self.members.is_empty() {
            self.to_empty();
        } else if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, out);
        }
    }

    fn to_empty(&mut self) {
        self.sync_deadline_ms = None;
        self.state = GroupState::Empty;
        self.generation += 1;
        self.protocol = None;
        self.leader = None;
    }

    fn prepare_rebalance(&mut self, now: i64, out: &mut Vec<Action>) {
        // Members waiting for their assignment must rejoin instead.
        for m in self.members.values_mut() {
            if let Some(t) = m.sync_token.take() {
                out.push(sync_error(t, ResponseError::RebalanceInProgress.code()));
            }
        }
        self.sync_deadline_ms = None;
        self.initial_rebalance = self.state == GroupState::Empty;
        self.rebalance_deadline_ms = if self.initial_rebalance {
            now + self.config.initial_rebalance_delay_ms
        } else {
            now + self.members.values().map(|m| m.rebalance_timeout_ms as i64).max().unwrap_or(0)
        };
        self.state = GroupState::PreparingRebalance;
    }

    fn try_complete_join(&mut self, now: i64, out: &mut Vec<Action>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_token.is_some());
        let waited = now >= self.rebalance_deadline_ms;
        if !(waited || (all_joined && !self.initial_rebalance)) {
            return;
        }
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = self.members.iter().filter(|(_, m)| m.join_token.is_none()).map(|(id, _)| id.clone()).collect();
        for id in missing {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time");
            self.remove_member(&id, ResponseError::UnknownMemberId.code(), out);
        }
        if self.members.is_empty() {
            return self.to_empty();
        }
        self.generation += 1;
        self.protocol = Some(self.select_protocol());
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.iter().min_by_key(|(_, m)| m.joined_seq).map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let protocol = self.protocol.clone().expect("just selected");
        let leader = self.leader.clone().expect("a non-empty group has a leader");
        let everyone = self.joined_members(&protocol);
        let longest = self.members.values().map(|m| m.rebalance_timeout_ms as i64).max().unwrap_or(0);
        self.sync_deadline_ms = Some(now + longest);
        for (id, m) in self.members.iter_mut() {
            let token = m.join_token.take().expect("every remaining member rejoined");
            m.last_heartbeat_ms = now;
            m.awaiting_sync = true;
            out.push(Action {
                token,
                reply: Reply::Join {
                    error: NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { everyone.clone() } else { Vec::new() },
                    skip_assignment: false,
                },
            });
        }
    }

    /// The member id of the static member with this `group.instance.id`.
    fn static_member(&self, instance: &str) -> Option<String> {
        self.members.iter().find(|(_, m)| m.instance_id.as_deref() == Some(instance)).map(|(id, _)| id.clone())
    }

    /// Every member as the leader's JoinGroup answer lists it, with its metadata for `protocol`.
    fn joined_members(&self, protocol: &str) -> Vec<JoinedMember> {
        self.members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.protocols.iter().find(|(p, _)| p == protocol).map(|(_, md)| md.clone()).unwrap_or_default(),
            })
            .collect()
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> String {
        let first = self.members.values().next().expect("non-empty group");
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(p, _)| p)
            .filter(|p| self.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == *p)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                *votes.entry(p).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|p| (votes.get(*p).copied().unwrap_or(0), std::cmp::Reverse(candidates.iter().position(|c| c == *p))))
            .map(|p| (*p).clone())
            .expect("joins are refused unless a protocol is shared")
    }

    fn fresh_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn fresh_suffix(&mut self) -> String {
        format!("{:016x}", self.fresh_seq().wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// What to persist once the group settles: `Some` in Stable (after the leader's assignment)
    /// and Empty, `None` while a rebalance is under way. The marker `(generation, state)` tells
    /// the owner whether it changed since the last write.
    pub fn snapshot(&self, now: i64) -> Option<((i32, GroupState), GroupSnapshot)> {
        if !matches!(self.state, GroupState::Stable | GroupState::Empty) {
            return None;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberSnapshot {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, md)| md.clone()).unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        let snap = GroupSnapshot {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_ms: now,
            members,
        };
        Some(((self.generation, self.state), snap))
    }

    /// The marker of a group that was never persisted.
    pub fn initial_marker() -> (i32, GroupState) {
        (0, GroupState::Empty)
    }

    /// A group as it was persisted: Stable with its members (their sessions start now, so the
    /// ones that are gone expire after their session timeout) or Empty.
    pub fn restore(id: String, config: GroupConfig, snap: GroupSnapshot, now: i64) -> Group {
        let mut g = Group::new(id, config);
        g.generation = snap.generation;
        if !snap.protocol_type.is_empty() {
            g.protocol_type = Some(snap.protocol_type);
        }
        if snap.members.is_empty() {
            return g;
        }
        g.state = GroupState::Stable;
        let protocol = snap.protocol.unwrap_or_default();
        for m in snap.members {
            let seq = g.fresh_seq();
            g.members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    last_heartbeat_ms: now,
                    joined_seq: seq,
                    join_token: None,
                    sync_token: None,
                    awaiting_sync: false,
                    commits_in_flight: 0,
                },
            );
        }
        g.protocol = Some(protocol);
        g.leader = snap.leader.filter(|l| g.members.contains_key(l));
        if g.leader.is_none() {
            g.leader = g.members.keys().next().cloned();
        }
        g
    }

    /// For DescribeGroups: (member id, instance id, client id, host, metadata, assignment).
    pub fn describe_members(&self) -> Vec<(String, Option<String>, String, String, Bytes, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| {
                let md = m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, b)| b.clone()).unwrap_or_default();
                (id.clone(), m.instance_id.clone(), m.client_id.clone(), m.client_host.clone(), md, m.assignment.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIP: i16 = 27; // REBALANCE_IN_PROGRESS
    const UNKNOWN: i16 = 25; // UNKNOWN_MEMBER_ID
    const ILLEGAL_GEN: i16 = 22; // ILLEGAL_GENERATION

    fn group() -> Group {
        let c = GroupConfig {
            initial_rebalance_delay_ms: 100,
            min_session_timeout_ms: 10,
            max_session_timeout_ms: 100_000,
            ..GroupConfig::default()
        };
        Group::new("g".into(), c)
    }

    fn join_req(token: Token, member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            token,
            member_id: member_id.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("md-{p}")))).collect(),
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 5000,
            require_known_member_id: false,
        }
    }

    fn join(token: Token, member_id: &str) -> Event {
        Event::Join(join_req(token, member_id, &["range"]))
    }

    fn sync(token: Token, member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> Event {
        Event::Sync {
            token,
            member_id: member_id.into(),
            generation,
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        }
    }

    fn hb(token: Token, member_id: &str, generation: i32) -> Event {
        Event::Heartbeat { token, member_id: member_id.into(), generation }
    }

    fn reply(actions: &[Action], token: Token) -> Reply {
        let found: Vec<&Action> = actions.iter().filter(|a| a.token == token).collect();
        assert_eq!(found.len(), 1, "expected one reply for token {token} in {actions:?}");
        found[0].reply.clone()
    }

    /// (error, generation, member id, leader, number of members listed)
    fn join_reply(actions: &[Action], token: Token) -> (i16, i32, String, String, usize) {
        match reply(actions, token) {
            Reply::Join { error, generation, member_id, leader, members, .. } => (error, generation, member_id, leader, members.len()),
            other => panic!("not a join reply: {other:?}"),
        }
    }

    fn sync_reply(actions: &[Action], token: Token) -> (i16, Bytes) {
        match reply(actions, token) {
            Reply::Sync { error, assignment, .. } => (error, assignment),
            other => panic!("not a sync reply: {other:?}"),
        }
    }

    fn hb_error(actions: &[Action], token: Token) -> i16 {
        match reply(actions, token) {
            Reply::Heartbeat { error } => error,
            other => panic!("not a heartbeat reply: {other:?}"),
        }
    }

    /// A stable group of `ids` (the first is the leader) at generation 1, time 100.
    fn stable(ids: &[&str]) -> Group {
        let mut g = group();
        let mut t = 0;
        for id in ids {
            g.pending_members.insert(id.to_string(), 10_000);
            assert!(g.handle(join(t, id), 0).is_empty());
            t += 1;
        }
        let acts = g.handle(Event::Tick, 100);
        assert_eq!(acts.len(), ids.len());
        let assignments: Vec<(&str, &str)> = ids.iter().map(|id| (*id, *id)).collect();
        let acts = g.handle(sync(99, ids[0], 1, &assignments), 100);
        assert_eq!(sync_reply(&acts, 99), (NONE, Bytes::from(ids[0].to_string())));
        for (i, id) in ids.iter().enumerate().skip(1) {
            let acts = g.handle(sync(100 + i as u64, id, 1, &[]), 100);
            assert_eq!(sync_reply(&acts, 100 + i as u64), (NONE, Bytes::from(id.to_string())));
        }
        assert_eq!(g.state(), GroupState::Stable);
        g
    }

    #[test]
    fn new_member_gets_an_id_then_joins_after_the_initial_delay() {
        let mut g = group();
        let mut first = join_req(1, "", &["range"]);
        first.require_known_member_id = true;
        let acts = g.handle(Event::Join(first), 0);
        let (err, _, id, _, _) = join_reply(&acts, 1);
        assert_eq!(err, 79); // MEMBER_ID_REQUIRED
        assert!(id.starts_with("client-"));
        assert!(g.handle(join(2, &id), 10).is_empty(), "an empty group waits the initial delay");
        assert!(g.handle(Event::Tick, 60).is_empty());
        assert_eq!(g.next_deadline(), Some(110));
        let acts = g.handle(Event::Tick, 110);
        assert_eq!(join_reply(&acts, 2), (NONE, 1, id.clone(), id.clone(), 1));
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert_eq!(g.protocol(), Some("range"));
        let acts = g.handle(sync(3, &id, 1, &[(&id, "p0,p1")]), 120);
        assert_eq!(sync_reply(&acts, 3), (NONE, Bytes::from("p0,p1")));
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn members_share_one_rebalance_and_each_gets_its_assignment() {
        let mut g = group();
        for (t, id) in ["a", "b", "c"].iter().enumerate() {
            g.pending_members.insert(id.to_string(), 10_000);
            g.handle(join(t as u64, id), 0);
        }
        let acts = g.handle(Event::Tick, 100);
        assert_eq!(join_reply(&acts, 0), (NONE, 1, "a".into(), "a".into(), 3), "the first to join leads and sees everyone");
        assert_eq!(join_reply(&acts, 1), (NONE, 1, "b".into(), "a".into(), 0));
        assert_eq!(join_reply(&acts, 2), (NONE, 1, "c".into(), "a".into(), 0));
        // Followers sync first and wait for the leader.
        assert!(g.handle(sync(10, "b", 1, &[]), 101).is_empty());
        assert!(g.handle(sync(11, "c", 1, &[]), 101).is_empty());
        let acts = g.handle(sync(12, "a", 1, &[("a", "A"), ("b", "B"), ("c", "C")]), 102);
        assert_eq!(acts.len(), 3);
        assert_eq!(sync_reply(&acts, 10).1, Bytes::from("B"));
        assert_eq!(sync_reply(&acts, 11).1, Bytes::from("C"));
        assert_eq!(sync_reply(&acts, 12).1, Bytes::from("A"));
    }

    #[test]
    fn join_during_sync_restarts_the_rebalance() {
        let mut g = group();
        for (t, id) in ["a", "b"].iter().enumerate() {
            g.pending_members.insert(id.to_string(), 10_000);
            g.handle(join(t as u64, id), 0);
        }
        g.handle(Event::Tick, 100);
        assert!(g.handle(sync(10, "b", 1, &[]), 101).is_empty());
        // A new member arrives before the leader synced: b's sync is answered with
        // REBALANCE_IN_PROGRESS and everyone must rejoin.
        let acts = g.handle(Event::Join(join_req(20, "", &["range"])), 102);
        assert_eq!(sync_reply(&acts, 10).0, RIP);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(hb_error(&g.handle(hb(21, "a", 1), 103), 21), RIP);
        g.handle(join(22, "a"), 104);
        let acts = g.handle(join(23, "b"), 105);
        assert_eq!(acts.len(), 3, "all three rejoined, so the rebalance completes at once: {acts:?}");
        assert_eq!(join_reply(&acts, 22).1, 2);
        assert_eq!(join_reply(&acts, 22).4, 3);
    }

    #[test]
    fn a_silent_member_expires_during_a_rebalance_too() {
        let mut g = stable(&["a", "b"]);
        g.handle(Event::Join(join_req(1, "", &["range"])), 200);
        g.handle(join(2, "a"), 300);
        assert_eq!(g.next_deadline(), Some(1100), "b's session ends before the rebalance timeout");
        let acts = g.handle(Event::Tick, 1100);
        assert_eq!(join_reply(&acts, 2), (NONE, 2, "a".into(), "a".into(), 2));
    }

    #[test]
    fn late_heartbeat_expires_the_member_and_rebalances() {
        let mut g = stable(&["a", "b"]);
        assert_eq!(hb_error(&g.handle(hb(1, "a", 1), 900), 1), NONE);
        assert_eq!(g.next_deadline(), Some(1100), "b's session (last seen at 100) ends first");
        let acts = g.handle(Event::Tick, 1100);
        assert!(acts.is_empty());
        assert_eq!(g.member_ids(), vec!["a".to_string()]);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(hb_error(&g.handle(hb(2, "a", 1), 1101), 2), RIP);
        let acts = g.handle(join(3, "a"), 1102);
        assert_eq!(join_reply(&acts, 3), (NONE, 2, "a".into(), "a".into(), 1));
        // The expired member is unknown now.
        assert_eq!(hb_error(&g.handle(hb(4, "b", 1), 1103), 4), UNKNOWN);
    }

    #[test]
    fn a_commit_being_written_keeps_the_session_alive_and_counts_as_a_heartbeat() {
        let mut g = stable(&["a", "b"]);
        g.commit_started("a");
        g.commit_started("a"); // two commits pipelined on one connection
        assert_eq!(g.next_deadline(), Some(1100), "only b's session can end");
        g.handle(hb(1, "b", 1), 3000);
        let acts = g.handle(Event::Tick, 3000);
        assert!(acts.is_empty());
        assert_eq!(g.member_ids(), vec!["a".to_string(), "b".to_string()], "a's session is held by its commits");
        g.commit_ended("a", 3500);
        g.handle(Event::Tick, 3600);
        assert_eq!(g.member_ids().len(), 2, "one commit is still being written");
        g.commit_ended("a", 3700);
        assert_eq!(g.next_deadline(), Some(4000), "b's session (last seen at 3000); a's runs from 3700");
        g.handle(hb(2, "b", 1), 4000);
        g.handle(Event::Tick, 4699);
        assert_eq!(g.member_ids().len(), 2);
        g.handle(Event::Tick, 4700);
        assert_eq!(g.member_ids(), vec!["b".to_string()], "a's session ran out 1,000 ms after its last commit");
        // A commit ending for a member that is gone changes nothing.
        g.commit_ended("a", 4800);
        assert_eq!(g.member_ids(), vec!["b".to_string()]);
    }

    #[test]
    fn a_leader_that_never_syncs_is_removed_after_the_rebalance_timeout() {
        let mut g = group();
        for (t, id) in ["a", "b"].iter().enumerate() {
            g.pending_members.insert(id.to_string(), 10_000);
            g.handle(join(t as u64, id), 0);
        }
        g.handle(Event::Tick, 100);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        assert!(g.handle(sync(10, "b", 1, &[]), 200).is_empty(), "b waits for the leader's assignment");
        // The leader keeps heartbeating but never sends SyncGroup.
        // b's session does not run out while it waits in SyncGroup (Kafka keeps it alive too).
        for t in [1000, 2000, 3000, 4000, 4900] {
            let acts = g.handle(hb(20 + t as u64, "a", 1), t);
            assert_eq!(hb_error(&acts, 20 + t as u64), NONE);
        }
        assert_eq!(g.next_deadline(), Some(100 + 5000), "the sync deadline is the rebalance timeout");
        let acts = g.handle(Event::Tick, 5100);
        assert_eq!(sync_reply(&acts, 10).0, RIP, "the waiting follower is told to rejoin");
        assert!(!g.has_member("a"));
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let acts = g.handle(join(11, "b"), 5101);
        assert_eq!(join_reply(&acts, 11), (NONE, 2, "b".into(), "b".into(), 1), "b now leads generation 2");
    }

    #[test]
    fn a_synced_group_has_no_sync_deadline() {
        let g = stable(&["a", "b"]);
        assert_eq!(g.next_deadline(), Some(100 + 1000), "only the session timeouts remain");
    }

    #[test]
    fn a_restored_group_keeps_its_members_until_their_sessions_lapse() {
        let g = stable(&["a", "b"]);
        assert!(group().snapshot(0).is_some_and(|(m, _)| m == Group::initial_marker()));
        let (marker, snap) = g.snapshot(500).expect("a stable group has a snapshot");
        assert_eq!(marker, (1, GroupState::Stable));
        let mut r = Group::restore("g".into(), g.config, snap, 10_000);
        assert_eq!((r.state(), r.generation(), r.leader()), (GroupState::Stable, 1, Some("a")));
        assert_eq!(r.describe_members(), g.describe_members(), "same members, metadata and assignments");
        let acts = r.handle(hb(1, "a", 1), 10_500);
        assert_eq!(hb_error(&acts, 1), NONE, "a member heartbeating through the restart stays in");
        let acts = r.handle(sync(2, "a", 1, &[]), 10_600);
        assert_eq!(sync_reply(&acts, 2), (NONE, Bytes::from("a")), "and still gets its assignment");
        r.handle(Event::Tick, 11_000);
        assert!(!r.has_member("b"), "b never came back; its session ran out");
        assert_eq!(r.state(), GroupState::PreparingRebalance);
        let mut rebalancing = stable(&["a"]);
        rebalancing.handle(join(5, "a"), 200);
        assert!(rebalancing.snapshot(200).is_none(), "nothing to persist mid-rebalance");
    }

    #[test]
    fn generation_mismatch_is_illegal_generation() {
        let mut g = stable(&["a", "b"]);
        assert_eq!(hb_error(&g.handle(hb(1, "a", 0), 200), 1), ILLEGAL_GEN);
        assert_eq!(sync_reply(&g.handle(sync(2, "b", 7, &[]), 200), 2).0, ILLEGAL_GEN);
        assert_eq!(hb_error(&g.handle(hb(3, "a", 1), 200), 3), NONE);
    }

    #[test]
    fn unknown_members_are_refused() {
        let mut g = stable(&["a"]);
        assert_eq!(join_reply(&g.handle(join(1, "ghost"), 200), 1).0, UNKNOWN);
        assert_eq!(sync_reply(&g.handle(sync(2, "ghost", 1, &[]), 200), 2).0, UNKNOWN);
        assert_eq!(hb_error(&g.handle(hb(3, "ghost", 1), 200), 3), UNKNOWN);
        let acts = g.handle(Event::Leave { token: 4, members: vec![("ghost".into(), None)] }, 200);
        assert_eq!(reply(&acts, 4), Reply::Leave { results: vec![("ghost".into(), UNKNOWN)] });
        assert_eq!(g.state(), GroupState::Stable, "refused requests change nothing");
    }

    /// The AdminClient removes a static member by its instance id alone; a member id that does
    /// not match the instance's is fenced.
    #[test]
    fn static_members_leave_by_instance_id() {
        let mut g = stable(&["a", "b", "c"]);
        g.members.get_mut("b").unwrap().instance_id = Some("host-b".into());
        g.members.get_mut("c").unwrap().instance_id = Some("host-c".into());
        let leave = |g: &mut Group, token, id: &str, inst: &str| {
            let acts = g.handle(Event::Leave { token, members: vec![(id.into(), Some(inst.into()))] }, 200);
            match reply(&acts, token) {
                Reply::Leave { results } => results[0].1,
                other => panic!("not a leave reply: {other:?}"),
            }
        };
        assert_eq!(leave(&mut g, 1, "a", "host-c"), 82, "FENCED_INSTANCE_ID");
        assert_eq!(leave(&mut g, 2, "", "host-x"), UNKNOWN);
        assert_eq!(leave(&mut g, 3, "", "host-b"), NONE);
        assert_eq!(g.member_ids(), vec!["a".to_string(), "c".to_string()]);
    }

    #[test]
    fn leave_rebalances_and_the_last_leave_empties_the_group() {
        let mut g = stable(&["a", "b"]);
        let acts = g.handle(Event::Leave { token: 1, members: vec![("a".into(), None)] }, 200);
        assert_eq!(reply(&acts, 1), Reply::Leave { results: vec![("a".into(), NONE)] });
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let acts = g.handle(join(2, "b"), 201);
        assert_eq!(join_reply(&acts, 2), (NONE, 2, "b".into(), "b".into(), 1), "b leads once a left");
        let acts = g.handle(Event::Leave { token: 3, members: vec![("b".into(), None)] }, 202);
        assert_eq!(reply(&acts, 3), Reply::Leave { results: vec![("b".into(), NONE)] });
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn member_that_does_not_rejoin_in_time_is_dropped() {
        let mut g = stable(&["a", "b"]);
        g.handle(Event::Join(join_req(1, "", &["range"])), 200);
        assert!(g.handle(join(3, "a"), 300).is_empty(), "b has not rejoined yet");
        // b stays alive (heartbeats are answered REBALANCE_IN_PROGRESS) but never rejoins.
        for t in [300, 1200, 2100, 3000, 3900, 4800] {
            assert_eq!(hb_error(&g.handle(hb(t as u64, "b", 1), t), t as u64), RIP);
        }
        assert_eq!(g.next_deadline(), Some(5200), "the rebalance waits the members' rebalance timeout");
        let acts = g.handle(Event::Tick, 5200);
        assert_eq!(acts.len(), 2);
        assert_eq!(join_reply(&acts, 3).1, 2);
        assert_eq!(join_reply(&acts, 3).4, 2, "a and the newcomer; b is gone");
        assert!(!g.member_ids().contains(&"b".to_string()));
    }

    #[test]
    fn protocols_must_be_shared_and_the_most_preferred_wins() {
        let mut g = group();
        g.handle(Event::Join(join_req(1, "", &["range", "roundrobin"])), 0);
        let acts = g.handle(Event::Join(join_req(2, "", &["sticky"])), 0);
        assert_eq!(join_reply(&acts, 2).0, 23); // INCONSISTENT_GROUP_PROTOCOL
        g.handle(Event::Join(join_req(3, "", &["roundrobin", "range"])), 0);
        g.handle(Event::Join(join_req(4, "", &["roundrobin"])), 0);
        let acts = g.handle(Event::Tick, 100);
        assert_eq!(acts.len(), 2 + 1, "three members answered");
        assert_eq!(g.protocol(), Some("roundrobin"));
        let mut other_type = join_req(5, "", &["roundrobin"]);
        other_type.protocol_type = "connect".into();
        assert_eq!(join_reply(&g.handle(Event::Join(other_type), 101), 5).0, 23);
    }

    #[test]
    fn session_timeout_outside_the_broker_bounds_is_refused() {
        let mut g = group();
        let mut j = join_req(1, "", &["range"]);
        j.session_timeout_ms = 5;
        assert_eq!(join_reply(&g.handle(Event::Join(j), 0), 1).0, 26); // INVALID_SESSION_TIMEOUT
        assert_eq!(g.state(), GroupState::Empty);
    }

    /// KIP-345: a static member restarting within its session takes its old place in a stable
    /// group: same generation, its old assignment, and nobody else rebalances. As the leader it
    /// is told the members but to keep the assignment (KIP-814).
    #[test]
    fn a_static_member_rejoining_a_stable_group_takes_its_old_place_without_a_rebalance() {
        for (who, other) in [("b", "a"), ("a", "b")] {
            let mut g = stable(&["a", "b"]);
            g.members.get_mut(who).unwrap().instance_id = Some("host".into());
            let mut j = join_req(7, "", &["range"]);
            j.instance_id = Some("host".into());
            let acts = g.handle(Event::Join(j), 200);
            let (err, generation, new_id, leader, listed) = join_reply(&acts, 7);
            assert_eq!((err, generation), (NONE, 1), "answered at once, at the current generation");
            assert_ne!(new_id, who);
            assert_eq!(g.state(), GroupState::Stable);
            assert_eq!(leader, if who == "a" { new_id.clone() } else { "a".to_string() });
            assert_eq!(listed, if who == "a" { 2 } else { 0 });
            let Reply::Join { skip_assignment, .. } = reply(&acts, 7) else { unreachable!() };
            assert_eq!(skip_assignment, who == "a");
            assert_eq!(hb_error(&g.handle(hb(8, other, 1), 201), 8), NONE, "the other member does not rebalance");
            let acts = g.handle(sync(9, &new_id, 1, &[]), 202);
            assert_eq!(sync_reply(&acts, 9), (NONE, Bytes::from(who.to_string())), "its old assignment");
            assert_eq!(hb_error(&g.handle(hb(10, who, 1), 203), 10), UNKNOWN, "the old incarnation is fenced");
        }
    }

    #[test]
    fn a_static_member_rejoining_fences_its_old_incarnation() {
        let mut g = group();
        let mut j = join_req(1, "", &["range"]);
        j.instance_id = Some("host-1".into());
        g.handle(Event::Join(j.clone()), 0);
        let acts = g.handle(Event::Tick, 100);
        let old_id = join_reply(&acts, 1).2;
        g.handle(sync(2, &old_id, 1, &[(&old_id, "x")]), 100);
        j.token = 3;
        g.handle(Event::Join(j), 200);
        assert_eq!(g.member_ids().len(), 1);
        assert_ne!(g.member_ids()[0], old_id);
        assert_eq!(hb_error(&g.handle(hb(4, &old_id, 1), 201), 4), UNKNOWN);
    }
}
