//! Deterministic-schedule simulation of the metadata quorum: three voters and one learner as
//! openraft nodes in one tokio current-thread runtime with paused (auto-advancing) time, each on
//! the real [`LogStore`] and [`StateMachine`] over its own directory (on tmpfs when there is
//! one), talking over a simulated network instead of `io::controller_net`. Everything random is
//! drawn from one seed.
//!
//! A scenario (all from the seed): the snapshot policy; voters started at staggered times, each
//! calling `Raft::initialize` as `start_raft` does (so formation races are in it); then a few
//! hundred steps at random virtual times: proposals (unique `CreateTopic`s, `BrokerConfig`s,
//! `DeleteTopic`s of earlier topics, a second `ClusterId` sometimes) written through whichever
//! node says it leads, concurrently; the learner added through the leader, as `join_here` does;
//! crashes (the node's `Raft` shut down and dropped, then reopened from its directory, as a
//! `kill -9` leaves it); partitions (one node cut off, one direction of one link, a random
//! split) and heals; the network's weather (per-link loss of requests or of answers, delays,
//! slow messages, duplicates delivered again much later, which also reorders them against newer
//! ones). Every message goes through serde JSON as on the wire. Then the network heals, every
//! node restarts, and the quorum must settle.
//!
//! What is checked:
//! - state machine safety, during the run: two published states with the same applied index
//!   are the same `ClusterMetadata`, on every node and incarnation;
//! - a node's vote (term, leader, committed) never goes back, not even across a restart (the
//!   vote file is durable before openraft acts on the vote). This stands for "one leader per
//!   term", which is not an invariant of openraft 0.9 as built here: without its
//!   `single-term-leader` feature a term may have one leader per node id, the higher id
//!   superseding (its `LeaderId` is the ordered pair); the run counts such terms;
//! - a node's applied index never goes back within an incarnation, and a restarted node starts
//!   (once `Raft::new` returns: openraft re-applies up to the saved commit point) at or past the
//!   highest index it had applied before the crash: the commit point is saved durably before
//!   entries are applied, so nothing applied is ever forgotten;
//! - every AppendEntries sent has its entries right after its `prev_log_id`, and no task on the
//!   seed's thread panics (openraft's cores and their debug assertions included: tokio would
//!   only end the task);
//! - at the end, liveness: with the network healed a new proposal commits, and every node
//!   (the learner too) applies up to the same index and holds the same state;
//! - at the end, contents: every proposal acknowledged as committed is there (a `CreateTopic`
//!   acknowledged as refused "already exists" was committed by an earlier try of the same
//!   proposal), and its effect is in the state published at the index it was acknowledged at;
//!   an acknowledged `DeleteTopic` whose create was acknowledged before it took its topic away
//!   (a create still being retried may commit after it); nothing is there that was never
//!   proposed (topics with their ids, partitions and configs; configs; the cluster id).
//!
//! **How deterministic it is.** Fault and proposal schedules are a pure function of the seed:
//! the steps come from their own stream, which nothing else consumes, and each link's message
//! fates from a stream of that link's own (the test `a_seed_schedules_identically` pins this).
//! The run as a whole is not replayable, and cannot be made so from here: openraft 0.9 draws
//! each election timeout from `rand::thread_rng()` (its `AsyncRuntime`'s `thread_rng`, which a
//! `TypeConfig` could replace only by naming a `rand` type, a dependency we do not have), and
//! its replication task's `tokio::select!` picks among ready branches at random, from a runtime
//! seed that only `tokio_unstable` can fix. So the same seed gives the same faults at the same
//! virtual times, but the interleaving, the message trace, and so which node leads when, differ
//! from run to run; a failing seed may pass when replayed (seed 1000588 below failed once in
//! four replays): replay it several times, with `SPATE_SIM_VERBOSE=1` for every step.
//!
//! **Not covered.** Torn or lost writes: `io::metadata_store` fdatasyncs every append and
//! replaces its small files durably before a storage call returns, and has no fault hook (it is
//! `std::fs` directly, not `io::sim_disk`); the storage calls are synchronous, so a crash here
//! lands between two of them, never inside one (the torn-tail cut is covered by
//! `metadata_store`'s own test, a purge cut between its two writes by `LogStore::open`'s check,
//! not here). The controller's own layer above openraft (`serve`, forwarded proposals over
//! `Pool`, the cluster id's settling and `cluster.toml`, the broker lifecycle) is not in it: it
//! talks TCP and keeps std time; `tests.rs` covers it over real sockets. The leader's side of a
//! proposal is (`network::propose_here`). No membership change but adding the learner.
//!
//! Replay one seed with `SPATE_SIM_SEED=<seed> cargo test --lib controller::simulation::quick_seeds -- --nocapture`
//! (add `SPATE_SIM_VERBOSE=1` for every step); run many with
//! `SPATE_SIM_SEEDS=<n> SPATE_SIM_FIRST=<seed> cargo test --lib controller::simulation::many_seeds -- --ignored --nocapture`
//! (a debug build runs about 8 seeds a second on one core). The quick tier (`quick_seeds`, in
//! every test run) is seeds 0..40, about 5 s.
//!
//! Seeds run (debug builds, 2 shared cores):
//! - 1,000,000..1,002,100 before the `log_store` fix below, on this simulation's first form (a
//!   runtime per seed, panics not yet failing a seed): seeds 1000588 and 1001974 failed (the
//!   learner stuck behind the others), and openraft's debug assertion `x.get_log_id().index ==
//!   prev_log_id.next_index()` (following_handler) panicked four times. 1000588 replayed with
//!   the AppendEntries check (1001974 was not replayed before the fix, so that it was the same
//!   is likely, not shown): a stepped-down leader's replication task (vote T3-N1, the node by
//!   then a follower at T43 with its log purged through index 0) sent entries 1..7 after
//!   `prev_log_id` None, because `LogStore::try_get_log_entries` returned the entries after a
//!   purged start. Fixed there (a read from a purged entry gets nothing), pinned by
//!   `log_store::tests::a_read_from_a_purged_entry_gets_nothing`.
//! - 1,000,000..1,005,000 after the fix (commit 9eb71d8): all passed, 697 s; 477,059 proposals
//!   (430,208 acknowledged), 49,093 crashes, 52,575 partitions, 4.5 M messages (428 k lost,
//!   270 k duplicated), 17 terms with two leaders.
//! - 2,000,000..2,008,000 (commit dff9470, crashed incarnations silenced): all passed, 1,129 s;
//!   766,997 proposals (688,685 acknowledged), 78,618 crashes, 83,516 partitions, 7.2 M
//!   messages, 36 terms with two leaders.
//! - 3,000,000..3,001,500 (commit 68a9397, after main's state machine began electing leaders on
//!   create, which made every seed fail the "never proposed" check until it compared replicas
//!   and ISR only): all passed, 211 s; 141,663 proposals (128,158 acknowledged), 14,379
//!   crashes, 15,473 partitions, 1.37 M messages (130 k lost, 80 k duplicated), 5,924
//!   snapshots, 4 terms with two leaders.
//! - 0..40 in every test run.
//!
//! The checks were tried against planted bugs: `save_vote` not writing the vote failed seeds 0
//! to 53 at least of 0..100 (a vote going back after a restart; the printed list was cut
//! there); a log reopened without its last entry failed seeds by refusing to restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InitializeError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use tokio::time::Instant;

use super::log_store::LogStore;
use super::metadata::{ClusterMetadata, MetadataRecord, PartitionRecord};
use super::network::{propose_here, ProposeReply, Request, Response};
use super::state_machine::{Published, StateMachine};
use super::TypeConfig;
use crate::io::metadata_store::MetadataDir;
use crate::io::sim_disk::Rng;

type Nid = u64;

/// The partitions are the proposed ones: the same replicas and ISR. Leaders and epochs are
/// the state machine's to change (a partition whose leader is no unfenced broker is led by
/// nobody, epochs bumped, and no broker registers in this simulation).
fn same_placement(proposed: &[PartitionRecord], held: &[PartitionRecord]) -> bool {
    proposed.len() == held.len() && proposed.iter().zip(held).all(|(p, h)| p.replicas == h.replicas && p.isr == h.isr)
}

const VOTERS: [Nid; 3] = [1, 2, 3];
const LEARNER: Nid = 4;
const NODES: [Nid; 4] = [1, 2, 3, 4];
const HEARTBEAT_MS: u64 = 100;
/// How long a client waits for one write, and for all its tries.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
const CLIENT_PATIENCE: Duration = Duration::from_secs(12);
/// How long the healed cluster may take to commit a new proposal and converge (virtual time).
const SETTLE_PATIENCE: Duration = Duration::from_secs(60);

fn addr(id: Nid) -> String {
    format!("sim:{id}")
}

/// How the network treats messages for now (changed by the schedule).
#[derive(Debug, Clone, Copy)]
struct Weather {
    /// A request is lost (the sender times out).
    lose_request: u32,
    /// The request is handled but its answer lost.
    lose_answer: u32,
    /// The request is also delivered again, later (up to `late_ms`).
    duplicate: u32,
    /// Usual one-way delay, uniform in 0..=max_delay_ms.
    max_delay_ms: u64,
    /// A message is slow: delayed up to `late_ms` instead (past openraft's RPC timeout at times).
    slow: u32,
    late_ms: u64,
}

const CALM: Weather = Weather { lose_request: 0, lose_answer: 0, duplicate: 0, max_delay_ms: 2, slow: 0, late_ms: 0 };

/// What happens to one message, drawn from its link's stream when it is sent.
struct Fate {
    lost: bool,
    answer_lost: bool,
    delay: Duration,
    answer_delay: Duration,
    duplicate_after: Option<Duration>,
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub seeds: u64,
    pub proposals: u64,
    pub acked: u64,
    pub unknown: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub messages: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// The highest term reached, summed over seeds (elections, roughly).
    pub terms: u64,
    /// Snapshots the nodes ended with, summed (a sign that purges and installs ran).
    pub snapshots: u64,
    /// Terms in which more than one node led (allowed by openraft 0.9, see `World::leaders`).
    pub shared_terms: u64,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.seeds += o.seeds;
        self.proposals += o.proposals;
        self.acked += o.acked;
        self.unknown += o.unknown;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.messages += o.messages;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.terms += o.terms;
        self.snapshots += o.snapshots;
        self.shared_terms += o.shared_terms;
    }
}

/// What the nodes, the network and the checks share. Locked only between awaits.
struct World {
    seed: u64,
    verbose: bool,
    start: Instant,
    /// Running nodes: (incarnation, Raft).
    rafts: BTreeMap<Nid, (u64, Raft<TypeConfig>)>,
    /// Directed links that deliver nothing.
    cut: BTreeSet<(Nid, Nid)>,
    links: BTreeMap<(Nid, Nid), Rng>,
    weather: Weather,
    /// The state published at each applied index, by whichever node published it first.
    states: BTreeMap<u64, (Nid, Arc<ClusterMetadata>)>,
    /// Who led each term, as the nodes' metrics said. openraft 0.9 (without its
    /// `single-term-leader` feature) lets a term have several leaders, one per node id, the
    /// higher id superseding (its `LeaderId` is the pair, ordered): so "one leader per term" is
    /// not an invariant here, only counted; the vote check stands for it.
    leaders: BTreeMap<u64, BTreeSet<Nid>>,
    /// Each node's newest vote as its metrics said, over all its incarnations.
    votes: BTreeMap<Nid, openraft::Vote<Nid>>,
    /// The highest index each node has applied, over all its incarnations.
    max_applied: BTreeMap<Nid, u64>,
    violations: Vec<String>,
    /// Digest of every message's (time, link, kind, fate): equal across runs only when the
    /// interleaving was (see the header).
    trace: u64,
    summary: Summary,
}

impl World {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn violation(&mut self, what: String) {
        eprintln!("seed {} at {} ms: VIOLATION: {what}", self.seed, self.now_ms());
        self.violations.push(what);
    }

    fn fate(&mut self, from: Nid, to: Nid, kind: u64) -> Fate {
        let seed = self.seed;
        let w = self.weather;
        let rng = self.links.entry((from, to)).or_insert_with(|| Rng::new(seed ^ (from << 32) ^ (to << 8) ^ 0x11_4e7));
        let delay = |rng: &mut Rng| {
            if rng.chance(w.slow) {
                Duration::from_millis(rng.below(w.late_ms + 1))
            } else {
                Duration::from_millis(rng.below(w.max_delay_ms + 1))
            }
        };
        let fate = Fate {
            lost: rng.chance(w.lose_request),
            answer_lost: rng.chance(w.lose_answer),
            delay: delay(rng),
            answer_delay: delay(rng),
            duplicate_after: rng.chance(w.duplicate).then(|| Duration::from_millis(rng.below(w.late_ms.max(50) + 1))),
        };
        self.summary.messages += 1;
        self.summary.lost += u64::from(fate.lost || fate.answer_lost);
        self.summary.duplicated += u64::from(fate.duplicate_after.is_some());
        let now = self.now_ms();
        for v in [now, from, to, kind, fate.lost as u64, fate.delay.as_millis() as u64, fate.duplicate_after.is_some() as u64] {
            self.trace = (self.trace ^ v).wrapping_mul(0x100_0000_01b3);
        }
        fate
    }

    /// The running node `to` if `from` can reach it now.
    fn reach(&self, from: Nid, to: Nid) -> Option<(u64, Raft<TypeConfig>)> {
        if self.cut.contains(&(from, to)) {
            return None;
        }
        self.rafts.get(&to).cloned()
    }

    fn incarnation(&self, id: Nid) -> Option<u64> {
        self.rafts.get(&id).map(|(i, _)| *i)
    }
}

type Shared = Arc<Mutex<World>>;

fn lock(w: &Shared) -> std::sync::MutexGuard<'_, World> {
    w.lock().expect("never held across a panic")
}

/// openraft's network for one incarnation of node `from`: messages go to the other nodes'
/// `Raft` handles directly.
struct SimNet {
    from: Nid,
    incarnation: u64,
    world: Shared,
}

impl RaftNetworkFactory<TypeConfig> for SimNet {
    type Network = SimPeer;

    async fn new_client(&mut self, target: Nid, _node: &BasicNode) -> SimPeer {
        SimPeer { from: self.from, incarnation: self.incarnation, target, world: self.world.clone() }
    }
}

struct SimPeer {
    from: Nid,
    incarnation: u64,
    target: Nid,
    world: Shared,
}

fn network_error<E: std::error::Error>(why: &str) -> RPCError<Nid, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(why.to_string())))
}

/// Hands a request to `raft` as `network::answer` would (past its cluster checks).
async fn dispatch(raft: &Raft<TypeConfig>, request: Request) -> Response {
    match request {
        Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
        Request::Vote(r) => Response::Vote(raft.vote(r).await),
        Request::InstallSnapshot(r) => Response::InstallSnapshot(raft.install_snapshot(r).await),
        other => panic!("openraft sent {other:?}"),
    }
}

fn kind(r: &Request) -> u64 {
    match r {
        Request::AppendEntries(_) => 1,
        Request::Vote(_) => 2,
        Request::InstallSnapshot(_) => 3,
        _ => 4,
    }
}

impl SimPeer {
    async fn rpc<E: std::error::Error>(&mut self, body: Request, option: &RPCOption) -> Result<Response, RPCError<Nid, BasicNode, E>> {
        let (from, to) = (self.from, self.target);
        // A crashed process sends nothing more, though its Raft's tasks may still run a step
        // (what it sent before is still on its way).
        if lock(&self.world).incarnation(from) != Some(self.incarnation) {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other("this node has crashed"))));
        }
        // Through the wire's form, as `network::call` sends it.
        let bytes = serde_json::to_vec(&body).expect("RPC messages always serialise");
        let fate = lock(&self.world).fate(from, to, kind(&body));
        if let Some(after) = fate.duplicate_after {
            let (world, bytes) = (self.world.clone(), bytes.clone());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let target = lock(&world).reach(from, to);
                if let Some((_, raft)) = target {
                    let _ = dispatch(&raft, serde_json::from_slice(&bytes).expect("round trip")).await;
                }
            });
        }
        tokio::time::sleep(fate.delay).await;
        if fate.lost {
            // Nothing comes back: openraft gives up at its timeout.
            tokio::time::sleep(option.hard_ttl()).await;
            return Err(network_error("lost"));
        }
        let Some((incarnation, raft)) = lock(&self.world).reach(from, to) else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("node {to} is unreachable")))));
        };
        let answer = dispatch(&raft, serde_json::from_slice(&bytes).expect("round trip")).await;
        if lock(&self.world).incarnation(to) != Some(incarnation) {
            return Err(network_error("the node crashed while answering"));
        }
        let answer: Response = serde_json::from_slice(&serde_json::to_vec(&answer).expect("serialises")).expect("round trip");
        tokio::time::sleep(fate.answer_delay).await;
        if fate.answer_lost || lock(&self.world).cut.contains(&(to, from)) {
            tokio::time::sleep(option.hard_ttl()).await;
            return Err(network_error("answer lost"));
        }
        Ok(answer)
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid>>> {
        // openraft's followers assume (a debug assertion, then our log store's assertion) that
        // the entries follow `prev_log_id` without a gap.
        if let Some(first) = rpc.entries.first() {
            let expected = rpc.prev_log_id.map_or(0, |p| p.index + 1);
            if first.log_id.index != expected {
                let mut w = lock(&self.world);
                let m = w.rafts.get(&self.from).map(|(_, r)| r.metrics().borrow().clone());
                let about = m.map(|m| {
                    let (state, vote, purged, snapshot, last) = (m.state, m.vote, m.purged, m.snapshot, m.last_log_index);
                    format!("{state:?}, vote {vote}, purged {purged:?}, snapshot {snapshot:?}, last log {last:?}")
                });
                let msg = format!(
                    "node {} sent node {} AppendEntries (vote {}) with prev {:?} but entries from {} to {:?}; the sender: {about:?}",
                    self.from,
                    self.target,
                    rpc.vote,
                    rpc.prev_log_id,
                    first.log_id,
                    rpc.entries.last().map(|e| e.log_id)
                );
                w.violation(msg);
            }
        }
        match self.rpc(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(network_error("unexpected answer")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid, InstallSnapshotError>>> {
        match self.rpc(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(network_error("unexpected answer")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid>>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(network_error("unexpected answer")),
        }
    }
}

/// Watches one incarnation of a node: its metrics (leaders, applied index) and every state it
/// publishes, until the incarnation ends.
async fn watch(world: Shared, id: Nid, raft: Raft<TypeConfig>, published: flume::Receiver<(u64, Arc<ClusterMetadata>)>) {
    let mut metrics = raft.metrics();
    drop(raft);
    let mut applied = 0u64;
    let mut published_index = 0u64;
    let mut check_metrics = |w: &mut World, m: &openraft::RaftMetrics<Nid, BasicNode>| {
        if m.state == ServerState::Leader {
            w.leaders.entry(m.current_term).or_default().insert(id);
        }
        // A vote once cast (or a leadership once committed) is never taken back, not even by a
        // restart: `save_vote` is durable before openraft acts on the vote.
        if let Some(prev) = w.votes.get(&id) {
            if !(m.vote >= *prev) {
                let msg = format!("node {id}'s vote went back from {prev} to {}", m.vote);
                w.violation(msg);
            }
        }
        w.votes.insert(id, m.vote);
        let a = m.last_applied.map_or(0, |l| l.index);
        if a < applied {
            w.violation(format!("node {id}'s applied index went back from {applied} to {a} (same incarnation)"));
        }
        applied = applied.max(a);
        let max = w.max_applied.entry(id).or_insert(0);
        *max = (*max).max(a);
    };
    {
        let m = metrics.borrow().clone();
        check_metrics(&mut lock(&world), &m);
    }
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let m = metrics.borrow().clone();
                check_metrics(&mut lock(&world), &m);
            }
            state = published.recv_async() => {
                let Ok((index, state)) = state else { return };
                let mut w = lock(&world);
                if index < published_index {
                    w.violation(format!("node {id} published index {index} after {published_index} (same incarnation)"));
                }
                published_index = index;
                match w.states.get(&index) {
                    Some((other, s)) if **s != *state => {
                        let msg = format!(
                            "nodes {other} and {id} applied different states at index {index}:\n  {other}: {s:?}\n  {id}: {state:?}"
                        );
                        w.violation(msg);
                    }
                    Some(_) => {}
                    None => {
                        w.states.insert(index, (id, state));
                    }
                }
            }
        }
    }
}

/// A proposal and what its client learnt.
#[derive(Debug, Clone)]
enum Outcome {
    /// Committed at `index` (refused by the state machine when `rejected`).
    Acked { index: u64, rejected: Option<String> },
    /// Not known to be committed: timed out, the leader changed or crashed.
    Unknown(#[allow(dead_code)] String),
}

struct Proposal {
    record: MetadataRecord,
    task: tokio::task::JoinHandle<Outcome>,
}

/// The node that says it leads, if one does; when several do (one is cut off and does not know
/// yet) `pick` chooses.
fn leader(world: &Shared, pick: u64) -> Option<Raft<TypeConfig>> {
    let w = lock(world);
    let leaders: Vec<&Raft<TypeConfig>> =
        w.rafts.values().map(|(_, r)| r).filter(|r| r.metrics().borrow().state == ServerState::Leader).collect();
    (!leaders.is_empty()).then(|| leaders[(pick % leaders.len() as u64) as usize].clone())
}

/// A client: writes `record` through the leader, trying again (the same record) when there is
/// none or it was not the leader after all, until it is acknowledged or `CLIENT_PATIENCE` runs
/// out. A try that timed out or failed may still commit, so every try after the first may find
/// the record already applied.
async fn client(world: Shared, record: MetadataRecord, mut rng: Rng, patience: Duration) -> Outcome {
    let deadline = Instant::now() + patience;
    let mut last = "no leader".to_string();
    while Instant::now() < deadline {
        let Some(raft) = leader(&world, rng.next_u64()) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // The leader's side of a proposal as the controller runs it (`Request::Propose`).
        match propose_here(&raft, record.clone(), WRITE_TIMEOUT.as_millis() as u64).await {
            ProposeReply::Applied { index } => return Outcome::Acked { index, rejected: None },
            ProposeReply::Rejected { index, reason } => return Outcome::Acked { index, rejected: Some(reason) },
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(rng.below(100))).await;
    }
    Outcome::Unknown(last)
}

struct Node {
    id: Nid,
    dir: PathBuf,
    incarnation: u64,
    published: Option<Arc<Published>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

struct Sim {
    world: Shared,
    /// The schedule: steps, proposals, faults. Consumed by nothing else (see the header).
    rng: Rng,
    nodes: BTreeMap<Nid, Node>,
    config: Arc<openraft::Config>,
    proposals: Vec<Proposal>,
    /// Names of topics proposed so far, for deletes.
    topics: Vec<String>,
    next: u64,
    /// The schedule as run, for `a_seed_schedules_identically`.
    schedule: Vec<String>,
    /// The learner's asks to join, ended by `stop`.
    background: Vec<tokio::task::JoinHandle<bool>>,
}

impl Sim {
    fn new(seed: u64, verbose: bool, root: &Path) -> Sim {
        let mut rng = Rng::new(seed);
        let every = 3 + rng.below(40);
        let kept = rng.below(8);
        let config = openraft::Config {
            cluster_name: "spate-metadata-sim".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: 4 * HEARTBEAT_MS,
            election_timeout_max: 8 * HEARTBEAT_MS,
            install_snapshot_timeout: 4 * HEARTBEAT_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(every),
            max_in_snapshot_log_to_keep: kept,
            ..Default::default()
        }
        .validate()
        .expect("valid settings");
        let world = World {
            seed,
            verbose,
            start: Instant::now(),
            rafts: BTreeMap::new(),
            cut: BTreeSet::new(),
            links: BTreeMap::new(),
            weather: CALM,
            states: BTreeMap::new(),
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_applied: BTreeMap::new(),
            violations: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            summary: Summary { seeds: 1, ..Summary::default() },
        };
        let nodes = NODES
            .iter()
            .map(|&id| {
                let dir = root.join(format!("node-{id}")).join("metadata");
                (id, Node { id, dir, incarnation: 0, published: None, watcher: None })
            })
            .collect();
        let mut sim = Sim {
            world: Arc::new(Mutex::new(world)),
            rng,
            nodes,
            config: Arc::new(config),
            proposals: Vec::new(),
            topics: Vec::new(),
            next: 0,
            schedule: Vec::new(),
            background: Vec::new(),
        };
        sim.say(format!("snapshot every {every} entries, {kept} kept"));
        sim
    }

    fn say(&mut self, what: String) {
        let w = lock(&self.world);
        let line = format!("{:>6} ms: {what}", w.now_ms());
        if w.verbose {
            eprintln!("seed {}: {line}", w.seed);
        }
        drop(w);
        self.schedule.push(what);
    }

    /// Like `say`, for what depends on the interleaving: printed, not part of the schedule.
    fn note(&self, what: String) {
        let w = lock(&self.world);
        if w.verbose {
            eprintln!("seed {}: {:>6} ms: {what}", w.seed, w.now_ms());
        }
    }

    fn violation(&self, what: String) {
        lock(&self.world).violation(what);
    }

    fn running(&self, id: Nid) -> bool {
        lock(&self.world).rafts.contains_key(&id)
    }

    /// Opens node `id`'s directory and starts its Raft, as `Controller::start` and `start_raft`
    /// do; a voter with an empty state initializes the quorum.
    async fn start(&mut self, id: Nid) {
        let node = self.nodes.get_mut(&id).expect("a node");
        node.incarnation += 1;
        let (incarnation, path) = (node.incarnation, node.dir.clone());
        let dir = Arc::new(MetadataDir::open(&path).expect("the node's directory opens"));
        let published = Arc::new(Published::new());
        let receiver = published.receiver();
        let log_store = match LogStore::open(dir.clone()) {
            Ok(l) => l,
            Err(e) => return self.violation(format!("node {id}'s log does not reopen: {e}")),
        };
        let sm = match StateMachine::open(dir, published.clone()) {
            Ok(s) => s,
            Err(e) => return self.violation(format!("node {id}'s snapshot does not reopen: {e}")),
        };
        let net = SimNet { from: id, incarnation, world: self.world.clone() };
        let raft = match Raft::new(id, self.config.clone(), net, log_store, sm).await {
            Ok(r) => r,
            Err(e) => return self.violation(format!("node {id} does not restart: {e}")),
        };
        // openraft re-applies up to the saved commit point before `new` returns (its metrics
        // say so only once its core runs; the state machine has published it already).
        let applied = published.latest().0;
        let before = lock(&self.world).max_applied.get(&id).copied().unwrap_or(0);
        if applied < before {
            self.violation(format!("node {id} restarted at applied index {applied}, below the {before} it had applied"));
        }
        lock(&self.world).rafts.insert(id, (incarnation, raft.clone()));
        let node = self.nodes.get_mut(&id).expect("a node");
        node.published = Some(published);
        node.watcher = Some(tokio::spawn(watch(self.world.clone(), id, raft.clone(), receiver)));
        self.say(format!("node {id} started (incarnation {incarnation})"));
        self.note(format!("node {id} applied {applied} at start"));
        if VOTERS.contains(&id) {
            let initialized = match raft.is_initialized().await {
                Ok(i) => i,
                Err(e) => return self.violation(format!("node {id}: {e}")),
            };
            if !initialized {
                let members: BTreeMap<Nid, BasicNode> = VOTERS.iter().map(|&v| (v, BasicNode::new(addr(v)))).collect();
                match raft.initialize(members).await {
                    Ok(()) => self.note(format!("node {id} initialized the quorum")),
                    Err(e) if matches!(e.api_error(), Some(InitializeError::NotAllowed(_))) => {}
                    Err(e) => self.violation(format!("node {id} failed to initialize: {e}")),
                }
            }
        }
    }

    /// The process dies: the Raft stops at whatever await it was at; what its storage calls
    /// returned from is on disk (each one syncs before it returns), nothing else is kept.
    async fn crash(&mut self, id: Nid) {
        let Some((_, raft)) = lock(&self.world).rafts.remove(&id) else { return };
        let _ = raft.shutdown().await;
        drop(raft);
        // Let tasks of the dead incarnation that are already running finish their step (a
        // snapshot being written) before the directory is opened again.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let node = self.nodes.get_mut(&id).expect("a node");
        if let Some(w) = node.watcher.take() {
            w.abort();
        }
        node.published = None;
        lock(&self.world).summary.crashes += 1;
        self.say(format!("node {id} crashed"));
    }

    fn propose(&mut self, record: MetadataRecord) {
        self.say(format!("propose {record:?}"));
        let rng = self.rng.fork();
        // Some clients give up soon, so that some proposals end unknown yet may commit.
        let patience = if self.rng.chance(300) { Duration::from_millis(self.rng.below(1_000)) } else { CLIENT_PATIENCE };
        let task = tokio::spawn(client(self.world.clone(), record.clone(), rng, patience));
        self.proposals.push(Proposal { record, task });
    }

    fn new_record(&mut self) -> MetadataRecord {
        self.next += 1;
        let (seed, n) = (lock(&self.world).seed, self.next);
        match self.rng.below(10) {
            0..=4 => {
                let name = format!("t{n}");
                self.topics.push(name.clone());
                let partitions = (0..1 + self.rng.below(3))
                    .map(|p| {
                        let leader = 1 + ((p + self.rng.below(3)) % 3) as i32;
                        PartitionRecord { replicas: vec![leader], leader, leader_epoch: 0, isr: vec![leader], partition_epoch: 0 }
                    })
                    .collect();
                let configs = BTreeMap::from([("retention.ms".to_string(), format!("{}", self.rng.below(100_000)))]);
                MetadataRecord::CreateTopic { name, id: uuid::Uuid::from_u64_pair(seed, n), partitions, configs }
            }
            5..=7 => MetadataRecord::BrokerConfig {
                resource: if self.rng.chance(500) { String::new() } else { format!("{}", 1 + self.rng.below(3)) },
                key: format!("k{n}"),
                value: Some(format!("v{n}")),
            },
            8 if !self.topics.is_empty() => {
                let name = self.topics[self.rng.below(self.topics.len() as u64) as usize].clone();
                MetadataRecord::DeleteTopic { name }
            }
            _ => MetadataRecord::ClusterId(format!("cluster-{seed}-{n}")),
        }
    }

    fn weather(&mut self) -> Weather {
        let r = &mut self.rng;
        let w = match r.below(5) {
            0 => CALM,
            1 => Weather { lose_request: 20, lose_answer: 20, duplicate: 20, max_delay_ms: 10, slow: 10, late_ms: 300 },
            2 => Weather { lose_request: 100, lose_answer: 100, duplicate: 50, max_delay_ms: 30, slow: 50, late_ms: 600 },
            3 => Weather { lose_request: 0, lose_answer: 0, duplicate: 200, max_delay_ms: 50, slow: 100, late_ms: 1_500 },
            _ => Weather { lose_request: 300, lose_answer: 100, duplicate: 100, max_delay_ms: 80, slow: 100, late_ms: 400 },
        };
        w
    }

    /// One step of the schedule.
    async fn step(&mut self) {
        let down: Vec<Nid> = NODES.iter().copied().filter(|&id| !self.running(id)).collect();
        match self.rng.below(100) {
            0..=54 => {
                let r = self.new_record();
                self.propose(r);
            }
            55..=61 => {
                let id = NODES[self.rng.below(4) as usize];
                self.crash(id).await;
            }
            62..=71 if !down.is_empty() => {
                let id = down[self.rng.below(down.len() as u64) as usize];
                self.start(id).await;
            }
            72..=77 => {
                let mut w = lock(&self.world);
                let what = match self.rng.below(3) {
                    0 => {
                        let id = NODES[self.rng.below(4) as usize];
                        for other in NODES.iter().filter(|&&o| o != id) {
                            w.cut.insert((id, *other));
                            w.cut.insert((*other, id));
                        }
                        format!("node {id} cut off")
                    }
                    1 => {
                        let (a, b) = (NODES[self.rng.below(4) as usize], NODES[self.rng.below(4) as usize]);
                        w.cut.insert((a, b));
                        format!("link {a} -> {b} cut")
                    }
                    _ => {
                        let side: Vec<bool> = NODES.iter().map(|_| self.rng.chance(500)).collect();
                        for (i, a) in NODES.iter().enumerate() {
                            for (j, b) in NODES.iter().enumerate() {
                                if side[i] != side[j] {
                                    w.cut.insert((*a, *b));
                                }
                            }
                        }
                        format!("split {side:?}")
                    }
                };
                w.summary.partitions += 1;
                drop(w);
                self.say(what);
            }
            78..=84 => {
                lock(&self.world).cut.clear();
                self.say("healed".into());
            }
            85..=90 => {
                let w = self.weather();
                lock(&self.world).weather = w;
                self.say(format!("weather {w:?}"));
            }
            91..=94 => {
                // The learner asks to join, as `join` asks the leader (`join_here`).
                let rng = self.rng.fork();
                self.say("learner asks to join".into());
                self.background.push(tokio::spawn(join(self.world.clone(), rng, CLIENT_PATIENCE)));
            }
            _ => {
                let ms = self.rng.below(3_000);
                self.say(format!("quiet for {ms} ms"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    async fn run(&mut self) {
        for id in VOTERS {
            let ms = self.rng.below(600);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.start(id).await;
        }
        self.start(LEARNER).await;
        let steps = 50 + self.rng.below(250);
        for _ in 0..steps {
            let ms = self.rng.below(250);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.step().await;
        }
        self.settle().await;
    }

    /// Stops every node and task of this seed (the runtime is shared with the next one).
    async fn stop(&mut self) {
        for p in self.proposals.drain(..) {
            p.task.abort();
        }
        for t in self.background.drain(..) {
            t.abort();
        }
        let rafts: Vec<Raft<TypeConfig>> = std::mem::take(&mut lock(&self.world).rafts).into_values().map(|(_, r)| r).collect();
        for r in rafts {
            let _ = r.shutdown().await;
        }
        for n in self.nodes.values_mut() {
            if let Some(w) = n.watcher.take() {
                w.abort();
            }
        }
        // Messages still on their way (duplicates sent late) find no node and end.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// Heals everything, restarts every node, and checks that the quorum converges on a state
    /// holding what it acknowledged and nothing it was not asked for.
    async fn settle(&mut self) {
        {
            let mut w = lock(&self.world);
            w.cut.clear();
            w.weather = CALM;
        }
        self.say("healed for good".into());
        for id in NODES {
            if !self.running(id) {
                self.start(id).await;
            }
        }
        let mut outcomes = Vec::new();
        for p in std::mem::take(&mut self.proposals) {
            let outcome = p.task.await.expect("the client task ends");
            outcomes.push((p.record, outcome));
        }
        {
            let mut w = lock(&self.world);
            w.summary.proposals = outcomes.len() as u64;
            w.summary.acked = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Acked { .. })).count() as u64;
            w.summary.unknown = w.summary.proposals - w.summary.acked;
        }
        // Liveness: the learner is in, and a new proposal commits.
        if !join(self.world.clone(), self.rng.fork(), SETTLE_PATIENCE).await {
            return self.violation("the healed quorum did not add the learner".into());
        }
        let marker = MetadataRecord::BrokerConfig { resource: String::new(), key: "final".into(), value: Some("marker".into()) };
        let index = match client(self.world.clone(), marker.clone(), self.rng.fork(), SETTLE_PATIENCE).await {
            Outcome::Acked { index, rejected: None } => index,
            other => return self.violation(format!("the healed quorum did not commit a proposal: {other:?}")),
        };
        outcomes.push((marker, Outcome::Acked { index, rejected: None }));
        // Every node applies up to the same index, past the marker.
        let deadline = Instant::now() + SETTLE_PATIENCE;
        let states = loop {
            let states: Vec<(Nid, (u64, Arc<ClusterMetadata>))> = self
                .nodes
                .values()
                .map(|n| (n.id, n.published.as_ref().expect("every node runs").latest()))
                .collect();
            let first = states[0].1 .0;
            if first >= index && states.iter().all(|(_, (i, _))| *i == first) {
                break states;
            }
            if Instant::now() > deadline {
                let at: Vec<(Nid, u64)> = states.iter().map(|(id, (i, _))| (*id, *i)).collect();
                return self.violation(format!("the nodes did not converge past index {index}: applied {at:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, (_, state)) = &states[0];
        for (id, (_, s)) in &states[1..] {
            if s != state {
                self.violation(format!("node {id} ended with another state than node {}:\n  {s:?}\n  {state:?}", states[0].0));
            }
        }
        self.check_contents(state, &outcomes);
        let mut w = lock(&self.world);
        w.summary.terms = w.rafts.values().map(|(_, r)| r.metrics().borrow().current_term).max().unwrap_or(0);
        w.summary.snapshots = w.rafts.values().filter(|(_, r)| r.metrics().borrow().snapshot.is_some()).count() as u64;
        w.summary.shared_terms = w.leaders.values().filter(|l| l.len() > 1).count() as u64;
    }

    fn check_contents(&self, state: &ClusterMetadata, outcomes: &[(MetadataRecord, Outcome)]) {
        let proposed: Vec<&MetadataRecord> = outcomes.iter().map(|(r, _)| r).collect();
        let deleted: BTreeSet<&str> = proposed
            .iter()
            .filter_map(|r| if let MetadataRecord::DeleteTopic { name } = r { Some(name.as_str()) } else { None })
            .collect();
        let created_at = |name: &str| {
            outcomes.iter().find_map(|(r, o)| match (r, o) {
                (MetadataRecord::CreateTopic { name: n, .. }, Outcome::Acked { index, .. }) if n == name => Some(*index),
                _ => None,
            })
        };
        let states = lock(&self.world).states.clone();
        for (record, outcome) in outcomes {
            let Outcome::Acked { index, rejected } = outcome else { continue };
            // The state published at the acknowledged index (when one was: states are
            // published per batch of entries) has the record's effect.
            if let Some((node, at)) = states.get(index) {
                let done = match record {
                    MetadataRecord::CreateTopic { name, id, .. } => at.topics.get(name).map(|t| t.id) == Some(*id),
                    MetadataRecord::DeleteTopic { name } => !at.topics.contains_key(name),
                    MetadataRecord::BrokerConfig { resource, key, value } => {
                        at.broker_configs.get(resource).and_then(|c| c.get(key)) == value.as_ref()
                    }
                    MetadataRecord::ClusterId(id) => rejected.is_some() || at.cluster_id.as_ref() == Some(id),
                    _ => true,
                };
                if !done {
                    self.violation(format!("{record:?} was acknowledged at {index}, but node {node}'s state there lacks it"));
                }
            }
            match record {
                MetadataRecord::CreateTopic { name, id, .. } if !deleted.contains(name.as_str()) => {
                    if state.topics.get(name).map(|t| t.id) != Some(*id) {
                        self.violation(format!("topic {name} was acknowledged at {index} ({rejected:?}) but is not there"));
                    }
                }
                // Only when its create was acknowledged before it: a create's client that had
                // not yet heard back may try again, and commit the topic anew, after the delete
                // (an earlier try of an acknowledged one comes before it in the log: terms only
                // grow along the log).
                MetadataRecord::DeleteTopic { name } if rejected.is_none() && created_at(name).is_some_and(|c| c < *index) => {
                    if state.topics.contains_key(name) {
                        self.violation(format!("topic {name}'s delete was acknowledged at {index} but it is there"));
                    }
                }
                MetadataRecord::BrokerConfig { resource, key, value: Some(v) } => {
                    if state.broker_configs.get(resource).and_then(|c| c.get(key)) != Some(v) {
                        self.violation(format!("config {resource}/{key} was acknowledged at {index} but is not there"));
                    }
                }
                MetadataRecord::ClusterId(id) if rejected.is_none() => {
                    if state.cluster_id.as_ref() != Some(id) {
                        self.violation(format!("cluster id {id} was acknowledged at {index} but the id is {:?}", state.cluster_id));
                    }
                }
                _ => {}
            }
        }
        for (name, topic) in &state.topics {
            let ok = proposed.iter().any(|r| {
                matches!(r, MetadataRecord::CreateTopic { name: n, id, partitions, configs }
                    if n == name && *id == topic.id && same_placement(partitions, &topic.partitions) && *configs == topic.configs)
            });
            if !ok {
                self.violation(format!("topic {name} ({topic:?}) is there but was never proposed"));
            }
        }
        for (resource, configs) in &state.broker_configs {
            for (key, value) in configs {
                let ok = proposed.iter().any(|r| {
                    matches!(r, MetadataRecord::BrokerConfig { resource: res, key: k, value: Some(v) }
                        if res == resource && k == key && v == value)
                });
                if !ok {
                    self.violation(format!("config {resource}/{key}={value} is there but was never proposed"));
                }
            }
        }
        if let Some(id) = &state.cluster_id {
            if !proposed.iter().any(|r| matches!(r, MetadataRecord::ClusterId(c) if c == id)) {
                self.violation(format!("cluster id {id} is there but was never proposed"));
            }
        }
        if !state.brokers.is_empty() {
            self.violation(format!("brokers {:?} are there but none registered", state.brokers.keys()));
        }
    }
}

/// The learner asks the leader to add it until it is a member of the leader's membership, or
/// `patience` runs out; true once it is in.
async fn join(world: Shared, mut rng: Rng, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Some(raft) = leader(&world, rng.next_u64()) {
            if raft.metrics().borrow().membership_config.membership().get_node(&LEARNER).is_some() {
                return true;
            }
            let add = raft.add_learner(LEARNER, BasicNode::new(addr(LEARNER)), false);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, add).await;
        }
        tokio::time::sleep(Duration::from_millis(100 + rng.below(200))).await;
    }
    false
}

/// Prints how to replay a seed if it fails.
fn replay_hint(seed: u64) -> String {
    format!(
        "replay with SPATE_SIM_SEED={seed} cargo test --lib controller::simulation::quick_seeds -- --nocapture \
         (SPATE_SIM_VERBOSE=1 for every step; the interleaving may differ from run to run, see the header)"
    )
}

thread_local! {
    /// Panics on this thread (the seed's runtime): openraft's tasks, a node's core among them,
    /// panic inside tokio, which only ends the task.
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records every panic on the thread it happens on, then reports it as before.
fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            previous(info);
        }));
    });
}

/// Runs one seed; Err names what it violated. Each seed stops every node it started before it
/// returns, so seeds can share the test's runtime (paused time: `#[tokio::test(start_paused)]`,
/// runtimes being `io`'s to build otherwise).
async fn run_seed(seed: u64, verbose: bool) -> Result<(Summary, Vec<String>, u64), String> {
    let root = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("a temp dir");
    record_panics();
    PANICS.with(|p| p.borrow_mut().clear());
    let mut sim = Sim::new(seed, verbose, root.path());
    sim.run().await;
    sim.stop().await;
    for p in PANICS.with(|p| std::mem::take(&mut *p.borrow_mut())) {
        sim.violation(format!("a task panicked: {p}"));
    }
    let w = lock(&sim.world);
    if w.violations.is_empty() {
        Ok((w.summary.clone(), sim.schedule.clone(), w.trace))
    } else {
        Err(w.violations.join("\n"))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Runs `seeds` (or just `SPATE_SIM_SEED` when set), going on past failures; panics at the end
/// naming every seed that failed.
async fn run_seeds(seeds: std::ops::Range<u64>) -> Summary {
    let verbose = std::env::var("SPATE_SIM_VERBOSE").is_ok_and(|v| v != "0");
    let seeds = match env_u64("SPATE_SIM_SEED") {
        Some(s) => s..s + 1,
        None => seeds,
    };
    let mut total = Summary::default();
    let mut failed = Vec::new();
    let (started, long) = (std::time::Instant::now(), seeds.end - seeds.start > 100);
    for seed in seeds {
        // A task of its own, so that a panic fails the seed, not the run.
        match tokio::spawn(run_seed(seed, verbose)).await {
            Ok(Ok((s, _, _))) => total.add(&s),
            Ok(Err(e)) => {
                eprintln!("controller simulation failed at seed {seed}:\n{e}\n{}", replay_hint(seed));
                failed.push(seed);
            }
            Err(e) => {
                eprintln!("controller simulation panicked at seed {seed} ({e}); {}", replay_hint(seed));
                failed.push(seed);
            }
        }
        if long && (seed + 1) % 100 == 0 {
            eprintln!("{} seeds, up to {seed}, in {:?}; failed: {failed:?}", total.seeds + failed.len() as u64, started.elapsed());
        }
    }
    assert!(failed.is_empty(), "the controller simulation failed at seeds {failed:?} (replay each with SPATE_SIM_SEED)");
    total
}

#[tokio::test(start_paused = true)]
async fn quick_seeds() {
    let n = env_u64("SPATE_SIM_QUICK_SEEDS").unwrap_or(40);
    let started = std::time::Instant::now();
    let s = run_seeds(0..n).await;
    eprintln!("{} seeds in {:?}: {s:?}", s.seeds, started.elapsed());
}

#[tokio::test(start_paused = true)]
#[ignore = "long: SPATE_SIM_SEEDS=<n> (default 2000), SPATE_SIM_FIRST=<seed>"]
async fn many_seeds() {
    let first = env_u64("SPATE_SIM_FIRST").unwrap_or(1_000_000);
    let n = env_u64("SPATE_SIM_SEEDS").unwrap_or(2_000);
    let started = std::time::Instant::now();
    let s = run_seeds(first..first + n).await;
    eprintln!("{} seeds from {first} in {:?}: {s:?}", s.seeds, started.elapsed());
}

/// Same seed, same schedule of faults and proposals. The message-level trace is printed, not
/// compared: openraft's own randomness may change the interleaving (see the header).
#[tokio::test(start_paused = true)]
async fn a_seed_schedules_identically() {
    let (_, a, ta) = run_seed(3, false).await.expect("seed 3 passes");
    let (_, b, tb) = run_seed(3, false).await.expect("seed 3 passes");
    assert_eq!(a, b, "the same seed drew different schedules");
    eprintln!("message traces {}", if ta == tb { "equal" } else { "differ (openraft's randomness)" });
}
