"""Checks driven through kafka-python (pure-Python client, 3.0.x)."""

import logging
import os
import time

from harness import Skip, check

try:
    import kafka.errors as kerrors
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
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
