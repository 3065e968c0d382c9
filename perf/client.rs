//! A neutral load client built on librdkafka (the `rdkafka` crate): produce N records of a given
//! size, then read them all back, against any Kafka-compatible bootstrap address or against
//! librdkafka's in-process mock cluster (`--mock`, the client-side ceiling).
//!
//! cargo run --release --example perf_client -- --bootstrap 127.0.0.1:9092 --records 500000 --size 1024 --acks all
//!
//! Produce latency is measured per record from `send()` to its delivery report, so it includes
//! linger.ms batching in the client; it is not end-to-end latency.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Parser, Debug)]
struct Args {
    /// Bootstrap address (ignored with --mock).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Use librdkafka's in-process mock cluster instead of a broker.
    #[arg(long)]
    mock: bool,
    #[arg(long, default_value = "perf")]
    topic: String,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: usize,
    #[arg(long, default_value = "none")]
    compression: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct Ctx {
    latencies_us: Mutex<Vec<u32>>,
    errors: Mutex<u64>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        match r {
            Ok(_) => self.latencies_us.lock().unwrap().push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Err(_) => *self.errors.lock().unwrap() += 1,
        }
    }
}

fn base_config(args: &Args) -> ClientConfig {
    let mut c = ClientConfig::new();
    if args.mock {
        c.set("test.mock.num.brokers", "1");
    } else {
        c.set("bootstrap.servers", &args.bootstrap);
    }
    c
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let mut pc = base_config(&args);
    pc.set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("compression.codec", &args.compression)
        .set("enable.idempotence", "false")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    let producer: ThreadedProducer<Ctx> = pc
        .create_with_context(Ctx { latencies_us: Mutex::new(Vec::with_capacity(args.records)), errors: Mutex::new(0) })
        .expect("creating producer");
    if !args.mock {
        let admin: AdminClient<DefaultClientContext> = base_config(&args).create().expect("admin client");
        let t = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
        let _ = futures_lite::future::block_on(admin.create_topics([&t], &AdminOptions::new()));
    }
    let payload = vec![b'x'; args.size];
    let start = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..args.records {
        let mut rec = BaseRecord::with_opaque_to(&args.topic, Box::new(Instant::now()))
            .payload(&payload[..])
            .partition((i % args.partitions as usize) as i32);
        loop {
            match producer.send::<(), _>(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        if !args.json && last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("  produced {i} records ({:.0} rec/s)", i as f64 / start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let produce_secs = start.elapsed().as_secs_f64();
    let ctx = producer.context();
    let mut lat = ctx.latencies_us.lock().unwrap().clone();
    let errors = *ctx.errors.lock().unwrap();
    lat.sort_unstable();

    // Consume everything back from the beginning (catch-up read). Not with --mock: every mock
    // client gets its own empty in-process cluster, so there is nothing to read back.
    let (got, consume_secs) = if args.mock { (0, f64::NAN) } else { consume_all(&args, errors) };

    let mb = (args.records * args.size) as f64 / 1e6;
    let r = serde_json_like(&[
        ("target", if args.mock { "librdkafka-mock".to_string() } else { args.bootstrap.clone() }),
        ("records", args.records.to_string()),
        ("size_bytes", args.size.to_string()),
        ("partitions", args.partitions.to_string()),
        ("acks", args.acks.clone()),
        ("linger_ms", args.linger_ms.to_string()),
        ("produce_rec_per_s", format!("{:.0}", args.records as f64 / produce_secs)),
        ("produce_mb_per_s", format!("{:.1}", mb / produce_secs)),
        ("produce_latency_p50_ms", format!("{:.2}", percentile(&lat, 50.0))),
        ("produce_latency_p99_ms", format!("{:.2}", percentile(&lat, 99.0))),
        ("produce_latency_max_ms", format!("{:.2}", percentile(&lat, 100.0))),
        ("delivery_errors", errors.to_string()),
        ("consumed", got.to_string()),
        ("consume_rec_per_s", format!("{:.0}", got as f64 / consume_secs)),
        ("consume_mb_per_s", format!("{:.1}", (got * args.size) as f64 / 1e6 / consume_secs)),
    ]);
    println!("{r}");
}

/// Reads every produced record back from the beginning; returns (records, seconds).
fn consume_all(args: &Args, errors: u64) -> (usize, f64) {
    let mut cc = base_config(args);
    cc.set("group.id", "perf-client").set("enable.auto.commit", "false").set("fetch.max.bytes", "52428800");
    let consumer: BaseConsumer = cc.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(&args.topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let cstart = Instant::now();
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    while got < args.records - errors as usize && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    let consume_secs = cstart.elapsed().as_secs_f64();

    (got, consume_secs)
}

/// Prints `pairs` as a JSON object (all values as numbers where they parse) or an aligned table.
fn serde_json_like(pairs: &[(&str, String)]) -> String {
    let json = std::env::args().any(|a| a == "--json");
    if json {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| match v.parse::<f64>() {
                Ok(x) if x.is_finite() => format!("\"{k}\": {v}"),
                Ok(_) => format!("\"{k}\": null"),
                Err(_) => format!("\"{k}\": \"{v}\""),
            })
            .collect();
        format!("{{{}}}", body.join(", "))
    } else {
        pairs.iter().map(|(k, v)| format!("{k:<26} {v}")).collect::<Vec<_>>().join("\n")
    }
}
