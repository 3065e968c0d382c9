//! Micro-benchmarks of the hot paths, so a regression shows up without a full end-to-end run
//! (`perf/` holds those). Run with `cargo bench --bench hot_paths` (criterion; add a filter such
//! as `-- produce` for one group). `cargo test --benches` runs each once, as a smoke test.
//!
//! - `produce/*`: what the connection's core does with a Produce request before the append:
//!   frame and body decode, splitting the record set into batches with their CRC-32C checked,
//!   the same plus carving the batches out of the frame (`decode_check_own`, the handler's path),
//!   and patching the offsets into a batch header;
//! - `append/*`: `PartitionLog::append` of one batch on a real O_DIRECT segment file in the
//!   current directory's filesystem (acks=1: the write, no fdatasync);
//! - `fetch/encode_shared` and `fetch/encode_copying`: building and encoding a Fetch response
//!   around record bytes, as the broker does (records by reference) and into one buffer;
//! - `index/position_for`: the offset index lookup of a fetch from disk;
//! - `mesh/hop`: one cross-core `invoke_on` round trip between two pinned executors;
//! - `acl/authorize`: one authorization among 10,000 ACL bindings (5,000 literal, 5,000
//!   prefixed topic bindings of 1,000 principals), allowed and denied (issue 24; the authorizer
//!   is not yet consulted by requests).

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use spate::config::{Config, ServeArgs, TopicConfig};
use spate::io::mesh::{Mesh, MeshSeed};
use spate::io::rt;
use spate::protocol::batch;
use spate::protocol::frame;
use spate::storage::index::SegmentIndex;
use spate::storage::log::PartitionLog;
use spate::sync::Notify;

/// A batch of `n` records of `size` bytes each (no key), as a client builds it.
fn records(n: usize, size: usize) -> Bytes {
    let value = Bytes::from(vec![b'x'; size]);
    let recs: Vec<(Option<Bytes>, Option<Bytes>)> = (0..n).map(|_| (None, Some(value.clone()))).collect();
    batch::build(&recs, 1_700_000_000_000)
}

/// A whole Produce v9 request frame (size prefix stripped, as the connection hands it on).
fn produce_frame(batch: &Bytes) -> Bytes {
    let req = ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("bench")))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.clone()))])]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, ApiKey::Produce.request_header_version(9)).unwrap();
    req.encode(&mut buf, 9).unwrap();
    buf.freeze()
}

fn produce(c: &mut Criterion) {
    let mut g = c.benchmark_group("produce");
    for (n, size) in [(100usize, 100usize), (16, 1024)] {
        let batch = records(n, size);
        let frame = produce_frame(&batch);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(format!("decode_and_check/{n}x{size}B"), |b| {
            b.iter(|| {
                let (key, header, mut body) = frame::decode_request(frame.clone()).unwrap();
                let req = RequestKind::decode(key, &mut body, header.request_api_version).unwrap();
                let RequestKind::Produce(req) = req else { unreachable!() };
                let records = req.topic_data[0].partition_data[0].records.as_ref().unwrap();
                batch::split(records).unwrap()
            })
        });
        g.bench_function(format!("decode_check_own/{n}x{size}B"), |b| {
            b.iter_batched(
                // A frame of its own each time, as the connection reads it.
                || Bytes::copy_from_slice(&frame),
                |frame| {
                    let (_, header, mut body) = frame::decode_request(frame).unwrap();
                    let whole = body.clone();
                    let mut req = ProduceRequest::decode(&mut body, header.request_api_version).unwrap();
                    drop(body);
                    let records = req.topic_data[0].partition_data[0].records.take().unwrap();
                    let batches = batch::split(&records).unwrap();
                    drop((records, req));
                    batch::own_batches(whole, vec![batches])
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("patch_header/{n}x{size}B"), |b| {
            b.iter_batched_ref(
                || batch.to_vec(),
                |bytes| batch::patch(bytes, 12_345, 0, None),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(20);
    for (n, size) in [(100usize, 100usize), (16, 1024)] {
        let batch = records(n, size);
        let header = batch::validate(&batch).unwrap();
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_function(format!("acks1/{n}x{size}B"), |b| {
            b.iter_custom(|iters| {
                let (batch, header) = (batch.clone(), header.clone());
                rt::run_local(async move {
                    // In the current directory: a real filesystem (a temp dir may be tmpfs).
                    let dir = tempfile::tempdir_in(".").unwrap();
                    let c = Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).unwrap();
                    let config = TopicConfig::resolve(&c.topic_defaults, &Default::default()).unwrap();
                    let log = PartitionLog::open(dir.path().join("p"), config, Rc::new(Notify::default())).await.unwrap();
                    let one = [(batch, header)];
                    let started = Instant::now();
                    for _ in 0..iters {
                        log.append(&one, false).await.unwrap();
                    }
                    let took = started.elapsed();
                    log.close().await.unwrap();
                    took
                })
            })
        });
    }
    g.finish();
}

fn fetch(c: &mut Criterion) {
    let mut g = c.benchmark_group("fetch");
    for partitions in [1usize, 6] {
        let data = records(1000, 1024); // ~1 MiB per partition
        g.throughput(Throughput::Bytes((data.len() * partitions) as u64));
        let response = || {
            let mut resp = FetchResponse::default();
            let mut t = FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_static_str("bench")));
            for p in 0..partitions as i32 {
                t.partitions.push(
                    PartitionData::default()
                        .with_partition_index(p)
                        .with_high_watermark(1000)
                        .with_last_stable_offset(1000)
                        .with_records(Some(data.clone())),
                );
            }
            resp.responses.push(t);
            resp
        };
        // What the broker sends: records by reference.
        g.bench_function(format!("encode_shared/{partitions}x1MiB"), |b| {
            b.iter(|| frame::encode_fetch_response(11, 7, &response()).unwrap())
        });
        // The same response encoded into one buffer (records copied), as before.
        g.bench_function(format!("encode_copying/{partitions}x1MiB"), |b| {
            b.iter(|| frame::encode_response(ApiKey::Fetch, 11, 7, &ResponseKind::Fetch(response())).unwrap())
        });
    }
    g.finish();
}

fn index(c: &mut Criterion) {
    let mut idx = SegmentIndex::default();
    // A 1 GiB segment of 16 KiB batches with an entry every 4 KiB of log (the default interval).
    for i in 0..65_536u32 {
        idx.add(i * 16, i * 16_384, 1_700_000_000_000 + i as i64);
    }
    let mut probe = 0u32;
    c.bench_function("index/position_for/65536_entries", |b| {
        b.iter(|| {
            probe = (probe + 7919) % (65_536 * 16);
            idx.position_for(probe)
        })
    });
}

fn mesh(c: &mut Criterion) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("mesh/hop needs two CPUs; skipped");
        return;
    }
    let mut g = c.benchmark_group("mesh");
    g.sample_size(20);
    g.bench_function("hop/round_trip", |b| {
        b.iter_custom(|iters| {
            let took = Arc::new(Mutex::new(Duration::ZERO));
            let seed = Arc::new(MeshSeed::new(2));
            let out = took.clone();
            let (stop_tx, stop_rx) = flume::bounded::<()>(1);
            rt::run_pinned(2, move || {
                let (seed, out, stop_tx, stop_rx) = (seed.clone(), out.clone(), stop_tx.clone(), stop_rx.clone());
                async move {
                    let mesh = Mesh::join(&seed).await?;
                    mesh.serve();
                    if mesh.core() == 0 {
                        let started = Instant::now();
                        for _ in 0..iters {
                            mesh.invoke_on(1, || async {}).await;
                        }
                        *out.lock().unwrap() = started.elapsed();
                        let _ = stop_tx.send_async(()).await;
                    } else {
                        let _ = stop_rx.recv_async().await;
                    }
                    mesh.close();
                    Ok(())
                }
            })
            .unwrap();
            let took = *took.lock().unwrap();
            took
        })
    });
    g.finish();
}

fn acl(c: &mut Criterion) {
    use spate::server::acl::{Acls, Binding, Operation, PatternType, Request, ResourceType};
    let mut acls = Acls::new(vec!["User:admin".into()], false);
    for i in 0..10_000 {
        let literal = i % 2 == 0;
        acls.add(Binding {
            resource_type: ResourceType::Topic,
            name: if literal { format!("team{}-topic{i}", i % 100) } else { format!("team{}-app{}-", i % 100, i % 37) },
            pattern: if literal { PatternType::Literal } else { PatternType::Prefixed },
            principal: format!("User:u{}", i % 1_000),
            host: "*".into(),
            operation: if i % 3 == 0 { Operation::Write } else { Operation::Read },
            allow: true,
        });
    }
    assert_eq!(acls.len(), 10_000);
    let mut g = c.benchmark_group("acl");
    g.bench_function("authorize/10000_bindings/allowed", |b| {
        let r = Request { principal: "User:u4", host: "10.1.2.3", operation: Operation::Read, resource_type: ResourceType::Topic, name: "team4-topic4" };
        assert!(acls.authorize(&r));
        b.iter(|| acls.authorize(&r))
    });
    g.bench_function("authorize/10000_bindings/prefixed_allowed", |b| {
        let r = Request { principal: "User:u1", host: "10.1.2.3", operation: Operation::Describe, resource_type: ResourceType::Topic, name: "team1-app1-orders" };
        assert!(acls.authorize(&r));
        b.iter(|| acls.authorize(&r))
    });
    g.bench_function("authorize/10000_bindings/denied", |b| {
        let r = Request { principal: "User:u9", host: "10.1.2.3", operation: Operation::Write, resource_type: ResourceType::Topic, name: "team4-topic4" };
        assert!(!acls.authorize(&r));
        b.iter(|| acls.authorize(&r))
    });
    g.finish();
}

criterion_group!(benches, produce, append, fetch, index, mesh, acl);
criterion_main!(benches);
