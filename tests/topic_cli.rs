//! `spate topic create|list|describe|alter-config|add-partitions|delete|trim-prefix`: the real
//! binary against a real broker. Checks what each command prints (tables and `--json`), that
//! every change shows in the next `list` or `describe` (settings and their sources, partition
//! counts, log start offsets after trim-prefix), and that a failing item (an existing topic, a
//! bad setting, an unknown topic, an offset past the end) exits 1 with Kafka's error name while
//! bad usage exits 2.

mod common;

use std::process::Command;

use common::{flush, producer, Broker};
use rdkafka::producer::{BaseRecord, Producer};
use serde_json::{json, Value};

/// What a `spate` run left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `spate <args>` against `bootstrap` (given through the environment variable).
fn spate(bootstrap: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_spate")).args(args).env("SPATE_BOOTSTRAP_SERVER", bootstrap).output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `spate topic <args>`, which must exit with `code`.
fn topic(bootstrap: &str, args: &[&str], code: i32) -> Run {
    let r = spate(bootstrap, &[&["topic"], args].concat());
    assert_eq!(r.code, code, "spate topic {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
    r
}

/// Runs `spate topic <args> --json`, which must exit with `code`; its JSON.
fn json_of(bootstrap: &str, args: &[&str], code: i32) -> Value {
    let r = topic(bootstrap, &[args, &["--json"]].concat(), code);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bad JSON from {args:?} ({e}): {}", r.stdout))
}

/// A table's rows (header included), each split at whitespace.
fn cells(table: &str) -> Vec<Vec<String>> {
    table.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

/// `rows` of a table whose last column holds free text (STATUS): the first `n` cells, then the rest.
fn status_rows(table: &str, n: usize) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            let mut cells: Vec<String> = l.splitn(n + 1, char::is_whitespace).map(str::to_string).collect();
            let last = cells.pop().unwrap_or_default();
            cells.push(last.trim().to_string());
            cells
        })
        .collect()
}

/// (topic, partitions, replicas) of `list --json`.
fn listed(bootstrap: &str, args: &[&str]) -> Vec<(String, i64, i64)> {
    json_of(bootstrap, &[&["list"], args].concat(), 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["topic"].as_str().unwrap().to_string(), t["partition_count"].as_i64().unwrap(), t["replication_factor"].as_i64().unwrap()))
        .collect()
}

/// (value, source) of `key` in `describe --json`'s settings of the first topic.
fn setting(described: &Value, key: &str) -> (String, String) {
    let c = described[0]["configs"].as_array().unwrap().iter().find(|c| c["key"] == key).unwrap_or_else(|| panic!("no {key}"));
    (c["value"].as_str().unwrap().to_string(), c["source"].as_str().unwrap().to_string())
}

/// (log start offset, high watermark) of each partition in `describe --json`.
fn offsets(described: &Value) -> Vec<(i64, i64)> {
    described[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["log_start_offset"].as_i64().unwrap(), p["high_watermark"].as_i64().unwrap()))
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|c| c.to_string()).collect()
}

#[test]
fn topics_are_created_listed_described_changed_trimmed_and_deleted() {
    let broker = Broker::start(&["--num-partitions", "2"]);
    let b = broker.bootstrap();

    // create: a table of statuses; -1 (the default) takes the broker's partition count.
    let r = topic(&b, &["create", "t1", "t2", "-p", "3", "-c", "retention.ms=60000"], 0);
    assert_eq!(status_rows(&r.stdout, 1), [s(&["TOPIC", "STATUS"]), s(&["t1", "OK"]), s(&["t2", "OK"])]);
    let created = json_of(&b, &["create", "t3"], 0);
    assert_eq!(created, json!([{"topic": "t3", "error": null, "message": null, "partitions": 2, "replicas": 1}]));
    // --dry-run: validated, not created.
    let r = topic(&b, &["create", "dry", "-p", "4", "--dry-run"], 0);
    assert_eq!(status_rows(&r.stdout, 1)[1], s(&["dry", "OK"]));
    assert!(r.stderr.contains("dry run"), "{}", r.stderr);
    assert_eq!(listed(&b, &[]), [("t1".into(), 3, 1), ("t2".into(), 3, 1), ("t3".into(), 2, 1)]);
    // An existing topic and a bad setting fail, each in its own row; the others are created.
    let r = topic(&b, &["create", "t5", "-c", "no.such.key=1"], 1);
    let rows = status_rows(&r.stdout, 1);
    assert!(rows[1][0] == "t5" && rows[1][1].starts_with("INVALID_CONFIG (") && rows[1][1].contains("no.such.key"), "{rows:?}");
    let r = topic(&b, &["create", "t1", "t4"], 1);
    let rows = status_rows(&r.stdout, 1);
    assert!(rows[1][0] == "t1" && rows[1][1].starts_with("TOPIC_ALREADY_EXISTS ("), "{rows:?}");
    assert_eq!(rows[2], s(&["t4", "OK"]));
    let failed = json_of(&b, &["create", "t5", "-c", "retention.ms=soon"], 1);
    assert_eq!((failed[0]["topic"].as_str(), failed[0]["error"].as_str()), (Some("t5"), Some("INVALID_CONFIG")));
    assert!(failed[0]["message"].as_str().unwrap().contains("retention.ms"), "{failed}");
    assert!(!listed(&b, &[]).iter().any(|t| t.0 == "t5"));

    // list: internal topics only with -i (a group lookup creates __consumer_offsets); -d has a
    // row per partition.
    assert_eq!(spate(&b, &["group", "describe", "g"]).code, 1);
    let r = topic(&b, &["list"], 0);
    assert_eq!(cells(&r.stdout)[0], s(&["TOPIC", "PARTITIONS", "REPLICAS"]));
    assert!(!r.stdout.contains("__consumer_offsets"), "{}", r.stdout);
    assert_eq!(cells(&r.stdout)[1], s(&["t1", "3", "1"]));
    let all = json_of(&b, &["list", "-i"], 0);
    let offsets_topic = all.as_array().unwrap().iter().find(|t| t["topic"] == "__consumer_offsets").expect("internal topic listed");
    assert_eq!(offsets_topic["internal"], true);
    let r = topic(&b, &["list", "-d"], 0);
    let detailed = cells(&r.stdout);
    assert_eq!(detailed[0], s(&["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS"]));
    assert_eq!(detailed[1..4], [s(&["t1", "0", "0", "0", "0"]), s(&["t1", "1", "0", "0", "0"]), s(&["t1", "2", "0", "0", "0"])]);
    assert_eq!(detailed.len(), 1 + 3 + 3 + 2 + 2);

    // describe: summary, settings with their sources, partitions with their offsets.
    let p = producer(&b, &[("acks", "all")]);
    for (partition, n) in [(0, 10), (1, 5)] {
        for i in 0..n {
            p.send(BaseRecord::<(), _>::to("t1").partition(partition).payload(&format!("{i}"))).unwrap();
        }
    }
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap().len(), 15);
    let r = topic(&b, &["describe", "t1"], 0);
    let text = r.stdout;
    for header in ["SUMMARY\n=======\n", "CONFIGS\n=======\n", "PARTITIONS\n==========\n"] {
        assert!(text.contains(header), "{text}");
    }
    let table = cells(&text);
    let line = |first: &str| table.iter().find(|r| r.first().map(String::as_str) == Some(first)).unwrap_or_else(|| panic!("no {first} in {text}")).clone();
    assert_eq!(line("NAME"), s(&["NAME", "t1"]));
    assert_eq!(line("INTERNAL"), s(&["INTERNAL", "false"]));
    assert_eq!(line("PARTITIONS"), s(&["PARTITIONS", "3"]));
    assert_eq!(line("REPLICAS"), s(&["REPLICAS", "1"]));
    assert_eq!(line("retention.ms"), s(&["retention.ms", "60000", "DYNAMIC_TOPIC_CONFIG"]));
    assert_eq!(line("cleanup.policy"), s(&["cleanup.policy", "delete", "DEFAULT_CONFIG"]));
    assert_eq!(line("PARTITION"), s(&["PARTITION", "LEADER", "EPOCH", "REPLICAS", "LOG-START-OFFSET", "HIGH-WATERMARK"]));
    assert_eq!(line("0"), s(&["0", "0", "0", "0", "0", "10"]));
    let d = json_of(&b, &["describe", "t1"], 0);
    let id = d[0]["id"].as_str().unwrap();
    assert_eq!(id.len(), 22, "Kafka's base64 form: {id}");
    assert!(text.contains(&format!("ID          {id}\n")), "{text}");
    assert_eq!(json_of(&b, &["list"], 0)[0]["id"], id);
    assert_eq!((d[0]["partition_count"].as_i64(), d[0]["internal"].as_bool()), (Some(3), Some(false)));
    assert_eq!(setting(&d, "retention.ms"), ("60000".into(), "DYNAMIC_TOPIC_CONFIG".into()));
    assert_eq!(offsets(&d), [(0, 10), (0, 5), (0, 0)]);
    assert_eq!(d[0]["partitions"][1], json!({"partition": 1, "leader": 0, "epoch": 0, "replicas": [0], "log_start_offset": 0, "high_watermark": 5, "error": null}));
    // One section: no headers; the sections picked are the only ones in the JSON.
    let r = topic(&b, &["describe", "t1", "-p"], 0);
    assert_eq!(cells(&r.stdout)[0], s(&["PARTITION", "LEADER", "EPOCH", "REPLICAS", "LOG-START-OFFSET", "HIGH-WATERMARK"]));
    let d = json_of(&b, &["describe", "t1", "-s"], 0);
    assert!(d[0].get("configs").is_none() && d[0].get("partitions").is_none(), "{d}");
    let r = topic(&b, &["describe", "t1", "t2", "-s"], 0);
    assert!(r.stdout.contains("SUMMARY (t1)\n") && r.stdout.contains("SUMMARY (t2)\n"), "{}", r.stdout);

    // trim-prefix: the new log start, shown by describe; `end` is the high watermark; past the
    // end is OFFSET_OUT_OF_RANGE for that partition only.
    let r = topic(&b, &["trim-prefix", "t1", "-o", "4", "-p", "0"], 0);
    assert_eq!(cells(&r.stdout), [s(&["TOPIC", "PARTITION", "NEW-START-OFFSET", "ERROR"]), s(&["t1", "0", "4", "-"])]);
    assert_eq!(offsets(&json_of(&b, &["describe", "t1", "-p"], 0)), [(4, 10), (0, 5), (0, 0)]);
    let r = topic(&b, &["trim-prefix", "t1", "-o", "7", "-p", "0,1"], 1);
    assert_eq!(cells(&r.stdout)[1..], [s(&["t1", "0", "7", "-"]), s(&["t1", "1", "-", "OFFSET_OUT_OF_RANGE"])]);
    let trimmed = json_of(&b, &["trim-prefix", "t1", "--offset", "end"], 0);
    assert_eq!(
        trimmed,
        json!([
            {"topic": "t1", "partition": 0, "new_start_offset": 10, "error": null},
            {"topic": "t1", "partition": 1, "new_start_offset": 5, "error": null},
            {"topic": "t1", "partition": 2, "new_start_offset": 0, "error": null},
        ])
    );
    assert_eq!(offsets(&json_of(&b, &["describe", "t1", "-p"], 0)), [(10, 10), (5, 5), (0, 0)]);
    let r = topic(&b, &["trim-prefix", "t1", "-o", "1", "-p", "9"], 1);
    assert_eq!(cells(&r.stdout)[1], s(&["t1", "9", "-", "UNKNOWN_TOPIC_OR_PARTITION"]));

    // alter-config: set, append, delete, subtract, each read back with its source.
    let r = topic(&b, &["alter-config", "t1", "t2", "--set", "retention.ms=1000", "--append", "cleanup.policy=compact", "--set", "segment.ms=5000"], 0);
    assert_eq!(status_rows(&r.stdout, 1), [s(&["TOPIC", "STATUS"]), s(&["t1", "OK"]), s(&["t2", "OK"])]);
    for t in ["t1", "t2"] {
        let d = json_of(&b, &["describe", t, "-c"], 0);
        assert_eq!(setting(&d, "retention.ms"), ("1000".into(), "DYNAMIC_TOPIC_CONFIG".into()));
        assert_eq!(setting(&d, "cleanup.policy"), ("delete,compact".into(), "DYNAMIC_TOPIC_CONFIG".into()));
        assert_eq!(setting(&d, "segment.ms"), ("5000".into(), "DYNAMIC_TOPIC_CONFIG".into()));
    }
    topic(&b, &["alter-config", "t1", "--delete", "retention.ms", "--subtract", "cleanup.policy=compact"], 0);
    let d = json_of(&b, &["describe", "t1", "-c"], 0);
    assert_eq!(setting(&d, "retention.ms"), ("604800000".into(), "DEFAULT_CONFIG".into()));
    // What SUBTRACT leaves stays an override, as in Kafka.
    assert_eq!(setting(&d, "cleanup.policy"), ("delete".into(), "DYNAMIC_TOPIC_CONFIG".into()));
    assert_eq!(setting(&d, "segment.ms"), ("5000".into(), "DYNAMIC_TOPIC_CONFIG".into()));
    // A bad key or value: INVALID_CONFIG with the broker's message, and nothing changes.
    let r = topic(&b, &["alter-config", "t1", "--set", "no.such.key=1"], 1);
    let rows1 = status_rows(&r.stdout, 1);
    assert!(rows1[1][1].starts_with("INVALID_CONFIG (") && rows1[1][1].contains("no.such.key"), "{rows1:?}");
    let bad = json_of(&b, &["alter-config", "t1", "--set", "segment.ms=soon"], 1);
    assert_eq!(bad[0]["error"], "INVALID_CONFIG");
    assert_eq!(setting(&json_of(&b, &["describe", "t1", "-c"], 0), "segment.ms").0, "5000");

    // add-partitions: N more than the current count, as the next list shows.
    let r = topic(&b, &["add-partitions", "t1", "-n", "2"], 0);
    assert_eq!(cells(&r.stdout), [s(&["TOPIC", "PARTITIONS", "STATUS"]), s(&["t1", "5", "OK"])]);
    assert_eq!(listed(&b, &[])[0], ("t1".into(), 5, 1));
    let grown = json_of(&b, &["add-partitions", "t1", "t3", "--num", "1"], 0);
    assert_eq!(grown, json!([{"topic": "t1", "error": null, "message": null, "partitions": 6}, {"topic": "t3", "error": null, "message": null, "partitions": 3}]));
    assert_eq!(offsets(&json_of(&b, &["describe", "t1", "-p"], 0)).len(), 6);

    // delete: gone from list; a second delete fails for that topic.
    let r = topic(&b, &["delete", "t2", "t3"], 0);
    assert_eq!(status_rows(&r.stdout, 1)[1..], [s(&["t2", "OK"]), s(&["t3", "OK"])]);
    assert_eq!(listed(&b, &[]), [("t1".into(), 6, 1), ("t4".into(), 2, 1)]);
    let gone = json_of(&b, &["delete", "t2", "t4"], 1);
    assert_eq!((gone[0]["error"].as_str(), gone[1]["error"].as_str()), (Some("UNKNOWN_TOPIC_OR_PARTITION"), None));
    assert_eq!(listed(&b, &[]), [("t1".into(), 6, 1)]);
}

#[test]
fn unknown_topics_brokers_and_bad_usage_fail_clearly() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    topic(&b, &["create", "known"], 0);

    // describe: the unknown topic on stderr and in the JSON; the known one still described.
    let r = topic(&b, &["describe", "known", "nope"], 1);
    assert!(r.stderr.contains("topic 'nope': UNKNOWN_TOPIC_OR_PARTITION"), "{}", r.stderr);
    assert!(r.stdout.contains("SUMMARY\n") && r.stdout.contains("NAME        known\n"), "{}", r.stdout);
    let d = json_of(&b, &["describe", "nope"], 1);
    assert_eq!((d[0]["topic"].as_str(), d[0]["error"].as_str()), (Some("nope"), Some("UNKNOWN_TOPIC_OR_PARTITION")));
    // The per-topic changes: a status each.
    for args in [&["alter-config", "nope", "--set", "retention.ms=1"][..], &["delete", "nope"]] {
        let r = topic(&b, args, 1);
        let row = status_rows(&r.stdout, 1).remove(1);
        assert!(row[0] == "nope" && row[1].starts_with("UNKNOWN_TOPIC_OR_PARTITION"), "{args:?}: {row:?}");
    }
    let r = topic(&b, &["add-partitions", "nope", "known", "-n", "1"], 1);
    assert_eq!(cells(&r.stdout)[1..], [s(&["nope", "-", "UNKNOWN_TOPIC_OR_PARTITION"]), s(&["known", "2", "OK"])]);
    let r = topic(&b, &["trim-prefix", "nope", "-o", "0"], 1);
    assert!(r.stderr.contains("topic 'nope': UNKNOWN_TOPIC_OR_PARTITION"), "{}", r.stderr);
    // No broker: a message naming it.
    let r = topic("127.0.0.1:1", &["list"], 1);
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);

    // Usage errors: clap's exit code 2, nothing sent.
    for args in [
        &["create"][..],
        &["create", "t", "-p", "x"],
        &["create", "t", "-p", "-2"],
        &["create", "t", "-c", "no-equals-sign"],
        &["describe"],
        &["alter-config", "known"],
        &["alter-config", "known", "--set", "retention.ms"],
        &["add-partitions", "known"],
        &["add-partitions", "known", "-n", "0"],
        &["trim-prefix", "known"],
        &["trim-prefix", "known", "-o", "soon"],
        &["trim-prefix", "known", "-o", "1", "-p", "x"],
        &["list", "--bogus"],
        &["frobnicate"],
    ] {
        topic(&b, args, 2);
    }
    assert_eq!(listed(&b, &[]), [("known".into(), 2, 1)]);
}
