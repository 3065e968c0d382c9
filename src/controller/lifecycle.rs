//! Broker lifecycle (issue 21): registration, heartbeats, fencing, controlled shutdown.
//!
//! Two halves, both on the controller thread:
//! - the **broker's side** ([`run_broker`]), on every node with the `broker` role once it knows
//!   the cluster id: it registers (a `RegisterBroker` record with a new incarnation id per
//!   process start, **fenced**, as KRaft registers a broker), then heartbeats the active
//!   controller every `broker_heartbeat_interval_ms`, through the controller network's
//!   `BrokerHeartbeat` RPC, or straight into [`heartbeat_here`] when this node leads. On
//!   shutdown it sends heartbeats asking to shut down (KRaft's `WantShutDown` flag) until the
//!   controller answers that the broker is fenced, then stops heartbeating.
//! - the **active controller's side** ([`Sessions`], pure: time is an argument): the last
//!   heartbeat of each broker, in memory only (never in the log, as in KRaft); which records a
//!   heartbeat calls for (`UnfenceBroker` once the broker has applied the log up to its own
//!   registration, `FenceBroker` when it asks to shut down), and which brokers have been silent
//!   longer than `broker_session_timeout_ms` (`FenceBroker`). A new leader has no heartbeat
//!   history: every broker gets a fresh session from the moment it took over.
//!
//! Why registered fenced: a broker that just (re)started has not applied the metadata yet, so
//! it must not be offered to clients or given leaderships until its first heartbeat shows it
//! caught up (KRaft: `BrokerRegistration` fenced, unfenced on a heartbeat whose metadata offset
//! reaches the registration's).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::metadata::{ClusterMetadata, MetadataRecord};
use super::network::{self, Pool, Request, Response};
use super::{addr_of, propose, BrokerConfig, ControllerError, Shared, TypeConfig};

/// A broker's heartbeat to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: i32,
    pub incarnation: Uuid,
    /// The last metadata-log index the broker has applied.
    pub applied: u64,
    /// The broker is shutting down: fence it (and, with part 2, move its leaderships) first.
    pub want_shutdown: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// The broker's registration as the leader has applied it, after the records this heartbeat
    /// called for committed.
    Ok { fenced: bool },
    /// No registration with this incarnation: the broker registers again.
    NotRegistered,
    NotLeader { leader: Option<u64> },
    Failed(String),
}

/// The active controller's view of broker sessions. Owned by the controller thread (behind
/// `Shared::sessions`); reset when the leadership changes hands.
#[derive(Debug, Default)]
pub struct Sessions {
    /// The term these sessions belong to; another term starts them afresh.
    term: u64,
    /// When each broker last heartbeated (or when this leader first saw it), in ms.
    last: BTreeMap<i32, u64>,
    /// Brokers (by incarnation) that asked to shut down: never unfenced again.
    shutting_down: BTreeSet<(i32, Uuid)>,
    /// When `expired` last looked (0: never).
    last_check: u64,
}

/// A gap between two session checks (100 ms apart) longer than this means this node did not run
/// (SIGSTOP, a VM paused, a long GC-like stall): it heard nothing meanwhile, so nobody's silence
/// can be judged, and every session starts afresh rather than every broker being fenced.
pub const PAUSE_MS: u64 = 1_000;

impl Sessions {
    /// Starts afresh when `term` is not the sessions' term: no broker has a heartbeat yet.
    pub fn for_term(&mut self, term: u64) {
        if self.term != term {
            *self = Sessions { term, ..Sessions::default() };
        }
    }

    /// Takes a heartbeat at `now_ms`: what to answer (if the answer does not wait for a record),
    /// and the record it calls for.
    pub fn heartbeat(&mut self, now_ms: u64, hb: &Heartbeat, meta: &ClusterMetadata) -> Result<Option<MetadataRecord>, HeartbeatReply> {
        let Some(b) = meta.brokers.get(&hb.id).filter(|b| b.incarnation == hb.incarnation) else {
            return Err(HeartbeatReply::NotRegistered);
        };
        self.last.insert(hb.id, now_ms);
        if hb.want_shutdown {
            self.shutting_down.insert((hb.id, hb.incarnation));
        }
        let shutting_down = self.shutting_down.contains(&(hb.id, hb.incarnation));
        Ok(match (b.fenced, shutting_down) {
            (false, true) => Some(MetadataRecord::FenceBroker { id: hb.id }),
            (true, false) if hb.applied >= b.registered_at => Some(MetadataRecord::UnfenceBroker { id: hb.id }),
            _ => None,
        })
    }

    /// Every known broker heard from now (the leader could not judge silence meanwhile).
    pub fn refresh(&mut self, now_ms: u64) {
        for t in self.last.values_mut() {
            *t = now_ms;
        }
    }

    /// The serve loop's tick at `now_ms`: whether more than [`PAUSE_MS`] passed since the last
    /// one (this node did not run, and heard nothing meanwhile).
    pub fn ticked(&mut self, now_ms: u64) -> bool {
        let paused = self.last_check != 0 && now_ms.saturating_sub(self.last_check) > PAUSE_MS;
        self.last_check = now_ms;
        paused
    }

    /// The brokers silent longer than `timeout_ms` at `now_ms` that are not fenced yet. A broker
    /// this leader has not heard from yet counts from now (the fresh grace period); a broker
    /// returned here counts from now again, so it is not returned on every tick while its
    /// fencing commits.
    pub fn expired(&mut self, now_ms: u64, timeout_ms: u64, meta: &ClusterMetadata) -> Vec<i32> {
        let mut out = Vec::new();
        for b in meta.brokers.values().filter(|b| !b.fenced) {
            let last = *self.last.entry(b.id).or_insert(now_ms);
            if now_ms.saturating_sub(last) > timeout_ms {
                self.last.insert(b.id, now_ms);
                out.push(b.id);
            }
        }
        self.last.retain(|id, _| meta.brokers.contains_key(id));
        out
    }
}

/// Answers a heartbeat on this node: if it leads, takes it into the sessions, commits the
/// record it calls for (waiting at most `timeout_ms`), and answers with the broker's state.
pub async fn heartbeat_here(raft: &Raft<TypeConfig>, shared: &Shared, hb: Heartbeat, timeout_ms: u64) -> HeartbeatReply {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(shared.node_id) || m.state != openraft::ServerState::Leader {
        return HeartbeatReply::NotLeader { leader: m.current_leader };
    }
    let record = {
        let mut sessions = shared.sessions.lock().expect("never poisoned");
        sessions.for_term(m.current_term);
        match sessions.heartbeat(shared.clock_ms(), &hb, &shared.published.latest().1) {
            Ok(r) => r,
            Err(reply) => return reply,
        }
    };
    if let Some(record) = record {
        tracing::info!(?record, "controller: a broker's heartbeat calls for a record");
        match network::propose_here(raft, record, timeout_ms).await {
            network::ProposeReply::Applied { .. } | network::ProposeReply::Rejected { .. } => {}
            network::ProposeReply::NotLeader { leader } => return HeartbeatReply::NotLeader { leader },
            network::ProposeReply::TimedOut => return HeartbeatReply::Failed("the record did not commit in time".into()),
            network::ProposeReply::Failed(e) => return HeartbeatReply::Failed(e),
        }
    }
    match shared.published.latest().1.brokers.get(&hb.id).filter(|b| b.incarnation == hb.incarnation) {
        Some(b) => HeartbeatReply::Ok { fenced: b.fenced },
        None => HeartbeatReply::NotRegistered,
    }
}

/// On the leader, every tick: fences the brokers whose sessions expired. Off the leader, does
/// nothing (the next leader starts its sessions afresh).
pub fn fence_expired(raft: &Raft<TypeConfig>, shared: &Arc<Shared>, session_timeout_ms: u64) {
    let m = raft.metrics().borrow().clone();
    if m.state != openraft::ServerState::Leader {
        return;
    }
    // A leader cut off from the voters hears no heartbeat and cannot tell a dead broker from
    // its own isolation: it fences only while a majority has answered it recently (its fencing
    // would not commit anyway, and might once it is back, fencing live brokers).
    let cut_off = m.millis_since_quorum_ack.is_some_and(|ms| ms > session_timeout_ms / 2);
    let expired = {
        let mut sessions = shared.sessions.lock().expect("never poisoned");
        sessions.for_term(m.current_term);
        let now = shared.clock_ms();
        // After a pause of this node (SIGSTOP, a stalled VM) it heard nothing meanwhile: every
        // session starts again rather than every broker being fenced at once.
        if sessions.ticked(now) || cut_off {
            sessions.refresh(now);
            return;
        }
        sessions.expired(now, session_timeout_ms, &shared.published.latest().1)
    };
    for id in expired {
        tracing::warn!(broker = id, session_timeout_ms, "controller: no heartbeat from broker {id} within its session timeout; fencing it");
        let raft = raft.clone();
        tokio::spawn(async move {
            let _ = network::propose_here(&raft, MetadataRecord::FenceBroker { id }, 5_000).await;
        });
    }
}

/// A controlled shutdown asked of the broker's side: answered once the controller has fenced
/// the broker (or with why not).
pub type ShutdownAsk = flume::Sender<Result<(), ControllerError>>;

/// How long one heartbeat may take, record commit included.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Between heartbeats asking to shut down (the shutdown waits on them).
const SHUTDOWN_HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// The broker's side: registers, then heartbeats until asked to shut down and fenced (or
/// until the controller thread ends, which drops this task).
pub async fn run_broker(raft: Raft<TypeConfig>, shared: Arc<Shared>, pool: Arc<Pool>, cfg: BrokerConfig, asks: flume::Receiver<ShutdownAsk>) {
    let incarnation = Uuid::new_v4();
    let interval = Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
    let mut waiting: Vec<ShutdownAsk> = Vec::new();
    let mut registered = false;
    let mut retry_soon = false;
    loop {
        if !registered {
            let record = MetadataRecord::RegisterBroker {
                id: shared.node_id as i32,
                listeners: cfg.listeners.clone(),
                rack: cfg.rack.clone(),
                incarnation,
                fenced: true,
            };
            match propose(&raft, &shared, &pool, record, HEARTBEAT_TIMEOUT).await {
                Ok(index) => {
                    tracing::info!(%incarnation, index, listeners = ?cfg.listeners, "broker registered with the controller (fenced until its first heartbeat)");
                    registered = true;
                }
                Err(e) => tracing::warn!(error = %e, "broker registration failed; trying again"),
            }
        }
        if registered {
            let hb = Heartbeat {
                id: shared.node_id as i32,
                incarnation,
                applied: shared.published.latest().0,
                want_shutdown: !waiting.is_empty(),
            };
            match send_heartbeat(&raft, &shared, &pool, hb).await {
                HeartbeatReply::Ok { fenced } => {
                    if fenced && !waiting.is_empty() {
                        tracing::info!("controlled shutdown: the controller has fenced this broker");
                        for w in waiting.drain(..) {
                            let _ = w.send(Ok(()));
                        }
                        return;
                    }
                }
                HeartbeatReply::NotRegistered => {
                    tracing::warn!(%incarnation, "the controller does not know this broker's registration; registering again");
                    registered = false;
                }
                // Another node leads now: heartbeat it without waiting a whole interval.
                HeartbeatReply::NotLeader { leader: Some(_) } => retry_soon = true,
                HeartbeatReply::NotLeader { leader: None } => {}
                HeartbeatReply::Failed(e) => tracing::debug!(error = %e, "broker heartbeat failed"),
            }
        }
        let soon = retry_soon || (registered && !waiting.is_empty());
        let pause = if soon { SHUTDOWN_HEARTBEAT_EVERY.min(interval) } else { interval };
        retry_soon = false;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            ask = asks.recv_async() => match ask {
                Ok(ask) => {
                    if !registered {
                        let _ = ask.send(Err(ControllerError::Failed("this broker is not registered with the controller".into())));
                    } else {
                        tracing::info!("controlled shutdown: asking the controller to fence this broker");
                        waiting.push(ask);
                    }
                }
                Err(_) => return,
            },
        }
        while shared.heartbeats_paused() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends `hb` to the leader, wherever it is.
async fn send_heartbeat(raft: &Raft<TypeConfig>, shared: &Shared, pool: &Pool, hb: Heartbeat) -> HeartbeatReply {
    let timeout_ms = HEARTBEAT_TIMEOUT.as_millis() as u64;
    let leader = raft.metrics().borrow().current_leader;
    match leader {
        None => HeartbeatReply::NotLeader { leader: None },
        Some(l) if l == shared.node_id => heartbeat_here(raft, shared, hb, timeout_ms).await,
        Some(l) => {
            let Some(addr) = addr_of(raft, l) else { return HeartbeatReply::NotLeader { leader: None } };
            // A little longer than the leader may take, so that its answer arrives. A leader cut
            // off silently would hold the call that long, and the next leader, which gives every
            // broker a fresh session from its start, would fence this one meanwhile: the call is
            // given up as soon as this node learns of another leader, and the run loop heartbeats
            // that one at once.
            let call = pool.call(shared, &addr, Request::BrokerHeartbeat(hb), HEARTBEAT_TIMEOUT + Duration::from_secs(2));
            tokio::select! {
                r = call => match r {
                    Ok(Response::BrokerHeartbeat(r)) => r,
                    Ok(other) => HeartbeatReply::Failed(format!("unexpected answer from the leader: {other:?}")),
                    Err(e) => HeartbeatReply::Failed(format!("the leader at {addr}: {e}")),
                },
                leader = leader_other_than(raft, l) => HeartbeatReply::NotLeader { leader },
            }
        }
    }
}

/// Resolves once this node knows of a leader other than `l` (never, if its Raft has stopped).
async fn leader_other_than(raft: &Raft<TypeConfig>, l: u64) -> Option<u64> {
    let mut metrics = raft.metrics();
    loop {
        let now = metrics.borrow_and_update().current_leader;
        if now.is_some() && now != Some(l) {
            return now;
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::BrokerRegistration;

    fn meta(brokers: &[(i32, Uuid, bool, u64)]) -> ClusterMetadata {
        let mut m = ClusterMetadata::new();
        for &(id, incarnation, fenced, registered_at) in brokers {
            let b = BrokerRegistration { id, listeners: vec![], rack: None, incarnation, fenced, registered_at };
            m.brokers.insert(id, b);
        }
        m
    }

    fn hb(id: i32, incarnation: Uuid, applied: u64, want_shutdown: bool) -> Heartbeat {
        Heartbeat { id, incarnation, applied, want_shutdown }
    }

    #[test]
    fn a_caught_up_heartbeat_unfences_and_a_stale_incarnation_must_register_again() {
        let (a, old) = (Uuid::new_v4(), Uuid::new_v4());
        let mut s = Sessions::default();
        s.for_term(1);
        let m = meta(&[(1, a, true, 10)]);
        assert_eq!(s.heartbeat(0, &hb(1, a, 9, false), &m), Ok(None), "not caught up with its registration yet");
        assert_eq!(s.heartbeat(0, &hb(1, a, 10, false), &m), Ok(Some(MetadataRecord::UnfenceBroker { id: 1 })));
        assert_eq!(s.heartbeat(0, &hb(1, old, 10, false), &m), Err(HeartbeatReply::NotRegistered));
        assert_eq!(s.heartbeat(0, &hb(2, a, 10, false), &m), Err(HeartbeatReply::NotRegistered));
        let m = meta(&[(1, a, false, 10)]);
        assert_eq!(s.heartbeat(0, &hb(1, a, 11, false), &m), Ok(None), "unfenced already");
    }

    #[test]
    fn shutting_down_fences_and_stays_fenced() {
        let a = Uuid::new_v4();
        let mut s = Sessions::default();
        s.for_term(1);
        assert_eq!(s.heartbeat(0, &hb(1, a, 5, true), &meta(&[(1, a, false, 1)])), Ok(Some(MetadataRecord::FenceBroker { id: 1 })));
        let fenced = meta(&[(1, a, true, 1)]);
        assert_eq!(s.heartbeat(10, &hb(1, a, 6, true), &fenced), Ok(None));
        assert_eq!(s.heartbeat(20, &hb(1, a, 6, false), &fenced), Ok(None), "a broker shutting down is not unfenced again");
        // Its next incarnation is.
        let b = Uuid::new_v4();
        assert_eq!(s.heartbeat(30, &hb(1, b, 9, false), &meta(&[(1, b, true, 8)])), Ok(Some(MetadataRecord::UnfenceBroker { id: 1 })));
    }

    #[test]
    fn silent_brokers_expire_and_a_new_term_gives_every_broker_a_fresh_session() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let m = meta(&[(1, a, false, 1), (2, b, false, 2)]);
        let mut s = Sessions::default();
        s.for_term(3);
        assert!(!s.ticked(900) && !s.ticked(1_000), "ticks 100 ms apart");
        assert!(s.ticked(2_001), "over a second without a tick: this node did not run");
        assert!(s.expired(1_000, 9_000, &m).is_empty(), "first seen now: a grace period");
        s.heartbeat(5_000, &hb(1, a, 2, false), &m).unwrap();
        assert!(s.expired(10_000, 9_000, &m).is_empty());
        assert_eq!(s.expired(10_001, 9_000, &m), vec![2], "broker 2 silent since 1000");
        assert!(s.expired(10_002, 9_000, &m).is_empty(), "not again while its fencing commits");
        assert_eq!(s.expired(14_001, 9_000, &m), vec![1]);
        // Another leader's term: no history, every broker starts a new session.
        s.for_term(4);
        assert!(s.expired(30_000, 9_000, &m).is_empty());
        assert_eq!(s.expired(39_001, 9_000, &m), vec![1, 2]);
        // Fenced brokers do not expire; unknown ones are forgotten.
        assert!(s.expired(99_000, 9_000, &meta(&[(1, a, true, 1)])).is_empty());
        assert_eq!(s.last.keys().collect::<Vec<_>>(), vec![&1]);
    }
}
