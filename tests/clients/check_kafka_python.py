"""Checks driven through kafka-python (pure-Python client, 3.0.x)."""

import logging
import os
import time

from harness import BROKER_RESOURCE, OP_SET, Skip, check, incremental_alter_configs_v0, restore_broker_configs

try:
    import kafka.errors as kerrors
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, KafkaAdminClient
    from kafka import codec as kcodec
    try:
        from kafka.partitioner.default import murmur2
    except ImportError:  # layout differs between releases
        murmur2 = None
except ImportError as _e:  # pragma: no cover
    _IMPORT_ERROR = _e
else:
    _IMPORT_ERROR = None

# kafka-python logs expected failures (e.g. MessageSizeTooLarge) at ERROR; keep the output clean.
logging.getLogger("kafka").setLevel(logging.CRITICAL)

TIMEOUT = 20
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
# pip packages kafka-python needs for each codec (see requirements.txt)
CODEC_LIBS = {"snappy": "python-snappy (or cramjam)", "lz4": "lz4", "zstd": "zstandard"}


def _need(codec=None):
    if _IMPORT_ERROR is not None:
        raise Skip(f"kafka-python not importable: {_IMPORT_ERROR}")
    have = {None: lambda: True, "gzip": kcodec.has_gzip, "snappy": kcodec.has_snappy,
            "lz4": kcodec.has_lz4, "zstd": kcodec.has_zstd}[codec]
    if not have():
        raise Skip(f"{codec} needs pip package {CODEC_LIBS[codec]} (pip install -r tests/clients/requirements.txt)")


def admin(ctx):
    return KafkaAdminClient(bootstrap_servers=ctx.bootstrap, client_id="spate-kp-admin", request_timeout_ms=TIMEOUT * 1000)


def producer(ctx, **conf):
    c = dict(bootstrap_servers=ctx.bootstrap, acks="all", enable_idempotence=False, linger_ms=5,
             request_timeout_ms=TIMEOUT * 1000, max_block_ms=TIMEOUT * 1000, retries=0)
    c.update(conf)
    return KafkaProducer(**c)


def consumer(ctx, **conf):
    c = dict(bootstrap_servers=ctx.bootstrap, group_id=None, enable_auto_commit=False,
             auto_offset_reset="none", request_timeout_ms=TIMEOUT * 1000 + 5000, fetch_max_wait_ms=500)
    c.update(conf)
    return KafkaConsumer(**c)


def poll_all(c, n, timeout=30.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for _tp, recs in c.poll(timeout_ms=500, max_records=1000).items():
            got.extend(recs)
    assert len(got) == n, f"consumed {len(got)} of {n} records within {timeout:.0f}s"
    return got


def _roundtrip(ctx, codec):
    _need(codec)
    label = codec or "none"
    topic = ctx.topic(f"kp-rt-{label}")
    parts = 4
    a = admin(ctx)
    try:
        a.create_topics({topic: {"num_partitions": parts, "replication_factor": 1}})
    finally:
        a.close()
    n = 400
    base = int(time.time() * 1000) - 7_200_000
    recs = []
    for i in range(n):
        key = f"kp-key-{i % 53}".encode()
        if i % 31 == 4:
            value = None
        elif i % 10 == 3:
            value = os.urandom(300)
        else:
            value = f"kp-value-{i}-".encode() + b"zz" * (i % 64)
        headers = [("i", str(i).encode()), ("bin", b"\x00\x01\xfe")] if i % 3 else []
        recs.append((key, value, headers, base + i))
    p = producer(ctx, compression_type=codec, batch_size=16384)
    meta = []
    try:
        futs = [p.send(topic, key=k, value=v, headers=h, timestamp_ms=ts) for k, v, h, ts in recs]
        p.flush(timeout=TIMEOUT)
        for i, f in enumerate(futs):
            try:
                meta.append(f.get(timeout=TIMEOUT))
            except kerrors.KafkaError as e:
                raise AssertionError(f"send #{i} failed: {e!r}") from None
    finally:
        p.close(timeout=5)
    by_part = {}
    for i, m in enumerate(meta):
        if murmur2 is not None:
            want = (murmur2(recs[i][0]) & 0x7FFFFFFF) % parts
            assert m.partition == want, f"key {recs[i][0]!r} went to partition {m.partition}, murmur2 says {want}"
        by_part.setdefault(m.partition, []).append((m.offset, i))
    for part, lst in by_part.items():
        assert [o for o, _ in lst] == list(range(len(lst))), f"partition {part}: offsets not dense in send order"

    c = consumer(ctx)
    try:
        tps = [TopicPartition(topic, q) for q in range(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = poll_all(c, n)
        extra = sum(len(v) for v in c.poll(timeout_ms=500).values())
        assert extra == 0, f"{extra} unexpected extra records"
        ends = c.end_offsets(tps)
        begins = c.beginning_offsets(tps)
    finally:
        c.close()
    for q in range(parts):
        cnt = len(by_part.get(q, []))
        assert begins[TopicPartition(topic, q)] == 0, f"beginning_offsets[{q}] = {begins[TopicPartition(topic, q)]}"
        assert ends[TopicPartition(topic, q)] == cnt, f"end_offsets[{q}] = {ends[TopicPartition(topic, q)]}, want {cnt}"
    seen = {}
    for r in got:
        seen.setdefault(r.partition, []).append(r)
    for part in range(parts):
        want = by_part.get(part, [])
        have = seen.get(part, [])
        assert len(have) == len(want), f"partition {part}: {len(have)} records read, {len(want)} sent"
        for r, (off, i) in zip(have, want):
            k, v, h, ts = recs[i]
            where = f"partition {part} offset {r.offset} (#{i})"
            assert r.offset == off, f"{where}: out of order, want offset {off}"
            assert r.key == k, f"{where}: key {r.key!r}, want {k!r}"
            assert r.value == v, f"{where}: value {r.value!r:.60}, want {v!r:.60}"
            assert list(r.headers or []) == h, f"{where}: headers {r.headers}, want {h}"
            assert (r.timestamp, r.timestamp_type) == (ts, 0), f"{where}: timestamp {r.timestamp}/{r.timestamp_type}, want {ts}/0"
    return f"{n} records over {len(by_part)} partitions, codec {label}"


for _c in CODECS:
    check(f"kp_produce_consume_{_c or 'none'}")(lambda ctx, _c=_c: _roundtrip(ctx, _c))


# A topic's compression.type and the codec number its batches are stored with.
TOPIC_CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _stored_codecs(ctx, topic, partition, end):
    """The codec of every batch of a partition below offset `end`, read from its segment files
    (<data>/topics/<topic>/<partition>/<base offset>.log) with kafka-python's own batch parser:
    [(base offset, last offset, codec number)]. Parsing stops at `end`: past it a segment holds
    zeros (its preallocated, unwritten part)."""
    from kafka.record import MemoryRecords

    d = os.path.join(ctx.broker.data_dir, "topics", topic, str(partition))
    out = []
    for name in sorted((n for n in os.listdir(d) if n.endswith(".log")), key=lambda n: int(n[:-4])):
        with open(os.path.join(d, name), "rb") as f:
            recs = MemoryRecords(f.read())
        while recs.has_next() and (not out or out[-1][1] + 1 < end):
            b = recs.next_batch()
            out.append((b.base_offset, b.last_offset, b.compression_type))
    assert out and out[-1][1] + 1 == end, \
        f"{topic}-{partition}: the segment files hold batches up to {out[-1:]}, want up to {end}"
    return out


def _topic_compression(ctx, topic_codec):
    """A topic with compression.type=topic_codec fed by five kafka-python producers, one per
    client codec (none, gzip, snappy, lz4, zstd: the topic's own among them), each first with one
    record alone and then a batch of 120 (about 100 KB: several xerial snappy and lz4 blocks once
    the broker recompresses it); kafka-python reads every record back in order and byte for byte
    (key, value, headers, timestamp), and every batch in the segment files is in the topic's
    codec."""
    for c in CODECS:
        _need(c)
    topic = ctx.topic(f"kp-ct-{topic_codec}")
    a = admin(ctx)
    try:
        a.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                 "configs": {"compression.type": topic_codec}}})
    finally:
        a.close()
    import random

    rnd = random.Random(topic_codec)
    base = int(time.time() * 1000) - 3_600_000
    recs = []  # (key, value, headers, timestamp), in the order sent
    for codec in CODECS:
        label = codec or "none"
        batch = []
        for i in range(121):
            key = f"{label}-{i}".encode() if i % 7 or i % 29 == 5 else None  # never both None
            if i % 29 == 5:
                value = None
            elif i % 5 == 2:
                value = rnd.randbytes(rnd.randrange(1, 1500))
            else:
                value = f"{label} record {i} for a {topic_codec} topic; ".encode() * (1 + i % 50)
            headers = [("codec", label.encode()), ("i", str(i).encode())] if i % 3 else []
            batch.append((key, value, headers, base + len(recs) + len(batch)))
        # One batch per flush(): flush sends at once, whatever linger_ms says.
        p = producer(ctx, compression_type=codec, batch_size=1 << 20, linger_ms=5000, max_request_size=4 << 20)
        try:
            for part in (batch[:1], batch[1:]):
                futs = [p.send(topic, partition=0, key=k, value=v, headers=h, timestamp_ms=ts) for k, v, h, ts in part]
                p.flush(timeout=TIMEOUT)
                for f in futs:
                    try:
                        f.get(timeout=TIMEOUT)
                    except kerrors.KafkaError as e:
                        raise AssertionError(f"{label} producer to a {topic_codec} topic: {e!r}") from None
        finally:
            p.close(timeout=5)
        recs.extend(batch)

    c = consumer(ctx)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = poll_all(c, len(recs))
        extra = sum(len(v) for v in c.poll(timeout_ms=300).values())
        assert extra == 0, f"{extra} unexpected extra records"
    finally:
        c.close()
    for i, (r, (k, v, h, ts)) in enumerate(zip(got, recs)):
        where = f"{topic_codec} topic, offset {r.offset} (#{i}, {CODECS[i // 121] or 'none'} producer)"
        assert r.offset == i, f"{where}: out of order"
        assert (r.key, r.value) == (k, v), \
            f"{where}: key {r.key!r:.40} value {r.value!r:.60}, want {k!r:.40} {v!r:.60}"
        assert list(r.headers or []) == h, f"{where}: headers {r.headers}, want {h}"
        assert (r.timestamp, r.timestamp_type) == (ts, 0), \
            f"{where}: timestamp {r.timestamp}/{r.timestamp_type}, want {ts}/0"
    stored = _stored_codecs(ctx, topic, 0, len(recs))
    want = TOPIC_CODECS[topic_codec]
    other = [b for b in stored if b[2] != want]
    assert not other, f"{topic_codec} topic: batches stored in another codec (base, last, codec): {other[:5]}"
    return f"{len(recs)} records from 5 client codecs in {len(stored)} {topic_codec} batches"


for _t in TOPIC_CODECS:
    check(f"kp_topic_compression_type_{_t}")(lambda ctx, _t=_t: _topic_compression(ctx, _t))


@check("kp_admin_create_delete")
def kp_admin_create_delete(ctx):
    _need()
    name = ctx.topic("kp-admin")
    a = admin(ctx)
    try:
        r = a.create_topics({name: {"num_partitions": 3, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}})
        [t] = r["topics"]
        assert t["error_code"] == 0, f"create error {t}"
        assert name in a.list_topics(), "created topic missing from list_topics"
        [d] = a.describe_topics([name])
        assert d["error_code"] == 0 and len(d["partitions"]) == 3, f"describe_topics: {d}"
        assert all(p["leader_id"] == 0 for p in d["partitions"]), f"leaders: {[p['leader_id'] for p in d['partitions']]}"
        cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        entry = cfg["topic"][name].get("retention.ms")
        assert entry and entry["value"] == "86400000" and entry["config_source"] == "DYNAMIC_TOPIC_CONFIG", \
            f"describe_configs retention.ms: {entry}"
        # Asking for named keys returns exactly those keys (DescribeConfigs configuration_keys).
        cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                 configs={"segment.bytes": None, "retention.ms": None})],
                                 config_filter="all")
        entries = cfg["topic"][name]
        assert sorted(entries) == ["retention.ms", "segment.bytes"], f"filtered describe returned {sorted(entries)}"
        assert entries["segment.bytes"]["config_source"] == "DEFAULT_CONFIG", f"segment.bytes: {entries['segment.bytes']}"
        try:
            a.create_topics({name: {"num_partitions": 1, "replication_factor": 1}})
            raise AssertionError("creating an existing topic succeeded")
        except kerrors.TopicAlreadyExistsError:
            pass
        try:
            a.create_topics({"bad topic?": {"num_partitions": 1, "replication_factor": 1}})
            raise AssertionError("creating 'bad topic?' succeeded")
        except kerrors.InvalidTopicError:
            pass
        r = a.delete_topics([name])
        assert [t["error_code"] for t in r["topics"]] == [0], f"delete result {r}"
        assert name not in a.list_topics(), "deleted topic still listed"
        try:
            a.delete_topics([name])
            raise AssertionError("deleting a deleted topic succeeded")
        except kerrors.UnknownTopicOrPartitionError:
            pass
    finally:
        a.close()


@check("kp_admin_broker_configs_synonyms")
def kp_admin_broker_configs_synonyms(ctx):
    """KafkaAdminClient on broker configs changed at run time (shared broker, restored in a
    finally block): log.retention.ms set for every broker (resource "", sent by hand: kafka-python
    wants an integer broker name) and for broker 0 (alter_configs, incremental); then
    describe_configs(include_synonyms=True) lists every layer in Kafka's order, the applying one
    first: on broker 0 DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG, DEFAULT_CONFIG; on a
    topic without an override the same; on a topic with one its DYNAMIC_TOPIC_CONFIG first. The
    client's own filters follow the broker's sources and read-only flags: the default ("modified")
    describe of broker 0 lists log.retention.ms alone, alter_configs refuses num.partitions
    itself (not dynamic: the broker says read-only) and the broker refuses it with
    raise_on_unknown=False (InvalidConfigurationError); the non-incremental alter_configs
    (AlterConfigs) keeps log.retention.ms, which the client adds back as a modified config."""
    _need()
    plain, own = ctx.topic("kp-dyncfg"), ctx.topic("kp-dyncfg-own")
    default_ms, cluster_ms, node_ms = "604800000", "1209600000", "2592000000"
    key = "log.retention.ms"
    BROKER, TOPIC = ConfigResourceType.BROKER, ConfigResourceType.TOPIC
    a = admin(ctx)
    try:
        a.create_topics({plain: {"num_partitions": 1, "replication_factor": 1},
                         own: {"num_partitions": 1, "replication_factor": 1, "configs": {"retention.ms": "3600000"}}})

        def described(restype, name, k):
            cfg = a.describe_configs([ConfigResource(restype, name, configs={k: None})], include_synonyms=True,
                                     config_filter="all")
            e = cfg[restype.name.lower()][name][k]
            return e["value"], e["config_source"], e["read_only"], [(s["name"], s["value"], s["source"]) for s in e["synonyms"]]

        def expect(after, value, source, layers):
            for restype, name, k, want in (
                    (BROKER, "0", key, (value, source, False, layers)),
                    (TOPIC, plain, "retention.ms", (value, source, False, layers)),
                    (TOPIC, own, "retention.ms", ("3600000", "DYNAMIC_TOPIC_CONFIG", False,
                                                  [("retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG")] + layers))):
                got = described(restype, name, k)
                assert got == want, f"{restype.name} {name} {k} after {after}:\n got  {got}\n want {want}"

        default_layer = (key, default_ms, "DEFAULT_CONFIG")
        expect("nothing", default_ms, "DEFAULT_CONFIG", [default_layer])
        try:
            answers = incremental_alter_configs_v0(ctx.port, [(BROKER_RESOURCE, "", [(key, OP_SET, cluster_ms)])])
            assert answers == [(BROKER_RESOURCE, "", 0, None)], f"SET for every broker: {answers}"
            cluster_layer = (key, cluster_ms, "DYNAMIC_DEFAULT_BROKER_CONFIG")
            expect("SET for every broker", cluster_ms, "DYNAMIC_DEFAULT_BROKER_CONFIG", [cluster_layer, default_layer])
            r = a.alter_configs([ConfigResource(BROKER, "0", configs={key: (AlterConfigOp.SET, node_ms)})], incremental=True)
            assert r == {"broker": {"0": "OK"}}, f"SET on broker 0: {r}"
            node_layer = (key, node_ms, "DYNAMIC_BROKER_CONFIG")
            expect("SET on broker 0", node_ms, "DYNAMIC_BROKER_CONFIG", [node_layer, cluster_layer, default_layer])

            modified = a.describe_configs([ConfigResource(BROKER, "0")])["broker"]["0"]
            assert sorted(modified) == [key], f"the modified configs of broker 0: {sorted(modified)}, want [{key}]"
            try:
                r = a.alter_configs([ConfigResource(BROKER, "0", configs={"num.partitions": "3"})], incremental=True)
                raise AssertionError(f"alter_configs of num.partitions was sent: {r}")
            except ValueError as e:
                assert "num.partitions" in str(e), e
            r = a.alter_configs([ConfigResource(BROKER, "0", configs={"num.partitions": "3"})], incremental=True,
                                raise_on_unknown=False)
            want = "num.partitions cannot be changed at run time"
            assert "InvalidConfigurationError" in r["broker"]["0"] and want in r["broker"]["0"], f"num.partitions: {r}"

            # AlterConfigs replaces the broker's whole set; kafka-python sends the modified
            # configs it does not change along (log.retention.ms here), so they stay.
            r = a.alter_configs([ConfigResource(BROKER, "0", configs={"log.retention.bytes": "-1"})], incremental=False)
            assert r == {"broker": {"0": "OK"}}, f"AlterConfigs of broker 0: {r}"
            expect("AlterConfigs of broker 0", node_ms, "DYNAMIC_BROKER_CONFIG", [node_layer, cluster_layer, default_layer])
            assert described(BROKER, "0", "log.retention.bytes")[:2] == ("-1", "DYNAMIC_BROKER_CONFIG")

            r = a.alter_configs([ConfigResource(BROKER, "0", configs={key: (AlterConfigOp.DELETE, None),
                                                                      "log.retention.bytes": (AlterConfigOp.DELETE, None)})],
                                incremental=True)
            assert r == {"broker": {"0": "OK"}}, f"DELETE on broker 0: {r}"
            expect("DELETE on broker 0", cluster_ms, "DYNAMIC_DEFAULT_BROKER_CONFIG", [cluster_layer, default_layer])
        finally:
            restore_broker_configs(ctx.port, [key, "log.retention.bytes"])
        expect("DELETE for every broker", default_ms, "DEFAULT_CONFIG", [default_layer])
    finally:
        a.close()
    return "DEFAULT -> DYNAMIC_DEFAULT_BROKER -> DYNAMIC_BROKER -> DEFAULT, ordered synonyms on broker 0 and two topics"


@check("kp_message_too_large")
def kp_message_too_large(ctx):
    _need()
    topic = ctx.topic("kp-toolarge")
    a = admin(ctx)
    try:
        a.create_topics({topic: {"num_partitions": 1, "replication_factor": 1, "configs": {"max.message.bytes": "1000"}}})
    finally:
        a.close()
    p = producer(ctx, linger_ms=0)
    try:
        f = p.send(topic, value=b"z" * 5000)
        try:
            md = f.get(timeout=TIMEOUT)
            raise AssertionError(f"5000-byte record accepted at offset {md.offset} with max.message.bytes=1000")
        except kerrors.MessageSizeTooLargeError:
            pass
        md = p.send(topic, value=b"fits").get(timeout=TIMEOUT)
        assert (md.partition, md.offset) == (0, 0), f"small record after the refused one at {md.partition}/{md.offset}"
    finally:
        p.close(timeout=5)


# ---------------------------------------------------------------------------
# Consumer groups (classic protocol: JoinGroup/SyncGroup/Heartbeat/LeaveGroup, OffsetCommit,
# OffsetFetch, ListGroups, DescribeGroups, DeleteGroups)
# ---------------------------------------------------------------------------


def group_consumer(ctx, group, client_id):
    return consumer(ctx, group_id=group, client_id=client_id, auto_offset_reset="earliest",
                    enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=1000)


class _Member:
    """A subscribed KafkaConsumer polled by its own thread.

    kafka-python 3.0.12 loses a JoinGroup/SyncGroup round that completes between two poll()
    calls of one thread (it starts a new join instead of taking the finished one's assignment),
    so two consumers polled alternately from one thread can rebalance forever. A thread per
    consumer with long polls, as applications run them, avoids that."""

    def __init__(self, ctx, group, topic, client_id):
        import threading

        self.c = group_consumer(ctx, group, client_id)
        self.c.subscribe([topic])
        self.records = []
        self.assigned = set()
        self.error = None
        self.stop = False
        self.thread = threading.Thread(target=self._run, name=f"kp-{client_id}", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stop:
                for _tp, recs in self.c.poll(timeout_ms=2000, max_records=500).items():
                    self.records.extend(recs)
                self.assigned = {tp.partition for tp in self.c.assignment()}
        except Exception as e:  # noqa: BLE001 - reported by the check
            self.error = e

    def halt(self):
        self.stop = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "consumer thread did not stop within 10s"
        if self.error is not None:
            raise AssertionError(f"consumer {self.c.config['client_id']} failed: {self.error!r}")


def _errors_by_group(result):
    """delete_groups answers {group: error name} (3.0) or [(group, error)] (older releases)."""
    if isinstance(result, dict):
        return {g: (e if isinstance(e, str) else type(e).__name__) for g, e in result.items()}
    return {g: (type(e).__name__ if e is not None else "OK") for g, e in result}


@check("kp_group_two_consumers_commit_resume_admin")
def kp_group_two_consumers_commit_resume_admin(ctx):
    """Two subscribed KafkaConsumers (range assignor) share a 4-partition topic, each record is
    read once by the pair, commit() stores their positions, a third consumer in the group
    resumes after them; KafkaAdminClient lists, describes and fetches the group's offsets, and
    deletes it only once its consumers have left."""
    _need()
    topic = ctx.topic("kp-grp")
    group = f"{topic}-g"
    parts, per = 4, 25
    a = admin(ctx)
    members = []
    try:
        a.create_topics({topic: {"num_partitions": parts, "replication_factor": 1}})
        members = [_Member(ctx, group, topic, f"kp-m{i}") for i in range(2)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sets = [m.assigned for m in members]
            if all(sets) and not sets[0] & sets[1] and sets[0] | sets[1] == set(range(parts)):
                break
            errs = [m.error for m in members if m.error is not None]
            assert not errs, f"consumer failed while joining: {errs[0]!r}"
            time.sleep(0.1)
        else:
            raise AssertionError(f"no stable split of {parts} partitions within 30s: assignments {[sorted(s) for s in sets]}")
        split = [sorted(s) for s in sets]

        # Produced after the group settled, so no rebalance can hand a partition over mid-read.
        p = producer(ctx)
        try:
            for q in range(parts):
                for i in range(per):
                    p.send(topic, partition=q, value=f"v-{q}-{i}".encode())
            p.flush(timeout=TIMEOUT)
        finally:
            p.close(timeout=5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(len(m.records) for m in members) < parts * per:
            time.sleep(0.1)
        time.sleep(0.5)  # a duplicate delivered late would show up here
        for m in members:
            m.halt()
        for i, m in enumerate(members):
            wrong = {r.partition for r in m.records} - set(split[i])
            assert not wrong, f"consumer {i} (assigned {split[i]}) read partitions {sorted(wrong)}"
        got = [(r.partition, r.offset, r.value) for m in members for r in m.records]
        want = {(q, i, f"v-{q}-{i}".encode()) for q in range(parts) for i in range(per)}
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} record(s) read twice"
        assert set(got) == want, f"the pair read {len(set(got))} distinct records, want {len(want)}"

        for m in members:
            m.c.commit()
        listed = {g["group_id"]: g for g in a.list_groups()}
        assert group in listed, f"list_groups lacks {group}: {sorted(listed)[:10]}"
        assert listed[group]["group_state"] == "Stable", f"list_groups: {listed[group]}"
        assert listed[group]["protocol_type"] == "consumer", f"list_groups: {listed[group]}"
        d = a.describe_groups([group])[group]
        assert d["error"] is None and d["group_state"] == "Stable", f"describe_groups: state {d['group_state']}, error {d['error']}"
        assert d["protocol_type"] == "consumer" and d["protocol_data"] == "range", \
            f"describe_groups: protocol {d['protocol_type']}/{d['protocol_data']}, want consumer/range"
        described = {}
        for mem in d["members"]:
            assert mem["member_metadata"]["topics"] == [topic], f"member subscription {mem['member_metadata']}"
            [ta] = mem["member_assignment"]["assigned_partitions"]
            assert ta["topic"] == topic, f"member assignment {mem['member_assignment']}"
            described[mem["client_id"]] = sorted(ta["partitions"])
        assert described == {f"kp-m{i}": split[i] for i in range(2)}, f"describe_groups assignments {described}, consumers hold {split}"
        offs = a.list_group_offsets({group: None})[group]
        got_offs = {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}
        assert got_offs == {q: per for q in range(parts)}, f"list_group_offsets {got_offs}, want {per} for each partition"
        res = _errors_by_group(a.delete_groups([group]))
        assert res.get(group) == "NonEmptyGroupError", f"delete_groups of a group with 2 members: {res}"

        for m in members:
            m.c.close()
        members = []
        d = a.describe_groups([group])[group]
        assert d["group_state"] == "Empty" and d["members"] == [], f"after close: state {d['group_state']}, {len(d['members'])} members"

        # A new member resumes after the committed offsets.
        p = producer(ctx)
        try:
            for q in range(parts):
                p.send(topic, partition=q, value=f"new-{q}".encode())
            p.flush(timeout=TIMEOUT)
        finally:
            p.close(timeout=5)
        c = group_consumer(ctx, group, "kp-m3")
        try:
            c.subscribe([topic])
            got = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(got) < parts:
                for _tp, recs in c.poll(timeout_ms=5000).items():
                    got.extend((r.partition, r.offset, r.value) for r in recs)
            for _tp, recs in c.poll(timeout_ms=500).items():
                got.extend((r.partition, r.offset, r.value) for r in recs)
            want = [(q, per, f"new-{q}".encode()) for q in range(parts)]
            assert sorted(got) == want, f"new member read {sorted(got)[:6]}, want only the {parts} records after the commits"
            c.commit()
        finally:
            c.close()

        res = _errors_by_group(a.delete_groups([group]))
        assert res.get(group) == "OK", f"delete_groups after the consumers left: {res}"
        assert group not in {g["group_id"] for g in a.list_groups()}, "deleted group still listed"
        offs = a.list_group_offsets({group: None})[group]
        assert not offs, f"deleted group still has offsets {offs}"
    finally:
        for m in members:
            m.stop = True
        for m in members:
            m.thread.join(timeout=10)
            m.c.close()
        a.close()
    return f"split {split[0]} / {split[1]}, resume at {per}, delete refused then done"


@check("kp_idempotent_producer")
def kp_idempotent_producer(ctx):
    """kafka-python with enable_idempotence=True: a producer id, sequenced batches, every record
    once at the offset it was acknowledged with."""
    _need(None)
    topic = ctx.topic("kp-idem")
    a = admin(ctx)
    try:
        a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
    finally:
        a.close()
    n = 500
    p = producer(ctx, enable_idempotence=True, retries=5, max_in_flight_requests_per_connection=5)
    try:
        futs = [p.send(topic, key=f"k{i % 7}".encode(), value=str(i).encode()) for i in range(n)]
        p.flush(timeout=TIMEOUT)
        meta = [f.get(timeout=TIMEOUT) for f in futs]
    finally:
        p.close(timeout=5)
    at = {(m.partition, m.offset): i for i, m in enumerate(meta)}
    assert len(at) == n, "two records acknowledged at the same offset"
    c = consumer(ctx)
    try:
        c.assign([TopicPartition(topic, q) for q in range(2)])
        c.seek_to_beginning()
        got = poll_all(c, n)
    finally:
        c.close()
    for r in got:
        assert at.get((r.partition, r.offset)) == int(r.value), f"{r.partition}/{r.offset} holds {r.value!r}"
    return f"{n} idempotent records"


def _bounded(what, fn, *args, timeout=TIMEOUT + 10):
    """Runs a blocking kafka-python call in a thread, failing if it does not return within
    `timeout` (its transactional calls wait without a deadline of their own). Returns its result;
    re-raises its exception."""
    import threading
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{what}: no answer within {timeout:.0f}s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _read_isolated(ctx, topic, parts, isolation):
    """Reads partitions 0..parts-1 from the beginning at `isolation` until each position reaches
    the end the broker gives at that level (end_offsets: the last stable offset for
    read_committed, else the high watermark). Returns ({partition: [values]}, {partition: end})."""
    c = consumer(ctx, isolation_level=isolation)
    got = {q: [] for q in range(parts)}
    try:
        tps = [TopicPartition(topic, q) for q in range(parts)]
        c.assign(tps)
        c.seek_to_beginning()
        ends = {tp.partition: o for tp, o in c.end_offsets(tps).items()}
        deadline = time.monotonic() + 30
        while any(c.position(tp) < ends[tp.partition] for tp in tps):
            assert time.monotonic() < deadline, (f"{isolation} read of {topic}: positions "
                                                 f"{ {tp.partition: c.position(tp) for tp in tps} }, ends {ends} after 30s")
            for tp, recs in c.poll(timeout_ms=500, max_records=1000).items():
                got[tp.partition].extend(r.value for r in recs)
    finally:
        c.close()
    return got, ends


@check("kp_transactions")
def kp_transactions(ctx):
    """kafka-python's transactional producer (transactional_id): over a 3-partition topic, six
    transactions, three committed and three aborted (flushed first, so their records are in the
    log); a read_committed consumer reads exactly the committed records in order per partition
    and its end offsets are the high watermarks (records plus one marker per transaction); a
    read_uncommitted one reads every record. With a transaction open (flushed), read_committed's
    end offsets are the open transaction's first offsets. A second producer with the same
    transactional_id (init_transactions) fences the first: the first's commit fails with
    ProducerFencedError (or InvalidProducerEpochError) and its open transaction never becomes
    visible. The second then commits records together with a group's offsets
    (send_offsets_to_transaction with a bare group id: AddOffsetsToTxn, TxnOffsetCommit), and
    list_group_offsets shows them once it committed."""
    _need(None)
    from kafka.structs import OffsetAndMetadata

    topic = ctx.topic("kp-txn")
    group = f"{topic}-g"
    parts = 3
    a = admin(ctx)
    try:
        a.create_topics({topic: {"num_partitions": parts, "replication_factor": 1}})
        txn_id = f"{topic}-tx"
        visible = {q: [] for q in range(parts)}
        written = {q: [] for q in range(parts)}
        markers = {q: 0 for q in range(parts)}
        p1 = producer(ctx, transactional_id=txn_id, enable_idempotence=True, retries=5)
        p2 = None
        try:
            _bounded("p1: init_transactions", p1.init_transactions)
            plan = ["commit", "abort", "abort", "commit", "abort", "commit"]
            for t, end in enumerate(plan):
                p1.begin_transaction()
                rows = [(q, f"t{t}-{end}-q{q}-{i}".encode()) for q in range(parts) for i in range(1 + (t + q) % 3)]
                futs = [p1.send(topic, partition=q, value=v) for q, v in rows]
                p1.flush(timeout=TIMEOUT)
                for f in futs:
                    f.get(timeout=TIMEOUT)
                _bounded(f"p1: {end}_transaction #{t}", p1.commit_transaction if end == "commit" else p1.abort_transaction)
                for q, v in rows:
                    written[q].append(v)
                    if end == "commit":
                        visible[q].append(v)
                for q in {q for q, _v in rows}:
                    markers[q] += 1  # one COMMIT or ABORT marker per partition of the transaction
            rc, rc_ends = _read_isolated(ctx, topic, parts, "read_committed")
            ru, ru_ends = _read_isolated(ctx, topic, parts, "read_uncommitted")
            hwm = {q: len(written[q]) + markers[q] for q in range(parts)}
            assert rc == visible, f"read_committed read {rc}, want {visible}"
            assert ru == written, f"read_uncommitted read {ru}, want {written}"
            assert rc_ends == hwm and ru_ends == hwm, f"end offsets read_committed {rc_ends}, read_uncommitted {ru_ends}, want {hwm}"

            # An open transaction, flushed; then the fence.
            p1.begin_transaction()
            open_rows = [(q, f"p1-open-q{q}".encode()) for q in range(parts)]
            futs = [p1.send(topic, partition=q, value=v) for q, v in open_rows]
            p1.flush(timeout=TIMEOUT)
            opened = {m.partition: m.offset for m in (f.get(timeout=TIMEOUT) for f in futs)}
            assert opened == hwm, f"the open transaction's records at {opened}, want the ends {hwm}"
            _, rc_ends = _read_isolated(ctx, topic, parts, "read_committed")
            assert rc_ends == hwm, f"read_committed end offsets with a transaction open {rc_ends}, want its first offsets {hwm}"

            p2 = producer(ctx, transactional_id=txn_id, enable_idempotence=True, retries=5)
            _bounded("p2: init_transactions (fencing p1)", p2.init_transactions)
            try:
                _bounded("p1: commit_transaction after the fence", p1.commit_transaction)
            except (kerrors.ProducerFencedError, kerrors.InvalidProducerEpochError) as e:
                fenced = type(e).__name__
            else:
                raise AssertionError("p1 committed after p2 with the same transactional_id started")

            p2.begin_transaction()
            futs = [p2.send(topic, partition=q, value=f"p2-q{q}".encode()) for q in range(parts)]
            offsets = {TopicPartition(topic, q): OffsetAndMetadata(10 + q, "", -1) for q in range(parts)}
            _bounded("p2: send_offsets_to_transaction", p2.send_offsets_to_transaction, offsets, group)
            p2.flush(timeout=TIMEOUT)
            for f in futs:
                f.get(timeout=TIMEOUT)
            offs = a.list_group_offsets({group: None})[group]
            assert not {tp: om for tp, om in offs.items() if tp.topic == topic and om.offset >= 0}, \
                f"the group's offsets are visible before the transaction committed: {offs}"
            _bounded("p2: commit_transaction", p2.commit_transaction)
            for q in range(parts):
                written[q].append(f"p1-open-q{q}".encode())
                written[q].append(f"p2-q{q}".encode())
                visible[q].append(f"p2-q{q}".encode())
        finally:
            p1.close(timeout=5)
            if p2 is not None:
                p2.close(timeout=5)
        rc, rc_ends = _read_isolated(ctx, topic, parts, "read_committed")
        ru, ru_ends = _read_isolated(ctx, topic, parts, "read_uncommitted")
        assert rc == visible, f"read_committed after the fence read {rc}, want {visible} (nothing of p1's open transaction)"
        assert ru == written, f"read_uncommitted after the fence read {ru}, want {written}"
        assert rc_ends == ru_ends, f"end offsets read_committed {rc_ends} != read_uncommitted {ru_ends}: a transaction is still open"
        offs = a.list_group_offsets({group: None})[group]
        got = {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}
        assert got == {q: 10 + q for q in range(parts)}, f"the group's offsets after the commit {got}, want 10, 11, 12"
    finally:
        a.close()
    return f"3 committed, 3 aborted; p1 fenced ({fenced}); offsets committed in a transaction"
