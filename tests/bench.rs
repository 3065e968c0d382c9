//! `spate bench`: the real binary against a real broker. Checks what the commands report and
//! write (counts, ordered percentiles, files with their labels), never how fast anything is.

mod common;

use std::process::{Command, Output};

use common::Broker;
use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spate")).arg("bench").args(args).output().expect("running spate bench")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// p50 <= p90 <= p99 <= p99.9 <= max, all >= 0, over `count` values.
fn assert_ordered_percentiles(latency: &Value, count: u64) {
    let get = |k: &str| latency[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {latency}"));
    let p = [get("p50_ms"), get("p90_ms"), get("p99_ms"), get("p999_ms"), get("max_ms")];
    assert!(p[0] >= 0.0, "{latency}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {latency}");
    assert_eq!(latency["count"].as_u64(), Some(count), "{latency}");
}

#[test]
fn produce_reports_every_delivery_as_json() {
    let broker = Broker::start(&[]);
    let out = bench(&[
        "produce", "-b", &broker.bootstrap(), "--topic", "bp", "--partitions", "3", "--messages", "2000",
        "--message-size", "100", "--json",
    ]);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    assert_eq!(r["mode"], "produce");
    assert_eq!(r["topic_partitions"], 3);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["produced"]["messages"], 2000);
    assert_eq!(r["produced"]["bytes"], 200_000);
    assert!(f(&r, &["produced", "msg_per_s"]) > 0.0, "{r}");
    assert!(f(&r, &["produced", "mb_per_s"]) > 0.0, "{r}");
    assert_eq!(r["produced"]["latency_kind"], "send -> delivery report");
    assert_ordered_percentiles(&r["produced"]["latency"], 2000);
    assert!(r["consumed"].is_null());

    // The same topic read back from its beginning: an existing topic is left as it is.
    let out = bench(&["consume", "-b", &broker.bootstrap(), "--topic", "bp", "--partitions", "1", "--consumers", "2", "--json"]);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    assert_eq!(r["topic_partitions"], 3);
    assert_eq!(r["consumed"]["messages"], 2000);
    assert!(r["consumed"]["latency"].is_null());

    // The human table.
    let out = bench(&["produce", "-b", &broker.bootstrap(), "--topic", "bp", "--messages", "10"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("MSG/S") && table.contains("P99.9 ms") && table.contains("produced  10 "), "{table}");
    assert!(table.contains("delivery errors: 0"), "{table}");
}

#[test]
fn failed_deliveries_are_counted_and_fail_the_command() {
    // Batches larger than the broker takes are refused with MESSAGE_TOO_LARGE.
    let broker = Broker::start(&["--message-max-bytes", "1000"]);
    let out = bench(&[
        "produce", "-b", &broker.bootstrap(), "--topic", "big", "--messages", "20", "--message-size", "4000",
        "-X", "message.max.bytes=100000", "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    assert_eq!(r["errors"], 20, "{r}");
    assert_eq!(r["produced"]["messages"], 0, "{r}");
    assert!(r["error_samples"][0].as_str().unwrap().contains("delivery failed"), "{r}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("20 messages failed"));
}

#[test]
fn e2e_measures_latency_from_the_send_time_in_each_record() {
    let broker = Broker::start(&[]);
    let out = bench(&[
        "e2e", "-b", &broker.bootstrap(), "--topic", "e2e", "--partitions", "2", "--rate", "200", "--duration", "2",
        "--warmup", "0.5", "--linger-ms", "1", "--json",
    ]);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    assert_eq!(r["mode"], "e2e");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["missing"], 0);
    let produced = r["produced"]["messages"].as_u64().unwrap();
    let consumed = r["consumed"]["messages"].as_u64().unwrap();
    // About 400 at 200 msg/s for 2 s; the pacing is not what this checks.
    assert!(produced > 0, "{r}");
    assert!(consumed > 0, "{r}");
    assert_eq!(r["consumed"]["latency_kind"], "end-to-end: send time in the record -> consumer");
    // Each record carries its send time in microseconds (the CreateTime has only milliseconds).
    let recs = common::consume(&broker.bootstrap(), "e2e", &[0, 1], rdkafka::Offset::Beginning, 10);
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    for rec in &recs {
        let sent = rec.headers.iter().find(|(k, _)| k == "spate-bench-sent-us").and_then(|(_, v)| v.clone());
        let sent = i64::from_be_bytes(sent.expect("the send-time header").try_into().expect("8 bytes"));
        let create_ms = rec.timestamp.expect("a timestamp");
        assert!(sent <= now_us && (sent / 1000 - create_ms).abs() <= 1, "sent {sent} us, CreateTime {create_ms} ms");
    }
    assert_ordered_percentiles(&r["consumed"]["latency"], consumed);
    assert_ordered_percentiles(&r["produced"]["latency"], produced);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("e2e p99"), "no progress line on stderr:\n{stderr}");
}

#[test]
fn sweep_writes_csv_report_and_plots() {
    let broker = Broker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sweep");
    let out = bench(&[
        "sweep", "-b", &broker.bootstrap(), "--topic", "sw", "--linger-ms", "0,5", "--batch-size", "16384,131072",
        "--message-size", "200", "--duration", "1", "--rate", "2000", "--out", out_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    assert!(stderr.contains("cell 1/4") && stderr.contains("cell 4/4"), "{stderr}");

    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    for col in ["linger_ms", "batch_size", "msg_per_s", "delivery_p99_ms", "errors"] {
        assert!(header.contains(&col), "no {col} column: {}", lines[0]);
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let knobs: Vec<(String, String)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{l}");
            assert_eq!(f[col("errors")], "0", "{l}");
            assert!(f[col("msg_per_s")].parse::<f64>().unwrap() > 0.0, "{l}");
            (f[col("linger_ms")].to_string(), f[col("batch_size")].to_string())
        })
        .collect();
    let want: Vec<(String, String)> = [("0", "16384"), ("5", "16384"), ("0", "131072"), ("5", "131072")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(knobs, want);

    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("bench sweep -b 127.0.0.1:"), "{report}");
    assert!(report.contains("Date: ") && report.contains("kernel Linux"), "{report}");
    assert!(report.contains("| **"), "no best cell in bold:\n{report}");

    for (name, labels) in [
        ("throughput-vs-linger.svg", ["linger.ms (ms)", "throughput (msg/s)"]),
        ("p99-vs-linger.svg", ["linger.ms (ms)", "p99 latency"]),
        ("throughput-vs-batch.svg", ["batch.size (bytes, log scale)", "throughput (msg/s)"]),
        ("p99-vs-batch.svg", ["batch.size (bytes, log scale)", "p99 latency"]),
    ] {
        let svg = std::fs::read_to_string(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{name} is not an SVG");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count(), "{name}: unbalanced text");
        for l in labels {
            assert!(svg.contains(l), "{name} lacks the axis label {l}");
        }
        assert!(report.contains(&format!("({name})")), "report.md does not show {name}");
    }
}
