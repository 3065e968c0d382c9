"""Checks driven through Apache Kafka's own command-line tools (kafka-tools 4.1.1, run by
perf/kafka/run, which fetches the jars with Maven once): what operators type against Kafka,
typed against Spate."""

import json
import os
import shutil
import time

from harness import Skip, check, restore_broker_configs, run_cmd

RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "perf", "kafka", "run")


def tool_run(ctx, name, *args, input_bytes=None, timeout=120):
    """Runs a Kafka tool; (exit code, stdout, stderr). A tool that hangs fails the check."""
    if not (shutil.which("java") and shutil.which("mvn")):
        raise Skip("java or mvn is not installed")
    cmd = [RUN, "tool", name, "--bootstrap-server", ctx.bootstrap] + list(args)
    ctx.log(" ".join(cmd))
    r = run_cmd(cmd, input_bytes=input_bytes, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def tool(ctx, name, *args, input_bytes=None, timeout=120):
    rc, out, err = tool_run(ctx, name, *args, input_bytes=input_bytes, timeout=timeout)
    assert rc == 0, f"{name} exited {rc}: {(err or out).strip()[-600:]}"
    return out


@check("tools_topics_console_and_groups")
def tools_topics_console_and_groups(ctx):
    topic, group = ctx.topic("tools"), f"tools-g-{ctx.run_id}"
    assert f"Created topic {topic}." in tool(ctx, "kafka-topics", "--create", "--topic", topic, "--partitions", "3")
    assert topic in tool(ctx, "kafka-topics", "--list").split()
    described = tool(ctx, "kafka-topics", "--describe", "--topic", topic)
    assert "PartitionCount: 3" in described and described.count("Leader: 0") == 3, described
    tool(ctx, "kafka-console-producer", "--topic", topic, "--property", "parse.key=true",
         "--property", "key.separator=:", input_bytes=b"k:a\nk:b\nk:c\n")
    out = tool(ctx, "kafka-console-consumer", "--topic", topic, "--from-beginning", "--max-messages", "3",
               "--group", group)
    assert out.split() == ["a", "b", "c"], out
    assert group in tool(ctx, "kafka-consumer-groups", "--list").split()
    rows = [line.split() for line in tool(ctx, "kafka-consumer-groups", "--describe", "--group", group).splitlines()
            if line.startswith(group)]
    # One key: the three records are in one partition; the group read them all (lag 0).
    assert sorted((r[3], r[4], r[5]) for r in rows) == [("0", "0", "0"), ("0", "0", "0"), ("3", "3", "0")], rows
    reset = tool(ctx, "kafka-consumer-groups", "--group", group, "--reset-offsets", "--to-earliest",
                 "--topic", topic, "--execute")
    assert all(line.split()[-1] == "0" for line in reset.splitlines() if line.startswith(group)), reset
    ends = sorted(int(line.rsplit(":", 1)[1]) for line in tool(ctx, "kafka-get-offsets", "--topic", topic).split())
    assert ends == [0, 0, 3], ends  # topic:partition:end offset
    return "kafka-topics, console producer/consumer, consumer-groups list/describe/reset, get-offsets"


@check("tools_api_versions_and_verifiable_clients")
def tools_api_versions_and_verifiable_clients(ctx):
    versions = tool(ctx, "kafka-broker-api-versions")
    assert "Produce(0)" in versions and "UNSUPPORTED" in versions, versions[:400]
    # The features clients read from ApiVersions (KIP-584): transaction version 2 (KIP-890).
    features = tool(ctx, "kafka-features", "describe")
    assert "Feature: transaction.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 2\tFinalizedVersionLevel: 2" in features, features
    topic, group = ctx.topic("tools-v"), f"tools-vg-{ctx.run_id}"
    out = tool(ctx, "kafka-verifiable-producer", "--topic", topic, "--max-messages", "200")
    done = [json.loads(line) for line in out.splitlines() if '"tool_data"' in line]
    assert done and done[-1]["acked"] == 200 and done[-1]["sent"] == 200, out[-400:]
    out = tool(ctx, "kafka-verifiable-consumer", "--topic", topic, "--group-id", group, "--max-messages", "200")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    consumed = sum(e.get("count", 0) for e in events if e["name"] == "records_consumed")
    committed = [e for e in events if e["name"] == "offsets_committed"]
    assert consumed == 200, f"the verifiable consumer read {consumed} of 200"
    assert committed and all(e["success"] for e in committed), committed
    return "kafka-broker-api-versions, kafka-features (transaction.version 2); VerifiableProducer 200 acked, VerifiableConsumer 200 read and committed"


# Every topic setting Spate knows (README's topic settings table).
TOPIC_KEYS = ["cleanup.policy", "compression.type", "delete.retention.ms", "flush.messages", "flush.ms",
              "follower.replication.throttled.replicas", "index.interval.bytes", "leader.replication.throttled.replicas",
              "max.message.bytes", "message.timestamp.type", "min.insync.replicas", "retention.bytes", "retention.ms",
              "segment.bytes", "segment.ms", "unclean.leader.election.enable"]


def _described(out):
    """{key: value} of `kafka-configs --describe` output (lines `  key=value sensitive=... synonyms=...`)."""
    return {k: v for k, (v, _) in _described_synonyms(out).items()}


def _described_synonyms(out):
    """{key: (value, [synonym, ...])} of `kafka-configs --describe` output: each line is
    `  key=value sensitive=false synonyms={SOURCE:name=value, ...}`, the synonyms in the order the
    broker sent them (the one that applies first)."""
    got = {}
    for line in out.splitlines():
        if line.startswith("  ") and " sensitive=" in line:
            key, _, rest = line.strip().partition("=")
            value, _, tail = rest.rpartition(" sensitive=")
            synonyms = tail.partition(" synonyms={")[2].removesuffix("}")
            got[key] = (value, synonyms.split(", ") if synonyms else [])
    return got


@check("tools_configs_alter_describe_delete")
def tools_configs_alter_describe_delete(ctx):
    """kafka-configs (ConfigCommand: IncrementalAlterConfigs and DescribeConfigs) on a topic:
    --add-config sets a number and a list, --describe shows exactly those (each with its synonyms:
    the topic's value, then the broker key's default), --delete-config takes one away, --describe
    --all shows every topic setting; a bad value fails with the broker's own error and message,
    at once."""
    topic = ctx.topic("tools-cfg")
    assert f"Created topic {topic}." in tool(ctx, "kafka-topics", "--create", "--topic", topic, "--partitions", "1")
    entity = ["--entity-type", "topics", "--entity-name", topic]
    out = tool(ctx, "kafka-configs", *entity, "--alter", "--add-config", "retention.ms=60000,cleanup.policy=[delete,compact]")
    assert f"Completed updating config for topic {topic}." in out, out
    out = tool(ctx, "kafka-configs", *entity, "--describe")
    assert f"Dynamic configs for topic {topic} are:" in out, out
    assert _described_synonyms(out) == {
        "retention.ms": ("60000", ["DYNAMIC_TOPIC_CONFIG:retention.ms=60000", "DEFAULT_CONFIG:log.retention.ms=604800000"]),
        "cleanup.policy": ("delete,compact", ["DYNAMIC_TOPIC_CONFIG:cleanup.policy=delete,compact",
                                              "DEFAULT_CONFIG:log.cleanup.policy=delete"]),
    }, out
    out = tool(ctx, "kafka-configs", *entity, "--alter", "--delete-config", "retention.ms")
    assert f"Completed updating config for topic {topic}." in out, out
    out = tool(ctx, "kafka-configs", *entity, "--describe")
    assert _described(out) == {"cleanup.policy": "delete,compact"}, out
    everything = _described(tool(ctx, "kafka-configs", *entity, "--describe", "--all"))
    assert sorted(everything) == sorted(TOPIC_KEYS), f"--describe --all lists {sorted(everything)}"
    assert everything["cleanup.policy"] == "delete,compact" and everything["retention.ms"] == "604800000", everything

    rc, out, err = tool_run(ctx, "kafka-configs", *entity, "--alter", "--add-config", "retention.ms=soon")
    assert rc != 0 and "InvalidConfigurationException: retention.ms" in err + out, f"bad value: exit {rc}: {(err or out)[-600:]}"
    return "--add-config (number and list), --describe with synonyms, --delete-config, --describe --all, a refusal"


@check("tools_configs_broker_dynamic")
def tools_configs_broker_dynamic(ctx):
    """kafka-configs on broker configs changed at run time (shared broker; a finally block deletes
    what it set from both layers): `--entity-type brokers --entity-default --alter --add-config
    log.retention.ms=...` (every broker), then `--entity-default --describe` shows exactly it
    (DYNAMIC_DEFAULT_BROKER_CONFIG); `--entity-name 0 --alter --add-config` a larger value;
    `--entity-name 0 --describe` shows exactly it with its synonyms in Kafka's order (this
    broker's, every broker's, the default); `--describe --all` shows it the same way among all
    the broker configs (num.partitions DEFAULT_CONFIG, listeners STATIC_BROKER_CONFIG: given by
    --listen), and a topic's retention.ms follows it through the same synonyms. A read-only key
    (num.partitions) fails with the broker's InvalidConfigurationException at once.
    `--delete-config` on broker 0 and on the default take them away; deleting again is refused
    by the tool itself ("Invalid config(s)"), which finds no dynamic value left to delete."""
    key, default_ms, cluster_ms, node_ms = "log.retention.ms", "604800000", "1209600000", "2592000000"
    default = ["--entity-type", "brokers", "--entity-default"]
    broker0 = ["--entity-type", "brokers", "--entity-name", "0"]
    topic = ctx.topic("tools-dyncfg")
    assert f"Created topic {topic}." in tool(ctx, "kafka-topics", "--create", "--topic", topic, "--partitions", "1")
    try:
        out = tool(ctx, "kafka-configs", *default, "--alter", "--add-config", f"{key}={cluster_ms}")
        assert "Completed updating default config for brokers in the cluster." in out, out
        out = tool(ctx, "kafka-configs", *default, "--describe")
        assert "Default configs for brokers in the cluster are:" in out, out
        cluster = f"DYNAMIC_DEFAULT_BROKER_CONFIG:{key}={cluster_ms}"
        assert _described_synonyms(out) == {key: (cluster_ms, [cluster])}, out

        out = tool(ctx, "kafka-configs", *broker0, "--alter", "--add-config", f"{key}={node_ms}")
        assert "Completed updating config for broker 0." in out, out
        layers = [f"DYNAMIC_BROKER_CONFIG:{key}={node_ms}", cluster, f"DEFAULT_CONFIG:{key}={default_ms}"]
        out = tool(ctx, "kafka-configs", *broker0, "--describe")
        assert "Dynamic configs for broker 0 are:" in out, out
        assert _described_synonyms(out) == {key: (node_ms, layers)}, out
        out = tool(ctx, "kafka-configs", *broker0, "--describe", "--all")
        assert "All configs for broker 0 are:" in out, out
        everything = _described_synonyms(out)
        assert everything.get(key) == (node_ms, layers), everything.get(key)
        assert everything.get("num.partitions") == ("1", ["DEFAULT_CONFIG:num.partitions=1"]), everything.get("num.partitions")
        listeners = f"PLAINTEXT://{ctx.bootstrap}"
        assert everything.get("listeners", ("", [""]))[0] == listeners and \
            everything["listeners"][1][0] == f"STATIC_BROKER_CONFIG:listeners={listeners}", everything.get("listeners")
        out = tool(ctx, "kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--describe", "--all")
        assert _described_synonyms(out).get("retention.ms") == (node_ms, layers), out

        rc, out, err = tool_run(ctx, "kafka-configs", *broker0, "--alter", "--add-config", "num.partitions=3")
        want = "InvalidConfigurationException: num.partitions cannot be changed at run time (it is read at start)"
        assert rc != 0 and want in err + out, f"num.partitions: exit {rc}: {(err or out)[-600:]}"

        out = tool(ctx, "kafka-configs", *broker0, "--alter", "--delete-config", key)
        assert "Completed updating config for broker 0." in out, out
        out = tool(ctx, "kafka-configs", *default, "--alter", "--delete-config", key)
        assert "Completed updating default config for brokers in the cluster." in out, out
        out = tool(ctx, "kafka-configs", *broker0, "--describe")
        assert "Dynamic configs for broker 0 are:" in out and _described(out) == {}, out
        rc, out, err = tool_run(ctx, "kafka-configs", *default, "--alter", "--delete-config", key)
        assert rc != 0 and f"Invalid config(s): {key}" in err + out, f"deleting again: exit {rc}: {(err or out)[-600:]}"
    finally:
        restore_broker_configs(ctx.port, [key])
    return "--entity-default and --entity-name 0: --add-config, --describe (--all) with synonyms, --delete-config; two refusals"


def _kp_producer(ctx, **conf):
    """A kafka-python producer (acks=all) for the checks that need to know the producer id a
    producer was given, which Kafka's tools do not print."""
    try:
        from kafka import KafkaProducer
    except ImportError as e:
        raise Skip(f"kafka-python not importable: {e}")
    c = dict(bootstrap_servers=ctx.bootstrap, acks="all", linger_ms=5, request_timeout_ms=20000, max_block_ms=20000)
    c.update(conf)
    return KafkaProducer(**c)


def _send_all(p, topic, values, partition=0):
    futs = [p.send(topic, partition=partition, value=v) for v in values]
    p.flush(timeout=20)
    for f in futs:
        f.get(timeout=20)


def _producer_rows(out):
    """The rows of `kafka-transactions describe-producers`: {column: value} under its header
    line (ProducerId ProducerEpoch LatestCoordinatorEpoch LastSequence LastTimestamp
    CurrentTransactionStartOffset)."""
    lines = [line.split() for line in out.splitlines() if line.strip()]
    heads = [i for i, cols in enumerate(lines) if cols and cols[0] == "ProducerId"]
    assert len(heads) == 1, f"no single header line in:\n{out}"
    header = lines[heads[0]]
    rows = [dict(zip(header, cols)) for cols in lines[heads[0] + 1:]]
    assert all(len(r) == len(header) for r in rows), f"ragged rows in:\n{out}"
    return rows


@check("tools_transactions_describe_producers")
def tools_transactions_describe_producers(ctx):
    """kafka-transactions describe-producers (DescribeProducers, key 61) on a partition written by
    two idempotent kafka-python producers and a plain one: one row per idempotent producer, with
    the producer id and epoch it got from InitProducerId, its last sequence (records it sent - 1:
    7 records in two batches, 3 records), a last timestamp at or after its last send began
    (300 ms after its first: the last write, not the first) and no later than its
    acknowledgement, no coordinator epoch and no open transaction (the tool prints -1 and None:
    these producers are idempotent, not transactional, so no coordinator ever wrote a marker for
    them and none opens a transaction); the plain producer (no producer id) has no row. A
    partition nobody wrote to lists no producer."""
    try:
        from kafka.admin import KafkaAdminClient, NewTopic
    except ImportError as e:
        raise Skip(f"kafka-python not importable: {e}")
    topic = ctx.topic("tools-producers")
    a = KafkaAdminClient(bootstrap_servers=ctx.bootstrap, request_timeout_ms=20000)
    try:
        a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        a.close()
    now = lambda: int(time.time() * 1000)  # noqa: E731 - the broker's clock is this machine's
    producers = {}  # producer id -> (epoch, last sequence, earliest and latest last timestamp)
    for name, batches in (("first", [4, 3]), ("second", [3])):
        p = _kp_producer(ctx, enable_idempotence=True)
        try:
            sent = 0
            for i, n in enumerate(batches):
                if i:
                    time.sleep(0.3)
                before = now()
                _send_all(p, topic, [f"{name}-{sent + j}".encode() for j in range(n)])
                sent += n
                after = now()
            pid = p._transaction_manager.producer_id_and_epoch  # kafka-python keeps it there
            assert pid.producer_id >= 0 and pid.epoch >= 0, \
                f"{name}: no producer id ({pid.producer_id}, {pid.epoch})"
            producers[pid.producer_id] = (pid.epoch, sent - 1, before, after)
        finally:
            p.close(timeout=5)
    assert len(producers) == 2, f"both idempotent producers got the same id: {producers}"
    p = _kp_producer(ctx, enable_idempotence=False)
    try:
        _send_all(p, topic, [b"plain-0", b"plain-1"])
    finally:
        p.close(timeout=5)

    out = tool(ctx, "kafka-transactions", "describe-producers", "--topic", topic, "--partition", "0")
    rows = _producer_rows(out)
    got = {int(r["ProducerId"]): r for r in rows}
    assert sorted(got) == sorted(producers), f"producer ids {sorted(got)}, want {sorted(producers)}:\n{out}"
    for pid, (epoch, last_seq, before, after) in producers.items():
        r = got[pid]
        assert (int(r["ProducerEpoch"]), int(r["LastSequence"])) == (epoch, last_seq), \
            f"producer {pid}: epoch {r['ProducerEpoch']}, last sequence {r['LastSequence']}; " \
            f"want {epoch}, {last_seq}:\n{out}"
        assert before <= int(r["LastTimestamp"]) <= after, \
            f"producer {pid}: last timestamp {r['LastTimestamp']}, want within its last send [{before}, {after}]"
        # The tool prints a missing coordinator epoch as -1, a missing transaction start as None.
        assert (r["LatestCoordinatorEpoch"], r["CurrentTransactionStartOffset"]) == ("-1", "None"), \
            f"producer {pid}: coordinator epoch {r['LatestCoordinatorEpoch']}, transaction start " \
            f"{r['CurrentTransactionStartOffset']}; want -1, None:\n{out}"

    out = tool(ctx, "kafka-transactions", "describe-producers", "--topic", topic, "--partition", "1")
    assert _producer_rows(out) == [], f"partition 1 (never written) lists producers:\n{out}"
    return f"{len(producers)} idempotent producers with id, epoch, last sequence and time; none on partition 1"
