//! Three real `spate serve` processes started with the same `--controller-quorum-voters` on
//! empty data directories form a metadata quorum by themselves and answer Metadata with one
//! cluster id; a fourth node whose data directory belongs to another cluster refuses to start
//! and says why. The same three register as brokers, show the quorum and each other on
//! `/v1/status` and `/metrics`, and a node stopped with SIGTERM is fenced by its controlled
//! shutdown. The active controller killed with -9 is replaced, topics and groups go on, and
//! back after the log has moved past a snapshot it is caught up by one. (The quorum's own behaviour, elections, snapshots, refusals, sessions expiring, is
//! tested in process in `src/controller/tests.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{create_topic, dashboard_metrics, flush, free_port, group_consumer, metric_families, producer, set_config, to_rec, Broker, Raw};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

/// Hang guard for anything a cluster must get to (elections, heartbeats), not a speed check.
const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `f` every 100 ms until it gives a value; panics after [`PATIENCE`] with `what`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting {} s for: {what}", PATIENCE.as_secs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's `/v1/status`, parsed.
fn status(node: &Broker) -> serde_json::Value {
    let text = node.admin_get("/v1/status");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/v1/status is not JSON ({e}): {text}"))
}

/// Broker `id`'s entry in a `/v1/status`.
fn broker_in(status: &serde_json::Value, id: u64) -> Option<&serde_json::Value> {
    status["brokers"].as_array()?.iter().find(|b| b["id"] == id)
}

/// Three combined nodes on fresh ports, started and ready, with `extra` flags each.
fn cluster(extra: &[&str]) -> Vec<Broker> {
    let voters = voters();
    let mut nodes: Vec<Broker> = (1..=3)
        .map(|id| {
            let id = id.to_string();
            let mut args = vec!["--node-id", &id, "--controller-quorum-voters", &voters];
            args.extend_from_slice(extra);
            Broker::start_without_waiting(&args)
        })
        .collect();
    for n in &mut nodes {
        n.wait_ready_or_move();
    }
    // Ready is before the first heartbeat unfences a broker; placement uses unfenced ones.
    wait_for("all three brokers unfenced in every broker's Metadata", || {
        nodes.iter().all(|n| metadata(n, Some(&[])).brokers.len() == 3).then_some(())
    });
    nodes
}

/// The metadata-consistency check: once no change is under way, every broker serves an image
/// equal to the metadata its controller thread applied, at the same index as every other
/// broker's (`/v1/metadata`). Returns that index.
fn assert_consistent(nodes: &[&Broker]) -> u64 {
    let digests = wait_for("every broker's image and controller at one index", || {
        let all: Vec<serde_json::Value> = nodes.iter().map(|n| json(n, "/v1/metadata")).collect();
        let index = all[0]["controller"]["index"].as_u64()?;
        let settled =
            all.iter().all(|d| d["controller"]["index"].as_u64() == Some(index) && d["installed"]["index"].as_u64() == Some(index));
        settled.then_some(all)
    });
    for (n, d) in nodes.iter().zip(&digests) {
        assert_eq!(d["installed"], d["controller"], "broker on port {} serves another image than its controller applied", n.port);
        assert_eq!(d["installed"], digests[0]["installed"], "brokers on ports {} and {} differ", n.port, nodes[0].port);
    }
    digests[0]["installed"]["index"].as_u64().unwrap()
}

fn json(node: &Broker, path: &str) -> serde_json::Value {
    let text = node.admin_get(path);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {text}"))
}

/// A Metadata answer of `node` for `topics` (None: all).
fn metadata(node: &Broker, topics: Option<&[&str]>) -> MetadataResponse {
    let topics = topics.map(|ts| {
        ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))).collect()
    });
    Raw::connect(node.port).call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(topics), 12)
}

/// Partition -> leader of `topic` in a Metadata answer.
fn leaders(md: &MetadataResponse, topic: &str) -> Vec<i32> {
    let t = md.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic)).expect("topic in metadata");
    let mut ps: Vec<(i32, i32)> = t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect();
    ps.sort();
    ps.into_iter().map(|(_, l)| l).collect()
}

/// The three nodes' `--controller-quorum-voters` on fresh ports.
fn voters() -> String {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",")
}

#[test]
fn three_nodes_agree_on_one_cluster_id_and_a_stray_data_directory_is_refused() {
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters: Vec<String> = controller_ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect();
    let voters = voters.join(",");
    let mut nodes: Vec<Broker> = (1..=3)
        .map(|id| {
            let id = id.to_string();
            Broker::start_without_waiting(&["--cores", "1", "--node-id", &id, "--controller-quorum-voters", &voters])
        })
        .collect();
    for n in &mut nodes {
        n.wait_ready_or_move();
    }
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| {
            let mut raw = Raw::connect(n.port);
            let md: MetadataResponse = raw.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None), 12);
            md.cluster_id.expect("a cluster id in Metadata").to_string()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "the nodes disagree on the cluster id: {ids:?}");
    for n in &nodes {
        assert!(n.log().contains("metadata quorum joined"), "{}", n.log());
        let stored = std::fs::read_to_string(n.data_dir().join("cluster.toml")).unwrap();
        assert!(stored.contains(&ids[0]), "cluster.toml holds the cluster's id: {stored}");
    }

    // A broker-only node whose data directory holds another cluster's id.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.toml"), "cluster_id = \"another-cluster\"\n").unwrap();
    let (listen, admin, controller) =
        (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let data_dir = dir.path().display().to_string();
    let args = [
        "serve", "--cores", "1", "--node-id", "4", "--process-roles", "broker", "--controller-quorum-voters", &voters,
        "--controller-listen", &controller, "--listen", &listen, "--admin-listen", &admin, "--data-dir", &data_dir,
    ];
    let stderr = Broker::run_failing_with(&args, |_| {});
    assert!(
        stderr.contains("belongs to cluster another-cluster") && stderr.contains(&ids[0]) && stderr.contains("another cluster"),
        "{stderr}"
    );
    for mut n in nodes {
        assert!(n.terminate().success(), "{}", n.log());
        assert!(n.log().contains("controller thread stopped"), "{}", n.log());
    }
}

#[test]
fn three_nodes_register_as_brokers_show_the_quorum_and_a_terminated_one_is_fenced_first() {
    let voters = voters();
    // A session far longer than the test: a broker fenced here was fenced by its controlled
    // shutdown, not by silence.
    let mut nodes: Vec<Broker> = (1..=3)
        .map(|id| {
            let (id, rack) = (id.to_string(), format!("rack-{id}"));
            Broker::start_without_waiting(&[
                "--cores", "1", "--node-id", &id, "--controller-quorum-voters", &voters, "--broker-rack", &rack,
                "--broker-heartbeat-interval-ms", "300", "--broker-session-timeout-ms", "600000",
            ])
        })
        .collect();
    for n in &mut nodes {
        n.wait_ready_or_move();
    }
    // Every node: the same leader, and all three brokers registered, unfenced, as clients reach them.
    wait_for("every node showing one leader and three unfenced brokers", || {
        let all: Vec<serde_json::Value> = nodes.iter().map(status).collect();
        let leader = all[0]["quorum"]["leader"].as_u64()?;
        let agreed = all.iter().all(|s| s["quorum"]["leader"].as_u64() == Some(leader));
        let registered = all.iter().all(|s| (1..=3).all(|id| broker_in(s, id).is_some_and(|b| b["fenced"] == false)));
        (agreed && registered).then_some(())
    });
    for (i, n) in nodes.iter().enumerate() {
        let s = status(n);
        let q = &s["quorum"];
        assert_eq!(q["node_id"], i as u64 + 1, "{s:#}");
        assert!(q["term"].as_u64().is_some_and(|t| t >= 1) && q["committed"].as_u64().is_some(), "{s:#}");
        let leads = q["leader"] == q["node_id"];
        assert_eq!(q["role"], if leads { "leader" } else { "follower" }, "{s:#}");
        let me = broker_in(&s, i as u64 + 1).unwrap();
        assert_eq!(me["listener"], format!("127.0.0.1:{}", n.port), "{s:#}");
        assert_eq!(me["rack"], format!("rack-{}", i + 1), "{s:#}");
        assert!(me["incarnation"].as_str().is_some_and(|x| !x.is_empty()), "{s:#}");
    }
    // The leader knows its voters' lag and exports the quorum's gauges (found by asking, in
    // case the leadership moved on a loaded machine).
    let (leader, m) = wait_for("a node leading, in its status and its metrics", || {
        nodes.iter().enumerate().find_map(|(i, n)| {
            let s = status(n);
            let voters_known = s["quorum"]["voters"].as_array()?.iter().all(|v| v["lag"].is_u64() && v["matched"].is_u64());
            let m = n.metrics();
            (voters_known && s["quorum"]["role"] == "leader" && m.contains("spate_quorum_is_leader 1\n")).then(|| (i as u64 + 1, m))
        })
    });
    for line in [
        format!("spate_quorum_leader_id {leader}\n"),
        "spate_cluster_brokers{state=\"unfenced\"} 3\n".to_string(),
        "spate_cluster_brokers{state=\"fenced\"} 0\n".to_string(),
    ] {
        assert!(m.contains(&line), "{line:?} not in:\n{m}");
    }
    for name in ["spate_quorum_term ", "spate_quorum_committed_index ", "spate_quorum_applied_index ", "spate_quorum_voter_lag{voter=\"1\"} "] {
        assert!(m.lines().any(|x| x.starts_with(name)), "{name:?} not in:\n{m}");
    }
    // The Grafana dashboard's cluster row uses only metrics a cluster node exports (the rest of
    // the dashboard is checked against a single node in tests/metrics.rs).
    let families = metric_families(&m);
    let mut checked = 0;
    for (panel, family) in dashboard_metrics() {
        if family.starts_with("spate_quorum_") || family.starts_with("spate_cluster_") {
            assert!(families.contains(family.as_str()), "panel {panel:?} uses {family}, which a cluster node does not export");
            checked += 1;
        }
    }
    assert!(checked >= 6, "the dashboard's cluster row uses {checked} quorum metrics");
    // SIGTERM order: a follower, the leader, the other follower (the leader as last seen: should
    // it have moved, each shutdown below still has the majority it needs, or lacks it, the same).
    let followers: Vec<usize> = (0..3).filter(|&i| i as u64 + 1 != leader).collect();
    let order = [followers[0], leader as usize - 1, followers[1]];

    // The follower: the others see it fenced.
    let first = order[0];
    assert!(nodes[first].terminate().success(), "{}", nodes[first].log());
    assert!(nodes[first].log().contains("controlled shutdown: the controller fenced this broker"), "{}", nodes[first].log());
    let id = first as u64 + 1;
    for n in order[1..].iter().map(|&i| &nodes[i]) {
        wait_for("the terminated broker fenced on the others' /v1/status", || {
            broker_in(&status(n), id).is_some_and(|b| b["fenced"] == true).then_some(())
        });
        assert!(n.metrics().contains("spate_cluster_brokers{state=\"fenced\"} 1\n"));
    }
    // The leader's own controlled shutdown commits too (two of three voters are up).
    let second = order[1];
    assert!(nodes[second].terminate().success(), "{}", nodes[second].log());
    assert!(nodes[second].log().contains("controlled shutdown: the controller fenced this broker"), "{}", nodes[second].log());
    // The last node has no majority: its controlled shutdown gives up and the shutdown goes on.
    let last = order[2];
    assert!(nodes[last].terminate().success(), "{}", nodes[last].log());
    assert!(nodes[last].log().contains("controlled shutdown: the controller did not confirm"), "{}", nodes[last].log());
    assert!(nodes[last].log().contains("shutdown complete"), "{}", nodes[last].log());
}

#[test]
fn three_brokers_serve_one_set_of_topics_with_leaders_spread_and_clients_following_them() {
    let nodes = cluster(&["--cores", "2", "--broker-heartbeat-interval-ms", "300"]);
    let all: Vec<&Broker> = nodes.iter().collect();
    assert_consistent(&all);
    // Before `__consumer_offsets` exists no broker knows who coordinates a group: each sends
    // the client back to FindCoordinator (which creates it) instead of starting the group where
    // it would be forgotten once the topic's image arrives.
    let early = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("too-early")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(StrBytes::from_static_str("range"))]);
    for n in &nodes {
        let r: JoinGroupResponse = Raw::connect(n.port).call(ApiKey::JoinGroup, 7, &early, 7);
        assert_eq!(r.error_code, 16, "NOT_COORDINATOR before __consumer_offsets exists: {r:?}");
    }
    // Created through node 1: six partitions, two led by each broker, seen alike by all three.
    create_topic(&nodes[0].bootstrap(), "orders", 6, &[]);
    let md: Vec<MetadataResponse> = nodes.iter().map(|n| metadata(n, Some(&["orders"]))).collect();
    let led = leaders(&md[0], "orders");
    for m in &md {
        assert_eq!(leaders(m, "orders"), led, "every broker names the same leaders at once");
        assert_eq!(m.brokers.len(), 3, "{m:?}");
    }
    for b in 1..=3 {
        assert_eq!(led.iter().filter(|l| **l == b).count(), 2, "broker {b} leads two of {led:?}");
    }
    assert_consistent(&all);

    // A producer given only node 2 writes to every partition, wherever it is led.
    let p = producer(&nodes[1].bootstrap(), &[("enable.idempotence", "true"), ("acks", "all")]);
    for i in 0..600 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        p.send(BaseRecord::to("orders").key(&key).payload(&value).partition(i % 6)).expect("queued");
    }
    flush(&p);
    let ctx = p.context();
    assert!(ctx.failed.lock().unwrap().is_empty(), "{:?}", ctx.failed.lock().unwrap());
    assert_eq!(ctx.ok.lock().unwrap().len(), 600);
    // Each partition's records are on its leader's disk only.
    for (partition, leader) in led.iter().enumerate() {
        for (i, n) in nodes.iter().enumerate() {
            let has = n.data_dir().join(format!("topics/orders/{partition}")).exists();
            assert_eq!(has, i as i32 + 1 == *leader, "orders-{partition} (led by {leader}) on node {}", i + 1);
        }
    }

    // A request to a broker that does not lead the partition: NOT_LEADER_OR_FOLLOWER.
    let (partition, leader) = led.iter().enumerate().find(|(_, l)| **l != 1).map(|(p, l)| (p as i32, *l)).unwrap();
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("orders")))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-1)])]);
    let r: ListOffsetsResponse = Raw::connect(nodes[0].port).call(ApiKey::ListOffsets, 7, &req, 7);
    assert_eq!(r.topics[0].partitions[0].error_code, 6, "orders-{partition} is led by {leader}, not 1: {r:?}");
    let r: ListOffsetsResponse = Raw::connect(nodes[leader as usize - 1].port).call(ApiKey::ListOffsets, 7, &req, 7);
    assert_eq!((r.topics[0].partitions[0].error_code, r.topics[0].partitions[0].offset), (0, 100));

    // A consumer group bootstrapped at node 3 reads everything and commits; its coordinator is
    // wherever its __consumer_offsets partition is led.
    let c = group_consumer(&nodes[2].bootstrap(), "cluster-group", &[]);
    c.subscribe(&["orders"]).unwrap();
    let mut got = std::collections::BTreeSet::new();
    wait_for("the group consuming all 600 records", || {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let r = to_rec(&m.expect("consumer error"));
            got.insert(String::from_utf8(r.key.unwrap()).unwrap());
        }
        (got.len() == 600).then_some(())
    });
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    drop(c);
    // The committed offsets read back through another broker's admin tools' path (OffsetFetch
    // at the coordinator found by FindCoordinator).
    let coordinators: Vec<i32> = (0..12)
        .map(|g| {
            let req =
                FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![StrBytes::from_string(format!("g{g}"))]);
            let r: FindCoordinatorResponse = Raw::connect(nodes[0].port).call(ApiKey::FindCoordinator, 4, &req, 4);
            assert_eq!(r.coordinators[0].error_code, 0, "{r:?}");
            r.coordinators[0].node_id.0
        })
        .collect();
    assert!((1..=3).all(|b| coordinators.contains(&b)), "twelve groups' coordinators spread over the brokers: {coordinators:?}");
    let req = FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![StrBytes::from_static_str("cluster-group")]);
    let r: FindCoordinatorResponse = Raw::connect(nodes[0].port).call(ApiKey::FindCoordinator, 4, &req, 4);
    let coordinator = r.coordinators[0].node_id.0;
    let fetch = OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str("cluster-group"))).with_topics(None);
    let elsewhere = nodes.iter().enumerate().find(|(i, _)| *i as i32 + 1 != coordinator).unwrap().1;
    let r: OffsetFetchResponse = Raw::connect(elsewhere.port).call(ApiKey::OffsetFetch, 7, &fetch, 7);
    assert_eq!(r.error_code, 16, "NOT_COORDINATOR from a broker that does not coordinate the group: {r:?}");
    let r: OffsetFetchResponse = Raw::connect(nodes[coordinator as usize - 1].port).call(ApiKey::OffsetFetch, 7, &fetch, 7);
    let committed: i64 = r.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| p.committed_offset).sum();
    assert_eq!(committed, 600, "{r:?}");

    // `spate cluster info`: roles, the quorum, and who holds and leads what.
    let out = std::process::Command::new(common::spate_bin())
        .args(["cluster", "info", "--json", "--bootstrap-server", &nodes[1].bootstrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["quorum"]["voters"].as_array().map(Vec::len), Some(3), "{info:#}");
    for b in info["brokers"].as_array().unwrap() {
        let id = b["id"].as_i64().unwrap() as i32;
        assert_eq!(b["roles"], serde_json::json!(["broker", "controller"]), "{info:#}");
        let leads: Vec<&str> = b["leads"].as_array().unwrap().iter().filter_map(|x| x.as_str()).filter(|x| x.starts_with("orders-")).collect();
        let expected: Vec<String> = led.iter().enumerate().filter(|(_, l)| **l == id).map(|(p, _)| format!("orders-{p}")).collect();
        assert_eq!(leads, expected, "broker {id}: {info:#}");
        assert!(b["replicas"].as_u64().unwrap() >= 2 + 16, "orders and __consumer_offsets partitions on broker {id}: {info:#}");
    }

    // DescribeCluster names the quorum's leader as the controller, on every broker.
    let leader = wait_for("a quorum leader", || status(&nodes[0])["quorum"]["leader"].as_i64());
    // DescribeQuorum (kafka-metadata-quorum's request) from a follower: the leader's view.
    let follower = nodes.iter().find(|n| status(n)["quorum"]["node_id"].as_i64() != Some(leader)).unwrap();
    let q: DescribeQuorumResponse = Raw::connect(follower.port).call(ApiKey::DescribeQuorum, 2, &DescribeQuorumRequest::default(), 2);
    let p = &q.topics[0].partitions[0];
    assert_eq!((q.error_code, q.topics[0].topic_name.0.as_str(), p.leader_id.0 as i64), (0, "__cluster_metadata", leader), "{q:?}");
    assert_eq!((p.current_voters.len(), q.nodes.len()), (3, 3), "{q:?}");
    assert!(p.high_watermark > 0 && p.current_voters.iter().all(|v| v.log_end_offset > 0), "the leader knows every voter's progress: {q:?}");
    for n in &nodes {
        let r: DescribeClusterResponse = Raw::connect(n.port).call(ApiKey::DescribeCluster, 1, &DescribeClusterRequest::default(), 1);
        assert_eq!((r.controller_id.0 as i64, r.brokers.len()), (leader, 3), "{r:?}");
    }
    assert_consistent(&all);

    // Deleted through node 3: gone from every broker's metadata and disk.
    let a = common::admin(&nodes[2].bootstrap());
    let r = common::futures_lite_block_on(a.delete_topics(&["orders"], &rdkafka::admin::AdminOptions::new())).unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    wait_for("orders gone from every broker's disk", || nodes.iter().all(|n| !n.data_dir().join("topics/orders").exists()).then_some(()));
    for n in &nodes {
        let md = metadata(n, None);
        assert!(!md.topics.iter().any(|t| t.name.as_ref().is_some_and(|x| x.0.as_str() == "orders")), "{md:?}");
    }
    assert_consistent(&all);
}

#[test]
fn a_broker_killed_loses_its_leaderships_and_gets_them_back_and_topics_deleted_meanwhile_leave_its_disk() {
    let mut nodes = cluster(&["--cores", "1", "--broker-heartbeat-interval-ms", "200", "--broker-session-timeout-ms", "3000"]);
    create_topic(&nodes[0].bootstrap(), "kept", 3, &[]);
    create_topic(&nodes[0].bootstrap(), "doomed", 3, &[]);
    let led = leaders(&metadata(&nodes[0], Some(&["kept"])), "kept");
    assert!((1..=3).all(|b| led.contains(&b)), "{led:?}");
    let p = producer(&nodes[0].bootstrap(), &[]);
    for i in 0..30 {
        p.send(BaseRecord::to("kept").key("k").payload(&format!("{i}")).partition(i % 3)).expect("queued");
    }
    flush(&p);
    // A consumer group member reads them all, and goes on polling through what follows.
    let c = group_consumer(&nodes[0].bootstrap(), "through-restart", &[]);
    c.subscribe(&["kept"]).unwrap();
    let mut seen: Vec<String> = Vec::new();
    let poll = |c: &rdkafka::consumer::BaseConsumer, seen: &mut Vec<String>| {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    };
    wait_for("the group reading the first 30", || {
        poll(&c, &mut seen);
        (seen.len() >= 30).then_some(())
    });
    // Node 3 killed: once its session ends, what it led is led by nobody and said so.
    nodes[2].kill9();
    let mine = led.iter().position(|l| *l == 3).unwrap();
    wait_for("node 3's partition of kept led by nobody", || {
        let md = metadata(&nodes[0], Some(&["kept"]));
        let p = md.topics[0].partitions.iter().find(|p| p.partition_index == mine as i32)?;
        (p.leader_id.0 == -1 && p.error_code == 5 && md.brokers.len() == 2).then_some(())
    });
    // Meanwhile "doomed" is deleted and created again with other partitions' placement.
    let a = common::admin(&nodes[1].bootstrap());
    let r = common::futures_lite_block_on(a.delete_topics(&["doomed"], &rdkafka::admin::AdminOptions::new())).unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    create_topic(&nodes[1].bootstrap(), "doomed", 1, &[]);
    let id_now = metadata(&nodes[0], Some(&["doomed"])).topics[0].topic_id;
    assert!(nodes[2].data_dir().join("topics/doomed").exists(), "node 3 still has the old topic's files");
    // Back: its leadership returns, its old topic's files go, and everything reads back.
    nodes[2].restart();
    wait_for("kept led by all three again", || (leaders(&metadata(&nodes[1], Some(&["kept"])), "kept") == led).then_some(()));
    let dir = nodes[2].data_dir().join("topics/doomed");
    let stale = std::fs::read_to_string(dir.join("topic.toml")).map(|t| !t.contains(&id_now.to_string())).unwrap_or(false);
    assert!(!stale, "node 3 kept the deleted topic's files");
    let all: Vec<&Broker> = nodes.iter().collect();
    assert_consistent(&all);
    let recs = common::consume(&nodes[2].bootstrap(), "kept", &[0, 1, 2], rdkafka::Offset::Beginning, 30);
    assert_eq!(recs.len(), 30);
    // Node 3 leads its partition again at leader epoch 2 (fenced, then elected), which began at
    // offset 10: its leader-epoch cache, OffsetForLeaderEpoch and ListOffsets say so.
    let checkpoint = std::fs::read_to_string(nodes[2].data_dir().join(format!("topics/kept/{mine}/leader-epoch-checkpoint"))).unwrap();
    assert_eq!(checkpoint, "0\n2\n0 0\n2 10\n");
    let req = OffsetForLeaderEpochRequest::default().with_topics(vec![offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("kept")))
        .with_partitions(vec![offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
            .with_partition(mine as i32)
            .with_current_leader_epoch(2)
            .with_leader_epoch(0)])]);
    let r: OffsetForLeaderEpochResponse = Raw::connect(nodes[2].port).call(ApiKey::OffsetForLeaderEpoch, 4, &req, 4);
    let e = &r.topics[0].partitions[0];
    assert_eq!((e.error_code, e.leader_epoch, e.end_offset), (0, 0, 10), "{r:?}");
    // The member that kept polling through all this reads what comes next, once, from where
    // it was (librdkafka validates its position against the new epoch, KIP-320).
    for i in 30..60 {
        p.send(BaseRecord::to("kept").key("k").payload(&format!("{i}")).partition(i % 3)).expect("queued");
    }
    flush(&p);
    wait_for("the group reading the next 30", || {
        poll(&c, &mut seen);
        (seen.len() >= 60).then_some(())
    });
    for _ in 0..10 {
        poll(&c, &mut seen);
    }
    let mut sorted: Vec<i64> = seen.iter().map(|v| v.parse().unwrap()).collect();
    sorted.sort();
    assert_eq!(sorted, (0..60).collect::<Vec<i64>>(), "every record once, none again");
    drop(c);

    // Two of three voters gone: a change waits, then is refused saying why; nothing diverges.
    nodes[1].kill9();
    nodes[2].kill9();
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("waits")))
        .with_num_partitions(1)
        .with_replication_factor(1);
    let req = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(60_000);
    let r: CreateTopicsResponse = Raw::connect(nodes[0].port).call(ApiKey::CreateTopics, 5, &req, 5);
    let t = &r.topics[0];
    assert_eq!(t.error_code, 7, "REQUEST_TIMED_OUT without a majority: {r:?}");
    let msg = t.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
    assert!(msg.contains("did not commit"), "{msg}");
    assert!(metadata(&nodes[0], None).topics.iter().all(|t| t.name.as_ref().is_none_or(|n| n.0.as_str() != "waits")));
}

#[test]
fn the_active_controller_killed_is_replaced_and_catches_up_from_a_snapshot_when_back() {
    let mut nodes = cluster(&["--cores", "1", "--broker-heartbeat-interval-ms", "200", "--broker-session-timeout-ms", "3000"]);
    let before = status(&nodes[0]);
    let old = before["quorum"]["leader"].as_u64().expect("a quorum leader") as usize;
    let killed_at = status(&nodes[old - 1])["quorum"]["last_log"].as_u64().expect("the leader's log");
    let started = Instant::now();
    nodes[old - 1].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old - 1).collect();
    let (s0, s1) = (survivors[0], survivors[1]);
    let new = wait_for("the two others agreeing on a new quorum leader", || {
        let a = status(&nodes[s0])["quorum"]["leader"].as_u64()?;
        (a != old as u64 && status(&nodes[s1])["quorum"]["leader"].as_u64() == Some(a)).then_some(a)
    });
    eprintln!("quorum leader {old} killed; {new} elected after {:?}", started.elapsed());

    // Topic creation goes on, and so does a group coordinated by a broker still up. Once the
    // killed broker is fenced: until its session ends it counts as live, and placement could
    // put a partition on it (as Kafka would).
    wait_for("the killed broker fenced", || (metadata(&nodes[s0], Some(&[])).brokers.len() == 2).then_some(()));
    let b = nodes[s0].bootstrap();
    create_topic(&b, "after", 2, &[]);
    let mut tried = 0;
    let group = wait_for("a group coordinated by a broker still up", || {
        let g = format!("survivor-{tried}");
        tried += 1;
        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(g.clone()));
        let r: FindCoordinatorResponse = Raw::connect(nodes[s1].port).call(ApiKey::FindCoordinator, 3, &req, 3);
        (r.error_code == 0 && r.node_id.0 != old as i32).then_some(g)
    });
    let p = producer(&b, &[]);
    for i in 0..20 {
        p.send(BaseRecord::to("after").key("k").payload(&format!("{i}")).partition(i % 2)).expect("queued");
    }
    flush(&p);
    let c = group_consumer(&nodes[s1].bootstrap(), &group, &[]);
    c.subscribe(&["after"]).unwrap();
    let mut seen = 0;
    wait_for("the group reading 20 records", || {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            seen += 1;
        }
        (seen >= 20).then_some(())
    });
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    let committed = c.committed(Duration::from_secs(10)).expect("committed offsets");
    let total: i64 = committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0)).sum();
    assert_eq!(total, 20, "{committed:?}");

    // The log grows past a snapshot and past what the quorum keeps after one (1,000 and 200
    // entries): the killed node cannot be caught up by entries alone.
    let mut raw = Raw::connect(nodes[s0].port);
    for i in 0..1300 {
        assert_eq!(set_config(&mut raw, 4, "", "log.index.interval.bytes", &(4096 + i).to_string()), 0);
    }
    let snap = wait_for("the new leader's snapshot", || status(&nodes[new as usize - 1])["quorum"]["snapshot"].as_u64());
    assert!(snap > killed_at + 200, "snapshot at {snap}, killed node's log ended at {killed_at}");

    nodes[old - 1].restart();
    wait_for("the restarted node installing a snapshot from the leader", || {
        nodes[old - 1].log().contains("installed a snapshot from the leader").then_some(())
    });
    let all: Vec<&Broker> = nodes.iter().collect();
    let index = assert_consistent(&all);
    assert!(index > snap, "{index} {snap}");
    // The configs the snapshot carried: the last value set (4096 + 1299), as the node describes itself.
    let req = DescribeConfigsRequest::default().with_resources(vec![describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(4)
        .with_resource_name(StrBytes::from_string(old.to_string()))
        .with_configuration_keys(Some(vec![StrBytes::from_static_str("log.index.interval.bytes")]))]);
    let r: DescribeConfigsResponse = Raw::connect(nodes[old - 1].port).call(ApiKey::DescribeConfigs, 4, &req, 4);
    let value = r.results[0].configs.first().and_then(|c| c.value.as_ref()).map(|v| v.to_string());
    assert_eq!(value.as_deref(), Some("5395"), "{r:?}");
    wait_for("the restarted broker unfenced", || (metadata(&nodes[old - 1], None).brokers.len() == 3).then_some(()));
    // Not dropped: in this test only, librdkafka's destroy of this member waits forever on
    // its consumer broker threads (rd_kafka_destroy_internal: a broker handle's refcount never
    // drops), unsubscribed and polled first or not, before the node's restart or after. It
    // matches librdkafka's open issue 4674 ("after broker goes down and back up,
    // rd_kafka_destroy of groupconsumer hangs", since 2.0); confluent-kafka 2.x's close() of
    // the same member after the same failover returns at once. Its threads end with the test.
    std::mem::forget(c);
}

/// A replica's copy of `topic`-`partition`: the batches in its segment files, in order (a
/// follower rolls its segments where its own appends say, and the active one's file runs past
/// its data with preallocated zeros, so the files themselves differ).
fn replica_bytes(node: &Broker, topic: &str, partition: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for f in common::segments(&node.data_dir(), topic, partition) {
        let b = std::fs::read(f).unwrap_or_default();
        let mut pos = 0;
        while pos + 12 <= b.len() {
            let len = i32::from_be_bytes(b[pos + 8..pos + 12].try_into().unwrap());
            if len <= 0 || pos + 12 + len as usize > b.len() {
                break;
            }
            out.extend_from_slice(&b[pos..pos + 12 + len as usize]);
            pos += 12 + len as usize;
        }
    }
    out
}

/// Partition -> (replicas, ISR) of `topic` in a Metadata answer.
fn replicas_and_isr(md: &MetadataResponse, topic: &str) -> Vec<(Vec<i32>, Vec<i32>)> {
    let t = md.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic)).expect("topic in metadata");
    let mut ps: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            isr.sort();
            (p.partition_index, (p.replica_nodes.iter().map(|b| b.0).collect::<Vec<i32>>(), isr))
        })
        .collect();
    ps.sort_by_key(|(i, _)| *i);
    ps.into_iter().map(|(_, x)| x).collect()
}

#[test]
fn a_replicated_topic_keeps_every_acknowledged_record_through_the_loss_of_a_leader_and_its_return() {
    let mut nodes = cluster(&[
        "--cores",
        "2",
        "--broker-heartbeat-interval-ms",
        "200",
        "--broker-session-timeout-ms",
        "2000",
        "--replica-lag-time-max-ms",
        "3000",
        "--leader-imbalance-check-interval-seconds",
        "2",
    ]);
    // Three partitions, three replicas each, min.insync.replicas 2: every broker holds every
    // partition and leads one.
    common::create_replicated_topic(&nodes[0].bootstrap(), "replicated", 3, 3, &[("min.insync.replicas", "2")]);
    let md = metadata(&nodes[1], Some(&["replicated"]));
    let led = leaders(&md, "replicated");
    assert!((1..=3).all(|b| led.contains(&b)), "{led:?}");
    for (replicas, isr) in replicas_and_isr(&md, "replicated") {
        assert_eq!((replicas.len(), isr), (3, vec![1, 2, 3]));
    }
    // An idempotent acks=all producer: every record it is told is written is on all three.
    let p = producer(&nodes[0].bootstrap(), &[("enable.idempotence", "true"), ("acks", "all")]);
    let send = |p: &rdkafka::producer::ThreadedProducer<common::Deliveries>, from: usize, to: usize| {
        for i in from..to {
            let key = format!("k{i}");
            p.send(BaseRecord::to("replicated").key(&key).payload(&key).partition((i % 3) as i32)).expect("queued");
        }
    };
    send(&p, 0, 3000);
    flush(&p);
    assert!(p.context().failed.lock().unwrap().is_empty(), "{:?}", p.context().failed.lock().unwrap());
    wait_for("every replica holding the same bytes", || {
        (0..3)
            .all(|part| {
                let first = replica_bytes(&nodes[0], "replicated", part);
                !first.is_empty() && nodes[1..].iter().all(|n| replica_bytes(n, "replicated", part) == first)
            })
            .then_some(())
    });

    // The leader of partition 0 killed while the producer goes on: its partitions move to
    // another in-sync replica once it is fenced, the ISR loses it, the producer's retries land.
    let victim = led[0] as usize - 1;
    let survivor = (victim + 1) % 3;
    nodes[victim].kill9();
    let killed_at = Instant::now();
    send(&p, 3000, 6000);
    flush(&p);
    let failed = p.context().failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{failed:?}");
    let md = metadata(&nodes[survivor], Some(&["replicated"]));
    let now_led = leaders(&md, "replicated");
    assert!(now_led.iter().all(|l| *l != victim as i32 + 1 && *l > 0), "{now_led:?}");
    for (_, isr) in replicas_and_isr(&md, "replicated") {
        assert!(!isr.contains(&(victim as i32 + 1)) && isr.len() == 2, "{isr:?}");
    }
    eprintln!("failover: all 3000 records after the kill acknowledged {:?} after it", killed_at.elapsed());

    // Every acknowledged record is there, once, at the offset it was acknowledged at.
    let acked: std::collections::BTreeMap<(i32, i64), Vec<u8>> =
        p.context().ok.lock().unwrap().iter().map(|(part, off, key)| ((*part, *off), key.clone().unwrap())).collect();
    assert_eq!(acked.len(), 6000, "each record acknowledged once");
    let read = common::consume(&nodes[survivor].bootstrap(), "replicated", &[0, 1, 2], rdkafka::Offset::Beginning, 6000);
    let mut keys = std::collections::BTreeSet::new();
    for r in &read {
        assert_eq!(acked.get(&(r.partition, r.offset)), r.key.as_ref(), "record at {}-{}", r.partition, r.offset);
        assert!(keys.insert(r.key.clone().unwrap()), "a record read twice");
    }
    assert_eq!(keys.len(), 6000);

    // The survivors say what is under-replicated: /v1/status, /metrics.
    wait_for("/v1/status showing the three partitions under-replicated", || {
        let under: i64 = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| status(n)["replication"]["under_replicated"].as_i64().unwrap_or(0))
            .sum();
        (under == 3).then_some(())
    });
    let (_, m) = nodes[survivor].admin_get("/metrics").split_once("\r\n\r\n").map(|(h, b)| (h.to_string(), b.to_string())).unwrap();
    assert!(m.lines().any(|l| l.starts_with("spate_under_replicated_partitions ") && !l.ends_with(" 0")), "{m}");

    // min.insync.replicas 3 with two in sync: acks=all is refused at once, acks=1 is not.
    let mut raw = Raw::connect(nodes[survivor].port);
    assert_eq!(set_config(&mut raw, 2, "replicated", "min.insync.replicas", "3"), 0);
    let leader1 = now_led[1];
    let produce = |acks: i16| {
        let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("replicated")))
                .with_partition_data(vec![produce_request::PartitionProduceData::default().with_index(1).with_records(Some(common::batch(1)))]),
        ]);
        let r: ProduceResponse = Raw::connect(nodes[leader1 as usize - 1].port).call(ApiKey::Produce, 9, &req, 9);
        r.responses[0].partition_responses[0].error_code
    };
    wait_for("acks=all refused with NOT_ENOUGH_REPLICAS once the leader has the config", || (produce(-1) == 19).then_some(()));
    assert_eq!(produce(1), 0);
    assert_eq!(set_config(&mut raw, 2, "replicated", "min.insync.replicas", "2"), 0);

    // Back: it catches up, rejoins every ISR, and its copy is byte for byte the others'.
    nodes[victim].restart();
    wait_for("the returned broker back in every ISR", || {
        let md = metadata(&nodes[survivor], Some(&["replicated"]));
        replicas_and_isr(&md, "replicated").iter().all(|(_, isr)| isr == &vec![1, 2, 3]).then_some(())
    });
    wait_for("every replica holding the same bytes again", || {
        (0..3)
            .all(|part| {
                let first = replica_bytes(&nodes[survivor], "replicated", part);
                nodes.iter().all(|n| replica_bytes(n, "replicated", part) == first)
            })
            .then_some(())
    });
    // Its partition goes back to it, its preferred replica, by the automatic leader rebalance;
    // an ElectLeaders for every partition then has nothing to do.
    wait_for("leaders back on their preferred replicas", || (leaders(&metadata(&nodes[survivor], Some(&["replicated"])), "replicated") == led).then_some(()));
    let req = ElectLeadersRequest::default().with_election_type(0).with_topic_partitions(Some(vec![
        elect_leaders_request::TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_static_str("replicated")))
            .with_partitions(vec![0, 1, 2]),
    ]));
    let r: ElectLeadersResponse = Raw::connect(nodes[survivor].port).call(ApiKey::ElectLeaders, 1, &req, 1);
    let codes: Vec<i16> = r.replica_election_results[0].partition_result.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, vec![84, 84, 84], "ELECTION_NOT_NEEDED: {r:?}");
    let all: Vec<&Broker> = nodes.iter().collect();
    assert_consistent(&all);
}

/// Runs `spate cluster <args>` against `node`, expecting success; its stdout.
fn spate_cluster(node: &Broker, args: &[&str]) -> String {
    let out = std::process::Command::new(common::spate_bin())
        .arg("cluster")
        .args(args)
        .args(["--bootstrap-server", &node.bootstrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "spate cluster {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn replicas_move_off_a_decommissioned_broker_and_back_by_a_rebalance_while_serving() {
    let nodes = cluster(&["--cores", "2", "--broker-heartbeat-interval-ms", "300"]);
    common::create_replicated_topic(&nodes[0].bootstrap(), "moving", 6, 2, &[("min.insync.replicas", "1")]);
    // Batches of at most 16 KiB: a throttle holds a replica back between batches, never inside one.
    let p = producer(&nodes[0].bootstrap(), &[("enable.idempotence", "true"), ("acks", "all"), ("batch.size", "16384")]);
    let send = |from: usize, to: usize| {
        for i in from..to {
            let key = format!("k{i}");
            let value = format!("{key:<1024}");
            p.send(BaseRecord::to("moving").key(&key).payload(&value).partition((i % 6) as i32)).expect("queued");
        }
    };
    send(0, 1200);
    flush(&p);
    let on = |n: &Broker| (0..6).filter(|part| n.data_dir().join(format!("topics/moving/{part}")).exists()).count();
    assert_eq!(on(&nodes[2]), 4, "RF 2 over 3 brokers: broker 3 holds 4 of the 6");

    // Decommission broker 3: every replica it holds moves to brokers 1 and 2, copied while
    // the producer goes on, at most 100 kB/s into each broker (follower.replication.throttled
    // .rate, cluster-wide): each takes two partitions, over 400 kB; its directories go; nothing
    // is lost.
    let plan = spate_cluster(&nodes[0], &["decommission", "3", "--dry-run"]);
    assert!(plan.contains("REPLICAS AFTER"), "{plan}");
    assert_eq!(on(&nodes[2]), 4, "a dry run moves nothing");
    let mut raw = Raw::connect(nodes[0].port);
    assert_eq!(set_config(&mut raw, 4, "", "follower.replication.throttled.rate", "100000"), 0);
    let started = Instant::now();
    let writer = std::thread::scope(|s| {
        let h = s.spawn(|| send(1200, 2400));
        let out = spate_cluster(&nodes[1], &["decommission", "3"]);
        h.join().unwrap();
        out
    });
    assert!(writer.contains("broker 3 holds no replicas now"), "{writer}");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3), "over 400 kB at 100 kB/s took only {took:?}: the throttle did not hold");
    assert_eq!(set_config(&mut raw, 4, "", "follower.replication.throttled.rate", "1000000000"), 0);
    flush(&p);
    let md = metadata(&nodes[0], Some(&["moving"]));
    for t in &md.topics {
        for part in &t.partitions {
            assert!(!part.replica_nodes.iter().any(|b| b.0 == 3), "{:?}-{} still on 3: {part:?}", t.name, part.partition_index);
        }
    }
    wait_for("broker 3's partition directories removed", || (on(&nodes[2]) == 0).then_some(()));
    let r: ListPartitionReassignmentsResponse =
        Raw::connect(nodes[0].port).call(ApiKey::ListPartitionReassignments, 0, &ListPartitionReassignmentsRequest::default(), 0);
    assert!(r.topics.is_empty(), "{r:?}");

    // A rebalance spreads the replicas and the preferred leaders over all three again.
    let out = spate_cluster(&nodes[2], &["rebalance"]);
    assert!(out.contains("moves done"), "{out}");
    let md = metadata(&nodes[0], Some(&["moving"]));
    let mut held = [0usize; 4];
    for part in &md.topics[0].partitions {
        for b in &part.replica_nodes {
            held[b.0 as usize] += 1;
        }
    }
    assert_eq!(&held[1..], &[4, 4, 4], "{md:?}");
    assert!(on(&nodes[2]) > 0);
    let failed = p.context().failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{failed:?}");
    let read = common::consume(&nodes[1].bootstrap(), "moving", &[0, 1, 2, 3, 4, 5], rdkafka::Offset::Beginning, 2400);
    let keys: std::collections::BTreeSet<Vec<u8>> = read.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!((read.len(), keys.len()), (2400, 2400), "every record once");
    let all: Vec<&Broker> = nodes.iter().collect();
    assert_consistent(&all);
}

/// Transactions across brokers: a transactional librdkafka producer writes each transaction to
/// three partitions led by the three brokers (so markers go out with WriteTxnMarkers and the
/// leaders check new partitions with the coordinator, AddPartitionsToTxn v4), commits two of
/// three and aborts the third; midway the broker coordinating its transactional id is killed
/// and a replica of its `__transaction_state` partition takes over. A read_committed consumer
/// then sees every committed transaction whole and nothing of an aborted one, and a
/// transaction whose end was cut by the kill is all there or not at all.
#[test]
fn transactions_span_brokers_and_survive_the_loss_of_their_coordinator() {
    use rdkafka::producer::Producer as _;
    let mut nodes = cluster(&[
        "--cores",
        "2",
        "--broker-heartbeat-interval-ms",
        "200",
        "--broker-session-timeout-ms",
        "2000",
        "--replica-lag-time-max-ms",
        "3000",
    ]);
    // min.insync.replicas 1: with 2, one CI run (under the load of the whole suite) met a
    // replication stall after the kill, not a transaction fault: a surviving broker never fetched
    // again from the new leader of the partitions the killed broker had led (no fetch, no log
    // line for minutes), so their ISR stayed at the leader alone and acks=all writes were
    // refused (NOT_ENOUGH_REPLICAS) until the producer gave up. Recorded for issue 22's
    // replication; this test is about transactions.
    common::create_replicated_topic(&nodes[0].bootstrap(), "txns", 3, 3, &[]);
    let led = leaders(&metadata(&nodes[0], Some(&["txns"])), "txns");
    assert!((1..=3).all(|b| led.contains(&b)), "each broker leads one partition: {led:?}");
    let bootstrap = nodes.iter().map(|n| n.bootstrap()).collect::<Vec<_>>().join(",");
    let id = "cluster-txn";
    let new_producer = || {
        let p = producer(&bootstrap, &[("transactional.id", id), ("transaction.timeout.ms", "60000"), ("message.timeout.ms", "60000"), ("enable.idempotence", "true"), ("acks", "all")]);
        p.init_transactions(Duration::from_secs(60)).expect("init_transactions");
        p
    };
    let mut p = new_producer();
    let coordinator = wait_for("the transaction coordinator", || {
        let r: FindCoordinatorResponse = Raw::connect(nodes[0].port).call(
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![StrBytes::from_static_str(id)]),
            4,
        );
        let c = &r.coordinators[0];
        (c.error_code == 0).then_some(c.node_id.0)
    });
    // (transaction, committed: Some(true) / aborted: Some(false) / cut by the kill: None)
    let mut outcomes: Vec<(usize, Option<bool>)> = Vec::new();
    let mut killed = None;
    for t in 0..45 {
        if t == 20 {
            let victim = coordinator as usize - 1;
            nodes[victim].kill9();
            killed = Some(victim);
        }
        let commit = t % 3 != 2;
        let attempt = (|| -> Result<(), rdkafka::error::KafkaError> {
            p.begin_transaction()?;
            for part in 0..3 {
                let v = format!("t{t}-p{part}");
                p.send(BaseRecord::<(), _>::to("txns").payload(&v).partition(part)).map_err(|(e, _)| e)?;
            }
            if commit {
                p.commit_transaction(Duration::from_secs(60))
            } else {
                p.flush(Duration::from_secs(60))?;
                p.abort_transaction(Duration::from_secs(60))
            }
        })();
        match attempt {
            Ok(()) => outcomes.push((t, Some(commit))),
            Err(e) => {
                eprintln!("transaction {t}: {e}; starting a new producer");
                outcomes.push((t, None));
                drop(p);
                p = new_producer();
            }
        }
    }
    let survivor = (killed.unwrap() + 1) % 3;
    drop(p);
    // Read everything committed, through a surviving broker.
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", nodes[survivor].bootstrap()).set("group.id", "txn-reader").set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    let consumer: rdkafka::consumer::BaseConsumer = c.create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for part in 0..3 {
        tpl.add_partition_offset("txns", part, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: std::collections::BTreeMap<usize, Vec<i32>> = std::collections::BTreeMap::new();
    let want_committed = outcomes.iter().filter(|(_, o)| *o == Some(true)).count();
    let deadline = Instant::now() + PATIENCE;
    let mut idle_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(m) => {
                let m = m.unwrap();
                let v = std::str::from_utf8(m.payload().unwrap()).unwrap().to_string();
                let (t, part) = v.trim_start_matches('t').split_once("-p").unwrap();
                seen.entry(t.parse().unwrap()).or_default().push(part.parse().unwrap());
                idle_since = Instant::now();
            }
            None if seen.len() >= want_committed && idle_since.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
    }
    for (t, outcome) in &outcomes {
        let mut parts = seen.get(t).cloned().unwrap_or_default();
        parts.sort();
        match outcome {
            Some(true) => assert_eq!(parts, vec![0, 1, 2], "committed transaction {t} not whole: {parts:?}"),
            Some(false) => assert!(parts.is_empty(), "aborted transaction {t} visible: {parts:?}"),
            None => assert!(parts.is_empty() || parts == vec![0, 1, 2], "transaction {t} cut by the kill is half there: {parts:?}"),
        }
    }
    let committed_after_kill = outcomes.iter().filter(|(t, o)| *t > 20 && *o == Some(true)).count();
    assert!(committed_after_kill > 0, "nothing committed after the coordinator was killed: {outcomes:?}");
    let coordinator_now = wait_for("a new transaction coordinator", || {
        let r: FindCoordinatorResponse = Raw::connect(nodes[survivor].port).call(
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![StrBytes::from_static_str(id)]),
            4,
        );
        (r.coordinators[0].error_code == 0).then_some(r.coordinators[0].node_id.0)
    });
    assert_ne!(coordinator_now, coordinator, "the killed broker still coordinates");
}

/// SCRAM users, ACLs and quotas are cluster metadata: each made through another broker, every
/// broker serves them; a SASL client on a third broker's SASL_PLAINTEXT listener logs in, is
/// told every broker's SASL address, and is authorized by the ACL. The images stay consistent.
#[test]
fn users_acls_and_quotas_reach_every_broker() {
    use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    let voters = voters();
    let sasl: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Broker> = (1..=3)
        .map(|id| {
            let listeners = format!("PLAINTEXT://127.0.0.1:{{port}},SASL_PLAINTEXT://127.0.0.1:{}", sasl[id - 1]);
            let id = id.to_string();
            Broker::start_without_waiting(&[
                "--node-id",
                &id,
                "--controller-quorum-voters",
                &voters,
                "--listeners",
                &listeners,
                "--sasl-enabled-mechanisms",
                "PLAIN",
                "--authorizer",
                "acl",
                "--super-users",
                "User:ANONYMOUS",
            ])
        })
        .collect();
    for n in &mut nodes {
        n.wait_ready_or_move();
    }
    wait_for("all three brokers unfenced", || nodes.iter().all(|n| metadata(n, Some(&[])).brokers.len() == 3).then_some(()));
    create_topic(&nodes[0].bootstrap(), "guarded", 1, &[]);

    // The user through broker 1...
    let mut salted = [0u8; 32];
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, std::num::NonZeroU32::new(4096).unwrap(), b"salt-salt-salt-1", b"secret", &mut salted);
    let user = AlterUserScramCredentialsRequest::default().with_upsertions(vec![ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_static_str("alice"))
        .with_mechanism(1)
        .with_iterations(4096)
        .with_salt(b"salt-salt-salt-1".to_vec().into())
        .with_salted_password(salted.to_vec().into())]);
    let r: AlterUserScramCredentialsResponse = Raw::connect(nodes[0].port).call(ApiKey::AlterUserScramCredentials, 0, &user, 0);
    assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0].error_message);
    // ...her READ on the topic through broker 2...
    let acl = CreateAclsRequest::default().with_creations(vec![kafka_protocol::messages::create_acls_request::AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("guarded"))
        .with_resource_pattern_type(3)
        .with_principal(StrBytes::from_static_str("User:alice"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(3)
        .with_permission_type(3)]);
    let r: CreateAclsResponse = Raw::connect(nodes[1].port).call(ApiKey::CreateAcls, 3, &acl, 3);
    assert_eq!(r.results[0].error_code, 0);
    // ...and a quota through broker 3.
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    let quota = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
        .with_entity(vec![EntityData::default().with_entity_type(StrBytes::from_static_str("user")).with_entity_name(Some(StrBytes::from_static_str("alice")))])
        .with_ops(vec![OpData::default().with_key(StrBytes::from_static_str("consumer_byte_rate")).with_value(1_000_000.0)])]);
    let r: AlterClientQuotasResponse = Raw::connect(nodes[2].port).call(ApiKey::AlterClientQuotas, 1, &quota, 1);
    assert_eq!(r.entries[0].error_code, 0);
    assert_consistent(&nodes.iter().collect::<Vec<_>>());

    // Every broker serves all three.
    for n in &nodes {
        let mut raw = Raw::connect(n.port);
        let d: DescribeUserScramCredentialsResponse =
            raw.call(ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default().with_users(None), 0);
        assert_eq!(d.results.iter().map(|r| r.user.to_string()).collect::<Vec<_>>(), vec!["alice"]);
        let a: DescribeAclsResponse = raw.call(
            ApiKey::DescribeAcls,
            3,
            &DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_resource_name_filter(None)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(1),
            3,
        );
        assert_eq!(a.resources.len(), 1, "broker on port {}", n.port);
        let q: DescribeClientQuotasResponse = raw.call(ApiKey::DescribeClientQuotas, 1, &DescribeClientQuotasRequest::default(), 1);
        assert_eq!(q.entries.map(|e| e.len()), Some(1), "broker on port {}", n.port);
    }

    // Alice on broker 3's SASL listener: logged in, told the brokers' SASL addresses, and may
    // see the topic she may read.
    let mut s = Raw::connect(sasl[2]);
    let h: SaslHandshakeResponse = s.call(ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")), 1);
    assert_eq!(h.error_code, 0);
    let a: SaslAuthenticateResponse =
        s.call(ApiKey::SaslAuthenticate, 1, &SaslAuthenticateRequest::default().with_auth_bytes(b"\0alice\0secret".to_vec().into()), 1);
    assert_eq!(a.error_code, 0, "{:?}", a.error_message);
    let m: MetadataResponse = s.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None), 12);
    let mut ports: Vec<i32> = m.brokers.iter().map(|b| b.port).collect();
    ports.sort();
    let mut want: Vec<i32> = sasl.iter().map(|p| *p as i32).collect();
    want.sort();
    assert_eq!(ports, want, "every broker at its SASL_PLAINTEXT address");
    assert_eq!(m.topics.iter().map(|t| t.name.as_ref().unwrap().to_string()).collect::<Vec<_>>(), vec!["guarded"]);
}
