"""Checks driven through confluent-kafka (Python binding of librdkafka 2.16)."""

import gc
import os
import time
import warnings
import zlib

from harness import (BROKER_RESOURCE, OP_DELETE, OP_SET, Skip, check, incremental_alter_configs_v0,
                     restore_broker_configs, wait_until)

try:
    from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME, Consumer, KafkaError,
                                 KafkaException, Producer, TopicPartition)
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                       NewTopic, OffsetSpec, ResourceType)
except ImportError as _e:  # pragma: no cover - reported per check
    _IMPORT_ERROR = _e
else:
    _IMPORT_ERROR = None

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
TIMEOUT = 20.0  # seconds for any single admin/produce/consume operation


def _need():
    if _IMPORT_ERROR is not None:
        raise Skip(f"confluent-kafka not importable: {_IMPORT_ERROR}")


def admin(ctx, bootstrap=None):
    _need()
    # log_level 4: hide librdkafka's informational "Purging unserved events" notice on close.
    return AdminClient({"bootstrap.servers": bootstrap or ctx.bootstrap, "socket.timeout.ms": 10000, "log_level": 4})


def producer(ctx, bootstrap=None, **conf):
    _need()
    c = {
        "bootstrap.servers": bootstrap or ctx.bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 20000,
    }
    c.update(conf)
    return Producer(c)


def consumer(ctx, bootstrap=None, **conf):
    """A consumer used with assign() only: group.id is required by the API, nothing is committed."""
    _need()
    c = {
        "bootstrap.servers": bootstrap or ctx.bootstrap,
        "group.id": f"unused-{ctx.run_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        "log_level": 3,  # the expected offset-reset notices are warnings (4); keep output readable
    }
    c.update(conf)
    return Consumer(c)


def result(fut, what):
    try:
        return fut.result(timeout=TIMEOUT)
    except KafkaException as e:
        raise AssertionError(f"{what} failed: {e.args[0]}") from None
    except TimeoutError:
        raise AssertionError(f"{what} timed out after {TIMEOUT:.0f}s") from None


def expect_error(fut, code, what):
    """Asserts the future fails with KafkaError `code`; returns the KafkaError."""
    try:
        r = fut.result(timeout=TIMEOUT)
    except KafkaException as e:
        err = e.args[0]
        assert err.code() == code, f"{what}: got {err.name()} ({err.code()}: {err.str()}), want {KafkaError(code).name()}"
        return err
    except TimeoutError:
        raise AssertionError(f"{what} timed out after {TIMEOUT:.0f}s") from None
    raise AssertionError(f"{what}: succeeded ({r!r}), want {KafkaError(code).name()}")


def create_topic(ctx, name, partitions, config=None, bootstrap=None):
    a = admin(ctx, bootstrap)
    futs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
                           operation_timeout=10, request_timeout=TIMEOUT)
    result(futs[name], f"create_topics({name})")
    return a


def topic_names(a):
    md = a.list_topics(timeout=TIMEOUT)  # all topics: no auto-creation
    return md


def flush(p):
    left = p.flush(TIMEOUT)
    assert left == 0, f"{left} message(s) still undelivered after {TIMEOUT:.0f}s flush"


def consume_all(c, n, timeout=30.0):
    """Polls until n messages arrived (or timeout); returns them. Errors are assertion failures."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for m in c.consume(num_messages=min(1000, n - len(got)), timeout=1.0):
            if m.error():
                raise AssertionError(f"consumer error: {m.error().name()} {m.error().str()}")
            got.append(m)
    assert len(got) == n, f"consumed {len(got)} of {n} messages within {timeout:.0f}s"
    return got


def assert_nothing_more(c, wait=1.0):
    extra = [m for m in c.consume(num_messages=10, timeout=wait) if not m.error()]
    assert not extra, f"{len(extra)} unexpected extra message(s), first at {extra[0].partition()}/{extra[0].offset()}"


# ---------------------------------------------------------------------------
# AdminClient
# ---------------------------------------------------------------------------


@check("ck_admin_create_describe_delete")
def ck_admin_create_describe_delete(ctx):
    name = ctx.topic("ck-admin")
    overrides = {"segment.bytes": "1048576", "retention.ms": "3600000"}
    a = create_topic(ctx, name, 6, overrides)

    md = topic_names(a)
    assert name in md.topics, f"{name} not in list_topics after create"
    t = md.topics[name]
    assert t.error is None, f"topic metadata error {t.error}"
    assert sorted(t.partitions) == list(range(6)), f"partitions {sorted(t.partitions)}, want 0..5"
    for p in t.partitions.values():
        assert p.leader == 0 and p.replicas == [0] and p.isrs == [0], f"partition {p.id}: leader {p.leader} replicas {p.replicas} isrs {p.isrs}"

    res = ConfigResource(ResourceType.TOPIC, name)
    cfg = result(a.describe_configs([res])[res], "describe_configs(topic)")
    for k, v in overrides.items():
        assert k in cfg, f"{k} missing from describe_configs ({sorted(cfg)})"
        e = cfg[k]
        assert e.value == v, f"{k} = {e.value!r}, want {v!r}"
        assert e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, f"{k} source {e.source}, want DYNAMIC_TOPIC_CONFIG"
        assert not e.is_default, f"{k} reported as default"
    other = cfg.get("cleanup.policy")
    assert other is not None and other.value == "delete", f"cleanup.policy entry {other}"
    assert other.source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value, "cleanup.policy (not overridden) marked as a topic override"

    # Only the asked-for keys are returned when some are named? librdkafka always asks for all;
    # so instead check the describe of an unknown topic fails cleanly.
    missing = ConfigResource(ResourceType.TOPIC, ctx.topic("ck-nosuch"))
    expect_error(a.describe_configs([missing])[missing], KafkaError.UNKNOWN_TOPIC_OR_PART, "describe_configs(missing topic)")

    # Some data, so the delete has files to remove.
    p = producer(ctx)
    for q in range(6):
        p.produce(name, partition=q, value=b"old")
    flush(p)
    del p

    result(a.delete_topics([name], operation_timeout=10, request_timeout=TIMEOUT)[name], f"delete_topics({name})")
    wait_until(lambda: name not in topic_names(a).topics, 10, what=f"{name} to disappear from list_topics")
    # Deleting it again: UNKNOWN_TOPIC_OR_PART.
    expect_error(a.delete_topics([name], request_timeout=TIMEOUT)[name], KafkaError.UNKNOWN_TOPIC_OR_PART,
                 "delete_topics(already deleted)")
    # And the name can be reused.
    create_topic(ctx, name, 2)
    md = topic_names(a)
    assert name in md.topics and len(md.topics[name].partitions) == 2, "re-created topic does not have 2 partitions"
    cfg = result(a.describe_configs([res])[res], "describe_configs(re-created topic)")
    assert cfg["segment.bytes"].value != "1048576" and cfg["segment.bytes"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value, \
        "re-created topic inherited the deleted topic's segment.bytes override"
    # The new topic starts empty: nothing of the deleted one's data survives.
    p = producer(ctx)
    p.produce(name, partition=0, value=b"new")
    flush(p)
    c = consumer(ctx)
    try:
        for q, want in ((0, (0, 1)), (1, (0, 0))):
            wm = c.get_watermark_offsets(TopicPartition(name, q), timeout=TIMEOUT)
            assert wm == want, f"re-created topic partition {q} watermarks {wm}, want {want}"
        c.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
        [m] = consume_all(c, 1)
        assert_nothing_more(c, 0.5)
        assert (m.offset(), m.value()) == (0, b"new"), f"re-created topic holds {m.offset()}:{m.value()!r}"
    finally:
        c.close()
    return "create(6p, 2 overrides) / describe / delete / recreate empty"


@check("ck_admin_create_existing_topic")
def ck_admin_create_existing_topic(ctx):
    name = ctx.topic("ck-exists")
    a = create_topic(ctx, name, 3)
    futs = a.create_topics([NewTopic(name, num_partitions=5, replication_factor=1)], request_timeout=TIMEOUT)
    expect_error(futs[name], KafkaError.TOPIC_ALREADY_EXISTS, "second create_topics")
    md = topic_names(a)
    assert len(md.topics[name].partitions) == 3, "failed re-create changed the partition count"


@check("ck_admin_invalid_topic_names")
def ck_admin_invalid_topic_names(ctx):
    a = admin(ctx)
    bad = ["bad name!", "slash/name", "x" * 250, ".", ".."]
    for name in bad:
        futs = a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)], request_timeout=TIMEOUT)
        expect_error(futs[name], KafkaError.TOPIC_EXCEPTION, f"create_topics({name[:20]!r})")
    names = topic_names(a).topics
    leaked = [n for n in bad if n in names]
    assert not leaked, f"invalid topics were created: {leaked}"
    return f"{len(bad)} names refused with INVALID_TOPIC_EXCEPTION"


@check("ck_admin_validate_only")
def ck_admin_validate_only(ctx):
    a = admin(ctx)
    name = ctx.topic("ck-validate")
    futs = a.create_topics([NewTopic(name, num_partitions=4, replication_factor=1, config={"retention.ms": "1000"})],
                           validate_only=True, request_timeout=TIMEOUT)
    result(futs[name], "create_topics(validate_only)")
    assert name not in topic_names(a).topics, "validate_only create_topics created the topic"
    # validate_only still validates: a bad config is refused.
    futs = a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config={"retention.ms": "soon"})],
                           validate_only=True, request_timeout=TIMEOUT)
    expect_error(futs[name], KafkaError.INVALID_CONFIG, "validate_only with bad config")
    assert name not in topic_names(a).topics, "topic exists after validate_only calls"


@check("ck_admin_bad_requests")
def ck_admin_bad_requests(ctx):
    a = admin(ctx)
    cases = [
        (NewTopic(ctx.topic("ck-rf"), num_partitions=1, replication_factor=3), KafkaError.INVALID_REPLICATION_FACTOR),
        (NewTopic(ctx.topic("ck-cfg"), num_partitions=1, replication_factor=1, config={"no.such.config": "1"}),
         KafkaError.INVALID_CONFIG),
        (NewTopic(ctx.topic("ck-cfgval"), num_partitions=1, replication_factor=1, config={"segment.bytes": "abc"}),
         KafkaError.INVALID_CONFIG),
        (NewTopic(ctx.topic("ck-parts"), num_partitions=0, replication_factor=1), KafkaError.INVALID_PARTITIONS),
    ]
    for nt, code in cases:
        futs = a.create_topics([nt], request_timeout=TIMEOUT)
        expect_error(futs[nt.topic], code, f"create_topics({nt.topic})")
    names = topic_names(a).topics
    leaked = [nt.topic for nt, _ in cases if nt.topic in names]
    assert not leaked, f"refused topics exist anyway: {leaked}"
    missing = ctx.topic("ck-del-missing")
    expect_error(a.delete_topics([missing], request_timeout=TIMEOUT)[missing], KafkaError.UNKNOWN_TOPIC_OR_PART,
                 "delete_topics(never existed)")
    return "rf=3, unknown config, bad value, 0 partitions, delete unknown"


@check("ck_admin_describe_broker_config")
def ck_admin_describe_broker_config(ctx):
    a = admin(ctx)
    res = ConfigResource(ResourceType.BROKER, "0")
    cfg = result(a.describe_configs([res])[res], "describe_configs(broker 0)")
    for k in ("message.max.bytes", "num.partitions", "auto.create.topics.enable"):
        assert k in cfg, f"broker config lacks {k} ({sorted(cfg)[:10]}...)"
    assert cfg["message.max.bytes"].value == "1048588", f"message.max.bytes {cfg['message.max.bytes'].value}"
    assert cfg["num.partitions"].value == "1", f"num.partitions {cfg['num.partitions'].value}"


# ---------------------------------------------------------------------------
# IncrementalAlterConfigs / AlterConfigs on topics
# ---------------------------------------------------------------------------

# Every topic setting Spate knows (README's topic settings table), each with a value other than
# its broker default.
TOPIC_SETTINGS = {
    "cleanup.policy": "compact",
    "compression.type": "zstd",
    "delete.retention.ms": "3600000",
    "flush.messages": "1000",
    "flush.ms": "2000",
    "follower.replication.throttled.replicas": "0:1",
    "index.interval.bytes": "8192",
    "leader.replication.throttled.replicas": "*",
    "max.message.bytes": "2000000",
    "message.timestamp.type": "LogAppendTime",
    "min.insync.replicas": "2",
    "retention.bytes": "104857600",
    "retention.ms": "60000",
    "segment.bytes": "1048576",
    "segment.ms": "600000",
    "unclean.leader.election.enable": "true",
}
DYNAMIC_TOPIC = None if _IMPORT_ERROR else ConfigSource.DYNAMIC_TOPIC_CONFIG.value
DEFAULT = None if _IMPORT_ERROR else ConfigSource.DEFAULT_CONFIG.value


def _settings(a, topic, restype=None):
    """{key: (value, source)} of a topic (or another resource) as describe_configs reports it."""
    res = ConfigResource(restype or ResourceType.TOPIC, topic)
    cfg = result(a.describe_configs([res])[res], f"describe_configs({topic})")
    return {k: (e.value, e.source) for k, e in cfg.items()}


def _expect_settings(a, topic, want, after):
    got = _settings(a, topic)
    diffs = [f"{k} = {got.get(k)}, want {want.get(k)}" for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
    assert not diffs, f"describe_configs({topic}) after {after}: " + "; ".join(diffs)


def _incremental(a, topic, ops, validate_only=False, restype=None):
    """incremental_alter_configs of one resource: ops are (key, value, AlterConfigOpType); its future."""
    res = ConfigResource(restype or ResourceType.TOPIC, topic,
                         incremental_configs=[ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
    fs = a.incremental_alter_configs([res], validate_only=validate_only, request_timeout=TIMEOUT)
    [fut] = fs.values()
    return fut


@check("ck_admin_incremental_alter_configs")
def ck_admin_incremental_alter_configs(ctx):
    """AdminClient.incremental_alter_configs (IncrementalAlterConfigs) on a topic, read back with
    describe_configs after every step: SET of each topic setting in turn (the value as set,
    DYNAMIC_TOPIC_CONFIG, the others still DEFAULT_CONFIG), APPEND and SUBTRACT on cleanup.policy,
    DELETE of all sixteen at once (every key back to its default), APPEND to the default list."""
    SET, DELETE, APPEND, SUBTRACT = (AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND,
                                     AlterConfigOpType.SUBTRACT)
    topic = ctx.topic("ck-iac")
    a = create_topic(ctx, topic, 2)
    defaults = _settings(a, topic)
    assert sorted(defaults) == sorted(TOPIC_SETTINGS), f"described keys {sorted(defaults)}, want {sorted(TOPIC_SETTINGS)}"
    for k, (v, source) in defaults.items():
        assert source == DEFAULT and v != TOPIC_SETTINGS[k], f"new topic: {k} = {v!r} from source {source}"
    want = dict(defaults)
    for k, v in TOPIC_SETTINGS.items():
        result(_incremental(a, topic, [(k, v, SET)]), f"SET {k}={v}")
        want[k] = (v, DYNAMIC_TOPIC)
        _expect_settings(a, topic, want, f"SET {k}={v}")
    for op, v, now in ((APPEND, "delete", "compact,delete"), (APPEND, "compact", "compact,delete"),
                       (SUBTRACT, "compact", "delete")):
        result(_incremental(a, topic, [("cleanup.policy", v, op)]), f"{op.name} cleanup.policy {v}")
        want["cleanup.policy"] = (now, DYNAMIC_TOPIC)
        _expect_settings(a, topic, want, f"{op.name} cleanup.policy {v}")
    result(_incremental(a, topic, [(k, None, DELETE) for k in TOPIC_SETTINGS]), "DELETE of every key")
    _expect_settings(a, topic, defaults, "DELETE of every key")
    result(_incremental(a, topic, [("cleanup.policy", "compact", APPEND)]), "APPEND compact to the default")
    _expect_settings(a, topic, dict(defaults, **{"cleanup.policy": ("delete,compact", DYNAMIC_TOPIC)}),
                     "APPEND compact to the default")
    return f"{len(TOPIC_SETTINGS)} keys SET and DELETEd, APPEND/SUBTRACT on cleanup.policy"


@check("ck_admin_alter_configs_refusals")
def ck_admin_alter_configs_refusals(ctx):
    """incremental_alter_configs refusals: INVALID_CONFIG naming the key (bad value, unknown key,
    APPEND to a key that is not a list, SUBTRACT emptying the list, a good SET beside a bad one),
    also with validate_only; UNKNOWN_TOPIC_OR_PART for a missing topic; on broker 0,
    INVALID_CONFIG with Spate's message naming the key for a key read at start (num.partitions),
    an unknown key, a bad value and a good SET beside a bad one (also validate_only; broker 0
    unchanged); INVALID_REQUEST for __consumer_offsets; several resources in one call each
    answered on their own; validate_only changes nothing. Then the deprecated alter_configs
    (AlterConfigs): the named configs replace all the topic's overrides."""
    SET, APPEND, SUBTRACT = AlterConfigOpType.SET, AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT
    topic, other = ctx.topic("ck-iac-err"), ctx.topic("ck-iac-err2")
    a = create_topic(ctx, topic, 1, {"retention.ms": "3600000", "cleanup.policy": "compact"})
    create_topic(ctx, other, 1)
    before, defaults = _settings(a, topic), _settings(a, other)
    cases = [
        ("a bad value", [("retention.ms", "soon", SET)], "retention.ms"),
        ("an unknown key", [("no.such.key", "1", SET)], "no.such.key"),
        ("APPEND to a key that is not a list", [("segment.bytes", "1", APPEND)], "segment.bytes"),
        ("SUBTRACT emptying the list", [("cleanup.policy", "compact", SUBTRACT)], "cleanup.policy"),
        ("a good SET beside a bad one", [("retention.ms", "1000", SET), ("segment.ms", "0", SET)], "segment.ms"),
    ]
    for what, ops, key in cases:
        for validate_only in (False, True):
            label = what + (" (validate_only)" if validate_only else "")
            err = expect_error(_incremental(a, topic, ops, validate_only), KafkaError.INVALID_CONFIG, label)
            assert key in err.str(), f"{label}: the message does not name {key}: {err.str()!r}"
    missing = ctx.topic("ck-iac-nosuch")
    expect_error(_incremental(a, missing, [("retention.ms", "1", SET)]), KafkaError.UNKNOWN_TOPIC_OR_PART, "a missing topic")
    # Broker 0: a key read at start only, an unknown key and a bad value are INVALID_CONFIG naming
    # the key (the broker "" and another broker id cannot be sent through librdkafka: it refuses
    # an empty name in the client and sends a broker id to that broker, which is not there).
    broker_cases = [
        ("a broker key read at start", [("num.partitions", "3", SET)],
         "num.partitions cannot be changed at run time (it is read at start)"),
        ("an unknown broker key", [("no.such.broker.key", "1", SET)], 'unknown broker config "no.such.broker.key"'),
        ("a bad broker value", [("log.retention.ms", "soon", SET)], "log.retention.ms: "),
        ("a good broker SET beside a bad one", [("log.retention.bytes", "1000000000", SET), ("log.roll.ms", "0", SET)],
         "log.roll.ms: "),
    ]
    broker_before = _settings(a, "0", ResourceType.BROKER)
    try:
        for what, ops, want in broker_cases:
            for validate_only in (False, True):
                label = what + (" (validate_only)" if validate_only else "")
                err = expect_error(_incremental(a, "0", ops, validate_only, restype=ResourceType.BROKER),
                                   KafkaError.INVALID_CONFIG, label)
                assert err.str().startswith(want), f"{label}: message {err.str()!r}, want it to start {want!r}"
    finally:
        # Should a refusal have been applied after all, the checks after this one still get
        # the broker's defaults.
        restore_broker_configs(ctx.port, ["log.retention.ms", "log.retention.bytes", "log.roll.ms"])
    broker_after = _settings(a, "0", ResourceType.BROKER)
    assert broker_after == broker_before, \
        f"broker 0 changed by refusals: {[(k, v, broker_after.get(k)) for k, v in broker_before.items() if broker_after.get(k) != v]}"
    err = expect_error(_incremental(a, "__consumer_offsets", [("cleanup.policy", "delete", SET)]),
                       KafkaError.INVALID_REQUEST, "__consumer_offsets")
    assert "__consumer_offsets" in err.str(), err.str()
    _expect_settings(a, topic, before, "the refusals")

    # One call, three resources: each answered on its own.
    resources = [ConfigResource(ResourceType.TOPIC, other, incremental_configs=[
                     ConfigEntry("retention.ms", "120000", incremental_operation=SET)]),
                 ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
                     ConfigEntry("retention.ms", "soon", incremental_operation=SET)]),
                 ConfigResource(ResourceType.TOPIC, missing, incremental_configs=[
                     ConfigEntry("retention.ms", "1", incremental_operation=SET)])]
    fs = {r.name: f for r, f in a.incremental_alter_configs(resources, request_timeout=TIMEOUT).items()}
    result(fs[other], f"SET retention.ms on {other} beside two refusals")
    expect_error(fs[topic], KafkaError.INVALID_CONFIG, "a bad value beside others")
    expect_error(fs[missing], KafkaError.UNKNOWN_TOPIC_OR_PART, "a missing topic beside others")
    assert _settings(a, other)["retention.ms"] == ("120000", DYNAMIC_TOPIC), _settings(a, other)["retention.ms"]

    # validate_only: accepted, nothing changes.
    result(_incremental(a, topic, [("retention.ms", "60000", SET), ("cleanup.policy", "delete", APPEND),
                                   ("segment.bytes", "1048576", SET)], validate_only=True), "validate_only SET/APPEND")
    result(_incremental(a, other, [("retention.ms", None, AlterConfigOpType.DELETE)], validate_only=True),
           "validate_only DELETE")
    _expect_settings(a, topic, before, "validate_only")
    assert _settings(a, other)["retention.ms"] == ("120000", DYNAMIC_TOPIC), "validate_only DELETE changed retention.ms"

    # The deprecated alter_configs (AlterConfigs): the named configs are the topic's whole set.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        res = ConfigResource(ResourceType.TOPIC, topic, set_config={"max.message.bytes": "5000", "segment.ms": "600000"})
        result(a.alter_configs([res], request_timeout=TIMEOUT)[res], "alter_configs")
        want = dict(defaults, **{"max.message.bytes": ("5000", DYNAMIC_TOPIC), "segment.ms": ("600000", DYNAMIC_TOPIC)})
        _expect_settings(a, topic, want, "alter_configs of two keys")
        bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "soon"})
        err = expect_error(a.alter_configs([bad], request_timeout=TIMEOUT)[bad], KafkaError.INVALID_CONFIG, "alter_configs bad value")
        assert "retention.ms" in err.str(), err.str()
        _expect_settings(a, topic, want, "a refused alter_configs")
    return ("INVALID_CONFIG x5 on a topic and x4 on broker 0 (each x2 validate_only), UNKNOWN_TOPIC_OR_PART, "
            "INVALID_REQUEST, mixed call, alter_configs")


# ---------------------------------------------------------------------------
# Broker configs changed at run time (Kafka's dynamic broker configs)
# ---------------------------------------------------------------------------

DYNAMIC_BROKER = None if _IMPORT_ERROR else ConfigSource.DYNAMIC_BROKER_CONFIG.value
DYNAMIC_DEFAULT_BROKER = None if _IMPORT_ERROR else ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
STATIC_BROKER = None if _IMPORT_ERROR else ConfigSource.STATIC_BROKER_CONFIG.value


def _entry(a, restype, name, key):
    """(value, source, read-only, synonyms) of one config as describe_configs reports it.
    librdkafka always asks for synonyms; confluent-kafka keeps them in a dict by name, so of
    the layers that share a name (log.retention.ms set for this broker, for all, by default) only
    the last one is left: see `_as_seen`."""
    res = ConfigResource(restype, name)
    cfg = result(a.describe_configs([res])[res], f"describe_configs({restype.name} {name!r})")
    assert key in cfg, f"describe_configs({restype.name} {name!r}) has no {key} ({sorted(cfg)[:12]}...)"
    e = cfg[key]
    return e.value, e.source, e.is_read_only, {n: (s.value, s.source) for n, s in e.synonyms.items()}


def _as_seen(*layers):
    """What confluent-kafka's ConfigEntry.synonyms shows of the synonyms (name, value, source) the
    broker sends, the applying one first: a dict by name, the last layer of each name winning."""
    return {n: (v, s) for n, v, s in layers}


def _broker_incremental(ctx, name, ops, validate_only=False):
    """IncrementalAlterConfigs of the broker resource `name` ("" for every broker) sent by hand
    (librdkafka refuses the name ""); fails the check unless the broker accepts."""
    answers = incremental_alter_configs_v0(ctx.port, [(BROKER_RESOURCE, name, ops)], validate_only)
    assert answers == [(BROKER_RESOURCE, name, 0, None)], f"IncrementalAlterConfigs of broker {name!r} {ops}: {answers}"


@check("ck_admin_broker_configs_dynamic")
def ck_admin_broker_configs_dynamic(ctx):
    """Broker configs at run time on the shared broker, read back with describe_configs of
    broker 0 and of two topics (one overriding retention.ms) after every step:
    - before: log.retention.ms is its DEFAULT_CONFIG, not read-only; num.partitions is read-only;
      listeners (given by --listen) STATIC_BROKER_CONFIG;
    - log.retention.ms for every broker (resource "", sent by hand: librdkafka refuses an empty
      name): DYNAMIC_DEFAULT_BROKER_CONFIG on broker 0 and on the topic without an override; the
      topic with one keeps DYNAMIC_TOPIC_CONFIG, its own value among the synonyms;
    - validate_only SET on broker 0 changes nothing; SET on broker 0 (incremental_alter_configs)
      wins: DYNAMIC_BROKER_CONFIG on the broker and the plain topic;
    - the deprecated alter_configs of broker 0 replaces its whole set: log.retention.ms goes back
      to the cluster-wide value, log.retention.bytes is DYNAMIC_BROKER_CONFIG;
    - DELETE on broker 0, then on "": back to DEFAULT_CONFIG.
    The values (14 and 30 days) are above the default, so nothing is deleted sooner while they
    apply, and a finally block deletes them from both layers whatever happens."""
    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    BROKER = ResourceType.BROKER
    TOPIC = ResourceType.TOPIC
    plain, own = ctx.topic("ck-dyncfg"), ctx.topic("ck-dyncfg-own")
    a = create_topic(ctx, plain, 1)
    create_topic(ctx, own, 1, {"retention.ms": "3600000"})
    default_ms, cluster_ms, node_ms = "604800000", "1209600000", "2592000000"
    key = "log.retention.ms"
    own_layer = ("retention.ms", "3600000", DYNAMIC_TOPIC)

    def expect(restype, name, k, want, after):
        got = _entry(a, restype, name, k)
        assert got == want, f"{restype.name} {name!r} {k} after {after}: {got}, want {want}"

    def expect_layers(after, value, source, layers):
        """log.retention.ms of broker 0 and retention.ms of both topics."""
        expect(BROKER, "0", key, (value, source, False, _as_seen(*layers)), after)
        expect(TOPIC, plain, "retention.ms", (value, source, False, _as_seen(*layers)), after)
        expect(TOPIC, own, "retention.ms", ("3600000", DYNAMIC_TOPIC, False, _as_seen(own_layer, *layers)), after)

    default_layer = (key, default_ms, DEFAULT)
    expect_layers("nothing", default_ms, DEFAULT, [default_layer])
    np = _entry(a, BROKER, "0", "num.partitions")
    assert np[1:3] == (DEFAULT, True), f"num.partitions: {np}, want DEFAULT_CONFIG and read-only"
    listeners = _entry(a, BROKER, "0", "listeners")
    assert listeners[0] == f"PLAINTEXT://{ctx.bootstrap}" and listeners[1:3] == (STATIC_BROKER, True), \
        f"listeners: {listeners}, want PLAINTEXT://{ctx.bootstrap}, STATIC_BROKER_CONFIG, read-only"
    try:
        _broker_incremental(ctx, "", [(key, OP_SET, cluster_ms)])
        cluster_layer = (key, cluster_ms, DYNAMIC_DEFAULT_BROKER)
        expect_layers("SET for every broker", cluster_ms, DYNAMIC_DEFAULT_BROKER, [cluster_layer, default_layer])

        result(_incremental(a, "0", [(key, node_ms, SET)], validate_only=True, restype=BROKER), "validate_only SET on broker 0")
        expect_layers("validate_only SET on broker 0", cluster_ms, DYNAMIC_DEFAULT_BROKER, [cluster_layer, default_layer])
        result(_incremental(a, "0", [(key, node_ms, SET)], restype=BROKER), "SET on broker 0")
        node_layer = (key, node_ms, DYNAMIC_BROKER)
        expect_layers("SET on broker 0", node_ms, DYNAMIC_BROKER, [node_layer, cluster_layer, default_layer])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            res = ConfigResource(BROKER, "0", set_config={"log.retention.bytes": "-1"})
            result(a.alter_configs([res], request_timeout=TIMEOUT)[res], "alter_configs of broker 0")
        expect_layers("alter_configs of broker 0 without it", cluster_ms, DYNAMIC_DEFAULT_BROKER,
                      [cluster_layer, default_layer])
        expect(BROKER, "0", "log.retention.bytes",
               ("-1", DYNAMIC_BROKER, False, _as_seen(("log.retention.bytes", "-1", DYNAMIC_BROKER),
                                                     ("log.retention.bytes", "-1", DEFAULT))),
               "alter_configs of broker 0")

        result(_incremental(a, "0", [("log.retention.bytes", None, DELETE)], restype=BROKER), "DELETE on broker 0")
        expect(BROKER, "0", "log.retention.bytes", ("-1", DEFAULT, False, _as_seen(("log.retention.bytes", "-1", DEFAULT))),
               "DELETE on broker 0")
        _broker_incremental(ctx, "", [(key, OP_DELETE, None)])
        expect_layers("DELETE for every broker", default_ms, DEFAULT, [default_layer])
    finally:
        restore_broker_configs(ctx.port, [key, "log.retention.bytes"])
    return "DEFAULT -> DYNAMIC_DEFAULT_BROKER -> DYNAMIC_BROKER -> (alter_configs) -> DEFAULT, broker 0 and two topics"


# ---------------------------------------------------------------------------
# Producer + Consumer round trip
# ---------------------------------------------------------------------------

PARTS = 6


def _records(n, base_ts):
    """(key, value, headers, timestamp) tuples exercising the awkward cases."""
    recs = []
    rnd = os.urandom(256 * 4)
    for i in range(n):
        key = None if i % 50 == 7 else f"key-{i % 97}".encode()  # repeated keys + a few null keys
        if i % 37 == 3:
            value = None  # tombstone
        elif i % 41 == 5:
            value = b""
        elif i % 10 == 9:
            value = rnd[(i % 4) * 256:(i % 4 + 1) * 256]  # binary, incompressible
        else:
            value = f"value-{i}-".encode() + b"payload " * (i % 30)
        if i % 6 == 0:
            headers = None
        else:
            headers = [("idx", str(i).encode()), ("h", b"\x00\xffbin"), ("dup", b"1"), ("dup", b"2")]
            if i % 6 == 1:
                headers.append(("nullv", None))
            if i % 6 == 2:
                headers.append(("empty", b""))
        recs.append((key, value, headers, base_ts + i))
    return recs


def _roundtrip(ctx, codec):
    topic = ctx.topic(f"ck-rt-{codec}")
    create_topic(ctx, topic, PARTS)
    n = 600
    base_ts = int(time.time() * 1000) - 3_600_000
    recs = _records(n, base_ts)
    p = producer(ctx, **{"compression.type": codec, "batch.num.messages": 100})
    delivered = {}  # index -> (partition, offset)
    errors = []

    def dr(idx):
        def cb(err, msg):
            if err is not None:
                errors.append((idx, err))
            else:
                delivered[idx] = (msg.partition(), msg.offset())
        return cb

    for i, (k, v, h, ts) in enumerate(recs):
        kw = {"key": k, "value": v, "timestamp": ts, "on_delivery": dr(i)}
        if h is not None:
            kw["headers"] = h
        p.produce(topic, **kw)
        p.poll(0)
    flush(p)
    assert not errors, f"{len(errors)} delivery errors, first: #{errors[0][0]} {errors[0][1].name()} {errors[0][1].str()}"
    assert len(delivered) == n, f"{len(delivered)} delivery reports for {n} messages"
    for i, (k, *_r) in enumerate(recs):
        if k is not None:
            want = zlib.crc32(k) % PARTS  # librdkafka's default consistent_random partitioner
            assert delivered[i][0] == want, f"key {k!r} delivered to partition {delivered[i][0]}, partitioner says {want}"
    # Offsets per partition are dense from 0 and follow produce order.
    by_part = {}
    for i in range(n):
        part, off = delivered[i]
        by_part.setdefault(part, []).append((off, i))
    for part, lst in by_part.items():
        offs = [o for o, _ in lst]
        assert offs == list(range(len(lst))), f"partition {part}: delivered offsets {offs[:10]}... not 0..{len(lst) - 1} in produce order"

    c = consumer(ctx)
    try:
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(PARTS)])
        msgs = consume_all(c, n)
        assert_nothing_more(c)
    finally:
        c.close()
    seen = {}
    for m in msgs:
        seen.setdefault(m.partition(), []).append(m)
    for part in range(PARTS):
        got = seen.get(part, [])
        want = by_part.get(part, [])
        assert len(got) == len(want), f"partition {part}: consumed {len(got)}, delivered {len(want)}"
        for m, (off, i) in zip(got, want):
            k, v, h, ts = recs[i]
            where = f"partition {part} offset {m.offset()} (record #{i})"
            assert m.offset() == off, f"{where}: expected offset {off} (order broken)"
            assert m.key() == k, f"{where}: key {m.key()!r}, want {k!r}"
            assert m.value() == v, f"{where}: value {m.value()!r:.60}, want {v!r:.60}"
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts), f"{where}: timestamp {m.timestamp()}, want (CreateTime, {ts})"
            got_h = m.headers()
            assert (got_h or None) == h, f"{where}: headers {got_h}, want {h}"
    return f"{n} records over {len(by_part)} partitions, codec {codec}"


for _c in CODECS:
    check(f"ck_produce_consume_{_c}")(lambda ctx, _c=_c: _roundtrip(ctx, _c))


@check("ck_acks_0_and_1")
def ck_acks_0_and_1(ctx):
    """acks=0 (no response at all) and acks=1 produce; everything lands, in order."""
    topic = ctx.topic("ck-acks")
    create_topic(ctx, topic, 1)
    c = consumer(ctx)
    try:
        for acks, start in (("0", 0), ("1", 50)):
            p = producer(ctx, acks=acks)
            errs, offs = [], []

            def cb(e, m, errs=errs, offs=offs):
                errs.append(e) if e else offs.append(m.offset())

            for i in range(start, start + 50):
                p.produce(topic, key=b"k", value=f"acks{acks}-{i}".encode(), on_delivery=cb)
            flush(p)
            del p
            assert not errs, f"acks={acks}: delivery errors {errs[:3]}"
            if acks == "1":
                assert offs == list(range(50, 100)), f"acks=1 delivery offsets {offs[:3]}..., want 50..99"
            # acks=0 gets no answer: wait (bounded) until the broker has appended all of it before
            # the next producer starts, so the expected order below is well defined.
            wait_until(lambda: c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)[1] == start + 50,
                       15, what=f"high watermark {start + 50} after acks={acks}")
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_all(c, 100)
        assert_nothing_more(c, 0.5)
    finally:
        c.close()
    vals = [m.value().decode() for m in msgs]
    want = [f"acks0-{i}" for i in range(50)] + [f"acks1-{i}" for i in range(50, 100)]
    assert vals == want, f"read back {vals[:3]}..., want {want[:3]}..."
    assert [m.offset() for m in msgs] == list(range(100)), "offsets not 0..99"


@check("ck_watermarks_and_offsets_for_times")
def ck_watermarks_and_offsets_for_times(ctx):
    topic = ctx.topic("ck-times")
    create_topic(ctx, topic, 2)
    n = 20
    base = int(time.time() * 1000) - 600_000
    p = producer(ctx)
    for i in range(n):
        p.produce(topic, partition=0, value=f"v{i}".encode(), timestamp=base + i * 1000)
    flush(p)
    c = consumer(ctx)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        assert (lo, hi) == (0, n), f"partition 0 watermarks ({lo}, {hi}), want (0, {n})"
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 1), timeout=TIMEOUT)
        assert (lo, hi) == (0, 0), f"empty partition 1 watermarks ({lo}, {hi}), want (0, 0)"
        cases = [
            (base + 5000, 5),       # exact hit
            (base + 4500, 5),       # first record at or after
            (base - 99_999, 0),     # before everything
            (base + n * 1000, OFFSET_END),  # after everything: -1
        ]
        for ts, want in cases:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=TIMEOUT)
            assert tp.error is None, f"offsets_for_times({ts - base:+}): {tp.error}"
            assert tp.offset == want, f"offsets_for_times(base{ts - base:+}) = {tp.offset}, want {want}"
        [tp] = c.offsets_for_times([TopicPartition(topic, 1, base)], timeout=TIMEOUT)
        assert tp.offset == OFFSET_END, f"offsets_for_times on the empty partition = {tp.offset}, want -1"
        # Consuming from the offset found gives the record with that timestamp.
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 12_000)], timeout=TIMEOUT)
        c.assign([tp])
        [m] = consume_all(c, 1)
        assert (m.offset(), m.value(), m.timestamp()[1]) == (12, b"v12", base + 12_000), \
            f"record at the looked-up offset: {m.offset()} {m.value()} {m.timestamp()}"
    finally:
        c.close()

    # The AdminClient flavour of ListOffsets (earliest / latest / max timestamp / for timestamp).
    a = admin(ctx)
    tp = TopicPartition(topic, 0)
    for spec, want_off, want_ts in [
        (OffsetSpec.earliest(), 0, None),
        (OffsetSpec.latest(), n, None),
        (OffsetSpec.max_timestamp(), n - 1, base + (n - 1) * 1000),
        (OffsetSpec.for_timestamp(base + 3000), 3, base + 3000),
    ]:
        r = result(a.list_offsets({tp: spec})[tp], f"list_offsets({spec})")
        assert r.offset == want_off, f"list_offsets {type(spec).__name__}: offset {r.offset}, want {want_off}"
        if want_ts is not None:
            assert r.timestamp == want_ts, f"list_offsets {type(spec).__name__}: timestamp {r.timestamp}, want {want_ts}"
    return "watermarks, offsets_for_times x5, admin list_offsets x4"


@check("ck_max_timestamp_inside_a_batch")
def ck_max_timestamp_inside_a_batch(ctx):
    """ListOffsets MAX_TIMESTAMP (KIP-734) names the record holding the largest timestamp, not the
    last offset of its batch, and a lookup by timestamp names the record, not its batch: one batch
    of three records stamped +100, +400, +250, in every codec (Kafka's own bug KAFKA-16310)."""
    a = admin(ctx)
    base = int(time.time() * 1000) - 600_000
    for codec in CODECS:
        topic = ctx.topic(f"ck-maxts-{codec}")
        create_topic(ctx, topic, 1)
        # One batch: linger long enough that the three records travel together.
        p = producer(ctx, **{"compression.type": codec, "linger.ms": 1000})
        for i, delta in enumerate([100, 400, 250]):
            p.produce(topic, partition=0, value=f"v{i}".encode() * 50, timestamp=base + delta)
        flush(p)
        c = consumer(ctx)
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
            assert (lo, hi) == (0, 3), f"{codec}: watermarks ({lo}, {hi})"
        finally:
            c.close()
        tp = TopicPartition(topic, 0)
        for spec, want in [(OffsetSpec.max_timestamp(), (1, base + 400)),
                           (OffsetSpec.for_timestamp(base + 200), (1, base + 400)),
                           (OffsetSpec.for_timestamp(base + 250), (1, base + 400)),
                           (OffsetSpec.for_timestamp(base + 50), (0, base + 100))]:
            r = result(a.list_offsets({tp: spec})[tp], f"{codec}: list_offsets({spec})")
            assert (r.offset, r.timestamp) == want, \
                f"{codec}: list_offsets {type(spec).__name__}: ({r.offset}, {r.timestamp - base:+}), want ({want[0]}, {want[1] - base:+})"
    return f"max timestamp and lookups by timestamp inside one batch, {len(CODECS)} codecs"


@check("ck_long_poll_tail")
def ck_long_poll_tail(ctx):
    """A consumer waiting at the end of the log receives records produced afterwards."""
    topic = ctx.topic("ck-tail")
    create_topic(ctx, topic, 1)
    p = producer(ctx)
    for i in range(3):
        p.produce(topic, value=f"old{i}".encode())
    flush(p)
    c = consumer(ctx, **{"fetch.wait.max.ms": 3000})
    try:
        c.assign([TopicPartition(topic, 0, 3)])
        assert not [m for m in c.consume(num_messages=10, timeout=1.5) if not m.error()], "data before producing"
        for i in range(5):
            p.produce(topic, value=f"new{i}".encode())
        flush(p)
        msgs = consume_all(c, 5, timeout=20)
    finally:
        c.close()
    got = [(m.offset(), m.value()) for m in msgs]
    assert got == [(3 + i, f"new{i}".encode()) for i in range(5)], f"tail consumer got {got}"


@check("ck_large_messages")
def ck_large_messages(ctx):
    """Records larger than the consumer's fetch limits still come back (KIP-74), and ~900 KB
    records (under the 1 MB default limits) pass end to end."""
    topic = ctx.topic("ck-large")
    create_topic(ctx, topic, 1)
    p = producer(ctx, **{"compression.type": "none", "linger.ms": 0})
    vals = [os.urandom(900_000)] + [os.urandom(200_000) for _ in range(5)]
    for v in vals:
        p.produce(topic, value=v)
    flush(p)
    c = consumer(ctx, **{"fetch.max.bytes": 100_000, "max.partition.fetch.bytes": 100_000,
                         "message.max.bytes": 100_000, "receive.message.max.bytes": 2_000_000})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_all(c, len(vals))
    finally:
        c.close()
    for i, (m, v) in enumerate(zip(msgs, vals)):
        assert m.offset() == i and m.value() == v, f"record {i}: offset {m.offset()}, {len(m.value() or b'')} bytes (want {len(v)})"


@check("ck_message_too_large_topic_config")
def ck_message_too_large_topic_config(ctx):
    topic = ctx.topic("ck-toolarge")
    a = create_topic(ctx, topic, 1, {"max.message.bytes": "1000"})
    res = ConfigResource(ResourceType.TOPIC, topic)
    cfg = result(a.describe_configs([res])[res], "describe_configs")
    assert cfg["max.message.bytes"].value == "1000", f"max.message.bytes = {cfg['max.message.bytes'].value}"
    p = producer(ctx, **{"compression.type": "none", "linger.ms": 0, "retries": 0})
    outcome = []
    p.produce(topic, value=b"x" * 5000, on_delivery=lambda e, m: outcome.append(("big", e)))
    flush(p)
    p.produce(topic, value=b"small", on_delivery=lambda e, m: outcome.append(("small", e)))
    flush(p)
    big = [e for what, e in outcome if what == "big"]
    small = [e for what, e in outcome if what == "small"]
    assert big and big[0] is not None, "5000-byte message was accepted by a topic with max.message.bytes=1000"
    assert big[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"big message failed with {big[0].name()} ({big[0].str()}), want MSG_SIZE_TOO_LARGE"
    assert small == [None], f"small message after the refused one: {small}"
    c = consumer(ctx)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        [m] = consume_all(c, 1)
        assert_nothing_more(c, 0.5)
    finally:
        c.close()
    assert (m.offset(), m.value()) == (0, b"small"), f"log holds {m.offset()}:{m.value()!r}, want 0:b'small'"
    return "MSG_SIZE_TOO_LARGE, then a small record lands at offset 0"


@check("ck_message_too_large_broker_flag")
def ck_message_too_large_broker_flag(ctx):
    """A second broker started with --message-max-bytes 2000 refuses a bigger batch."""
    b = ctx.start_broker(["--message-max-bytes", "2000"])
    a = admin(ctx, b.bootstrap)
    res = ConfigResource(ResourceType.BROKER, "0")
    cfg = result(a.describe_configs([res])[res], "describe_configs(broker)")
    assert cfg["message.max.bytes"].value == "2000", f"broker message.max.bytes = {cfg['message.max.bytes'].value}"
    topic = ctx.topic("ck-flag")
    create_topic(ctx, topic, 1, bootstrap=b.bootstrap)
    tcfg = ConfigResource(ResourceType.TOPIC, topic)
    tc = result(a.describe_configs([tcfg])[tcfg], "describe_configs(topic)")
    assert tc["max.message.bytes"].value == "2000", f"topic inherits max.message.bytes {tc['max.message.bytes'].value}"
    p = producer(ctx, bootstrap=b.bootstrap, **{"compression.type": "none", "linger.ms": 0, "retries": 0})
    out = []
    p.produce(topic, value=b"y" * 10_000, on_delivery=lambda e, m: out.append(e))
    flush(p)  # separately, so the two never share a batch
    p.produce(topic, value=b"ok", on_delivery=lambda e, m: out.append(e))
    flush(p)
    assert len(out) == 2, f"{len(out)} delivery reports"
    assert out[0] is not None and out[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, \
        f"10 KB message: {out[0].name() if out[0] else 'accepted'}, want MSG_SIZE_TOO_LARGE"
    assert out[1] is None, f"small message failed: {out[1].name()}"
    # kcat (librdkafka 2.0) sees the same refusal and exits non-zero.
    import shutil
    import subprocess
    if shutil.which("kcat"):
        r = subprocess.run(["kcat", "-b", b.bootstrap, "-P", "-t", topic, "-X", "acks=-1", "-X", "enable.idempotence=false"],
                           input=b"z" * 5000 + b"\n", capture_output=True, timeout=60)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode != 0 and "size too large" in err.lower(), f"kcat 5000-byte produce: rc {r.returncode}, {err.strip()[-200:]!r}"
    return "confluent-kafka and kcat both refused with MSG_SIZE_TOO_LARGE"


@check("ck_offset_validation_with_leader_epoch")
def ck_offset_validation_with_leader_epoch(ctx):
    """Assigning an offset together with its leader epoch makes librdkafka validate it with
    OffsetForLeaderEpoch (KIP-320) before fetching; the broker's answer must let it proceed."""
    import logging

    topic = ctx.topic("ck-epoch")
    create_topic(ctx, topic, 1)
    p = producer(ctx)
    for i in range(10):
        p.produce(topic, value=f"e{i}".encode())
    flush(p)

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger(f"rdkafka-{topic}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(Collect())
    c = consumer(ctx, debug="protocol,fetch", logger=log)
    try:
        c.assign([TopicPartition(topic, 0, 5, leader_epoch=0)])
        msgs = consume_all(c, 5)
        assert_nothing_more(c, 0.5)
    finally:
        c.close()
    got = [(m.offset(), m.value(), m.leader_epoch()) for m in msgs]
    assert got == [(5 + i, f"e{5 + i}".encode(), 0) for i in range(5)], f"read {got}"
    sent = [x for x in lines if "OffsetForLeaderEpoch" in x]
    assert any("Received OffsetForLeaderEpochResponse" in x for x in sent), \
        f"librdkafka never got an OffsetForLeaderEpoch answer ({len(sent)} related log lines)"
    bad = [x for x in lines if "validation failed" in x.lower() or "truncat" in x.lower()]
    assert not bad, f"librdkafka reported: {bad[0]}"
    return "validated at offset 5 epoch 0, read 5..9"


def _produce_numbered(ctx, topic, n, base_ts, **conf):
    """Produces records keyed "0".."n-1" to partition 0; returns {key_index: offset} from the
    delivery reports."""
    c = {"linger.ms": 2, "batch.num.messages": 20, "retries": 0}
    c.update(conf)
    p = producer(ctx, **c)
    offsets, errors = {}, []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets[int(msg.key())] = msg.offset()

    for i in range(n):
        p.produce(topic, partition=0, key=str(i).encode(), value=f"seg-{i}-".encode() + b"." * 80,
                  timestamp=base_ts + i * 10, on_delivery=cb)
        if i % 200 == 0:
            p.poll(0)
    flush(p)
    assert not errors, f"{len(errors)} delivery errors, first {errors[0].name()}"
    assert sorted(offsets.values()) == list(range(n)), "delivered offsets are not exactly 0..n-1"
    return offsets


@check("ck_small_segments_random_reads")
def ck_small_segments_random_reads(ctx):
    """A topic with tiny segments (segment.bytes=16384) spreads records over ~20 segment files;
    reads starting at arbitrary offsets, and timestamp lookups, land exactly where the delivery
    reports said each record went. (Ordering is checked separately, by
    ck_produce_order_across_segment_rolls.) Uncompressed: inside compressed batches Spate's
    timestamp lookup is batch-exact, not record-exact, until bounded decompression lands (README)."""
    topic = ctx.topic("ck-segments")
    create_topic(ctx, topic, 1, {"segment.bytes": "16384"})
    n = 3000
    base = int(time.time() * 1000) - 900_000
    key_at = {o: k for k, o in _produce_numbered(ctx, topic, n, base, **{"compression.type": "none"}).items()}
    c = consumer(ctx)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        assert (lo, hi) == (0, n), f"watermarks ({lo}, {hi}), want (0, {n})"
        for start in (0, 1, 777, 1500, 2999):
            c.assign([TopicPartition(topic, 0, start)])
            want = min(50, n - start)
            msgs = consume_all(c, want)
            got = [(m.offset(), m.key()) for m in msgs]
            exp = [(start + i, str(key_at[start + i]).encode()) for i in range(want)]
            bad = [(g, e) for g, e in zip(got, exp) if g != e]
            assert not bad, f"reading from {start}: first mismatch got {bad[0][0]} want {bad[0][1]} ({len(bad)} bad)"
            c.unassign()
        # Timestamp lookups: the first offset whose timestamp is >= the asked one.
        ts_at = {o: base + k * 10 for o, k in key_at.items()}
        for i in (0, 333, 2048, 2999):
            ts = base + i * 10 - 5
            want = min(o for o in range(n) if ts_at[o] >= ts)
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=TIMEOUT)
            assert tp.offset == want, f"offsets_for_times(ts of #{i} - 5ms) = {tp.offset}, want {want}"
        # Full sequential read across every segment boundary.
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_all(c, n)
        bad = [m.offset() for i, m in enumerate(msgs) if m.offset() != i or m.key() != str(key_at[i]).encode()]
        assert not bad, f"sequential read mismatches at offsets {bad[:5]}"
    finally:
        c.close()
    return f"{n} records in ~{n * 110 // 16384} segments"


@check("ck_produce_order_across_segment_rolls")
def ck_produce_order_across_segment_rolls(ctx):
    """Kafka appends the requests of one connection in the order they were sent, so a
    non-idempotent producer with several requests in flight (max.in.flight=5, the Java default)
    and no retries gets offsets in produce order. Segment rolls (segment.bytes=16384) must not
    let a later request overtake an earlier one."""
    rounds, n = 3, 3000
    for r in range(rounds):
        topic = ctx.topic(f"ck-order-{r}")
        create_topic(ctx, topic, 1, {"segment.bytes": "16384"})
        offsets = _produce_numbered(ctx, topic, n, int(time.time() * 1000), **{"max.in.flight": 5})
        wrong = [k for k in range(n) if offsets[k] != k]
        if wrong:
            k = wrong[0]
            runs, start = [], 0
            for i in range(1, n + 1):  # compress key->offset into runs for the message
                if i == n or offsets[i] != offsets[i - 1] + 1:
                    runs.append(f"{start}-{i - 1}->{offsets[start]}-{offsets[i - 1]}")
                    start = i
            raise AssertionError(f"round {r}: record #{k} got offset {offsets[k]}; {len(wrong)} of {n} out of "
                                 f"produce order; keys->offsets: {', '.join(runs[:6])}")
    return f"{rounds} x {n} records in order"


@check("ck_log_append_time_topic")
def ck_log_append_time_topic(ctx):
    """message.timestamp.type=LogAppendTime: the broker stamps records; consumers see the
    LogAppendTime type and the broker's time, not the producer's."""
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    topic = ctx.topic("ck-lat")
    create_topic(ctx, topic, 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    p = producer(ctx, **{"compression.type": "gzip"})
    drs = []
    for i in range(10):
        p.produce(topic, value=f"lat{i}".encode(), timestamp=1_000_000_000_000 + i,
                  on_delivery=lambda e, m: drs.append((e, m.timestamp())))
    flush(p)
    after = int(time.time() * 1000)
    assert all(e is None for e, _ in drs), f"delivery errors {drs}"
    for _e, (tstype, ts) in drs:
        assert tstype == TIMESTAMP_LOG_APPEND_TIME and before - 1000 <= ts <= after + 1000, \
            f"delivery report timestamp ({tstype}, {ts}), want LogAppendTime within [{before}, {after}]"
    c = consumer(ctx)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_all(c, 10)
    finally:
        c.close()
    for m in msgs:
        tstype, ts = m.timestamp()
        assert tstype == TIMESTAMP_LOG_APPEND_TIME, f"offset {m.offset()}: timestamp type {tstype}, want LogAppendTime (2)"
        assert before - 1000 <= ts <= after + 1000, f"offset {m.offset()}: timestamp {ts} is not the broker's append time"
    assert [m.value() for m in msgs] == [f"lat{i}".encode() for i in range(10)]


@check("ck_offset_out_of_range_reset")
def ck_offset_out_of_range_reset(ctx):
    """Fetching past the end is OFFSET_OUT_OF_RANGE: librdkafka resets per auto.offset.reset
    (earliest -> offset 0) or reports it (error)."""
    topic = ctx.topic("ck-oor")
    create_topic(ctx, topic, 1)
    p = producer(ctx)
    for i in range(10):
        p.produce(topic, value=f"r{i}".encode())
    flush(p)
    c = consumer(ctx, **{"auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, 0, 100)])
        msgs = consume_all(c, 10)
        assert [m.offset() for m in msgs] == list(range(10)), f"after reset to earliest: {[m.offset() for m in msgs]}"
    finally:
        c.close()
    c = consumer(ctx, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 100)])
        deadline = time.monotonic() + 15
        err = None
        while err is None and time.monotonic() < deadline:
            for m in c.consume(num_messages=10, timeout=0.5):
                if m.error():
                    err = m.error()
                else:
                    raise AssertionError(f"got a record at offset {m.offset()} instead of an out-of-range error")
        assert err is not None, "no error within 15s for a fetch at offset 100 of 10"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, f"error {err.name()} ({err.str()}), want _AUTO_OFFSET_RESET"
        assert "out of range" in err.str().lower(), f"error text {err.str()!r} does not mention the offset being out of range"
    finally:
        c.close()


@check("ck_fetch_limits_many_partitions")
def ck_fetch_limits_many_partitions(ctx):
    """Fetches over 6 partitions whose records exceed both the per-partition and the response
    byte limits still make progress on every partition and return everything exactly once."""
    topic = ctx.topic("ck-fetchlim")
    create_topic(ctx, topic, PARTS)
    p = producer(ctx, **{"compression.type": "none", "linger.ms": 0})
    want = {}
    for q in range(PARTS):
        want[q] = [os.urandom(150_000) for _ in range(4)]
        for v in want[q]:
            p.produce(topic, partition=q, value=v)
    flush(p)
    c = consumer(ctx, **{"fetch.max.bytes": 200_000, "max.partition.fetch.bytes": 50_000,
                         "message.max.bytes": 50_000, "receive.message.max.bytes": 1_000_000})
    try:
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(PARTS)])
        msgs = consume_all(c, 4 * PARTS)
        assert_nothing_more(c, 0.5)
    finally:
        c.close()
    got = {}
    for m in msgs:
        got.setdefault(m.partition(), []).append((m.offset(), m.value()))
    for q in range(PARTS):
        g = got.get(q, [])
        assert [o for o, _ in g] == [0, 1, 2, 3], f"partition {q}: offsets {[o for o, _ in g]}"
        assert [v for _, v in g] == want[q], f"partition {q}: values differ"


# ---------------------------------------------------------------------------
# DeleteRecords and retention
# ---------------------------------------------------------------------------


def _delete_records(a, topic, offsets):
    """AdminClient.delete_records of [(partition, offset)] of one topic; {partition: future}."""
    futs = a.delete_records([TopicPartition(topic, q, o) for q, o in offsets], request_timeout=TIMEOUT,
                            operation_timeout=10)
    return {tp.partition: f for tp, f in futs.items()}


def _list_offsets(a, topic, parts, spec):
    """AdminClient.list_offsets of one spec for partitions 0..parts-1; {partition: offset}."""
    futs = a.list_offsets({TopicPartition(topic, q): spec for q in range(parts)})
    return {tp.partition: result(f, f"list_offsets({topic}[{tp.partition}], {type(spec).__name__})").offset
            for tp, f in futs.items()}


@check("ck_admin_delete_records")
def ck_admin_delete_records(ctx):
    """AdminClient.delete_records (DeleteRecords) on 3 partitions of ten records each (offsets 0-9,
    stamped base+i s): before 4 answers low watermark 4, before OFFSET_END (-1) the high watermark
    10; the consumer's watermarks and the admin's list_offsets earliest give the new starts. At or
    below the start nothing changes (the answer is the start). Past the end: OFFSET_OUT_OF_RANGE
    for that partition while another of the same call moves. offsets_for_times before every record
    answers the start. A consumer reads from the start; assigned below it, the broker's
    OFFSET_OUT_OF_RANGE resets it to the start (earliest) or is reported (error). A missing topic
    or partition fails in librdkafka's leader lookup (_NOENT), __consumer_offsets on the broker
    with TOPIC_EXCEPTION (17, Kafka's INVALID_TOPIC_EXCEPTION)."""
    topic = ctx.topic("ck-delrec")
    a = create_topic(ctx, topic, 3)
    base = int(time.time() * 1000) - 600_000
    p = producer(ctx)
    for i in range(10):
        for q in range(3):
            p.produce(topic, partition=q, value=f"{q}-{i}".encode(), timestamp=base + i * 1000)
    flush(p)

    fs = _delete_records(a, topic, [(0, 4), (1, OFFSET_END)])
    low = {q: result(f, f"delete_records({topic}[{q}])").low_watermark for q, f in fs.items()}
    assert low == {0: 4, 1: 10}, f"low watermarks after deleting before 4 and OFFSET_END: {low}, want {{0: 4, 1: 10}}"
    earliest = _list_offsets(a, topic, 3, OffsetSpec.earliest())
    assert earliest == {0: 4, 1: 10, 2: 0}, f"list_offsets earliest {earliest}, want {{0: 4, 1: 10, 2: 0}}"
    latest = _list_offsets(a, topic, 3, OffsetSpec.latest())
    assert latest == {0: 10, 1: 10, 2: 10}, f"list_offsets latest {latest}, want 10 each"
    c = consumer(ctx)
    try:
        wm = [c.get_watermark_offsets(TopicPartition(topic, q), timeout=TIMEOUT) for q in range(3)]
    finally:
        c.close()
    assert wm == [(4, 10), (10, 10), (0, 10)], f"watermarks {wm}, want [(4, 10), (10, 10), (0, 10)]"

    for below in (0, 2, 4):
        r = result(_delete_records(a, topic, [(0, below)])[0], f"delete_records before {below}")
        assert r.low_watermark == 4, f"delete_records before {below} with the start at 4: low watermark {r.low_watermark}"

    fs = _delete_records(a, topic, [(0, 6), (2, 11)])
    r = result(fs[0], "delete_records before 6")
    assert r.low_watermark == 6, f"delete_records before 6: low watermark {r.low_watermark}"
    expect_error(fs[2], KafkaError.OFFSET_OUT_OF_RANGE, "delete_records before 11 of a partition ending at 10")
    earliest = _list_offsets(a, topic, 3, OffsetSpec.earliest())
    assert earliest == {0: 6, 1: 10, 2: 0}, f"list_offsets earliest {earliest}, want {{0: 6, 1: 10, 2: 0}}"

    c = consumer(ctx, **{"auto.offset.reset": "earliest"})
    try:
        found = c.offsets_for_times([TopicPartition(topic, q, base - 1) for q in range(3)], timeout=TIMEOUT)
        got = {tp.partition: tp.offset for tp in found}
        assert got == {0: 6, 1: OFFSET_END, 2: 0}, f"offsets_for_times(before every record) {got}, want {{0: 6, 1: -1, 2: 0}}"
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(3)])
        msgs = consume_all(c, 4 + 10)
        assert_nothing_more(c, 0.5)
        by = {}
        for m in msgs:
            by.setdefault(m.partition(), []).append((m.offset(), m.value().decode()))
        assert by.get(0) == [(i, f"0-{i}") for i in range(6, 10)], f"partition 0 from the start: {by.get(0)}"
        assert 1 not in by, f"partition 1 (emptied) gave {by.get(1)}"
        assert by.get(2) == [(i, f"2-{i}") for i in range(10)], f"partition 2: {by.get(2)}"
        # Assigned at 1, below the start 6: OFFSET_OUT_OF_RANGE, reset to the start.
        c.assign([TopicPartition(topic, 0, 1)])
        again = [m.offset() for m in consume_all(c, 4)]
        assert again == [6, 7, 8, 9], f"assigned at 1 (below the start 6), auto.offset.reset=earliest read {again}"
    finally:
        c.close()
    c = consumer(ctx, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 1)])
        deadline = time.monotonic() + 15
        err = None
        while err is None and time.monotonic() < deadline:
            for m in c.consume(num_messages=10, timeout=0.5):
                if m.error():
                    err = m.error()
                else:
                    raise AssertionError(f"got a record at offset {m.offset()}, below the start 6 was asked for")
        assert err is not None, "no error within 15s for a fetch at offset 1, below the start 6"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET and "out of range" in err.str().lower(), \
            f"error {err.name()} ({err.str()}), want _AUTO_OFFSET_RESET naming the offset out of range"
    finally:
        c.close()

    # librdkafka looks the leaders up with Metadata first and fails a partition it does not find
    # itself (_NOENT), without sending DeleteRecords; the broker's own UNKNOWN_TOPIC_OR_PARTITION
    # answer is checked with raw requests by the Go suite. __consumer_offsets has a leader, so
    # the broker refuses it.
    for what, t, q, code in [("a missing topic", ctx.topic("ck-delrec-none"), 0, KafkaError._NOENT),
                             ("a missing partition", topic, 5, KafkaError._NOENT),
                             ("__consumer_offsets", "__consumer_offsets", 0, KafkaError.TOPIC_EXCEPTION)]:
        expect_error(_delete_records(a, t, [(q, 0)])[q], code, f"delete_records of {what}")
    return "low watermarks 4/10/6, OFFSET_OUT_OF_RANGE past the end, resets below the start"


@check("ck_delete_records_survives_kill")
def ck_delete_records_survives_kill(ctx):
    """The start delete_records answers is durable when it is answered, and the segments wholly
    below it are gone by then: a topic with 1 KiB segments and 100 records of ~200 bytes (each
    its own batch, so about 25 segment files); delete_records before 57 answers 57; the .log files
    left are the one holding offset 57 and those after it (deleted ones may be kept, zeroed, as
    .free files for the next rolls); the broker is killed with SIGKILL at
    once and restarted on the same data directory: the start is still 57 (list_offsets earliest
    and the consumer's watermarks), the end 100, and a consumer from the beginning reads 57-99."""
    b = ctx.start_broker([])
    topic = ctx.topic("ck-delrec-kill")
    a = create_topic(ctx, topic, 1, {"segment.bytes": "1024"}, bootstrap=b.bootstrap)
    p = producer(ctx, bootstrap=b.bootstrap, **{"linger.ms": 0, "compression.type": "none"})
    for i in range(100):
        p.produce(topic, partition=0, value=f"{i}:".encode() + b"." * 200)
        flush(p)
    d = os.path.join(b.data_dir, "topics", topic, "0")
    before = sorted(_log_sizes(os.path.join(b.data_dir, "topics"), topic, 0))
    assert len(before) >= 10 and before[0] == 0, f"segments before: {before}"
    r = result(_delete_records(a, topic, [(0, 57)])[0], "delete_records before 57")
    assert r.low_watermark == 57, f"delete_records before 57: low watermark {r.low_watermark}"
    after = sorted(_log_sizes(os.path.join(b.data_dir, "topics"), topic, 0))
    kept = [x for i, x in enumerate(before) if i + 1 == len(before) or before[i + 1] > 57]
    assert after == kept, f"segment files after delete_records before 57: {after}, want {kept} (of {before})"
    # A deleted segment's .log may be kept for the next rolls as <base>.free, zeroed (at most
    # eight per partition); its indexes and producer state go.
    names = os.listdir(d)
    left = sorted(n for n in names if n[:20].isdigit() and int(n[:20]) < kept[0] and not n.endswith(".free"))
    assert not left, f"files of deleted segments left: {left}"
    free = [n for n in names if n.endswith(".free")]
    assert len(free) <= 8, f"more than eight recycled files kept: {free}"
    for n in free:
        with open(os.path.join(d, n), "rb") as f:
            assert not any(f.read()), f"{n} still holds data"
    b.kill()
    b.restart()
    a = admin(ctx, b.bootstrap)
    assert _list_offsets(a, topic, 1, OffsetSpec.earliest()) == {0: 57}, "list_offsets earliest after the restart"
    assert _list_offsets(a, topic, 1, OffsetSpec.latest()) == {0: 100}, "list_offsets latest after the restart"
    c = consumer(ctx, bootstrap=b.bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        wm = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        assert wm == (57, 100), f"watermarks after the restart {wm}, want (57, 100)"
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_all(c, 43)
        assert_nothing_more(c, 0.5)
    finally:
        c.close()
    got = [(m.offset(), m.value().split(b":")[0]) for m in msgs]
    assert got == [(i, str(i).encode()) for i in range(57, 100)], f"read after the restart: {got[:3]}..."
    return f"{len(before)} segments, {len(after)} left; start 57 after SIGKILL and restart"


def _log_sizes(topics_dir, topic, q):
    """{base offset: size} of the partition's segment files (<data>/topics/<topic>/<q>/<base>.log);
    a file deleted while it is listed is left out."""
    d = os.path.join(topics_dir, topic, str(q))
    out = {}
    for name in os.listdir(d):
        if name.endswith(".log"):
            try:
                out[int(name[:-4])] = os.stat(os.path.join(d, name)).st_size
            except FileNotFoundError:
                pass
    return out


@check("ck_retention_time_and_size")
def ck_retention_time_and_size(ctx):
    """Retention while producing, on a broker started with --log-retention-check-interval-ms 500
    and --segment-preallocate-bytes 0 (so a segment file's size is its data). Two topics of two
    partitions with 16 KiB segments get about 17 KB/s per partition for 8 s from an idempotent
    confluent-kafka producer (CreateTime = send time), while one consumer reads all four partitions
    from the beginning (auto.offset.reset=earliest):
    - retention.ms=2000 (and segment.ms=1000): the start (list_offsets earliest and the consumer's
      low watermark) rises above 0 on each partition while producing and never goes back; no
      record is deleted before it is retention.ms old (the record below each start sampled was
      stamped more than 2 s before the answer came); once producing stops, segment.ms rolls the
      quiet partitions and everything expires (start = end).
    - retention.bytes=48 KiB (retention.ms=-1): the start rises above 0 while producing; the .log
      files of each partition hold at most retention.bytes + one segment (kept beyond the limit,
      as Kafka) + what arrives in 3 s (the checks may lag their 500 ms interval on a busy
      machine) while producing, and once it stops and checks ran, between retention.bytes and
      retention.bytes + one segment.
    - the consumer sees no error other than a handled OFFSET_OUT_OF_RANGE reset, reads each
      partition's offsets in increasing order, each record where its delivery report put it; a
      late consumer assigned at offset 0 (below the start) is reset to the start."""
    import logging
    import re

    interval_ms, keep_ms, seg, keep_bytes, parts = 500, 2000, 16384, 3 * 16384, 2
    b = ctx.start_broker(["--log-retention-check-interval-ms", str(interval_ms), "--segment-preallocate-bytes", "0"])
    topics_dir = os.path.join(b.tmp, "data", "topics")
    t_time, t_size = ctx.topic("ck-ret-time"), ctx.topic("ck-ret-size")
    a = create_topic(ctx, t_time, parts, {"retention.ms": str(keep_ms), "segment.bytes": str(seg), "segment.ms": "1000"},
                     bootstrap=b.bootstrap)
    create_topic(ctx, t_size, parts, {"retention.bytes": str(keep_bytes), "retention.ms": "-1", "segment.bytes": str(seg)},
                 bootstrap=b.bootstrap)
    tps = [(t, q) for t in (t_time, t_size) for q in range(parts)]

    p = producer(ctx, bootstrap=b.bootstrap, **{"enable.idempotence": True, "linger.ms": 5})
    placed, errors = {}, []  # (topic, partition) -> {offset: (seq, timestamp)}

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            seq, ts = msg.value().split(b":")[1:3]
            placed.setdefault((msg.topic(), msg.partition()), {})[msg.offset()] = (int(seq), int(ts))

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger(f"rdkafka-{t_time}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(Collect())
    c = consumer(ctx, bootstrap=b.bootstrap, logger=log, **{"auto.offset.reset": "earliest", "log_level": 6})
    c.assign([TopicPartition(t, q, OFFSET_BEGINNING) for t, q in tps])
    read = {tp: [] for tp in tps}  # (offset, seq)
    consumer_errors = []

    def consume():
        for m in c.consume(num_messages=500, timeout=0.02):
            if m.error():
                consumer_errors.append((m.topic(), m.partition(), m.error()))
            else:
                _, seq, _ = m.value().split(b":", 2)
                read[(m.topic(), m.partition())].append((m.offset(), int(seq)))

    samples = []  # (time after the answer, {tp: earliest}, {tp: latest}, {q: {base: size}} of t_size, producing)

    def offsets(spec):
        futs = a.list_offsets({TopicPartition(t, q): spec for t, q in tps})
        return {(tp.topic, tp.partition): result(f, f"list_offsets({tp.topic}[{tp.partition}], {type(spec).__name__})").offset
                for tp, f in futs.items()}

    def sample(producing):
        e, l_ = offsets(OffsetSpec.earliest()), offsets(OffsetSpec.latest())
        sizes = {q: _log_sizes(topics_dir, t_size, q) for q in range(parts)}
        samples.append((int(time.time() * 1000), e, l_, sizes, producing))

    # The producer has its own thread, so that it sends a steady trickle of small batches
    # whatever the sampling below costs.
    per_s, value_pad, produce_s = 80, 200, 8.0
    seq = {tp: 0 for tp in tps}

    def produce():
        begun = time.monotonic()
        while time.monotonic() - begun < produce_s:
            due = int((time.monotonic() - begun) * per_s)
            for t, q in tps:
                while seq[(t, q)] < due:
                    now = int(time.time() * 1000)
                    v = f"{q}:{seq[(t, q)]}:{now}:".encode()
                    p.produce(t, partition=q, value=v + b"." * (value_pad - len(v)), timestamp=now, on_delivery=on_delivery)
                    seq[(t, q)] += 1
            p.poll(0.005)
        p.flush(TIMEOUT)

    import threading
    sender = threading.Thread(target=produce, daemon=True)
    low_seen = {}
    try:
        sender.start()
        next_sample = time.monotonic()
        while sender.is_alive():
            consume()
            if time.monotonic() >= next_sample:
                next_sample += interval_ms / 1000
                sample(True)
                for q in range(parts):
                    lo, _hi = c.get_watermark_offsets(TopicPartition(t_time, q), timeout=TIMEOUT, cached=False)
                    low_seen[q] = max(low_seen.get(q, 0), lo)
        sender.join()
        assert len(p) == 0, f"{len(p)} message(s) still undelivered {TIMEOUT:.0f}s after producing stopped"
        stopped = time.monotonic()
        assert not errors, f"{len(errors)} delivery errors, first {errors[0].name()} {errors[0].str()}"

        # A late consumer at offset 0 of the time topic is reset to the start. Producing has
        # stopped, and on a slow machine the partition may have expired entirely before the
        # consumer fetches; one more record, sent once it is assigned, gives it something to read
        # wherever the reset puts it (a consumer left at 0 would never read it).
        start_before = samples[-1][1][(t_time, 0)]
        late = consumer(ctx, bootstrap=b.bootstrap, **{"auto.offset.reset": "earliest"})
        try:
            late.assign([TopicPartition(t_time, 0, 0)])
            now = int(time.time() * 1000)
            marker = f"0:{seq[(t_time, 0)]}:{now}:".encode()
            seq[(t_time, 0)] += 1
            p.produce(t_time, partition=0, value=marker + b"." * (value_pad - len(marker)), timestamp=now, on_delivery=on_delivery)
            assert p.flush(TIMEOUT) == 0, "the late consumer's record was not delivered"
            [first] = consume_all(late, 1)
        finally:
            late.close()
        assert first.offset() >= start_before > 0, \
            f"a consumer assigned at 0 with the start at {start_before} read offset {first.offset()} first"

        # Producing stopped: the time topic expires entirely (segment.ms rolls the quiet
        # partitions), the size topic settles within its limit.
        def settled():
            consume()
            sample(False)
            _t, e, l_, sizes, _ = samples[-1]
            expired = all(e[(t_time, q)] == l_[(t_time, q)] for q in range(parts))
            return expired and time.monotonic() - stopped > 3 * interval_ms / 1000
        try:
            wait_until(settled, 25, interval=interval_ms / 1000, what="the time topic to expire entirely")
        except AssertionError:
            _t, e, l_, _s, _ = samples[-1]
            raise AssertionError(f"{t_time}: start {[e[(t_time, q)] for q in range(parts)]}, end "
                                 f"{[l_[(t_time, q)] for q in range(parts)]} 25 s after producing stopped; "
                                 f"files {[sorted(_log_sizes(topics_dir, t_time, q).items()) for q in range(parts)]}") from None
        for _ in range(20):  # read what is left of the size topic
            consume()
    finally:
        c.close()

    # Starts: rose above 0 while producing, never went back, never above the end.
    for tp in tps:
        during = [s[1][tp] for s in samples if s[4]]
        assert any(x > 0 for x in during), f"{tp[0]}[{tp[1]}]: the start stayed 0 while producing (samples {during})"
        seen = [s[1][tp] for s in samples]
        assert all(x <= y for x, y in zip(seen, seen[1:])), f"{tp[0]}[{tp[1]}]: the start went back: {seen}"
        assert all(s[1][tp] <= s[2][tp] for s in samples), f"{tp[0]}[{tp[1]}]: a start above the end"
    assert all(low_seen.get(q, 0) > 0 for q in range(parts)), f"consumer low watermarks of {t_time} while producing: {low_seen}"

    # retention.ms: nothing deleted before it was retention.ms old.
    for at, e, *_ in samples:
        for q in range(parts):
            s0 = e[(t_time, q)]
            if s0 > 0:
                _seq, ts = placed[(t_time, q)][s0 - 1]
                assert ts < at - keep_ms, (f"{t_time}[{q}]: start {s0} at {at}: offset {s0 - 1} stamped {ts}, "
                                           f"{at - ts} ms before, was deleted (retention.ms={keep_ms})")

    # retention.bytes: the partition's .log files. After a check a partition holds less than
    # retention.bytes + its oldest segment (Kafka's rule); until the next one it grows at the
    # produce rate. So while producing, what is over retention.bytes + one segment, divided by
    # the partition's bytes per second, is how far behind the checks were: at most 3 s with a
    # 500 ms interval. Once producing stopped and checks ran: within the limit, never under it.
    # The active segment's file is written with O_DIRECT, in whole 4 KiB blocks: its size is its
    # data rounded up to 4 KiB (even without preallocation), hence `pad`.
    pad = 4096
    most = {q: max(sum(s[3][q].values()) for s in samples if s[4]) for q in range(parts)}
    final = {q: sum(samples[-1][3][q].values()) for q in range(parts)}
    lag = {}
    for q in range(parts):
        e, l_, sizes = samples[-1][1][(t_size, q)], samples[-1][2][(t_size, q)], samples[-1][3][q]
        rate = per_s * sum(sizes.values()) / (l_ - e)  # bytes per second into the partition
        over = [(sum(s_[3][q].values()) - keep_bytes - seg - pad, s_[0]) for s_ in samples if s_[4]]
        worst = max(over)
        lag[q] = round(max(0, worst[0]) / rate, 2)
        assert lag[q] <= 3.0, (f"{t_size}[{q}]: {worst[0] + keep_bytes + seg + pad} bytes of .log files while producing at "
                               f"{rate:.0f} B/s: {worst[0]} over retention.bytes {keep_bytes} + a segment of {seg}, "
                               f"{lag[q]} s of producing; sizes by sample: {[(s_[0] - samples[0][0], sum(s_[3][q].values())) for s_ in samples]}")
        assert keep_bytes <= final[q] <= keep_bytes + seg + pad, \
            f"{t_size}[{q}]: {final[q]} bytes of .log files after producing ({sorted(samples[-1][3][q].items())}), want " \
            f"{keep_bytes}..{keep_bytes + seg} (+ the active file's padding to 4 KiB)"

    # The consumer: no errors but handled resets, offsets increasing, records where they were put.
    bad = [(t, q, e) for t, q, e in consumer_errors if e.code() not in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET)]
    assert not bad, f"consumer errors: {[(t, q, e.name(), e.str()) for t, q, e in bad[:3]]}"
    gaps = 0
    for tp, got in read.items():
        offs = [o for o, _ in got]
        assert all(x < y for x, y in zip(offs, offs[1:])), f"{tp[0]}[{tp[1]}]: offsets read out of order"
        wrong = [(o, s) for o, s in got if placed[tp].get(o, (None,))[0] != s]
        assert not wrong, f"{tp[0]}[{tp[1]}]: records not where their delivery reports put them: {wrong[:3]}"
        gaps += sum(1 for x, y in zip(offs, offs[1:]) if y != x + 1)
    resets = [x for x in lines if re.search(r"offset reset|out of range", x, re.I)]
    produced = sum(seq.values())
    return (f"{produced} records; starts {[samples[-1][1][tp] for tp in tps]}; size topic .log bytes max {list(most.values())} "
            f"(checks behind by {list(lag.values())} s at worst), final {list(final.values())}; consumer read {sum(len(v) for v in read.values())}, {gaps} gaps, "
            f"{len(consumer_errors)} OOR errors, {len(resets)} reset log lines")


@check("ck_broker_configs_retention_applies_at_once")
def ck_broker_configs_retention_applies_at_once(ctx):
    """Broker-wide retention changed at run time reaches the open partitions of existing topics
    at once, on its own broker (--log-retention-check-interval-ms 200, --log-retention-bytes
    1000000000 given as a flag, so STATIC_BROKER_CONFIG): a topic with 4 KiB segments and one
    overriding retention.bytes and retention.ms, fed about 40 KB each. log.retention.bytes=8192 on
    broker 0 (incremental_alter_configs) moves the first topic's start (list_offsets earliest)
    within seconds and deletes its oldest segment files; the other keeps offset 0 and every
    segment. After SIGKILL and a restart the value is still there (DYNAMIC_BROKER_CONFIG); DELETE
    takes it back to the flag's value (the start stays where it was). log.retention.ms=1000 for
    every broker (resource "", sent by hand) then deletes every closed segment of the first
    topic, leaving the active one, and nothing of the other."""
    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    BROKER = ResourceType.BROKER
    b = ctx.start_broker(["--log-retention-check-interval-ms", "200", "--segment-preallocate-bytes", "0",
                          "--log-retention-bytes", "1000000000"])
    dyn, own = ctx.topic("ck-dynret"), ctx.topic("ck-dynret-own")
    a = create_topic(ctx, dyn, 1, {"segment.bytes": "4096"}, bootstrap=b.bootstrap)
    create_topic(ctx, own, 1, {"segment.bytes": "4096", "retention.bytes": "1000000", "retention.ms": "-1"},
                 bootstrap=b.bootstrap)
    p = producer(ctx, bootstrap=b.bootstrap, **{"linger.ms": 0, "compression.type": "none"})
    for i in range(300):
        for t in (dyn, own):
            p.produce(t, partition=0, value=f"{i:05}-".encode() + b"z" * 120)
        if i % 10 == 9:
            flush(p)
    flush(p)
    topics_dir = os.path.join(b.data_dir, "topics")
    dyn_before, own_before = sorted(_log_sizes(topics_dir, dyn, 0)), sorted(_log_sizes(topics_dir, own, 0))
    assert len(dyn_before) >= 6 and len(own_before) >= 6, f"segments: {dyn} {dyn_before}, {own} {own_before}"

    def start(topic):
        return _list_offsets(a, topic, 1, OffsetSpec.earliest())[0]

    assert (start(dyn), start(own)) == (0, 0), "starts before any change"
    static = ("log.retention.bytes", "1000000000", STATIC_BROKER)
    flag_default = ("log.retention.bytes", "-1", DEFAULT)
    got = _entry(a, ResourceType.TOPIC, dyn, "retention.bytes")
    assert got == ("1000000000", STATIC_BROKER, False, _as_seen(static, flag_default)), f"{dyn} retention.bytes: {got}"

    result(_incremental(a, "0", [("log.retention.bytes", "8192", SET)], restype=BROKER), "SET log.retention.bytes on broker 0")
    moved = wait_until(lambda: start(dyn), 15, 0.2, f"{dyn}'s start to move after log.retention.bytes=8192")
    time.sleep(1.0)  # five retention checks: the other topic must still be whole
    dyn_after = sorted(_log_sizes(topics_dir, dyn, 0))
    assert dyn_after[0] > 0 and len(dyn_after) < len(dyn_before), f"{dyn} segments after: {dyn_after} (before {dyn_before})"
    assert start(own) == 0 and sorted(_log_sizes(topics_dir, own, 0)) == own_before, \
        f"{own} (own retention.bytes) lost data: start {start(own)}, segments {sorted(_log_sizes(topics_dir, own, 0))}"
    node = ("log.retention.bytes", "8192", DYNAMIC_BROKER)
    got = _entry(a, ResourceType.TOPIC, dyn, "retention.bytes")
    assert got[:2] == ("8192", DYNAMIC_BROKER), f"{dyn} retention.bytes after SET on broker 0: {got}"
    got = _entry(a, ResourceType.TOPIC, own, "retention.bytes")
    assert got[:2] == ("1000000", DYNAMIC_TOPIC), f"{own} retention.bytes after SET on broker 0: {got}"

    # Drop the clients first (the admin lives in reference cycles), so that none logs the kill.
    del p, a
    gc.collect()
    b.kill()
    b.restart()
    a = admin(ctx, b.bootstrap)
    got = _entry(a, BROKER, "0", "log.retention.bytes")
    assert got == ("8192", DYNAMIC_BROKER, False, _as_seen(node, static, flag_default)), \
        f"broker 0 log.retention.bytes after SIGKILL and a restart: {got}"
    moved = start(dyn)
    assert moved > 0, f"{dyn}'s start after the restart: {moved}"
    result(_incremental(a, "0", [("log.retention.bytes", None, DELETE)], restype=BROKER), "DELETE log.retention.bytes")
    got = _entry(a, ResourceType.TOPIC, dyn, "retention.bytes")
    assert got[:2] == ("1000000000", STATIC_BROKER), f"{dyn} retention.bytes after DELETE on broker 0: {got}"

    answers = incremental_alter_configs_v0(b.port, [(BROKER_RESOURCE, "", [("log.retention.ms", OP_SET, "1000")])])
    assert answers == [(BROKER_RESOURCE, "", 0, None)], f"SET log.retention.ms for every broker: {answers}"
    got = _entry(a, ResourceType.TOPIC, dyn, "retention.ms")
    assert got[:2] == ("1000", DYNAMIC_DEFAULT_BROKER), f"{dyn} retention.ms after SET for every broker: {got}"
    wait_until(lambda: len(_log_sizes(topics_dir, dyn, 0)) == 1, 15, 0.2,
               f"{dyn}'s closed segments to be deleted after log.retention.ms=1000")
    [active] = _log_sizes(topics_dir, dyn, 0)
    assert start(dyn) == active >= dyn_before[-1], f"{dyn}: start {start(dyn)}, segment {active}, last before {dyn_before[-1]}"
    assert start(own) == 0 and sorted(_log_sizes(topics_dir, own, 0)) == own_before, f"{own} lost data to log.retention.ms"
    return (f"{len(dyn_before)} segments; start 0 -> {moved} (log.retention.bytes on broker 0), kept across SIGKILL, "
            f"-> {active} (log.retention.ms for all); the topic with its own settings kept {len(own_before)}")


# ---------------------------------------------------------------------------
# Consumer groups: KIP-848 (group.protocol=consumer) and classic cooperative-sticky
# ---------------------------------------------------------------------------


def group_consumer(ctx, group, client_id, **conf):
    """A subscribing consumer: offsets are stored as messages are delivered (commit() commits
    the positions), nothing is committed automatically."""
    _need()
    c = {
        "bootstrap.servers": ctx.bootstrap,
        "group.id": group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "log_level": 3,
    }
    c.update(conf)
    return Consumer(c)


class Rebalances:
    """Follows one member's incremental on_assign / on_revoke / on_lost callbacks: `events` in
    order, `owned` as the callbacks say, and `bad` for any callback that assigns a partition
    already owned or revokes one not owned (so not incremental)."""

    def __init__(self, name):
        self.name = name
        self.events = []
        self.owned = set()
        self.bad = []

    def on_assign(self, _c, parts):
        ps = sorted(p.partition for p in parts)
        self.events.append(("assign", ps))
        again = self.owned & set(ps)
        if again:
            self.bad.append(f"{self.name}: on_assign {ps} re-assigns owned {sorted(again)}")
        self.owned |= set(ps)

    def on_revoke(self, _c, parts):
        ps = sorted(p.partition for p in parts)
        self.events.append(("revoke", ps))
        unknown = set(ps) - self.owned
        if unknown:
            self.bad.append(f"{self.name}: on_revoke {ps} names partitions not owned {sorted(unknown)}")
        self.owned -= set(ps)

    def on_lost(self, _c, parts):
        ps = sorted(p.partition for p in parts)
        self.events.append(("lost", ps))
        self.bad.append(f"{self.name}: partitions lost {ps}")
        self.owned -= set(ps)

    def kwargs(self):
        return {"on_assign": self.on_assign, "on_revoke": self.on_revoke, "on_lost": self.on_lost}


def assignment_of(c):
    return {tp.partition for tp in c.assignment()}


def pump(consumers, got, until, timeout, what):
    """Polls every consumer in turn (librdkafka runs the protocol in its own threads) until
    `until()` is true; messages go to `got[i]`. Errors and the deadline are failures."""
    deadline = time.monotonic() + timeout
    while True:
        for i, c in enumerate(consumers):
            for m in c.consume(num_messages=500, timeout=0.1):
                if m.error():
                    raise AssertionError(f"consumer {i}: {m.error().name()} {m.error().str()}")
                got[i].append((m.partition(), m.offset(), m.value()))
        if until():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def drain(consumers, got, seconds):
    """Keeps polling for `seconds` more, collecting anything that still arrives."""
    end = time.monotonic() + seconds
    pump(consumers, got, lambda: time.monotonic() >= end, seconds + 10, "drain")


def split_done(consumers, parts, share):
    sets = [assignment_of(c) for c in consumers]
    return (all(len(s) == share for s in sets) and len(set().union(*sets)) == parts
            and sum(len(s) for s in sets) == parts)


def produce_values(ctx, topic, parts, per, prefix):
    p = producer(ctx)
    for q in range(parts):
        for i in range(per):
            p.produce(topic, partition=q, value=f"{prefix}{q}-{i}".encode())
    flush(p)


def check_reads(got, sets, parts, per, prefix):
    for i, rows in enumerate(got):
        wrong = {p for p, _o, _v in rows} - sets[i]
        assert not wrong, f"member {i} (assigned {sorted(sets[i])}) read partitions {sorted(wrong)}"
    rows = [r for g in got for r in g]
    want = {(q, i, f"{prefix}{q}-{i}".encode()) for q in range(parts) for i in range(per)}
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} record(s) read twice"
    assert set(rows) == want, f"read {len(set(rows))} distinct records, want {len(want)}"


def describe_group(a, group):
    return result(a.describe_consumer_groups([group], request_timeout=TIMEOUT)[group], f"describe_consumer_groups({group})")


def described_members(desc, topic):
    out = {}
    for m in desc.members:
        tps = m.assignment.topic_partitions if m.assignment else []
        assert all(tp.topic == topic for tp in tps), f"member {m.client_id} assigned {tps}"
        out[m.client_id] = sorted(tp.partition for tp in tps)
    return out


@check("ck_group_kip848_two_members_then_classic")
def ck_group_kip848_two_members_then_classic(ctx):
    """group.protocol=consumer (KIP-848: ConsumerGroupHeartbeat, server-side assignor): two
    members share a 6-partition topic 3 and 3 through incremental callbacks, read every record
    once and commit; describe_consumer_groups (ConsumerGroupDescribe) shows a STABLE CONSUMER
    group with both members, list_consumer_group_offsets the commits. Once they left, a classic
    consumer (JoinGroup) takes over the empty group and resumes from the committed offsets."""
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, ConsumerGroupType

    topic = ctx.topic("ck-k848")
    group = f"{topic}-g"
    parts, per = 6, 20
    a = create_topic(ctx, topic, parts)
    trackers = [Rebalances(f"m{i}") for i in range(2)]
    cs = [group_consumer(ctx, group, f"ck-m{i}", **{"group.protocol": "consumer"}) for i in range(2)]
    got = [[], []]
    try:
        for c, t in zip(cs, trackers):
            c.subscribe([topic], **t.kwargs())
        pump(cs, got, lambda: split_done(cs, parts, 3), 40, "a 3/3 split of 6 partitions")
        sets = [assignment_of(c) for c in cs]
        bad = trackers[0].bad + trackers[1].bad
        assert not bad, f"non-incremental callbacks: {bad}; events {[t.events for t in trackers]}"
        for c, t in zip(cs, trackers):
            assert t.owned == assignment_of(c), f"{t.name}: callbacks say {sorted(t.owned)}, assignment() {sorted(assignment_of(c))}"
        assert got == [[], []], "records read before any were produced"

        produce_values(ctx, topic, parts, per, "v-")
        pump(cs, got, lambda: sum(map(len, got)) >= parts * per, 30, f"{parts * per} records")
        drain(cs, got, 0.5)  # a duplicate delivered late would show up here
        check_reads(got, sets, parts, per, "v-")
        for c in cs:
            committed = c.commit(asynchronous=False)
            errs = [tp for tp in committed if tp.error is not None]
            assert not errs, f"commit errors: {errs}"

        d = describe_group(a, group)
        assert d.type == ConsumerGroupType.CONSUMER, f"group type {d.type}, want CONSUMER"
        assert d.state == ConsumerGroupState.STABLE, f"group state {d.state}, want STABLE"
        assert d.partition_assignor == "uniform", f"assignor {d.partition_assignor!r}, want the default 'uniform'"
        mem = described_members(d, topic)
        want = {f"ck-m{i}": sorted(sets[i]) for i in range(2)}
        assert mem == want, f"described members {mem}, consumers hold {want}"
        r = result(a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT)[group],
                   "list_consumer_group_offsets")
        offs = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == topic}
        assert offs == {q: per for q in range(parts)}, f"committed offsets {offs}, want {per} everywhere"

        for c in cs:
            c.close()
        cs = []
        d = describe_group(a, group)
        assert d.state == ConsumerGroupState.EMPTY and not d.members, f"after close: {d.state}, {len(d.members)} members"

        produce_values(ctx, topic, parts, 1, "new-")
        c3 = group_consumer(ctx, group, "ck-classic", **{"group.protocol": "classic"})
        cs = [c3]
        got3 = [[]]
        c3.subscribe([topic])
        pump(cs, got3, lambda: len(got3[0]) >= parts, 30, f"the classic consumer to read {parts} new records")
        drain(cs, got3, 0.5)
        want_rows = sorted((q, per, f"new-{q}-0".encode()) for q in range(parts))
        assert sorted(got3[0]) == want_rows, f"classic consumer read {sorted(got3[0])[:8]}, want only offset {per} of each partition"
        d = describe_group(a, group)
        assert (d.type, d.state) == (ConsumerGroupType.CLASSIC, ConsumerGroupState.STABLE), \
            f"with a classic member: {d.type} {d.state}, want CLASSIC STABLE"
        assert described_members(d, topic) == {"ck-classic": list(range(parts))}, f"members {described_members(d, topic)}"
    finally:
        for c in cs:
            c.close()
    return f"split {sorted(sets[0])} / {sorted(sets[1])}; classic member resumed at {per}"


@check("ck_group_cooperative_sticky_incremental")
def ck_group_cooperative_sticky_incremental(ctx):
    """Classic protocol with partition.assignment.strategy=cooperative-sticky (KIP-429): a
    member owning all 6 partitions gives exactly 3 up when a second joins, through incremental
    on_revoke/on_assign callbacks, never revoking one it keeps; when the second leaves, the
    first gets them back without a revoke. Each member reads only its own partitions."""
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    topic = ctx.topic("ck-coop")
    group = f"{topic}-g"
    parts, per = 6, 10
    a = create_topic(ctx, topic, parts)
    conf = {"group.protocol": "classic", "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000}
    t1, t2 = Rebalances("m1"), Rebalances("m2")
    c1 = group_consumer(ctx, group, "ck-coop-1", **conf)
    cs = [c1]
    got = [[], []]
    try:
        c1.subscribe([topic], **t1.kwargs())
        pump([c1], got, lambda: len(assignment_of(c1)) == parts, 30, "the first member to own all 6 partitions")
        assert t1.events == [("assign", list(range(parts)))], f"first member's callbacks {t1.events}"
        first_events = len(t1.events)

        c2 = group_consumer(ctx, group, "ck-coop-2", **conf)
        cs.append(c2)
        c2.subscribe([topic], **t2.kwargs())
        pump(cs, got, lambda: split_done(cs, parts, 3), 40, "a 3/3 split after the second member joined")
        sets = [assignment_of(c) for c in cs]
        bad = t1.bad + t2.bad
        assert not bad, f"non-incremental callbacks: {bad}; m1 {t1.events}, m2 {t2.events}"
        moved = [ps for kind, ps in t1.events[first_events:] if kind == "revoke"]
        revoked = {p for ps in moved for p in ps}
        assert revoked == sets[1], f"m1 revoked {sorted(revoked)} (callbacks {t1.events}); m2 got {sorted(sets[1])}"
        assert not any(kind == "assign" and ps for kind, ps in t1.events[first_events:]), \
            f"m1 was assigned partitions again while giving some up: {t1.events}"
        assert not any(kind == "revoke" and ps for kind, ps in t2.events), f"m2 had partitions revoked: {t2.events}"
        for c, t in zip(cs, (t1, t2)):
            assert t.owned == assignment_of(c), f"{t.name}: callbacks say {sorted(t.owned)}, assignment() {sorted(assignment_of(c))}"

        d = describe_group(a, group)
        assert (d.type, d.state) == (ConsumerGroupType.CLASSIC, ConsumerGroupState.STABLE), f"group {d.type} {d.state}"
        assert d.partition_assignor == "cooperative-sticky", f"protocol {d.partition_assignor!r}"
        mem = described_members(d, topic)
        assert mem == {"ck-coop-1": sorted(sets[0]), "ck-coop-2": sorted(sets[1])}, f"described {mem}, hold {[sorted(s) for s in sets]}"

        produce_values(ctx, topic, parts, per, "c-")
        pump(cs, got, lambda: sum(map(len, got)) >= parts * per, 30, f"{parts * per} records")
        drain(cs, got, 0.5)
        check_reads(got, sets, parts, per, "c-")

        before = len(t1.events)
        c2.close()
        cs.remove(c2)
        pump([c1], got, lambda: len(assignment_of(c1)) == parts, 30, "m1 to get all 6 partitions back")
        later = t1.events[before:]
        assert not any(kind != "assign" and ps for kind, ps in later), f"m1 lost or gave up partitions when m2 left: {later}"
        assert {p for _k, ps in later for p in ps} == sets[1], f"m1 got back {later}, want {sorted(sets[1])}"
        assert not t1.bad, f"non-incremental callbacks: {t1.bad}"
    finally:
        for c in cs:
            c.close()
    return f"m1 kept {sorted(sets[0])}, handed over {sorted(sets[1])} and got them back"


@check("ck_idempotent_producer")
def ck_idempotent_producer(ctx):
    """enable.idempotence=true: InitProducerId, sequenced batches with five in flight; every record
    delivered once at dense offsets and read back in order."""
    topic = ctx.topic("ck-idem")
    create_topic(ctx, topic, 3)
    n = 3000
    p = producer(ctx, **{"enable.idempotence": True, "compression.type": "lz4", "linger.ms": 2,
                         "max.in.flight.requests.per.connection": 5})
    delivered, errors = {}, []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[int(msg.value())] = (msg.partition(), msg.offset())

    for i in range(n):
        p.produce(topic, key=f"k{i % 11}".encode(), value=str(i).encode(), on_delivery=cb)
        p.poll(0)
    flush(p)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0].name()} {errors[0].str()}"
    assert len(delivered) == n
    by_part = {}
    for i in range(n):
        by_part.setdefault(delivered[i][0], []).append(delivered[i][1])
    for part, offs in by_part.items():
        assert offs == list(range(len(offs))), f"partition {part}: offsets not dense and in send order"
    c = consumer(ctx)
    try:
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(3)])
        msgs = consume_all(c, n)
        assert_nothing_more(c)
    finally:
        c.close()
    assert sorted(int(m.value()) for m in msgs) == list(range(n)), "a record is missing or duplicated"
    return f"{n} idempotent records over {len(by_part)} partitions"


# ---------------------------------------------------------------------------
# Transactions (transactional.id; read_committed consumers)
# ---------------------------------------------------------------------------


def txn_producer(ctx, txn_id, bootstrap=None, errors=None, **conf):
    """A transactional producer (idempotent, acks=all). `errors`, a list, collects what
    librdkafka reports through error_cb (then its log is kept to critical lines only: the checks
    that pass one expect errors, and name them in their failures)."""
    c = {"transactional.id": txn_id, "enable.idempotence": True, "transaction.timeout.ms": 60000}
    if errors is not None:
        c["error_cb"] = lambda e: errors.append(f"{e.name()}: {e.str()}")
        c["log_level"] = 2
    c.update(conf)
    return producer(ctx, bootstrap, **c)


def txn_call(what, fn, *args):
    """Calls a transactional API (init/commit/abort/send_offsets); a KafkaException fails the
    check with its code and librdkafka's classification."""
    try:
        return fn(*args)
    except KafkaException as e:
        err = e.args[0]
        raise AssertionError(f"{what} failed: {_txn_err(err)}") from None


def _txn_err(err):
    return (f"{err.name()} ({err.str()}; fatal={err.fatal()}, abortable={err.txn_requires_abort()}, "
            f"retriable={err.retriable()})")


def txn_expect_failure(what, fn, *args):
    """Calls a transactional API that must fail; returns the KafkaError."""
    try:
        fn(*args)
    except KafkaException as e:
        return e.args[0]
    raise AssertionError(f"{what} succeeded, want a failure")


def produce_tracked(p, topic, rows, acked):
    """Produces (partition, value) rows; each delivery lands in `acked` as (partition, offset,
    value, error or None)."""
    def cb(err, msg):
        acked.append((msg.partition(), msg.offset(), msg.value(), err))
    for q, v in rows:
        p.produce(topic, partition=q, value=v, on_delivery=cb)
        p.poll(0)


def assert_delivered(acked, what):
    bad = [(q, v, e) for q, _o, v, e in acked if e is not None]
    assert not bad, f"{what}: {len(bad)} of {len(acked)} deliveries failed, first {bad[0][1]!r} on {bad[0][0]}: {bad[0][2]}"


def read_isolated(ctx, topic, parts, isolation, bootstrap=None, timeout=30.0):
    """Reads partitions 0..parts-1 of `topic` from the beginning with `isolation.level` set to
    `isolation` until each partition reported its end (partition EOF: for read_committed the last
    stable offset, otherwise the high watermark). Returns {partition: [(offset, value)]}; any
    other consumer error fails."""
    c = consumer(ctx, bootstrap, **{"isolation.level": isolation, "enable.partition.eof": True})
    got = {q: [] for q in range(parts)}
    at_end = set()
    deadline = time.monotonic() + timeout
    try:
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(parts)])
        while len(at_end) < parts:
            if time.monotonic() >= deadline:
                counts = {q: len(v) for q, v in got.items()}
                raise AssertionError(f"{isolation} read of {topic}: partitions {sorted(set(range(parts)) - at_end)} "
                                     f"did not reach their end within {timeout:.0f}s (records so far {counts})")
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise AssertionError(f"{isolation} read of {topic}: {m.error().name()} {m.error().str()}")
                got[m.partition()].append((m.offset(), m.value()))
    finally:
        c.close()
    return got


def values_of(rows):
    return {q: [v for _o, v in rs] for q, rs in rows.items()}


def _ends(a, topic, parts, isolation):
    """list_offsets latest at `isolation` (IsolationLevel): {partition: offset}."""
    from confluent_kafka import IsolationLevel
    level = {"read_committed": IsolationLevel.READ_COMMITTED, "read_uncommitted": IsolationLevel.READ_UNCOMMITTED}[isolation]
    futs = a.list_offsets({TopicPartition(topic, q): OffsetSpec.latest() for q in range(parts)},
                          isolation_level=level, request_timeout=TIMEOUT)
    return {tp.partition: result(f, f"list_offsets({topic}[{tp.partition}], latest, {isolation})").offset
            for tp, f in futs.items()}


def _show(rows, n=6):
    """A short view of {partition: [values]} for a failure message."""
    return {q: (vs[:n] + ["..."] if len(vs) > n else vs) for q, vs in rows.items()}


@check("ck_txn_commit_abort_isolation")
def ck_txn_commit_abort_isolation(ctx):
    """One transactional producer runs eight transactions over a 3-partition topic, each writing
    1-6 records to two or three of the partitions, four committed and four aborted (flushed
    first, so their records are in the log; librdkafka would purge unsent ones), with plain
    (non-transactional) records written between some of them. A read_committed consumer reads
    exactly the committed and plain records, in order per partition; a read_uncommitted one reads
    every record; each partition's high watermark is its records plus one marker per transaction
    that touched it; list_offsets latest is the same at both isolation levels (no transaction
    open). Then a transaction is left open on partitions 0 and 1 (flushed) and plain records are
    written after it to all three: list_offsets latest read_committed on 0 and 1 is the open
    transaction's first offset (the last stable offset), read_uncommitted the high watermark; a
    read_committed consumer stops there (not even the later plain records) while partition 2
    reads to its end; once the transaction commits, everything is visible."""
    topic = ctx.topic("ck-txn")
    parts = 3
    a = create_topic(ctx, topic, parts)
    p = txn_producer(ctx, f"{topic}-tx")
    plain = producer(ctx)
    txn_call("init_transactions", p.init_transactions, TIMEOUT)
    visible = {q: [] for q in range(parts)}  # what read_committed must read, in order
    written = {q: [] for q in range(parts)}  # every record in the log, in order
    markers = {q: 0 for q in range(parts)}
    plan = ["commit", "abort", "commit", "abort", "abort", "commit", "commit", "abort"]
    for t, end in enumerate(plan):
        touched = [q for q in range(parts) if (t + q) % 4 != 3]
        rows = [(q, f"t{t}-{end}-q{q}-{i}".encode()) for q in touched for i in range(1 + (t * 5 + q) % 6)]
        acked = []
        p.begin_transaction()
        produce_tracked(p, topic, rows, acked)
        if end == "commit":
            txn_call(f"commit_transaction #{t}", p.commit_transaction, TIMEOUT)
        else:
            flush(p)
            txn_call(f"abort_transaction #{t}", p.abort_transaction, TIMEOUT)
        assert_delivered(acked, f"transaction #{t} ({end})")
        for q, v in rows:
            written[q].append(v)
            if end == "commit":
                visible[q].append(v)
        for q in touched:
            markers[q] += 1
        if t in (1, 4):
            plain_rows = [(q, f"plain-after-{t}-q{q}".encode()) for q in range(parts)]
            for q, v in plain_rows:
                plain.produce(topic, partition=q, value=v)
                written[q].append(v)
                visible[q].append(v)
            flush(plain)

    rc = read_isolated(ctx, topic, parts, "read_committed")
    ru = read_isolated(ctx, topic, parts, "read_uncommitted")
    assert values_of(rc) == visible, f"read_committed read {_show(values_of(rc))}, want {_show(visible)}"
    assert values_of(ru) == written, f"read_uncommitted read {_show(values_of(ru))}, want {_show(written)}"
    hwm = {q: len(written[q]) + markers[q] for q in range(parts)}
    got_ru, got_rc = _ends(a, topic, parts, "read_uncommitted"), _ends(a, topic, parts, "read_committed")
    assert got_ru == hwm, f"high watermarks {got_ru}, want records + one marker per transaction: {hwm}"
    assert got_rc == hwm, f"list_offsets latest read_committed {got_rc} with no transaction open, want {hwm}"
    for q in range(parts):
        offs = [o for o, _v in ru[q]]
        assert offs == sorted(set(offs)) and offs[-1] < hwm[q], f"partition {q}: read_uncommitted offsets {offs}"
        # Every record read_committed returns is the one at that offset.
        assert set(rc[q]) <= set(ru[q]), f"partition {q}: read_committed returned records at other offsets than read_uncommitted"

    # A transaction left open on partitions 0 and 1, plain records after it everywhere.
    acked = []
    p.begin_transaction()
    open_rows = [(q, f"open-q{q}-{i}".encode()) for q in (0, 1) for i in range(2)]
    produce_tracked(p, topic, open_rows, acked)
    flush(p)
    assert_delivered(acked, "the open transaction's records")
    first_open = {q: min(o for pq, o, _v, _e in acked if pq == q) for q in (0, 1)}
    assert first_open == {0: hwm[0], 1: hwm[1]}, f"open transaction starts at {first_open}, want the ends {hwm}"
    late = [(q, f"late-q{q}".encode()) for q in range(parts)]
    for q, v in late:
        plain.produce(topic, partition=q, value=v)
    flush(plain)
    got_ru, got_rc = _ends(a, topic, parts, "read_uncommitted"), _ends(a, topic, parts, "read_committed")
    want_ru = {0: hwm[0] + 3, 1: hwm[1] + 3, 2: hwm[2] + 1}
    want_rc = {0: hwm[0], 1: hwm[1], 2: hwm[2] + 1}
    assert got_ru == want_ru, f"with a transaction open: list_offsets latest read_uncommitted {got_ru}, want {want_ru}"
    assert got_rc == want_rc, f"with a transaction open: list_offsets latest read_committed {got_rc}, want the last stable offsets {want_rc}"
    rc = values_of(read_isolated(ctx, topic, parts, "read_committed"))
    want = {0: visible[0], 1: visible[1], 2: visible[2] + [b"late-q2"]}
    assert rc == want, f"read_committed with a transaction open read {_show(rc)}, want it to stop at the open transaction: {_show(want)}"
    txn_call("commit_transaction (the open one)", p.commit_transaction, TIMEOUT)
    for q, v in open_rows:
        visible[q].append(v)
    for q, v in late:
        visible[q].append(v)
    rc = values_of(read_isolated(ctx, topic, parts, "read_committed"))
    assert rc == visible, f"read_committed after the commit read {_show(rc)}, want {_show(visible)}"
    got_rc = _ends(a, topic, parts, "read_committed")
    want_end = {q: want_ru[q] + (1 if q in (0, 1) else 0) for q in range(parts)}
    assert got_rc == want_end, f"list_offsets latest read_committed after the commit {got_rc}, want {want_end}"
    return (f"{plan.count('commit')} committed, {plan.count('abort')} aborted; read_committed "
            f"{sum(map(len, visible.values()))} records, LSO held at {first_open} while open")


FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


@check("ck_txn_fencing")
def ck_txn_fencing(ctx):
    """A second producer with the same transactional.id fences the first (InitProducerId bumps
    the epoch and aborts the first's open transaction), twice over a 3-partition topic:
    - p1 commits a transaction, then writes one more and flushes it (in the log, not committed);
      p2 starts with the same id; p1's next operation, its commit (EndTxn with the old epoch),
      fails with a fatal error (_FENCED / PRODUCER_FENCED), and so does everything after it.
    - p2 commits a transaction, then leaves one open and flushed; p3 starts with the same id;
      p2's next operation, a produce, fails (its record is refused, never stored: INVALID_PRODUCER_EPOCH,
      which librdkafka may take as fatal at once), p2 cannot commit, and ends in a fatal fenced error.
    p3 commits. read_committed reads exactly p1's, p2's and p3's committed records in order per
    partition, none of the fenced transactions'; read_uncommitted also reads the fenced
    transactions' flushed records (they are in the log, aborted), but never the record p2
    produced after it was fenced; no transaction is left open (list_offsets latest is the same
    at both isolation levels)."""
    topic = ctx.topic("ck-txn-fence")
    parts = 3
    a = create_topic(ctx, topic, parts)
    txn_id = f"{topic}-tx"
    visible = {q: [] for q in range(parts)}
    written = {q: [] for q in range(parts)}

    def txn(p, label, per, commit=True):
        acked = []
        p.begin_transaction()
        rows = [(q, f"{label}-q{q}-{i}".encode()) for q in range(parts) for i in range(per)]
        produce_tracked(p, topic, rows, acked)
        if commit:
            txn_call(f"{label}: commit_transaction", p.commit_transaction, TIMEOUT)
        else:
            flush(p)
        assert_delivered(acked, label)
        for q, v in rows:
            written[q].append(v)
            if commit:
                visible[q].append(v)

    errs1, errs2 = [], []
    p1 = txn_producer(ctx, txn_id, errors=errs1)
    txn_call("p1: init_transactions", p1.init_transactions, TIMEOUT)
    txn(p1, "p1-committed", 2)
    txn(p1, "p1-open", 3, commit=False)

    p2 = txn_producer(ctx, txn_id, errors=errs2)
    txn_call("p2: init_transactions (fencing p1)", p2.init_transactions, TIMEOUT)
    err = txn_expect_failure("p1: commit_transaction after p2 started", p1.commit_transaction, TIMEOUT)
    assert err.fatal() and err.code() in FENCED_CODES, f"p1's commit after the fence: {_txn_err(err)}; want a fatal fenced error"
    err = txn_expect_failure("p1: begin_transaction after being fenced", p1.begin_transaction)
    assert err.fatal(), f"p1's begin_transaction after the fence: {_txn_err(err)}; want the fatal error again"
    note1 = err.name()

    txn(p2, "p2-committed", 2)
    txn(p2, "p2-open", 2, commit=False)
    p3 = txn_producer(ctx, txn_id)
    txn_call("p3: init_transactions (fencing p2)", p3.init_transactions, TIMEOUT)
    acked = []
    produce_tracked(p2, topic, [(0, b"p2-after-fence")], acked)
    try:
        p2.flush(TIMEOUT)
    except KafkaException as e:
        # The partition answers a fenced producer's produce INVALID_PRODUCER_EPOCH, as Kafka
        # does; librdkafka takes that as fatal at once and flush raises it.
        fatal = e.args[0]
        assert fatal.fatal() and fatal.code() in FENCED_CODES, f"p2's flush after the fence: {_txn_err(fatal)}; want a fatal fenced error"
        err = txn_expect_failure("p2: commit_transaction after being fenced", p2.commit_transaction, TIMEOUT)
        assert err.fatal() and err.code() in FENCED_CODES, f"p2 after the fence: {_txn_err(err)}; want a fatal fenced error"
        note2 = f"{fatal.name()} (fatal) on produce, then {err.name()}"
    else:
        assert len(acked) == 1 and acked[0][3] is not None, f"p2's produce after the fence: {acked}, want a delivery error"
        produce_err = acked[0][3]
        assert produce_err.code() in FENCED_CODES, f"p2's produce after the fence failed with {_txn_err(produce_err)}, want a fenced error"
        err = txn_expect_failure("p2: commit_transaction after being fenced", p2.commit_transaction, TIMEOUT)
        if not err.fatal():
            # librdkafka takes a fenced produce as abortable; the abort's EndTxn meets the new epoch.
            assert err.txn_requires_abort(), f"p2's commit after the fence: {_txn_err(err)}"
            err = txn_expect_failure("p2: abort_transaction after being fenced", p2.abort_transaction, TIMEOUT)
        assert err.fatal() and err.code() in FENCED_CODES, f"p2 after the fence: {_txn_err(err)}; want a fatal fenced error"
        note2 = f"{produce_err.name()} on produce, then {err.name()}"

    txn(p3, "p3-committed", 3)
    rc = values_of(read_isolated(ctx, topic, parts, "read_committed"))
    ru = values_of(read_isolated(ctx, topic, parts, "read_uncommitted"))
    assert rc == visible, f"read_committed read {_show(rc)}, want only the committed transactions: {_show(visible)}"
    assert ru == written, f"read_uncommitted read {_show(ru)}, want every flushed record: {_show(written)}"
    ends_ru, ends_rc = _ends(a, topic, parts, "read_uncommitted"), _ends(a, topic, parts, "read_committed")
    assert ends_rc == ends_ru, f"list_offsets latest read_committed {ends_rc} != read_uncommitted {ends_ru}: a fenced transaction is still open"
    # p1/p2 marker for the open one (abort) + the committed ones' markers: 4 transactions + 1 by p3.
    want = {q: len(written[q]) + 5 for q in range(parts)}
    assert ends_ru == want, f"high watermarks {ends_ru}, want records + 5 markers per partition: {want}"
    return f"p1: {note1}; p2: {note2}"


@check("ck_txn_consume_transform_produce")
def ck_txn_consume_transform_produce(ctx):
    """Exactly-once consume-transform-produce: 3 partitions of 30 plain input records; a group
    member (classic protocol, read_committed, no auto-commit) reads in batches of at most 25,
    and for each batch a transactional producer writes one output record per input record (same
    partition, value prefixed) and adds the batch's next offsets to the transaction with
    send_offsets_to_transaction (AddOffsetsToTxn, TxnOffsetCommit). The first batch's
    transaction is aborted (its output flushed first, so it is in the log) and the consumer
    rewinds to what the group has committed (OffsetFetch; nothing yet, so the beginning); every
    later one commits. Output read_committed: every input record exactly once, in input order
    per partition; read_uncommitted: those plus the aborted batch's. The group's committed
    offsets (list_consumer_group_offsets, require_stable) equal the input's end offsets."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    src, dst = ctx.topic("ck-eos-in"), ctx.topic("ck-eos-out")
    group = f"{src}-g"
    parts, per = 3, 30
    a = create_topic(ctx, src, parts)
    create_topic(ctx, dst, parts)
    produce_values(ctx, src, parts, per, "in-")
    c = group_consumer(ctx, group, "ck-eos", **{"isolation.level": "read_committed", "group.protocol": "classic"})
    p = txn_producer(ctx, f"{src}-tx")
    txn_call("init_transactions", p.init_transactions, TIMEOUT)
    done = {}  # (partition, offset) -> times its output was committed
    aborted = []  # output values of the aborted transaction
    transactions = 0
    try:
        c.subscribe([src])
        deadline = time.monotonic() + 60
        while len(done) < parts * per:
            assert time.monotonic() < deadline, f"processed {len(done)} of {parts * per} input records within 60s"
            msgs = c.consume(num_messages=25, timeout=0.5)
            for m in msgs:
                if m.error():
                    raise AssertionError(f"consumer: {m.error().name()} {m.error().str()}")
            if not msgs:
                continue
            acked = []
            p.begin_transaction()
            produce_tracked(p, dst, [(m.partition(), b"out-" + m.value()) for m in msgs], acked)
            nxt = {}
            for m in msgs:
                nxt[m.partition()] = m.offset() + 1
            offsets = [TopicPartition(src, q, o) for q, o in sorted(nxt.items())]
            txn_call("send_offsets_to_transaction", p.send_offsets_to_transaction, offsets,
                     c.consumer_group_metadata(), TIMEOUT)
            transactions += 1
            if not aborted:
                flush(p)
                assert_delivered(acked, "the aborted batch's output")
                txn_call("abort_transaction", p.abort_transaction, TIMEOUT)
                aborted = [(q, v) for q, _o, v, _e in acked]
                # Back to what the group committed: the aborted offsets must not count.
                committed = c.committed(c.assignment(), timeout=TIMEOUT)
                for tp in committed:
                    assert tp.error is None, f"committed() for {tp.partition}: {tp.error}"
                    assert tp.offset < 0, f"partition {tp.partition}: committed offset {tp.offset} after an aborted transaction, want none"
                    c.seek(TopicPartition(src, tp.partition, OFFSET_BEGINNING))
                continue
            txn_call(f"commit_transaction #{transactions}", p.commit_transaction, TIMEOUT)
            assert_delivered(acked, f"transaction #{transactions}'s output")
            for m in msgs:
                done[(m.partition(), m.offset())] = done.get((m.partition(), m.offset()), 0) + 1
        twice = [k for k, n in done.items() if n > 1]
        assert not twice, f"input records processed in two committed transactions: {twice[:5]}"

        ends = _list_offsets(a, src, parts, OffsetSpec.latest())
        assert ends == {q: per for q in range(parts)}, f"input end offsets {ends}"
        r = result(a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], require_stable=True,
                                                 request_timeout=TIMEOUT)[group], "list_consumer_group_offsets")
        offs = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == src}
        assert offs == ends, f"the group's committed offsets {offs}, want the input's ends {ends}"
    finally:
        c.close()
    want = {q: [f"out-in-{q}-{i}".encode() for i in range(per)] for q in range(parts)}
    rc = values_of(read_isolated(ctx, dst, parts, "read_committed"))
    assert rc == want, f"output read_committed {_show(rc)}, want each input once in order: {_show(want)}"
    ru = values_of(read_isolated(ctx, dst, parts, "read_uncommitted"))
    assert aborted, "no transaction was aborted"
    for q in range(parts):
        mine = [v for pq, v in aborted if pq == q]
        assert ru[q] == mine + want[q], f"output partition {q} read_uncommitted {_show({q: ru[q]})}, want the aborted {len(mine)} then {per}"
    return f"{transactions} transactions (1 aborted: {len(aborted)} records), outputs once, offsets committed at {ends}"


@check("ck_txn_survives_broker_kill")
def ck_txn_survives_broker_kill(ctx):
    """A transactional producer across SIGKILLs of its broker (its own broker, restarted on the
    same port and data directory): two transactions commit over 3 partitions and the broker is
    killed as soon as the second's commit returns (its markers may still be on their way: the
    restarted coordinator must finish them), then restarted; the same producer commits a third.
    A fourth writes half its records and flushes them (acknowledged, in the log), the broker is
    killed mid-transaction and restarted, the producer writes the other half and commits. If
    that commit succeeds, all of the fourth transaction must be visible to read_committed; if it
    fails and the producer aborts, none of it; if the producer is left fenced or fatal, a new
    producer with the same id takes over (InitProducerId completes or aborts what was left) and
    the fourth must be visible entirely or not at all: never in part. A last transaction commits
    through whichever producer is left. Then two transactions are left open (flushed) by
    producers that never return, and the broker is killed a third time: after the restart a new
    producer with the first one's id aborts its transaction (InitProducerId) and commits
    another; the second one's (4 s transaction.timeout.ms) is aborted by its coordinator once
    past its timeout (list_offsets latest reaches the same offsets at both isolation levels
    within 60 s; the broker checks every 500 ms). read_committed then reads exactly the
    committed transactions, in order per partition; read_uncommitted finds every acknowledged
    record at the offset it was acknowledged with."""
    b = ctx.start_broker(["--transaction-abort-timed-out-transaction-cleanup-interval-ms", "500"])
    topic = ctx.topic("ck-txn-kill")
    parts = 3
    a = create_topic(ctx, topic, parts, bootstrap=b.bootstrap)
    txn_id = f"{topic}-tx"
    errs = []
    p = txn_producer(ctx, txn_id, bootstrap=b.bootstrap, errors=errs)
    txn_call("init_transactions", p.init_transactions, TIMEOUT)
    committed = {q: [] for q in range(parts)}  # without the transaction open at the kill
    acked_all = []

    def rows(label, per):
        return [(q, f"{label}-q{q}-{i}".encode()) for q in range(parts) for i in range(per)]

    def commit_txn(prod, label, per):
        acked = []
        prod.begin_transaction()
        rs = rows(label, per)
        produce_tracked(prod, topic, rs, acked)
        txn_call(f"{label}: commit_transaction", prod.commit_transaction, TIMEOUT)
        assert_delivered(acked, label)
        acked_all.extend(acked)
        for q, v in rs:
            committed[q].append(v)

    commit_txn(p, "t0", 3)
    commit_txn(p, "t1", 2)
    b.kill()
    b.restart()
    commit_txn(p, "t2-after-kill", 3)

    # Mid-transaction: half written and acknowledged, kill, restart, the other half, commit.
    acked = []
    p.begin_transaction()
    first, second = rows("t3-before-kill", 2), rows("t3-after-kill", 2)
    produce_tracked(p, topic, first, acked)
    flush(p)
    assert_delivered(acked, "t3's records before the kill")
    acked_all.extend(acked)
    b.kill()
    b.restart()
    acked = []
    produce_tracked(p, topic, second, acked)
    t3_must = None  # True: all of t3 visible; False: none; None: either (unknown outcome)
    try:
        p.commit_transaction(TIMEOUT)
        outcome, t3_must = "committed", True
        assert_delivered(acked, "t3's records after the kill (committed)")
        acked_all.extend(acked)
    except KafkaException as e:
        err = e.args[0]
        outcome = f"commit failed: {_txn_err(err)}"
        if err.txn_requires_abort():
            txn_call("t3: abort_transaction after its failed commit", p.abort_transaction, TIMEOUT)
            outcome, t3_must = outcome + "; aborted", False
        else:
            p = txn_producer(ctx, txn_id, bootstrap=b.bootstrap, errors=errs)
            txn_call("a new producer's init_transactions (after a fatal error)", p.init_transactions, TIMEOUT)
            outcome += "; a new producer took over"
    commit_txn(p, "t4", 2)

    # Two transactions left open at a kill by producers that never come back: t5's producer is
    # replaced after the restart by a new one with its id (InitProducerId aborts t5), t6's
    # (another id, transaction.timeout.ms 4000) by nobody: its coordinator aborts it once it
    # is past its timeout.
    acked = []
    p.begin_transaction()
    t5 = rows("t5-abandoned", 2)
    produce_tracked(p, topic, t5, acked)
    flush(p)
    assert_delivered(acked, "t5's records")
    acked_all.extend(acked)
    other = txn_producer(ctx, f"{txn_id}-timeout", bootstrap=b.bootstrap, errors=errs,
                         **{"transaction.timeout.ms": 4000, "message.timeout.ms": 4000})
    txn_call("t6: init_transactions", other.init_transactions, TIMEOUT)
    acked = []
    other.begin_transaction()
    t6 = rows("t6-timed-out", 1)
    produce_tracked(other, topic, t6, acked)
    flush(other)
    assert_delivered(acked, "t6's records")
    acked_all.extend(acked)
    b.kill()
    b.restart()
    abandoned = [p, other]  # kept (unused) until the end, so that no destructor runs mid-check
    p = txn_producer(ctx, txn_id, bootstrap=b.bootstrap, errors=errs)
    txn_call("a new producer's init_transactions (aborting t5)", p.init_transactions, TIMEOUT)
    commit_txn(p, "t7", 1)

    def settled():
        return _ends(a, topic, parts, "read_committed") == _ends(a, topic, parts, "read_uncommitted")
    wait_until(settled, 60, interval=0.5, what="t6 (open at the kill, 4 s timeout) to be aborted: the last stable "
               "offsets to reach the high watermarks")

    rc_rows = read_isolated(ctx, topic, parts, "read_committed", bootstrap=b.bootstrap)
    ru_rows = read_isolated(ctx, topic, parts, "read_uncommitted", bootstrap=b.bootstrap)
    rc = values_of(rc_rows)
    t3_values = {v for _q, v in first + second}
    t3_all = {q: [v for pq, v in first + second if pq == q] for q in range(parts)}
    seen_t3 = {q: [v for v in rc[q] if v in t3_values] for q in range(parts)}
    rest = {q: [v for v in rc[q] if v not in t3_values] for q in range(parts)}
    why = f"(the transaction open at the kill: {outcome}; client errors: {errs[-5:]})"
    assert rest == committed, f"read_committed read {_show(rest)} besides t3, want {_show(committed)} {why}"
    whole = seen_t3 == t3_all
    none = not any(seen_t3.values())
    assert whole or none, f"t3 is partly visible to read_committed: {_show(seen_t3)} of {_show(t3_all)} {why}"
    if t3_must is not None:
        assert whole == t3_must, f"t3 {'fully' if whole else 'not'} visible to read_committed, want {'all' if t3_must else 'none'} of it {why}"
    if whole:  # where it is: after t2, before t4, its first half before its second
        for q in range(parts):
            i = rc[q].index(t3_all[q][0])
            assert rc[q][i:i + len(t3_all[q])] == t3_all[q], f"partition {q}: t3 read as {rc[q][i:i + len(t3_all[q])]}"
    missing = [(q, o, v) for q, o, v, _e in acked_all if (o, v) not in ru_rows[q]]
    assert not missing, f"acknowledged records not at their offsets after the kills: {missing[:5]} ({len(missing)}) {why}"
    del abandoned
    return f"killed three times; the transaction open at the second kill: {outcome}, {'visible' if whole else 'invisible'}"
