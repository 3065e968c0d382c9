//! `spate group list|describe|delete|reset-offsets`: the real binary against a real broker, with a
//! librdkafka group consumer that commits. Checks what the commands print (tables and `--json`),
//! that reset-offsets changes nothing without `--execute` and clamps to the log, and that active
//! groups, unknown groups and bad usage fail with a clear message and a nonzero exit.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{flush, producer, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const FLAGS: &[&str] = &["--group-initial-rebalance-delay-ms", "300", "--num-partitions", "3"];

/// What a `spate group` run left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `spate group <args>` against `bootstrap` (given through the environment variable).
fn spate(bootstrap: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg("group")
        .args(args)
        .env("SPATE_BOOTSTRAP_SERVER", bootstrap)
        .output()
        .unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs a command that must succeed and returns its JSON output.
fn json_of(bootstrap: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let r = spate(bootstrap, &args);
    assert_eq!(r.code, 0, "spate group {args:?} failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bad JSON from {args:?} ({e}): {}", r.stdout))
}

/// Runs a command that must fail with exit code `code`; returns its stderr.
fn failing(bootstrap: &str, args: &[&str], code: i32) -> String {
    let r = spate(bootstrap, args);
    assert_eq!(r.code, code, "spate group {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
    r.stderr
}

/// `(current, log end, lag)` of each partition of `topic` in a describe --json answer.
fn offsets(describe: &Value, topic: &str) -> Vec<(i32, Value, Value, Value)> {
    describe[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == topic)
        .map(|p| {
            (p["partition"].as_i64().unwrap() as i32, p["current_offset"].clone(), p["log_end_offset"].clone(), p["lag"].clone())
        })
        .collect()
}

fn committed(bootstrap: &str, group: &str) -> Vec<Value> {
    offsets(&json_of(bootstrap, &["describe", group]), "cli-t").into_iter().map(|(_, c, _, _)| c).collect()
}

/// The new offsets of a reset-offsets plan, by partition.
fn planned(plan: &Value) -> Vec<(i64, Value, i64)> {
    plan["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["partition"].as_i64().unwrap(), o["old"].clone(), o["new"].as_i64().unwrap()))
        .collect()
}

/// 10, 20 and 30 records to partitions 0, 1 and 2 of `cli-t`.
fn produce(bootstrap: &str) {
    let p = producer(bootstrap, &[("acks", "all")]);
    for (partition, n) in [(0, 10), (1, 20), (2, 30)] {
        for i in 0..n {
            let v = format!("{partition}-{i}");
            p.send(BaseRecord::<(), _>::to("cli-t").partition(partition).payload(&v)).unwrap();
        }
    }
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap().len(), 60);
}

/// A subscribed member of `group` that owns all of `cli-t` and committed 4 on partition 0 and 20
/// on partition 1 (none on partition 2).
fn active_member(bootstrap: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", "cli-test-consumer")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["cli-t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while c.assignment().unwrap().count() < 3 {
        assert!(Instant::now() < deadline, "the consumer was never assigned cli-t");
        let _ = c.poll(Duration::from_millis(100));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("cli-t", 0, Offset::Offset(4)).unwrap();
    tpl.add_partition_offset("cli-t", 1, Offset::Offset(20)).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
    c
}

#[test]
fn a_group_is_listed_described_reset_and_deleted() {
    let broker = Broker::start(FLAGS);
    let b = broker.bootstrap();
    produce(&b);
    let consumer = active_member(&b, "g-cli");

    // list: table and JSON; the state filter.
    let list = spate(&b, &["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.starts_with("GROUP"), "{}", list.stdout);
    let row: Vec<&str> = list.stdout.lines().find(|l| l.starts_with("g-cli ")).expect("g-cli listed").split_whitespace().collect();
    assert_eq!(row, ["g-cli", "Stable", "consumer"]);
    let listed = json_of(&b, &["list"]);
    assert!(listed.as_array().unwrap().contains(&json!({"group": "g-cli", "state": "Stable", "protocol_type": "consumer"})));
    assert_eq!(json_of(&b, &["list", "--state", "stable"]).as_array().unwrap().len(), 1);
    assert_eq!(json_of(&b, &["list", "--state", "Empty"]), json!([]));

    // describe: committed offsets, log ends, lag, and the owner of every partition.
    let d = json_of(&b, &["describe", "g-cli"]);
    assert_eq!((d[0]["group"].as_str(), d[0]["state"].as_str()), (Some("g-cli"), Some("Stable")));
    assert_eq!(
        offsets(&d, "cli-t"),
        vec![
            (0, json!(4), json!(10), json!(6)),
            (1, json!(20), json!(20), json!(0)),
            (2, Value::Null, json!(30), Value::Null), // assigned, never committed
        ]
    );
    let member = d[0]["members"][0]["member_id"].as_str().unwrap().to_string();
    assert!(!member.is_empty());
    assert_eq!(d[0]["members"][0]["assignment"].as_array().unwrap().len(), 3);
    for p in d[0]["partitions"].as_array().unwrap() {
        assert_eq!((p["consumer_id"].as_str(), p["client_id"].as_str()), (Some(member.as_str()), Some("cli-test-consumer")));
    }
    let table = spate(&b, &["describe", "g-cli", "--members"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("state Stable, 1 member"), "{}", table.stdout);
    let p2: Vec<&str> = table.stdout.lines().find(|l| l.starts_with("cli-t  ") && l.contains(" 30 ")).unwrap().split_whitespace().collect();
    assert_eq!(p2[..5], ["cli-t", "2", "-", "30", "-"], "{}", table.stdout);
    assert!(table.stdout.contains("cli-t(0,1,2)"), "{}", table.stdout);

    // While the member is active, offsets cannot be reset and the group cannot be deleted.
    let err = failing(&b, &["reset-offsets", "g-cli", "--all-topics", "--to-earliest", "--execute"], 1);
    assert!(err.contains("group has active members; stop the consumers first"), "{err}");
    let err = failing(&b, &["delete", "g-cli"], 1);
    assert!(err.contains("NON_EMPTY_GROUP"), "{err}");
    drop(consumer); // LeaveGroup: the group is Empty, with its committed offsets.
    assert_eq!(json_of(&b, &["list", "--state", "Empty"])[0]["group"], "g-cli");

    // A dry run shows the plan and changes nothing.
    let dry = spate(&b, &["reset-offsets", "g-cli", "--all-topics", "--to-earliest"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stderr.contains("dry run; add --execute"), "{}", dry.stderr);
    let rows: Vec<Vec<&str>> = dry.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, [vec!["TOPIC", "PARTITION", "OLD", "NEW"], vec!["cli-t", "0", "4", "0"], vec!["cli-t", "1", "20", "0"]]);
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--all-topics", "--to-earliest"]);
    assert_eq!(plan["executed"], false);
    assert_eq!(planned(&plan), [(0, json!(4), 0), (1, json!(20), 0)]);
    assert_eq!(committed(&b, "g-cli"), [json!(4), json!(20)]);

    // --execute moves them (--all-topics: the partitions with committed offsets).
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--all-topics", "--to-earliest", "--execute"]);
    assert_eq!(plan["executed"], true);
    let d = json_of(&b, &["describe", "g-cli"]);
    assert_eq!(d[0]["state"], "Empty");
    assert_eq!(offsets(&d, "cli-t"), [(0, json!(0), json!(10), json!(10)), (1, json!(0), json!(20), json!(20))]);

    // --to-offset and --shift-by clamp to [earliest, latest].
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--topic", "cli-t:0,1", "--to-offset", "15", "--execute"]);
    assert_eq!(planned(&plan), [(0, json!(0), 10), (1, json!(0), 15)]);
    assert_eq!(committed(&b, "g-cli"), [json!(10), json!(15)]);
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--topic", "cli-t:0,1", "--shift-by", "-12", "--execute"]);
    assert_eq!(planned(&plan), [(0, json!(10), 0), (1, json!(15), 3)]);
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--topic", "cli-t:1", "--shift-by=100", "--execute"]);
    assert_eq!(planned(&plan), [(1, json!(3), 20)]);
    assert_eq!(committed(&b, "g-cli"), [json!(0), json!(20)]);
    // Partition 2 has nothing committed to shift.
    let err = failing(&b, &["reset-offsets", "g-cli", "--topic", "cli-t", "--shift-by", "1", "--execute"], 1);
    assert!(err.contains("cli-t-2") && err.contains("no committed offset"), "{err}");

    // --to-datetime: after every record is the log end; at the epoch, the first record.
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--topic", "cli-t", "--to-datetime", "2100-01-01T00:00:00Z", "--execute"]);
    assert_eq!(planned(&plan), [(0, json!(0), 10), (1, json!(20), 20), (2, Value::Null, 30)]);
    let plan = json_of(&b, &["reset-offsets", "g-cli", "--topic", "cli-t", "--to-datetime", "0", "--execute"]);
    assert_eq!(planned(&plan), [(0, json!(10), 0), (1, json!(20), 0), (2, json!(30), 0)]);
    let d = json_of(&b, &["describe", "g-cli"]);
    assert_eq!(offsets(&d, "cli-t")[2], (2, json!(0), json!(30), json!(30)));

    // delete: gone from list and describe; a second delete fails.
    let del = spate(&b, &["delete", "g-cli"]);
    assert_eq!(del.code, 0, "{}", del.stderr);
    assert_eq!(del.stdout.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), ["g-cli", "deleted"]);
    assert!(!json_of(&b, &["list"]).as_array().unwrap().iter().any(|g| g["group"] == "g-cli"));
    let err = failing(&b, &["describe", "g-cli"], 1);
    assert!(err.contains("consumer group 'g-cli' does not exist"), "{err}");
    let err = failing(&b, &["delete", "g-cli"], 1);
    assert!(err.contains("GROUP_ID_NOT_FOUND"), "{err}");
}

#[test]
fn unknown_groups_topics_brokers_and_bad_usage_fail_clearly() {
    let broker = Broker::start(FLAGS);
    let b = broker.bootstrap();
    let err = failing(&b, &["describe", "no-such-group"], 1);
    assert!(err.contains("consumer group 'no-such-group' does not exist (GROUP_ID_NOT_FOUND"), "{err}");
    let err = failing(&b, &["reset-offsets", "no-such-group", "--topic", "no-such-topic", "--to-earliest"], 1);
    assert!(err.contains("topic 'no-such-topic': UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
    let err = failing(&b, &["reset-offsets", "no-such-group", "--all-topics", "--to-latest"], 1);
    assert!(err.contains("no committed offsets"), "{err}");
    // -b wins over the environment variable.
    let err = failing("127.0.0.1:9", &["list", "-b", "127.0.0.1:1"], 1);
    assert!(err.contains("127.0.0.1:1") && !err.contains("127.0.0.1:9"), "{err}");
    // Usage errors: clap's exit code 2.
    for args in [
        &["reset-offsets", "g", "--to-earliest"][..],
        &["reset-offsets", "g", "--all-topics"],
        &["reset-offsets", "g", "--all-topics", "--to-earliest", "--to-latest"],
        &["reset-offsets", "g", "--all-topics", "--to-datetime", "yesterday"],
        &["reset-offsets", "g", "--topic", "t:x", "--to-earliest"],
        &["describe"],
        &["list", "--state", "sleepy"],
    ] {
        failing(&b, args, 2);
    }
}
