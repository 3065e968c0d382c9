//! Hostile clients: idle and slowloris connections, too many connections, thousands of open
//! sockets, and a client that pipelines large fetches and never reads the answers. Through all
//! of it the broker keeps serving a well-behaved librdkafka client, and its memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{consume, flush, producer, Broker, Raw};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

/// A well-behaved client still gets through: produce `n` records to `topic` and read them back.
fn round_trip(broker: &Broker, topic: &str, n: usize) {
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..n {
        p.send(BaseRecord::to(topic).key("k").payload(&i.to_string())).unwrap();
    }
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap().len(), n, "{:?}", p.context().failed.lock().unwrap());
    assert_eq!(consume(&broker.bootstrap(), topic, &[0], Offset::Beginning, n).len(), n);
}

/// Whether the broker closes `s` within `within` (EOF or reset), reading whatever it sends.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

/// `spate_connections` from the admin endpoint.
fn open_connections(broker: &Broker) -> u64 {
    broker.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("spate_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("spate_connections in /metrics")
}

#[test]
fn idle_and_slowloris_connections_are_closed_and_busy_ones_are_not() {
    let broker = Broker::start(&["--connections-max-idle-ms", "1000"]);
    let mut silent = TcpStream::connect(broker.bootstrap()).unwrap();
    let mut partial = TcpStream::connect(broker.bootstrap()).unwrap();
    partial.write_all(&[0, 0]).unwrap(); // half a length prefix, then nothing
    let mut half_frame = TcpStream::connect(broker.bootstrap()).unwrap();
    half_frame.write_all(&[0, 0, 0, 100, 0, 18, 0]).unwrap(); // a frame announced, 3 of 100 bytes sent
    for (name, s) in [("silent", &mut silent), ("partial length", &mut partial), ("partial frame", &mut half_frame)] {
        assert!(closed_within(s, Duration::from_secs(15)), "{name} connection was never closed");
    }
    assert!(broker.log().contains("closing idle connection"), "{}", broker.log());
    // A consumer long-polling over the same limit is served: its fetches keep it busy.
    round_trip(&broker, "busy", 50);
}

#[test]
fn connections_beyond_max_connections_are_closed_and_the_rest_keep_working() {
    let broker = Broker::start(&["--max-connections", "40"]);
    // The harness's readiness probe may still be counted for a moment: wait for zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_connections(&broker) != 0 {
        assert!(Instant::now() < deadline, "connections never drained");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Open connections until one is refused. Strays (a client of an earlier test reconnecting
    // to a reused port) may take a slot or two, so the count is a range, not exactly 40.
    let mut held: Vec<Raw> = Vec::new();
    let mut refused = false;
    for _ in 0..60 {
        let mut r = Raw::connect(broker.port);
        r.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        if r.read_frame().is_none() {
            refused = true;
            break;
        }
        held.push(r);
    }
    assert!(refused, "no connection was refused with max_connections 40");
    assert!((30..=40).contains(&held.len()), "{} connections were served under a limit of 40", held.len());
    assert!(broker.log().contains("too many connections"), "{}", broker.log());
    // Those already open are unaffected; closing some makes room for a real client.
    let v: ApiVersionsResponse = held[0].call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default(), 3);
    assert_eq!(v.error_code, 0);
    held.truncate(20);
    std::thread::sleep(Duration::from_millis(300));
    round_trip(&broker, "room", 20);
}

#[test]
fn thousands_of_open_connections_do_not_stop_a_real_client() {
    let broker = Broker::start(&[]);
    let conns: Vec<TcpStream> = (0..3000).map(|_| TcpStream::connect(broker.bootstrap()).unwrap()).collect();
    round_trip(&broker, "crowded", 100);
    drop(conns);
    round_trip(&broker, "crowded", 100);
}

/// Writes 40 MiB to one partition of topic `big` (batches of ~1 MiB); returns a Fetch of all of it.
fn big_topic_and_a_fetch_of_all_of_it(broker: &Broker) -> FetchRequest {
    let p = producer(&broker.bootstrap(), &[("acks", "1"), ("batch.size", "1000000"), ("linger.ms", "20")]);
    let value = vec![b'x'; 64 * 1024];
    for _ in 0..640 {
        p.send(BaseRecord::to("big").key("k").payload(&value[..])).unwrap();
    }
    flush(&p);
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("big"))).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(i32::MAX),
        ])])
}

#[test]
fn a_client_that_never_reads_its_fetches_holds_bounded_memory() {
    let broker = Broker::start(&["--cores", "1"]);
    let fetch = big_topic_and_a_fetch_of_all_of_it(&broker);
    let before = broker.rss_bytes();
    // 500 pipelined fetches of everything, never read: answered in full they would be ~20 GB.
    let mut hog = Raw::connect(broker.port);
    for _ in 0..500 {
        hog.send(ApiKey::Fetch, 11, &fetch); // small requests: they fit in the socket buffers
    }
    std::thread::sleep(Duration::from_secs(3));
    let during = broker.rss_bytes();
    round_trip(&broker, "polite", 50);
    let grown = during.saturating_sub(before);
    eprintln!("broker RSS grew by {} MiB with 500 unread fetches in the pipe", grown >> 20);
    // The connection's budget is 128 MiB; allow the allocator and page cache accounting slack.
    assert!(grown < 400 * 1024 * 1024, "broker memory grew by {} MiB", grown >> 20);
    drop(hog);
}

#[test]
fn many_clients_that_never_read_their_fetches_are_bounded_broker_wide() {
    // One core with a 32 MiB share. Each connection alone may hold 128 MiB (its own budget), so
    // 20 of them could hold 2.5 GiB without the broker-wide bound.
    let broker = Broker::start(&["--cores", "1", "--queued-max-request-bytes", "33554432", "--connections-max-idle-ms", "4000"]);
    let fetch = big_topic_and_a_fetch_of_all_of_it(&broker);
    let before = broker.rss_bytes();
    let mut hogs: Vec<Raw> = (0..20).map(|_| Raw::connect(broker.port)).collect();
    for hog in &mut hogs {
        for _ in 0..50 {
            hog.send(ApiKey::Fetch, 11, &fetch);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let during = broker.rss_bytes();
    let grown = during.saturating_sub(before);
    eprintln!("broker RSS grew by {} MiB with 20 connections of unread fetches", grown >> 20);
    // The share is 32 MiB, plus one batch (~1 MiB) per fetch in flight; without the bound this
    // grew by 326 MiB in the same two seconds (and kept growing).
    assert!(grown < 160 * 1024 * 1024, "broker memory grew by {} MiB", grown >> 20);
    assert!(common::metric_sum(&broker.metrics(), "spate_fetch_trimmed_total") > 0.0, "no fetch was trimmed to the core's budget");
    // The hogs' unread responses hold the budget until the watchdog closes them (4 s without a
    // byte written); a well-behaved client is served, at the latest once they are gone.
    round_trip(&broker, "polite", 50);
    for hog in &mut hogs {
        assert!(closed_within(hog.stream(), Duration::from_secs(30)), "a connection that never reads was left open");
    }
    assert!(broker.log().contains("has not read its responses"), "{}", broker.log());
    // Every byte comes back (the gauge is published once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric_sum(&broker.metrics(), "spate_core_memory_bytes{core=\"0\",pool=\"requests\"}") != 0.0 {
        assert!(Instant::now() < deadline, "request memory still held after every hog was closed");
        std::thread::sleep(Duration::from_millis(200));
    }
}
