//! In-process tests of the metadata quorum: several nodes as controller threads in one test
//! binary, each with its own temp data directory and loopback port, talking over real sockets.
//! Timeouts are generous (this runs on a shared 2-core machine): they are hang guards, not
//! speed checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Voter;
use crate::io::controller_net::free_loopback_port;

/// Long enough for any election or catch-up on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// Brokers' session timeout in these tests: short, so that fencing is seen soon, yet many
/// heartbeats ([`HEARTBEAT_MS`]) long, so that a loaded machine does not fence a live broker.
const SESSION_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 200;

fn tuning() -> Tuning {
    Tuning {
        heartbeat_ms: 200,
        election_timeout_ms: (1000, 2000),
        snapshot_every_entries: 5,
        entries_kept_after_snapshot: 0,
        propose_timeout: Duration::from_secs(20),
    }
}

/// One node of a test cluster: its settings (kept across restarts) and, while it runs, its
/// controller.
struct Node {
    cfg: ControllerConfig,
    controller: Option<Controller>,
}

impl Node {
    fn handle(&self) -> ControllerHandle {
        self.controller.as_ref().expect("the node runs").handle()
    }

    fn start(&mut self) {
        assert!(self.controller.is_none());
        self.controller = Some(Controller::start(self.cfg.clone()).expect("controller starts"));
    }

    fn stop(&mut self) {
        if let Some(c) = self.controller.take() {
            c.stop().expect("the controller thread ended cleanly");
        }
    }

    fn wait_ready(&self) -> String {
        let c = self.controller.as_ref().expect("the node runs");
        c.wait_cluster_id(PATIENCE, Duration::from_secs(5), |s| eprintln!("waiting: {s:?}"), || false)
            .unwrap_or_else(|e| panic!("node {} not ready: {e}", self.cfg.node_id))
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

fn voters_on(ports: &[u16]) -> Vec<Voter> {
    ports.iter().enumerate().map(|(i, p)| Voter { id: i as i32 + 1, addr: format!("127.0.0.1:{p}") }).collect()
}

impl Cluster {
    /// `voters` voters (ids 1..) and `learners` broker-only nodes (ids 101..), started.
    fn start(voters: usize, learners: usize) -> Cluster {
        Cluster::start_with(voters, learners, tuning())
    }

    fn start_with(voters: usize, learners: usize, tuning: Tuning) -> Cluster {
        Cluster::start_configured(voters, learners, tuning, false)
    }

    /// Like [`Cluster::start`], every node with the broker role too.
    fn start_brokers(voters: usize, learners: usize) -> Cluster {
        Cluster::start_configured(voters, learners, tuning(), true)
    }

    fn start_configured(voters: usize, learners: usize, tuning: Tuning, brokers: bool) -> Cluster {
        let ports: Vec<u16> = (0..voters).map(|_| free_loopback_port().unwrap()).collect();
        let mut c = Cluster::on(voters_on(&ports), (0..voters).map(|_| tempfile::tempdir().unwrap()).collect());
        for n in &mut c.nodes {
            n.cfg.tuning = tuning.clone();
        }
        for i in 0..learners {
            let dir = tempfile::tempdir().unwrap();
            let cfg = ControllerConfig {
                node_id: 101 + i as i32,
                data_dir: dir.path().to_path_buf(),
                voters: c.nodes[0].cfg.voters.clone(),
                listen: format!("127.0.0.1:{}", free_loopback_port().unwrap()),
                voter: false,
                broker: None,
                broker_session_timeout_ms: SESSION_MS,
                tuning: tuning.clone(),
            };
            c.nodes.push(Node { cfg, controller: None });
            c._dirs.push(dir);
        }
        for n in &mut c.nodes {
            if brokers {
                n.cfg.broker = Some(BrokerConfig {
                    listeners: vec![format!("broker{}.example:9092", n.cfg.node_id)],
                    rack: Some(format!("rack-{}", n.cfg.node_id % 2)),
                    heartbeat_interval_ms: HEARTBEAT_MS,
                });
            }
            n.start();
        }
        c
    }

    /// Voters `voters` on the data directories `dirs`, not started.
    fn on(voters: Vec<Voter>, dirs: Vec<tempfile::TempDir>) -> Cluster {
        let nodes = voters
            .iter()
            .zip(&dirs)
            .map(|(v, d)| Node {
                cfg: ControllerConfig {
                    node_id: v.id,
                    data_dir: d.path().to_path_buf(),
                    voters: voters.clone(),
                    listen: v.addr.clone(),
                    voter: true,
                    broker: None,
                    broker_session_timeout_ms: SESSION_MS,
                    tuning: tuning(),
                },
                controller: None,
            })
            .collect();
        Cluster { nodes, _dirs: dirs }
    }

    /// Every running node ready; returns the one cluster id they agree on.
    fn ready(&self) -> String {
        let ids: Vec<String> = self.running().map(|n| n.wait_ready()).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "nodes disagree on the cluster id: {ids:?}");
        ids[0].clone()
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.controller.is_some())
    }

    /// The index of the node every running voter agrees leads.
    fn leader(&self) -> usize {
        wait_for("one leader all running nodes agree on", || {
            let leaders: Vec<Option<i32>> = self.running().map(|n| n.handle().status().leader).collect();
            let l = leaders[0]?;
            let i = self.nodes.iter().position(|n| n.cfg.node_id == l)?;
            let leads = self.nodes[i].controller.is_some() && self.nodes[i].handle().status().role == Role::Leader;
            (leads && leaders.iter().all(|x| *x == Some(l))).then_some(i)
        })
    }

    /// Waits until every running node has applied the same metadata as `reference` has now
    /// (and at least up to `index`); returns it.
    fn converged(&self, index: u64) -> Arc<ClusterMetadata> {
        wait_for("every running node applied the same metadata", || {
            let states: Vec<(u64, Arc<ClusterMetadata>)> = self.running().map(|n| n.handle().metadata()).collect();
            let (first, rest) = states.split_first()?;
            (first.0 >= index && rest.iter().all(|s| s.0 == first.0 && s.1 == first.1)).then(|| first.1.clone())
        })
    }
}

/// Polls `f` every 50 ms until it gives a value; panics after [`PATIENCE`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting {} s for: {what}", PATIENCE.as_secs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn propose(node: &Node, record: MetadataRecord) -> Result<u64, ControllerError> {
    futures_lite::future::block_on(node.handle().propose(record))
}

fn topic(name: &str) -> MetadataRecord {
    let p = PartitionRecord { replicas: vec![1, 2, 3], leader: 1, leader_epoch: 0, isr: vec![1, 2, 3], partition_epoch: 0 };
    MetadataRecord::CreateTopic { name: name.into(), id: uuid::Uuid::new_v4(), partitions: vec![p], configs: BTreeMap::new() }
}

#[test]
fn three_voters_form_a_cluster_and_agree_on_its_id() {
    let c = Cluster::start(3, 0);
    let id = c.ready();
    let leader = c.leader();
    for n in &c.nodes {
        assert_eq!(stored_cluster_id(&n.cfg.data_dir).unwrap().as_deref(), Some(id.as_str()), "cluster.toml holds the id");
        let s = n.handle().status();
        assert_eq!(s.cluster_id.as_deref(), Some(id.as_str()));
        assert_eq!(s.leader, Some(c.nodes[leader].cfg.node_id));
        assert!(s.term >= 1 && s.committed.is_some() && s.last_applied.is_some(), "{s:?}");
    }
    let s = c.nodes[leader].handle().status();
    assert!(s.voters.iter().all(|v| v.matched.is_some() && v.lag.is_some()), "the leader sees every voter: {s:?}");
}

#[test]
fn a_proposal_on_a_follower_commits_and_every_node_applies_the_same() {
    let c = Cluster::start(3, 0);
    c.ready();
    let follower = (c.leader() + 1) % 3;
    let index = propose(&c.nodes[follower], topic("orders")).unwrap();
    let m = c.converged(index);
    assert!(m.topics.contains_key("orders"));
    // A record that does not fit is committed, refused the same way everywhere, and says why.
    match propose(&c.nodes[follower], topic("orders")) {
        Err(ControllerError::Rejected { reason, .. }) => assert!(reason.contains("already exists"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The channel of applied states carries the topic too.
    let rx = c.nodes[follower].handle().applied();
    let (i, state) = wait_for("an applied state", || rx.recv_timeout(Duration::from_millis(100)).ok());
    assert!(i >= 1 && state.applied_index == i);
}

#[test]
fn a_stopped_leader_is_replaced_and_a_restarted_node_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(3, 0);
    let id = c.ready();
    let old = c.leader();
    assert_eq!(c.nodes[old].handle().status().snapshot, None, "no snapshot yet: the log is short");
    let before = propose(&c.nodes[old], topic("before")).unwrap();
    c.converged(before);
    let stopped = Instant::now();
    c.nodes[old].stop();
    let new = c.leader();
    assert_ne!(new, old);
    eprintln!("a new leader after {:?}", stopped.elapsed());
    // Proposals go on, past several snapshots: the log is purged beyond where the stopped node was.
    let alive: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut last = 0;
    for i in 0..12 {
        last = propose(&c.nodes[alive[i % 2]], topic(&format!("t{i}"))).unwrap();
    }
    c.converged(last);
    let s = c.nodes[new].handle().status();
    assert!(s.snapshot.is_some_and(|snap| snap > before), "the leader compacted its log: {s:?}");
    c.nodes[old].start();
    assert_eq!(c.nodes[old].wait_ready(), id);
    let m = c.converged(last);
    assert_eq!(m.topics.len(), 13);
    let s = c.nodes[old].handle().status();
    assert!(s.snapshot.is_some_and(|snap| snap > before), "the restarted node was sent a snapshot: {s:?}");
    // And it takes part again: a proposal through it commits.
    let index = propose(&c.nodes[old], topic("after")).unwrap();
    assert!(c.converged(index).topics.contains_key("after"));
}

#[test]
fn without_a_majority_a_proposal_times_out_and_nothing_diverges() {
    let mut c = Cluster::start_with(3, 0, Tuning { propose_timeout: Duration::from_secs(3), ..tuning() });
    c.ready();
    let leader = c.leader();
    let index = propose(&c.nodes[leader], topic("kept")).unwrap();
    c.converged(index);
    for i in 0..3 {
        if i != leader {
            c.nodes[i].stop();
        }
    }
    let started = Instant::now();
    let e = propose(&c.nodes[leader], topic("lost")).unwrap_err();
    assert!(matches!(e, ControllerError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("did not commit the proposal within 3000 ms"), "{e}");
    // It waited its time (tokio's timer rounds to milliseconds, so allow a little less).
    assert!(started.elapsed() >= Duration::from_millis(2900), "{:?}", started.elapsed());
    assert!(!c.nodes[leader].handle().metadata().1.topics.contains_key("lost"), "nothing was applied without a majority");
    for i in 0..3 {
        if i != leader {
            c.nodes[i].start();
        }
    }
    c.ready();
    let leader = c.leader();
    let index = propose(&c.nodes[leader], topic("later")).unwrap();
    let m = c.converged(index);
    assert!(m.topics.contains_key("kept") && m.topics.contains_key("later"));
}

#[test]
fn a_broker_only_node_learns_the_metadata_and_can_propose() {
    let c = Cluster::start(3, 1);
    let id = c.ready();
    let learner = &c.nodes[3];
    assert_eq!(learner.wait_ready(), id);
    let index = propose(&c.nodes[c.leader()], topic("seen-by-learner")).unwrap();
    assert!(c.converged(index).topics.contains_key("seen-by-learner"));
    assert_eq!(learner.handle().status().role, Role::Learner);
    // Its proposals are forwarded to the leader.
    let index = propose(learner, topic("from-learner")).unwrap();
    assert!(c.converged(index).topics.contains_key("from-learner"));
    assert!(c.nodes[c.leader()].handle().status().voters.iter().all(|v| v.id != 101), "a learner is no voter");
}

#[test]
fn a_node_with_another_clusters_data_is_refused() {
    // Cluster A forms on three ports, then stops: its data directories stay.
    let ports: Vec<u16> = (0..3).map(|_| free_loopback_port().unwrap()).collect();
    let mut a = Cluster::on(voters_on(&ports), (0..3).map(|_| tempfile::tempdir().unwrap()).collect());
    for n in &mut a.nodes {
        n.start();
    }
    let id_a = a.ready();
    for n in &mut a.nodes {
        n.stop();
    }
    // Cluster B forms on the same ports with empty data directories.
    let mut b = Cluster::on(voters_on(&ports), (0..3).map(|_| tempfile::tempdir().unwrap()).collect());
    for n in &mut b.nodes {
        n.start();
    }
    let id_b = b.ready();
    assert_ne!(id_a, id_b);
    // Node 3 of B comes back on A's node-3 data directory: it stops with a message saying so.
    b.nodes[2].stop();
    let mut stray = Node { cfg: a.nodes[2].cfg.clone(), controller: None };
    stray.start();
    let e = stray.controller.as_ref().unwrap().wait_cluster_id(PATIENCE, Duration::from_secs(5), |_| {}, || false).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ControllerError::Refused(_)), "{e:?}");
    assert!(text.contains(&format!("belongs to cluster {id_a}")) && text.contains("another cluster"), "{text}");
    drop(stray);
    // B goes on without it.
    let index = propose(&b.nodes[b.leader()], topic("b")).unwrap();
    b.converged(index);
    // A broker-only node whose data directory has a single node's cluster id is refused too.
    let dir = tempfile::tempdir().unwrap();
    store_cluster_id(dir.path(), "single-node-id").unwrap();
    let cfg = ControllerConfig {
        node_id: 200,
        data_dir: dir.path().to_path_buf(),
        voters: b.nodes[0].cfg.voters.clone(),
        listen: format!("127.0.0.1:{}", free_loopback_port().unwrap()),
        voter: false,
        broker: None,
        broker_session_timeout_ms: SESSION_MS,
        tuning: tuning(),
    };
    let c = Controller::start(cfg).unwrap();
    let e = c.wait_cluster_id(PATIENCE, Duration::from_secs(5), |_| {}, || false).unwrap_err();
    assert!(e.to_string().contains("belongs to cluster single-node-id"), "{e}");
    assert_eq!(stored_cluster_id(dir.path()).unwrap().as_deref(), Some("single-node-id"), "its file is left as it was");
}

/// The broker registrations every running node has applied alike, once `done` holds for them.
fn brokers_when(c: &Cluster, what: &str, done: impl Fn(&BTreeMap<i32, BrokerRegistration>) -> bool) -> BTreeMap<i32, BrokerRegistration> {
    wait_for(what, || {
        let states: Vec<Arc<ClusterMetadata>> = c.running().map(|n| n.handle().metadata().1).collect();
        let first = &states[0].brokers;
        (done(first) && states.iter().all(|s| s.brokers == *first)).then(|| first.clone())
    })
}

fn ids(c: &Cluster) -> Vec<i32> {
    c.nodes.iter().map(|n| n.cfg.node_id).collect()
}

#[test]
fn brokers_register_and_a_silent_one_is_fenced_until_it_heartbeats_again() {
    let mut c = Cluster::start_brokers(3, 1);
    c.ready();
    let all = ids(&c);
    let b = brokers_when(&c, "every broker registered and unfenced", |b| {
        all.iter().all(|id| b.get(id).is_some_and(|r| !r.fenced))
    });
    for id in &all {
        let r = &b[id];
        assert_eq!(r.listeners, vec![format!("broker{id}.example:9092")]);
        assert_eq!(r.rack, Some(format!("rack-{}", id % 2)));
    }
    // The broker-only node goes silent: it is fenced, the others are not.
    let silent = 101;
    c.nodes[3].handle().pause_heartbeats(true);
    let b = brokers_when(&c, "the silent broker fenced", |b| b[&silent].fenced);
    assert!(all.iter().filter(|id| **id != silent).all(|id| !b[id].fenced), "only the silent one: {b:?}");
    // It heartbeats again: unfenced, the same incarnation.
    c.nodes[3].handle().pause_heartbeats(false);
    let again = brokers_when(&c, "the broker unfenced again", |b| !b[&silent].fenced);
    assert_eq!(again[&silent].incarnation, b[&silent].incarnation);
    // Restarted, it registers a new incarnation, which replaces the old one.
    c.nodes[3].stop();
    c.nodes[3].start();
    let old = again[&silent].incarnation;
    let restarted = brokers_when(&c, "the restarted broker's new incarnation registered and unfenced", |b| {
        b[&silent].incarnation != old && !b[&silent].fenced
    });
    assert_eq!(restarted.len(), all.len(), "replaced, not added: {restarted:?}");
}

#[test]
fn a_new_leader_keeps_heartbeating_brokers_unfenced() {
    let mut c = Cluster::start_brokers(3, 0);
    c.ready();
    let all = ids(&c);
    brokers_when(&c, "every broker unfenced", |b| all.iter().all(|id| b.get(id).is_some_and(|r| !r.fenced)));
    let old = c.leader();
    let gone = c.nodes[old].cfg.node_id;
    c.nodes[old].stop();
    let new = c.leader();
    assert_ne!(new, old);
    // The new leader has no heartbeat history: the stopped broker is fenced once its fresh
    // session runs out, and by then the brokers that kept heartbeating had the same session.
    let b = brokers_when(&c, "the stopped broker fenced by the new leader", |b| b[&gone].fenced);
    assert!(all.iter().filter(|id| **id != gone).all(|id| !b[id].fenced), "the live brokers stay unfenced: {b:?}");
    // It comes back: unfenced under its new incarnation.
    let before = b[&gone].incarnation;
    c.nodes[old].start();
    c.ready();
    brokers_when(&c, "the returned broker unfenced", |b| b[&gone].incarnation != before && !b[&gone].fenced);
}

#[test]
fn a_controlled_shutdown_fences_the_broker_at_once() {
    let c = Cluster::start_brokers(3, 0);
    c.ready();
    let all = ids(&c);
    brokers_when(&c, "every broker unfenced", |b| all.iter().all(|id| b.get(id).is_some_and(|r| !r.fenced)));
    // A follower's broker and the leader's own (whose heartbeat never leaves its node).
    let leader = c.leader();
    for i in [(leader + 1) % 3, leader] {
        let id = c.nodes[i].cfg.node_id;
        c.nodes[i].handle().controlled_shutdown(PATIENCE).unwrap_or_else(|e| panic!("broker {id}: {e}"));
        // The answer came once the leader had applied the fencing (the others follow).
        let b = c.nodes[leader].handle().metadata().1.brokers.clone();
        assert!(b[&id].fenced, "fenced on the leader once the shutdown returns: {b:?}");
        brokers_when(&c, "every node sees it fenced", |b| b[&id].fenced);
    }
    // Its heartbeats have ended: asking again is answered at once, with why.
    let e = c.nodes[leader].handle().controlled_shutdown(PATIENCE).unwrap_err();
    assert!(e.to_string().contains("heartbeats have ended"), "{e}");
}

#[test]
fn a_node_without_the_broker_role_has_no_controlled_shutdown() {
    let c = Cluster::start(1, 0);
    c.ready();
    let e = c.nodes[0].handle().controlled_shutdown(PATIENCE).unwrap_err();
    assert!(e.to_string().contains("no broker role"), "{e}");
    assert!(c.nodes[0].handle().metadata().1.brokers.is_empty(), "nothing registered");
}
