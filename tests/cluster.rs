//! Three real `spate serve` processes started with the same `--controller-quorum-voters` on
//! empty data directories form a metadata quorum by themselves and answer Metadata with one
//! cluster id; a fourth node whose data directory belongs to another cluster refuses to start
//! and says why. The same three register as brokers, show the quorum and each other on
//! `/v1/status` and `/metrics`, and a node stopped with SIGTERM is fenced by its controlled
//! shutdown. (The quorum's own behaviour, elections, snapshots, refusals, sessions expiring, is
//! tested in process in `src/controller/tests.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{dashboard_metrics, free_port, metric_families, Broker, Raw};
use kafka_protocol::messages::*;

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
        n.wait_ready();
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
        n.wait_ready();
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
