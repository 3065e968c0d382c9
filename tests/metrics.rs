//! The admin HTTP endpoints: `/metrics` is valid Prometheus exposition (checked with Debian's
//! `promtool` when it is installed) and its counters move with traffic; health, readiness,
//! status and config answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{consume, dashboard_metrics, flush, metric_families, producer, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

/// GET `path` from the admin port: (status, body).
fn get(broker: &Broker, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", broker.admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn metrics_move_with_traffic_and_pass_promtool() {
    let broker = Broker::start(&[]);
    assert_eq!(get(&broker, "/v1/health"), (200, "ok\n".to_string()));
    assert_eq!(get(&broker, "/v1/ready"), (200, "ready\n".to_string()));
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..500 {
        p.send(BaseRecord::to("measured").key("k").payload(&format!("value-{i}"))).unwrap();
    }
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap().len(), 500);
    assert_eq!(consume(&broker.bootstrap(), "measured", &[0], Offset::Beginning, 500).len(), 500);
    // An error answered by an API other than Produce and Fetch is counted by its Kafka name.
    let again = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("measured")))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = Raw::connect(broker.port).call(ApiKey::CreateTopics, 7, &again, 7);
    assert_eq!(r.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    // Gauges are published once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let (status, m) = get(&broker, "/metrics");
        assert_eq!(status, 200);
        if sample(&m, "spate_partition_log_end_offset{topic=\"measured\",partition=\"0\"}") == Some(500.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "log end offset never reached 500:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let produced: f64 = m
        .lines()
        .filter(|l| l.starts_with("spate_produced_records_total{") && l.contains("topic=\"measured\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(produced, 500.0, "{m}");
    assert!(m.lines().any(|l| l.starts_with("spate_requests_total{api=\"Produce\"")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("spate_fetched_bytes_total{topic=\"measured\"")), "{m}");
    let fsyncs: f64 = m
        .lines()
        .filter(|l| l.starts_with("spate_fsync_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(fsyncs > 0.0, "acks=all fsyncs: {m}");
    assert_eq!(sample(&m, "spate_errors_total{api=\"CreateTopics\",code=\"TOPIC_ALREADY_EXISTS\"}"), Some(1.0), "{m}");
    // Memory by pool and the rings' queue depth, on every core.
    for core in 0..2 {
        for pool in ["cache", "requests"] {
            let line = format!("spate_core_memory_bytes{{core=\"{core}\",pool=\"{pool}\"}}");
            assert!(sample(&m, &line).is_some(), "{line} missing: {m}");
        }
        assert!(sample(&m, &format!("spate_core_io_in_flight_peak{{core=\"{core}\"}}")).is_some(), "{m}");
    }
    assert!(sample(&m, "spate_process_resident_memory_bytes").unwrap_or(0.0) > 1e6, "{m}");
    // promtool (Debian package prometheus) parses the exposition; scripts/test installs it.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "promtool check metrics failed:\n{text}");
        }
        Err(_) if std::env::var("CI").is_err() => eprintln!("promtool not installed; exposition not checked by it"),
        Err(e) => panic!("promtool is required under CI: {e}"),
    }
    let (status, body) = get(&broker, "/v1/status");
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["cores"], 2);
    assert_eq!(status["ready"], true);
    assert!(status["topics"].as_array().unwrap().iter().any(|t| t == "measured"), "{body}");
    let (status, body) = get(&broker, "/v1/config");
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["log.flush.interval.messages"], "1");
    assert_eq!(get(&broker, "/nope").0, 404);
}

#[test]
fn the_grafana_dashboard_only_uses_metrics_the_broker_exports() {
    let broker = Broker::start(&[]);
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    p.send(BaseRecord::to("dash").key("k").payload("v")).unwrap();
    flush(&p);
    std::thread::sleep(Duration::from_millis(1200)); // gauges are published every second
    let (_, m) = get(&broker, "/metrics");
    let families = metric_families(&m);
    let mut checked = 0;
    for (panel, family) in dashboard_metrics() {
        if family.starts_with("spate_quorum_") || family.starts_with("spate_cluster_") {
            continue; // only nodes of a cluster export them: tests/cluster.rs checks those
        }
        assert!(families.contains(family.as_str()), "panel {panel:?} uses {family}, which /metrics does not export");
        checked += 1;
    }
    assert!(checked > 20);
}

/// GET `path`: its status, or `None` while nothing listens on the admin port.
fn try_status(broker: &Broker, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", broker.admin_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn ready_is_503_while_recovering_after_a_crash_and_200_once_clients_are_served() {
    let mut broker = Broker::start(&[]);
    // Enough partitions that recovering them after a crash takes a while to watch.
    let mut raw = Raw::connect(broker.port);
    for t in 0..4 {
        let create = CreateTopicsRequest::default().with_timeout_ms(60_000).with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(format!("many-{t}"))))
            .with_num_partitions(500)
            .with_replication_factor(1)]);
        let r: CreateTopicsResponse = raw.call(ApiKey::CreateTopics, 7, &create, 7);
        assert_eq!(r.topics[0].error_code, 0);
    }
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..2000 {
        p.send(BaseRecord::to("many-0").partition(i % 500).key("k").payload("v")).unwrap();
    }
    flush(&p);
    drop(p);
    broker.restart_without_waiting();
    // Watch health and readiness from the first moment the admin port answers.
    let started = Instant::now();
    let mut seen: Vec<(u16, u16)> = Vec::new();
    loop {
        let (Some(health), Some(ready)) = (try_status(&broker, "/v1/health"), try_status(&broker, "/v1/ready")) else {
            assert!(started.elapsed() < Duration::from_secs(300), "the admin port never answered");
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        if seen.last() != Some(&(health, ready)) {
            seen.push((health, ready));
        }
        if ready == 200 {
            break;
        }
        // A hang guard, not a speed check: recovering 2,000 partitions after a crash takes from
        // seconds to a minute or more, with the machine's disk.
        assert!(started.elapsed() < Duration::from_secs(300), "never ready: {seen:?}\n{}", broker.log());
    }
    eprintln!("health/ready during recovery: {seen:?}, ready after {:?}", started.elapsed());
    assert_eq!(seen.first(), Some(&(200, 503)), "live but not ready while recovering: {seen:?}");
    assert_eq!(seen.last(), Some(&(200, 200)));
    assert!(broker.log().contains("recovering after a crash"), "{}", broker.log());
    // Ready means served: the records are all there.
    broker.wait_ready();
    let got = consume(&broker.bootstrap(), "many-0", &(0..500).collect::<Vec<_>>(), Offset::Beginning, 2000);
    assert_eq!(got.len(), 2000);
}
