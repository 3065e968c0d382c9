//! Three real `spate serve` processes started with the same `--controller-quorum-voters` on
//! empty data directories form a metadata quorum by themselves and answer Metadata with one
//! cluster id; a fourth node whose data directory belongs to another cluster refuses to start
//! and says why. (The quorum's own behaviour, elections, snapshots and refusals, is tested in
//! process in `src/controller/tests.rs`.)

mod common;

use common::{free_port, Broker, Raw};
use kafka_protocol::messages::*;

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
