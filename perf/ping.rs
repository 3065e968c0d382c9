//! Request round trips, one at a time on one connection: the broker's per-request cost, which
//! decides small-request latency (issue 4, "the runtime's per-request cost"). The request is
//! encoded once and sent again and again; each response is read whole before the next request
//! goes out. Reports the round-trip time (HdrHistogram, microseconds), round trips per second, and
//! the CPU both sides spent per round trip: the client's own thread (getrusage) and, with
//! `--broker-pid`, the broker process (/proc/PID/stat, all its threads).
//!
//! cargo run --release --example ping -- --bootstrap 127.0.0.1:9092 --request produce --cpu 1 --broker-pid PID
//!
//! Requests: `api-versions` (no storage at all: the network path and the runtime), `metadata`,
//! `produce` (acks=1, one record of `--size` bytes to partition 0 of `--topic`: the append path,
//! an O_DIRECT write per request) and `fetch` (max.wait 0 at the last record of partition 0,
//! which the broker serves from memory). Pin the client (`--cpu`) away from the broker's core.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

#[path = "cpu.rs"]
mod cpu;
use cpu::{pin, thread_cpu};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// api-versions, metadata, produce or fetch.
    #[arg(long, default_value = "api-versions")]
    request: String,
    #[arg(long, default_value = "ping")]
    topic: String,
    /// Record value size in bytes (produce, and the record fetch reads).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Round trips measured.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Round trips sent first and not measured.
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Pin this (the only) client thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// The broker's process id, to measure its CPU time per round trip.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Wait this long between round trips (0: back to back). A pause lets the broker go idle,
    /// as a lightly loaded connection does.
    #[arg(long, default_value_t = 0)]
    gap_us: u64,
    /// A label for the output.
    #[arg(long, default_value = "")]
    label: String,
    #[arg(long)]
    json: bool,
}

fn frame<Q: Encodable + HeaderVersion>(key: ApiKey, version: i16, req: &Q) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("spate-ping")));
    let mut body = BytesMut::new();
    header.encode(&mut body, Q::header_version(version)).unwrap();
    req.encode(&mut body, version).unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce(args: &Args) -> Bytes {
    let value = Bytes::from(vec![b'x'; args.size]);
    let batch = spate::protocol::batch::build(&[(None, Some(value))], 1_700_000_000_000);
    let req = ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic(&args.topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))])]);
    frame(ApiKey::Produce, 9, &req)
}

/// Sends one frame and reads the response frame whole into `buf`.
fn round_trip(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    s.write_all(req)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len) as usize;
    buf.resize(n, 0);
    s.read_exact(buf)
}

/// utime + stime of a process, all threads, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    let args = Args::parse();
    if let Some(cpu) = args.cpu {
        pin(cpu);
    }
    let mut s = TcpStream::connect(&args.bootstrap).expect("connecting");
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let request = match args.request.as_str() {
        "api-versions" => frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        "metadata" => frame(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None)),
        "produce" | "fetch" => {
            let create = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
                .with_name(topic(&args.topic))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
            round_trip(&mut s, &frame(ApiKey::CreateTopics, 5, &create), &mut buf).expect("CreateTopics");
            let p = produce(&args);
            // One record, so a fetch has something to read: the fetch asks for the last one.
            round_trip(&mut s, &p, &mut buf).expect("Produce");
            if args.request == "produce" {
                p
            } else {
                let mut body = Bytes::from(buf.clone());
                ResponseHeader::decode(&mut body, ProduceResponse::header_version(9)).expect("Produce response header");
                let r = ProduceResponse::decode(&mut body, 9).expect("Produce response");
                let last = r.responses[0].partition_responses[0].base_offset;
                let req = FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(0)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default().with_topic(topic(&args.topic)).with_partitions(vec![
                        FetchPartition::default().with_partition(0).with_fetch_offset(last).with_partition_max_bytes(1 << 20),
                    ])]);
                frame(ApiKey::Fetch, 12, &req)
            }
        }
        other => panic!("unknown --request {other}: api-versions, metadata, produce or fetch"),
    };
    for _ in 0..args.warmup {
        round_trip(&mut s, &request, &mut buf).expect("round trip");
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let ticks0 = args.broker_pid.and_then(process_ticks);
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    for _ in 0..args.count {
        if args.gap_us > 0 {
            std::thread::sleep(Duration::from_micros(args.gap_us));
        }
        let t = Instant::now();
        round_trip(&mut s, &request, &mut buf).expect("round trip");
        h.saturating_record(t.elapsed().as_nanos() as u64 / 1000);
    }
    let wall = t0.elapsed().as_secs_f64();
    let client_us = (thread_cpu() - cpu0).as_secs_f64() * 1e6 / args.count as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let broker_us = match (ticks0, args.broker_pid.and_then(process_ticks)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / hz * 1e6 / args.count as f64),
        _ => None,
    };
    let (p50, p90, p99, p999) = (h.value_at_quantile(0.5), h.value_at_quantile(0.9), h.value_at_quantile(0.99), h.value_at_quantile(0.999));
    let rate = args.count as f64 / wall;
    if args.json {
        let r = serde_json::json!({
            "label": args.label, "request": args.request, "count": args.count, "gap_us": args.gap_us,
            "mean_us": h.mean(), "p50_us": p50, "p90_us": p90, "p99_us": p99, "p999_us": p999, "max_us": h.max(),
            "round_trips_per_s": rate, "client_cpu_us": client_us, "broker_cpu_us": broker_us,
        });
        println!("{r}");
    } else {
        let broker = broker_us.map_or("n/a".into(), |u| format!("{u:.1} us"));
        println!(
            "{:<14} {:<12} mean {:>6.1} us  p50 {p50:>5} p90 {p90:>5} p99 {p99:>5} p99.9 {p999:>6} max {:>7} us  {rate:>7.0} round trips/s  CPU per round trip: client {client_us:.1} us, broker {broker}",
            args.label,
            args.request,
            h.mean(),
            h.max(),
        );
    }
}
