//! `spate produce`, `spate consume` and `spate cluster info`: the real binary against a real
//! broker. Records written from stdin come back byte for byte (text and JSON); `--from` by offset,
//! tail and time, `--to`, `--count` and `--partition` pick exactly the records they should;
//! `--group` commits what it printed; a missing topic fails with Kafka's error name; follow mode
//! prints records as they arrive and exits 0 on Ctrl-C.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Broker;
use serde_json::{json, Value};

const FLAGS: &[&str] = &["--group-initial-rebalance-delay-ms", "300", "--num-partitions", "3"];

/// What a `spate` run left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `spate <args>` against `bootstrap` (given through the environment) with `input` on stdin.
fn spate(bootstrap: &str, args: &[&str], input: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(args)
        .env("SPATE_BOOTSTRAP_SERVER", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs a command that must succeed; returns its stdout.
fn ok(bootstrap: &str, args: &[&str], input: &str) -> String {
    let r = spate(bootstrap, args, input);
    assert_eq!(r.code, 0, "spate {args:?} failed: {}", r.stderr);
    r.stdout
}

/// Consumes with `--format json` and returns the lines without their timestamps (checked to be
/// there).
fn consume_json(bootstrap: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["consume", "--format", "json"];
    all.extend_from_slice(args);
    ok(bootstrap, &all, "")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}"));
            assert!(v["timestamp"].is_i64(), "no timestamp in {l}");
            v.as_object_mut().unwrap().remove("timestamp");
            v
        })
        .collect()
}

#[test]
fn produced_lines_come_back_exactly() {
    let b = Broker::start(FLAGS);
    let bs = b.bootstrap();
    let r = spate(
        &bs,
        &["produce", "t", "--key-separator", ":", "--header", "a=1", "--header", "b=x=y", "--partition", "0"],
        "k1:v1\nk2:v2:more\nno key here\n\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "produced 4 records (24 bytes) to t\nPARTITION  RECORDS  FIRST-OFFSET  LAST-OFFSET\n0          4        0             3\n"
    );

    assert_eq!(ok(&bs, &["consume", "t"], ""), "v1\nv2:more\nno key here\n\n");
    assert_eq!(
        ok(&bs, &["consume", "t", "--print-key", "--print-headers", "--print-offset", "--key-separator", "="], ""),
        "0:0\ta=1,b=x=y\tk1=v1\n0:1\ta=1,b=x=y\tk2=v2:more\n0:2\ta=1,b=x=y\t=no key here\n0:3\ta=1,b=x=y\t=\n"
    );
    let h = json!({"a": "1", "b": "x=y"});
    assert_eq!(
        consume_json(&bs, &["t"]),
        vec![
            json!({"topic": "t", "partition": 0, "offset": 0, "key": "k1", "value": "v1", "headers": h}),
            json!({"topic": "t", "partition": 0, "offset": 1, "key": "k2", "value": "v2:more", "headers": h}),
            json!({"topic": "t", "partition": 0, "offset": 2, "key": null, "value": "no key here", "headers": h}),
            json!({"topic": "t", "partition": 0, "offset": 3, "key": null, "value": "", "headers": h}),
        ]
    );

    // JSON input: bytes that are not UTF-8 as base64, a null value, repeated headers, a
    // partition per record; an idempotent, compressed producer; the summary as JSON.
    let input = concat!(
        r#"{"key":"a","value":{"base64":"/wA="},"headers":{"h":"1","h":null},"partition":2}"#,
        "\n\n",
        r#"{"key":{"base64":"gA=="},"value":null,"partition":2}"#,
        "\n",
    );
    let summary = ok(&bs, &["produce", "bin", "--format", "json", "--idempotent", "--compression", "zstd", "--json"], input);
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        summary,
        json!({"topic": "bin", "records": 2, "bytes": 4, "failed": 0, "errors": [],
               "partitions": [{"partition": 2, "records": 2, "first_offset": 0, "last_offset": 1}]})
    );
    let got = consume_json(&bs, &["bin"]);
    assert_eq!(
        got,
        vec![
            json!({"topic": "bin", "partition": 2, "offset": 0, "key": "a", "value": {"base64": "/wA="}, "headers": {"h": null}}),
            json!({"topic": "bin", "partition": 2, "offset": 1, "key": {"base64": "gA=="}, "value": null, "headers": {}}),
        ]
    );
    // serde_json keeps one of two repeated keys: check the raw line for both.
    let raw = ok(&bs, &["consume", "bin", "--json", "--count", "1"], "");
    assert!(raw.contains(r#""headers":{"h":"1","h":null}"#), "{raw}");
    assert_eq!(ok(&bs, &["consume", "bin", "--count", "1", "--print-headers"], ""), "h=1,h\t\\xff\0\n");
}

#[test]
fn from_to_count_and_partition_pick_the_right_records() {
    let b = Broker::start(FLAGS);
    let bs = b.bootstrap();
    // Ten records in partition 1, one a second from 2001-09-09T01:46:40Z (10^12 ms), and two
    // in partition 0.
    let mut input = String::new();
    for i in 0..10 {
        input.push_str(&format!("{{\"value\":\"r{i}\",\"partition\":1,\"timestamp\":{}}}\n", 1_000_000_000_000i64 + i * 1000));
    }
    input.push_str("{\"value\":\"p0-a\",\"partition\":0}\n{\"value\":\"p0-b\",\"partition\":0}\n");
    ok(&bs, &["produce", "t", "--format", "json"], &input);

    let values = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["consume", "t"];
        all.extend_from_slice(args);
        ok(&bs, &all, "").lines().map(str::to_string).collect()
    };
    let r = |range: std::ops::Range<i32>| -> Vec<String> { range.map(|i| format!("r{i}")).collect() };
    assert_eq!(values(&["--partition", "1"]), r(0..10));
    assert_eq!(values(&["--partition", "0"]), vec!["p0-a", "p0-b"]);
    let mut both = values(&["--partition", "0", "--partition", "1"]);
    both.sort();
    assert_eq!(both.len(), 12);
    assert_eq!(values(&["--partition", "1", "--from", "7"]), r(7..10));
    assert_eq!(values(&["--partition", "1", "--from", "-3"]), r(7..10));
    assert_eq!(values(&["--partition", "1", "--from", "2", "--to", "5"]), r(2..5));
    assert_eq!(values(&["--partition", "1", "--from", "4", "--count", "2"]), r(4..6));
    assert_eq!(values(&["--partition", "1", "--from", "end"]), Vec::<String>::new());
    assert_eq!(values(&["--partition", "1", "--from", "2001-09-09T01:46:43Z"]), r(3..10));
    assert_eq!(values(&["--partition", "1", "--from", "2001-09-09T03:46:45.500+02:00"]), r(6..10));
    assert_eq!(values(&["--partition", "1", "--from", "@1000000008000"]), r(8..10));
    assert_eq!(values(&["--partition", "1", "--from", "@1000000002000", "--to", "2001-09-09T01:46:44Z"]), r(2..4));
    // A time after every record: nothing.
    assert_eq!(values(&["--partition", "1", "--from", "2030-01-01T00:00:00Z"]), Vec::<String>::new());
    assert_eq!(values(&["--count", "3", "--partition", "1"]), r(0..3));

    let bad = spate(&bs, &["consume", "t", "--partition", "7"], "");
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("has no partition 7") && bad.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", bad.stderr);
    assert_eq!(spate(&bs, &["consume", "t", "--from", "yesterday"], "").code, 2);
    assert_eq!(spate(&bs, &["consume", "t", "--group", "g", "--from", "3"], "").code, 2);
}

/// (committed, log end) per partition of `topic` in `spate group describe --json`.
fn committed(bs: &str, group: &str, topic: &str) -> Vec<(i64, i64)> {
    let d: Value = serde_json::from_str(&ok(bs, &["group", "describe", group, "--json"], "")).unwrap();
    d[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == topic)
        .map(|p| (p["current_offset"].as_i64().unwrap(), p["log_end_offset"].as_i64().unwrap()))
        .collect()
}

#[test]
fn group_consumers_commit_what_they_printed() {
    let b = Broker::start(FLAGS);
    let bs = b.bootstrap();
    let keys: String = (0..12).map(|i| format!("k{i}:v{i}\n")).collect();
    ok(&bs, &["produce", "t", "--key-separator", ":"], &keys);

    let mut first: Vec<String> = ok(&bs, &["consume", "t", "--group", "g"], "").lines().map(str::to_string).collect();
    first.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(first, want);
    let offsets = committed(&bs, "g", "t");
    assert!(!offsets.is_empty());
    assert!(offsets.iter().all(|(c, end)| c == end), "{offsets:?}");
    assert_eq!(offsets.iter().map(|(c, _)| c).sum::<i64>(), 12);

    // The group resumes: only the new records.
    ok(&bs, &["produce", "t", "--partition", "1"], "n1\nn2\n");
    assert_eq!(ok(&bs, &["consume", "t", "--group", "g"], ""), "n1\nn2\n");
    assert_eq!(committed(&bs, "g", "t").iter().map(|(c, _)| c).sum::<i64>(), 14);
    // Nothing new: nothing printed, nothing changed.
    assert_eq!(ok(&bs, &["consume", "t", "--group", "g"], ""), "");
    // A new group starts from the beginning and commits only what it printed.
    assert_eq!(ok(&bs, &["consume", "t", "--count", "3", "--group", "h"], "").lines().count(), 3);
    assert_eq!(committed(&bs, "h", "t").iter().map(|(c, _)| c).sum::<i64>(), 3);
}

#[test]
fn missing_topics_fail_with_kafkas_error_name() {
    let b = Broker::start(&["--auto-create-topics", "false"]);
    let bs = b.bootstrap();
    let r = spate(&bs, &["produce", "nope"], "a\nb\n");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("2 records not written: UNKNOWN_TOPIC_OR_PARTITION"), "{}", r.stderr);
    assert!(r.stderr.contains("produced 0 records"), "{}", r.stderr);
    let r = spate(&bs, &["consume", "nope"], "");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", r.stderr);
    // Usage errors exit 2.
    assert_eq!(spate(&bs, &["produce", "nope", "--idempotent", "--acks", "1"], "").code, 2);
    assert_eq!(spate(&bs, &["produce", "nope", "--acks", "2"], "").code, 2);
    assert_eq!(spate(&bs, &["produce", "nope", "--format", "json", "--key-separator", ":"], "").code, 2);
    // A bad JSON line stops the input: what came before is written, the exit is 1.
    let b2 = Broker::start(&[]);
    let r = spate(&b2.bootstrap(), &["produce", "t", "--format", "json"], "{\"value\":\"ok\"}\n{\"value\":\n{\"value\":\"never\"}\n");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("line 2: not a JSON record"), "{}", r.stderr);
    assert_eq!(ok(&b2.bootstrap(), &["consume", "t"], ""), "ok\n");
}

#[test]
fn cluster_info_lists_brokers_topics_and_api_versions() {
    let b = Broker::start(FLAGS);
    let bs = b.bootstrap();
    ok(&bs, &["produce", "alpha"], "x\n");
    ok(&bs, &["produce", "beta", "--partition", "2"], "y\n");
    let info: Value = serde_json::from_str(&ok(&bs, &["cluster", "info", "--json"], "")).unwrap();
    let brokers = info["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["id"], 0);
    assert_eq!(brokers[0]["host"], "127.0.0.1");
    assert_eq!(brokers[0]["port"], b.port);
    assert_eq!(info["controller_id"], 0);
    assert!(info["cluster_id"].is_string());
    let apis = brokers[0]["api_versions"].as_array().unwrap();
    assert!(apis.iter().any(|a| a["api"] == "Produce" && a["key"] == 0 && a["max_version"].as_i64().unwrap() >= 9));
    assert!(apis.iter().any(|a| a["api"] == "ApiVersions"));
    let topics: Vec<(String, i64)> = info["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["internal"] == false)
        .map(|t| (t["topic"].as_str().unwrap().to_string(), t["partitions"].as_i64().unwrap()))
        .collect();
    assert_eq!(topics, vec![("alpha".to_string(), 3), ("beta".to_string(), 3)]);

    let text = ok(&bs, &["cluster", "info"], "");
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    let addr = format!("127.0.0.1:{}", b.port);
    assert!(rows.contains(&vec!["0", addr.as_str(), "-", "broker,controller", "6", "6"]), "{text}");
    assert!(text.contains("Metadata quorum: leader 0, voters 0@"), "a single node is its own quorum: {text}");
    assert!(rows.contains(&vec!["alpha", "3", "no", "-"]), "{text}");
    assert!(rows.contains(&vec!["API", "KEY", "BROKER-0"]), "{text}");
    assert!(rows.iter().any(|r| r.len() == 3 && r[0] == "Metadata" && r[1] == "3"), "{text}");
}

#[test]
fn follow_mode_prints_records_as_they_arrive_and_ctrl_c_exits_0() {
    let b = Broker::start(FLAGS);
    let bs = b.bootstrap();
    ok(&bs, &["produce", "t", "--partition", "0"], "before\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["consume", "t", "-f", "--print-offset"])
        .env("SPATE_BOOTSTRAP_SERVER", &bs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(20)).expect("a line from consume -f");
    assert_eq!(next(), "0:0\tbefore");
    ok(&bs, &["produce", "t", "--partition", "2"], "after-1\n");
    assert_eq!(next(), "2:0\tafter-1");
    ok(&bs, &["produce", "t", "--partition", "0"], "after-2\nafter-3\n");
    assert_eq!(next(), "0:1\tafter-2");
    assert_eq!(next(), "0:2\tafter-3");
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "consume -f stopped by itself");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr, "consumed 4 records from t (next offsets 0:3 2:1)\n");
}
