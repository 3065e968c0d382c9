"""Checks against a three-node cluster (`harness.Cluster`, started by each check itself): every
client is given one node as its bootstrap list and nothing else, a topic created through one
node is produced to through another and read by a consumer group through the third, its
partitions' leaders are spread over the three brokers, and after each check the three nodes'
metadata agree (`Cluster.assert_consistent`, the `/v1/metadata` digests)."""

import collections
import logging
import threading
import time

from harness import Skip, check, wait_until

try:
    import kafka.errors as kerrors
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient
except ImportError as _e:  # pragma: no cover - reported per check
    _KP_IMPORT_ERROR = _e
else:
    _KP_IMPORT_ERROR = None

try:
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError as _e:  # pragma: no cover - reported per check
    _CK_IMPORT_ERROR = _e
else:
    _CK_IMPORT_ERROR = None

logging.getLogger("kafka").setLevel(logging.CRITICAL)

TIMEOUT = 30  # seconds for any single client call
PARTITIONS = 6
RECORDS = 300
OFFSETS_PARTITIONS = 50  # Spate's __consumer_offsets, as Kafka's default


def offsets_partition(group):
    """Kafka's `Utils.abs(group.hashCode()) % 50` (Java's String.hashCode over UTF-16 units)."""
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (0 if h == -(1 << 31) else abs(h)) % OFFSETS_PARTITIONS


def check_spread(leaders_by_node):
    """`leaders_by_node`: {node: {partition: leader id}} as each node described the topic. They
    must agree, and lead two partitions per broker."""
    first = leaders_by_node[1]
    for node, leaders in leaders_by_node.items():
        assert leaders == first, f"node {node} describes leaders {leaders}, node 1 {first}"
    per_broker = collections.Counter(first.values())
    assert dict(per_broker) == {1: 2, 2: 2, 3: 2}, f"partitions led per broker {dict(per_broker)} (leaders {first})"
    return first


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------


def _kp_admin(cluster, node):
    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap(node), client_id=f"kp-cluster-admin-{node}",
                            request_timeout_ms=TIMEOUT * 1000)


@check("cluster_kp_topic_via_1_produce_via_2_group_via_3")
def cluster_kp_topic_via_1_produce_via_2_group_via_3(ctx):
    """kafka-python against three brokers, each client bootstrapped at one node: describe_cluster
    names the three; replication factor 4 is InvalidReplicationFactorError (3 is accepted); a 6-partition topic
    created through node 1 is described alike through every node, two leaders per broker; an
    idempotent acks=all producer through node 2 writes 300 keyed records to every partition; a
    consumer group through node 3 reads each once in offset order and commits; list_group_offsets
    through node 1 gives the ends; the topic deleted through node 2 is gone from every node;
    the nodes' metadata agree."""
    if _KP_IMPORT_ERROR is not None:
        raise Skip(f"kafka-python not importable: {_KP_IMPORT_ERROR}")
    cluster = ctx.start_cluster()
    topic = ctx.topic("kp-cluster")
    group = f"{topic}-g"
    admins = {n: _kp_admin(cluster, n) for n in (1, 2, 3)}
    try:
        for n, a in admins.items():
            d = a.describe_cluster()
            ids = sorted(b["broker_id"] for b in d["brokers"])
            assert ids == [1, 2, 3], f"describe_cluster through node {n}: brokers {ids}"
            assert d["controller_id"] in (1, 2, 3), f"describe_cluster through node {n}: controller {d['controller_id']}"
        try:
            admins[1].create_topics({f"{topic}-rf4": {"num_partitions": 1, "replication_factor": 4}})
            raise AssertionError("replication factor 4 was accepted with three brokers")
        except kerrors.InvalidReplicationFactorError:
            pass
        admins[1].create_topics({f"{topic}-rf3": {"num_partitions": 1, "replication_factor": 3}})

        admins[1].create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
        leaders_by_node = {}
        for n, a in admins.items():
            def described(a=a):
                [t] = a.describe_topics([topic])
                if t["error_code"] != 0 or len(t["partitions"]) != PARTITIONS:
                    return None
                if any(p["leader_id"] < 0 for p in t["partitions"]):
                    return None
                for p in t["partitions"]:
                    assert p["replica_nodes"] == [p["leader_id"]] and p["isr_nodes"] == [p["leader_id"]], \
                        f"partition {p['partition_index']}: replicas {p['replica_nodes']}, ISR {p['isr_nodes']}"
                return {p["partition_index"]: p["leader_id"] for p in t["partitions"]}

            leaders_by_node[n] = wait_until(described, TIMEOUT, what=f"{topic} with leaders through node {n}")
        leaders = check_spread(leaders_by_node)

        # Idempotent, acks=all, through node 2 only.
        p = KafkaProducer(bootstrap_servers=cluster.bootstrap(2), acks="all", enable_idempotence=True, linger_ms=5,
                          request_timeout_ms=TIMEOUT * 1000, max_block_ms=TIMEOUT * 1000)
        try:
            futures = [(f"key-{i}", p.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode()))
                       for i in range(RECORDS)]
            p.flush(timeout=TIMEOUT)
            by_partition = collections.defaultdict(dict)
            for key, f in futures:
                md = f.get(timeout=TIMEOUT)
                assert md.offset not in by_partition[md.partition], f"two records acknowledged at {md}"
                by_partition[md.partition][md.offset] = key
        finally:
            p.close(timeout=5)
        assert sorted(by_partition) == list(range(PARTITIONS)), f"the keys went to partitions {sorted(by_partition)}"
        expected = {}
        for q, offs in by_partition.items():
            assert sorted(offs) == list(range(len(offs))), f"partition {q}: offsets not dense from 0"
            expected[q] = [offs[o] for o in range(len(offs))]

        # A consumer group through node 3 only.
        c = KafkaConsumer(bootstrap_servers=cluster.bootstrap(3), group_id=group, client_id="kp-cluster-member",
                          enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=10000,
                          heartbeat_interval_ms=1000, request_timeout_ms=TIMEOUT * 1000 + 5000, fetch_max_wait_ms=500)
        try:
            c.subscribe([topic])
            read = collections.defaultdict(list)
            deadline = time.monotonic() + 60
            while sum(map(len, read.values())) < RECORDS:
                assert time.monotonic() < deadline, \
                    f"the group read {sum(map(len, read.values()))} of {RECORDS} records within 60s; assignment {c.assignment()}"
                for tp, recs in c.poll(timeout_ms=500, max_records=1000).items():
                    for r in recs:
                        assert r.offset == len(read[tp.partition]), f"partition {tp.partition}: offset {r.offset} read next"
                        assert r.value == r.key.replace(b"key-", b"value-"), f"value {r.value!r} of {r.key!r}"
                        read[tp.partition].append(r.key.decode())
            extra = sum(len(recs) for recs in c.poll(timeout_ms=500).values())
            assert extra == 0, f"{extra} record(s) beyond the {RECORDS} produced"
            assert dict(read) == expected, "records read per partition differ from those acknowledged"
            c.commit()
        finally:
            c.close()
        offs = admins[1].list_group_offsets({group: None})[group]
        got = {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}
        want = {q: len(keys) for q, keys in expected.items()}
        assert got == want, f"list_group_offsets through node 1: {got}, want {want}"

        admins[2].delete_topics([topic])
        cluster.assert_consistent()  # every node serves the deletion
        for n, a in admins.items():
            assert topic not in a.list_topics(), f"node {n} still lists {topic}"
            assert f"{topic}-rf4" not in a.list_topics(), f"node {n} lists the refused {topic}-rf4"
        index = cluster.assert_consistent()
    finally:
        for a in admins.values():
            a.close()
    return f"leaders {leaders}, {RECORDS} records, metadata index {index} on all three"


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka)
# ---------------------------------------------------------------------------


def _ck_result(fut, what):
    try:
        return fut.result(timeout=TIMEOUT)
    except KafkaException as e:
        raise AssertionError(f"{what} failed: {e.args[0]}") from None


@check("cluster_ck_topic_via_2_produce_via_3_groups_via_1")
def cluster_ck_topic_via_2_produce_via_3_groups_via_1(ctx):
    """confluent-kafka against three brokers, each client bootstrapped at one node: Metadata
    through each node lists the three brokers; a 6-partition topic created through node 2 has the
    same leaders through every node, two per broker; an idempotent producer through node 3 writes
    300 keyed records; two consumer groups through node 1, one classic and one KIP-848
    (group.protocol=consumer), each read every record once and commit; list_consumer_group_offsets
    through node 2 gives the ends, describe_consumer_groups names as coordinator the leader of the
    group's __consumer_offsets partition; the topic deleted through node 3 is gone from every
    node; the nodes' metadata agree."""
    if _CK_IMPORT_ERROR is not None:
        raise Skip(f"confluent-kafka not importable: {_CK_IMPORT_ERROR}")
    from confluent_kafka import ConsumerGroupTopicPartitions, ConsumerGroupType

    cluster = ctx.start_cluster()
    topic = ctx.topic("ck-cluster")
    admins = {n: AdminClient({"bootstrap.servers": cluster.bootstrap(n), "log_level": 4}) for n in (1, 2, 3)}
    for n, a in admins.items():
        md = a.list_topics(timeout=TIMEOUT)
        assert sorted(md.brokers) == [1, 2, 3], f"Metadata through node {n}: brokers {sorted(md.brokers)}"
        ports = {b.id: b.port for b in md.brokers.values()}
        assert all(cluster.node_of_port(port) == i for i, port in ports.items()), f"broker ports {ports}"

    fs = admins[2].create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                 operation_timeout=TIMEOUT)
    _ck_result(fs[topic], f"create_topics({topic})")
    leaders_by_node = {}
    for n, a in admins.items():
        def described(a=a):
            t = a.list_topics(topic=topic, timeout=TIMEOUT).topics.get(topic)
            if t is None or t.error is not None or len(t.partitions) != PARTITIONS:
                return None
            if any(p.leader < 0 for p in t.partitions.values()):
                return None
            for p in t.partitions.values():
                assert p.replicas == [p.leader] and p.isrs == [p.leader], \
                    f"partition {p.id}: replicas {p.replicas}, ISR {p.isrs}"
            return {p.id: p.leader for p in t.partitions.values()}

        leaders_by_node[n] = wait_until(described, TIMEOUT, what=f"{topic} with leaders through node {n}")
    leaders = check_spread(leaders_by_node)

    # Idempotent (acks=all) through node 3 only.
    p = Producer({"bootstrap.servers": cluster.bootstrap(3), "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": TIMEOUT * 1000})
    acked, errors = collections.defaultdict(dict), []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"{msg.key()}: {err}")
        else:
            acked[msg.partition()][msg.offset()] = msg.key().decode()

    for i in range(RECORDS):
        p.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
        p.poll(0)
    left = p.flush(TIMEOUT)
    assert left == 0 and not errors, f"{left} record(s) undelivered, errors {errors[:5]}"
    assert sorted(acked) == list(range(PARTITIONS)), f"the keys went to partitions {sorted(acked)}"
    expected = {}
    for q, offs in acked.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {q}: offsets not dense from 0"
        expected[q] = [offs[o] for o in range(len(offs))]
    ends = {q: len(keys) for q, keys in expected.items()}

    offsets_topic = None
    for protocol in ("classic", "consumer"):
        group = f"{topic}-{protocol}"
        c = Consumer({"bootstrap.servers": cluster.bootstrap(1), "group.id": group, "group.protocol": protocol,
                      "client.id": f"ck-cluster-{protocol}", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "enable.partition.eof": False, "log_level": 3})
        try:
            c.subscribe([topic])
            read = collections.defaultdict(list)
            deadline = time.monotonic() + 60
            while sum(map(len, read.values())) < RECORDS:
                assert time.monotonic() < deadline, \
                    f"{protocol} group read {sum(map(len, read.values()))} of {RECORDS} records within 60s"
                for m in c.consume(num_messages=500, timeout=0.5):
                    assert m.error() is None, f"{protocol} group: {m.error()}"
                    assert m.offset() == len(read[m.partition()]), f"partition {m.partition()}: offset {m.offset()} read next"
                    assert m.value() == m.key().replace(b"key-", b"value-"), f"value {m.value()!r} of {m.key()!r}"
                    read[m.partition()].append(m.key().decode())
            extra = c.consume(num_messages=500, timeout=0.5)
            assert not extra, f"{protocol} group: {len(extra)} record(s) beyond the {RECORDS} produced"
            assert dict(read) == expected, f"{protocol} group: records read per partition differ from those acknowledged"
            committed = c.commit(asynchronous=False)
            assert not [tp for tp in committed if tp.error is not None], f"commit errors: {committed}"

            r = _ck_result(admins[2].list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                                 request_timeout=TIMEOUT)[group],
                           f"list_consumer_group_offsets({group})")
            got = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == topic}
            assert got == ends, f"{protocol} group: committed offsets through node 2 {got}, want {ends}"

            d = _ck_result(admins[2].describe_consumer_groups([group], request_timeout=TIMEOUT)[group],
                           f"describe_consumer_groups({group})")
            want_type = ConsumerGroupType.CLASSIC if protocol == "classic" else ConsumerGroupType.CONSUMER
            assert d.type == want_type, f"{group}: type {d.type}, want {want_type}"
            assert len(d.members) == 1, f"{group}: members {d.members}"
            q = offsets_partition(group)
            offsets_topic = admins[2].list_topics(topic="__consumer_offsets", timeout=TIMEOUT).topics["__consumer_offsets"]
            leader = offsets_topic.partitions[q].leader
            assert d.coordinator.id == leader, \
                f"{group}: coordinator {d.coordinator.id}, but __consumer_offsets-{q} is led by {leader}"
        finally:
            c.close()
    coordinators = collections.Counter(p.leader for p in offsets_topic.partitions.values())
    assert sorted(coordinators) == [1, 2, 3], f"__consumer_offsets leaders per broker {dict(coordinators)}"

    fs = admins[3].delete_topics([topic], operation_timeout=TIMEOUT)
    _ck_result(fs[topic], f"delete_topics({topic})")
    cluster.assert_consistent()  # every node serves the deletion
    for n, a in admins.items():
        assert topic not in a.list_topics(timeout=TIMEOUT).topics, f"node {n} still lists {topic}"
    index = cluster.assert_consistent()
    return f"leaders {leaders}, {RECORDS} records, classic and consumer groups, metadata index {index} on all three"


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka) through a rolling restart of a replicated cluster
# ---------------------------------------------------------------------------

ROLLING_PARTITIONS = 3
ROLLING_RATE = 150  # records/s, until the producer is stopped
ROLLING_ACKS_BETWEEN = 300  # acknowledgements after each restart before the next, and at the end
ROLLING_PROGRESS_TIMEOUT = 30  # seconds for the groups to catch up after a restart


class _RollingGroup:
    """One consumer group of two members, each polled by its own thread, committing
    synchronously what each poll returned. `events` (under `lock`, in the order they happened):
    ("rec", partition, offset, value) and ("commit", {partition: offset}) for the partitions a
    commit succeeded for."""

    def __init__(self, cluster, topic, protocol, stop, lock):
        self.protocol = protocol
        self.group = f"{topic}-{protocol}"
        self.topic = topic
        self.stop = stop
        self.lock = lock
        self.events = []
        self.failed_commits = []
        self.errors = []  # consume errors and error_cb, reported not asserted: brokers do go away
        self.assigned = collections.Counter()
        self.consumers = []
        for i in range(2):
            c = Consumer({"bootstrap.servers": cluster.bootstrap_all(), "group.id": self.group,
                          "group.protocol": protocol, "client.id": f"ck-rolling-{protocol}-{i}",
                          "enable.auto.commit": False, "auto.offset.reset": "earliest",
                          "enable.partition.eof": False, "socket.timeout.ms": 10000,
                          "reconnect.backoff.max.ms": 500, "log_level": 0, "error_cb": self._error})
            c.subscribe([topic], on_assign=self._on_assign(i))
            self.consumers.append(c)
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self.consumers]
        for t in self.threads:
            t.start()

    def _error(self, err):
        with self.lock:
            self.errors.append(f"{err.name()}")

    def _on_assign(self, i):
        def on_assign(_c, parts):
            with self.lock:
                self.assigned[i] += 1
        return on_assign

    def _run(self, c):
        while not self.stop.is_set():
            msgs = c.consume(num_messages=500, timeout=0.2)
            upto = {}
            with self.lock:
                for m in msgs:
                    if m.error() is not None:
                        self.errors.append(m.error().name())
                        continue
                    self.events.append(("rec", m.partition(), m.offset(), m.value().decode()))
                    upto[m.partition()] = m.offset() + 1
            if not upto:
                continue
            try:
                res = c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in upto.items()], asynchronous=False)
            except KafkaException as e:
                with self.lock:
                    self.failed_commits.append(e.args[0].name())
                continue
            with self.lock:
                self.events.append(("commit", {tp.partition: tp.offset for tp in res if tp.error is None}))
                self.failed_commits.extend(tp.error.name() for tp in res if tp.error is not None)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def consumed(self, events=None):
        return {e[3] for e in (events or self.snapshot()) if e[0] == "rec"}

    def committed(self, events=None):
        """Highest successful commit per partition."""
        out = {}
        for e in events or self.snapshot():
            if e[0] == "commit":
                for p, o in e[1].items():
                    out[p] = max(out.get(p, 0), o)
        return out

    def committed_since(self, index):
        return any(e[0] == "commit" and e[1] for e in self.snapshot()[index:])

    def close(self):
        for t in self.threads:
            t.join(timeout=30)
        alive = sum(t.is_alive() for t in self.threads)
        assert alive == 0, f"{self.group}: {alive} member thread(s) still polling 30 s after the stop"
        for c in self.consumers:
            c.close()


@check("cluster_ck_rolling_restart_replicated_groups")
def cluster_ck_rolling_restart_replicated_groups(ctx):
    """confluent-kafka (librdkafka) through a rolling restart of a three-node cluster: a topic of
    3 partitions, replication factor 3 and min.insync.replicas=2; an idempotent acks=all producer
    at 150 records/s with a 120 s message timeout; two consumer groups of two members each, one
    classic and one KIP-848 (group.protocol=consumer), committing synchronously after every poll;
    every client bootstrapped with all three nodes. Each node in turn is stopped with SIGTERM (a
    controlled shutdown, exit 0), started again on the same ports and data directory, and waited
    for until it is unfenced and every partition of the topic and of __consumer_offsets has all
    three replicas in its ISR; then both groups must have consumed every record acknowledged so
    far and committed successfully since (no group stuck), and the producer must get 300 more
    acknowledgements. In the end: no delivery failed; every acknowledged record is in the topic
    once, at its acknowledged partition and offset, and the log holds nothing else; each group
    read every record, each from where it lies in the log, never again from below an offset the
    group had committed successfully; each group's commits reach the log ends, and after its
    members left, list_consumer_group_offsets gives exactly the ends. The brokers heartbeat every
    500 ms with a 3 s session."""
    if _CK_IMPORT_ERROR is not None:
        raise Skip(f"confluent-kafka not importable: {_CK_IMPORT_ERROR}")
    from confluent_kafka import ConsumerGroupTopicPartitions

    cluster = ctx.start_cluster(["--broker-heartbeat-interval-ms", "500", "--broker-session-timeout-ms", "3000"])
    topic = ctx.topic("ck-rolling")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_all(), "log_level": 0})
    fs = admin.create_topics([NewTopic(topic, num_partitions=ROLLING_PARTITIONS, replication_factor=3,
                                       config={"min.insync.replicas": "2"})], operation_timeout=TIMEOUT)
    _ck_result(fs[topic], f"create_topics({topic})")

    def await_full_isr(topics, when):
        last = []

        def full():
            md = admin.list_topics(timeout=TIMEOUT)
            last[:] = []
            for name in topics:
                t = md.topics.get(name)
                if t is None or t.error is not None or not t.partitions:
                    last.append(f"{name}: {t.error if t is not None else 'not listed'}")
                    continue
                for p in t.partitions.values():
                    if p.leader < 0 or len(p.replicas) != 3 or len(p.isrs) != 3:
                        last.append(f"{name}-{p.id} leader {p.leader} replicas {p.replicas} isr {p.isrs}")
            return not last

        try:
            wait_until(full, 45, interval=0.2, what=f"a full ISR on every partition of {topics} {when}")
        except AssertionError as e:
            raise AssertionError(f"{e}: {len(last)} short, {last[:10]}\n{cluster.log_tail(20)}") from None

    await_full_isr([topic], "after creating it")

    lock = threading.Lock()
    stop_consuming = threading.Event()
    stop_producing = threading.Event()
    acked, delivery_errors = {}, []
    producer_state = {"sent": 0, "left": None}

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                delivery_errors.append(f"{msg.value().decode()}: {err.name()}")
            else:
                acked[msg.value().decode()] = (msg.partition(), msg.offset())

    def produce():
        p = Producer({"bootstrap.servers": cluster.bootstrap_all(), "enable.idempotence": True, "acks": "all",
                      "linger.ms": 5, "message.timeout.ms": 120000, "socket.timeout.ms": 10000,
                      "reconnect.backoff.max.ms": 500, "log_level": 0, "error_cb": lambda e: None})
        begun, n = time.monotonic(), 0
        while not stop_producing.is_set():
            due = int((time.monotonic() - begun) * ROLLING_RATE)
            while n < due:
                p.produce(topic, value=str(n).encode(), on_delivery=on_delivery)
                n += 1
            p.poll(0.01)
        producer_state["sent"] = n
        producer_state["left"] = p.flush(60)

    def acks():
        with lock:
            return len(acked)

    def await_acks(n, when):
        wait_until(lambda: acks() >= n or not sender.is_alive(), ROLLING_PROGRESS_TIMEOUT,
                   what=f"{n} acknowledged records {when} (have {acks()})")
        assert sender.is_alive(), f"the producer thread ended {when}"

    groups = []
    sender = threading.Thread(target=produce, daemon=True)
    restarts = []
    try:
        groups = [_RollingGroup(cluster, topic, proto, stop_consuming, lock) for proto in ("classic", "consumer")]
        sender.start()
        await_acks(ROLLING_ACKS_BETWEEN, "before the first restart")
        for node in (1, 2, 3):
            t0 = time.monotonic()
            stop_s, ready_s, unfenced_s = cluster.restart(node)
            await_full_isr([topic, "__consumer_offsets"], f"after restarting node {node}")
            isr_s = time.monotonic() - t0
            with lock:
                acked_now = set(acked)
            marks = [len(g.snapshot()) for g in groups]

            def kept_up():
                return all(acked_now <= g.consumed() and g.committed_since(m) for g, m in zip(groups, marks))

            try:
                wait_until(kept_up, ROLLING_PROGRESS_TIMEOUT, interval=0.1, what=f"the groups to keep up after node {node}")
            except AssertionError:
                state = [f"{g.group}: {len(acked_now - g.consumed())} of {len(acked_now)} acknowledged not consumed, "
                         f"committed since {g.committed_since(m)}, commit failures {collections.Counter(g.failed_commits)}, "
                         f"errors {collections.Counter(g.errors)}" for g, m in zip(groups, marks)]
                raise AssertionError(f"a group is stuck after restarting node {node}: {state}\n{cluster.log_tail(30)}") from None
            await_acks(acks() + ROLLING_ACKS_BETWEEN, f"after restarting node {node}")
            restarts.append(f"node {node}: exit {stop_s:.1f}s, ready {ready_s:.1f}s, unfenced {unfenced_s:.1f}s, "
                            f"ISR full {isr_s:.1f}s after SIGTERM")
        stop_producing.set()
        sender.join(90)
        assert not sender.is_alive(), "the producer did not finish flushing within 90 s"
        assert producer_state["left"] == 0, f"{producer_state['left']} record(s) undelivered 60 s after producing stopped"
        assert not delivery_errors, f"{len(delivery_errors)} delivery error(s): {delivery_errors[:10]}"
        assert len(acked) == producer_state["sent"], f"{producer_state['sent']} sent, {len(acked)} acknowledged"

        # The whole topic, read back by a consumer without a group.
        reader = Consumer({"bootstrap.servers": cluster.bootstrap_all(), "group.id": f"{topic}-reader",
                           "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 3})
        try:
            ends = {}
            for q in range(ROLLING_PARTITIONS):
                _lo, hi = reader.get_watermark_offsets(TopicPartition(topic, q), timeout=TIMEOUT, cached=False)
                ends[q] = hi
            reader.assign([TopicPartition(topic, q, 0) for q in range(ROLLING_PARTITIONS)])
            in_log = collections.defaultdict(list)
            read = 0
            deadline = time.monotonic() + 60
            while read < sum(ends.values()):
                assert time.monotonic() < deadline, f"read {read} of {sum(ends.values())} records of the topic within 60 s"
                for m in reader.consume(num_messages=1000, timeout=0.5):
                    assert m.error() is None, f"reading the topic: {m.error()}"
                    if m.offset() < ends[m.partition()]:
                        in_log[m.value().decode()].append((m.partition(), m.offset()))
                        read += 1
        finally:
            reader.close()
        lost = [v for v in acked if v not in in_log]
        assert not lost, f"{len(lost)} acknowledged record(s) missing from the topic: {lost[:10]}"
        twice = {v: at for v, at in in_log.items() if len(at) > 1}
        assert not twice, f"{len(twice)} value(s) in the topic more than once: {list(twice.items())[:10]}"
        misplaced = [(v, acked[v], in_log[v][0]) for v in acked if in_log[v][0] != acked[v]]
        assert not misplaced, f"{len(misplaced)} record(s) elsewhere than acknowledged (value, acked, in log): {misplaced[:10]}"
        unacked = [v for v in in_log if v not in acked]
        assert not unacked, f"{len(unacked)} record(s) in the topic never acknowledged: {unacked[:10]}"

        # Each group catches up with the whole log and commits its ends.
        def caught_up():
            return all(g.consumed() >= set(in_log) and g.committed() == ends for g in groups)

        try:
            wait_until(caught_up, ROLLING_PROGRESS_TIMEOUT, interval=0.2, what="both groups to read and commit to the ends")
        except AssertionError:
            state = [f"{g.group}: {len(set(in_log) - g.consumed())} not consumed, committed {g.committed()}" for g in groups]
            raise AssertionError(f"not caught up with ends {ends}: {state}\n{cluster.log_tail(30)}") from None
        stop_consuming.set()
        summary = []
        for g in groups:
            g.close()
            events = g.snapshot()
            committed, seen, duplicates, below, wrong = {}, set(), 0, [], []
            for e in events:
                if e[0] == "commit":
                    for p, o in e[1].items():
                        committed[p] = max(committed.get(p, 0), o)
                    continue
                _, p, o, v = e
                if in_log.get(v) != [(p, o)]:
                    wrong.append(f"{v} read at {p}/{o}, in the log at {in_log.get(v)}")
                if (p, o) in seen:
                    duplicates += 1
                    if o < committed.get(p, 0):
                        below.append(f"{p}/{o} read again after {committed[p]} was committed")
                seen.add((p, o))
            assert not wrong, f"{g.group}: {len(wrong)} record(s) read that are not in the log there: {wrong[:10]}"
            assert not below, f"{g.group}: {len(below)} record(s) read again from below a successful commit: {below[:10]}"
            r = _ck_result(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g.group)],
                                                             request_timeout=TIMEOUT)[g.group],
                           f"list_consumer_group_offsets({g.group})")
            stored = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == topic}
            assert stored == ends, f"{g.group}: committed offsets on the cluster {stored}, log ends {ends}"
            summary.append(f"{g.protocol}: {sum(1 for e in events if e[0] == 'rec')} read, {duplicates} again, "
                           f"{len(g.failed_commits)} commit failures, assignments {dict(g.assigned)}")
        index = cluster.assert_consistent()
        return (f"{'; '.join(restarts)}; {len(acked)} acknowledged, log ends {ends}; {'; '.join(summary)}; "
                f"metadata index {index}")
    finally:
        stop_producing.set()
        stop_consuming.set()
        if sender.is_alive():
            sender.join(90)
        for g in groups:
            for t in g.threads:
                t.join(30)


@check("cluster_tools_reassign_with_throttle_and_elect_leaders")
def cluster_tools_reassign_with_throttle_and_elect_leaders(ctx):
    """Apache Kafka's own tools (kafka-tools 4.1.1 through perf/kafka/run) against a three-node
    cluster: kafka-topics creates a topic of 3 partitions with replication factor 2 and describes
    each partition's replicas and ISR; kafka-reassign-partitions --execute --throttle moves two
    partitions (each to a new replica set, one of them dropping its leader), sets the broker
    and topic throttles as it does against Kafka, and --verify, run until it says the moves
    completed, clears them again; kafka-topics then shows the new replica sets with full ISRs
    and the records still read back from the start; kafka-leader-election --election-type
    PREFERRED moves leadership to each partition's first replica, and says which needed none."""
    import json
    import os
    import shutil
    import subprocess
    if not (shutil.which("java") and shutil.which("mvn")):
        raise Skip("java or mvn is not installed")
    run = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "perf", "kafka", "run")
    cluster = ctx.start_cluster(["--broker-heartbeat-interval-ms", "500"])
    boot = cluster.bootstrap(1)

    def tool(name, *args, check=True):
        r = subprocess.run([run, "tool", name, "--bootstrap-server", boot, *args], capture_output=True, text=True, timeout=180)
        if check:
            assert r.returncode == 0, f"{name} exited {r.returncode}: {(r.stderr or r.stdout)[-600:]}"
        return r.stdout

    def described(topic):
        rows = {}
        for line in tool("kafka-topics", "--describe", "--topic", topic).splitlines():
            f = line.split()
            if "Partition:" in f:
                get = lambda k: f[f.index(k) + 1]  # noqa: E731
                rows[int(get("Partition:"))] = (int(get("Leader:")), get("Replicas:"), get("Isr:"))
        return rows

    topic = ctx.topic("tools-move")
    assert "Created topic" in tool("kafka-topics", "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "2")
    before = described(topic)
    assert len(before) == 3 and all(len(r[1].split(",")) == 2 and r[1] == r[2] for r in before.values()), before
    subprocess.run([run, "tool", "kafka-producer-perf-test", "--topic", topic, "--num-records", "3000", "--record-size", "1000",
                    "--throughput", "-1", "--producer-props", f"bootstrap.servers={boot}", "acks=all"],
                   capture_output=True, text=True, timeout=180, check=True)
    # Each moved partition goes to the one broker it lacks plus its follower, first: the leader
    # it had is dropped from one of them.
    moves = []
    for p in (0, 1):
        replicas = [int(b) for b in before[p][1].split(",")]
        missing = next(b for b in (1, 2, 3) if b not in replicas)
        moves.append({"topic": topic, "partition": p, "replicas": [missing, replicas[1]]})
    plan = os.path.join(cluster.tmp, "reassign.json")
    with open(plan, "w") as f:
        json.dump({"version": 1, "partitions": moves}, f)
    out = tool("kafka-reassign-partitions", "--reassignment-json-file", plan, "--execute", "--throttle", "1000000")
    assert "Successfully started partition reassignments" in out, out
    deadline = time.monotonic() + 60
    while True:
        out = tool("kafka-reassign-partitions", "--reassignment-json-file", plan, "--verify")
        if "still in progress" not in out:
            break
        assert time.monotonic() < deadline, out
        time.sleep(1)
    assert out.count("is completed") == 2 and "Clearing topic-level throttles" in out, out
    after = described(topic)
    for m in moves:
        want = ",".join(map(str, m["replicas"]))
        leader, replicas, isr = after[m["partition"]]
        assert replicas == want and sorted(isr.split(",")) == sorted(want.split(",")), (m, after)
        assert leader in m["replicas"], (m, after)
    assert after[2] == before[2], (before, after)
    out = tool("kafka-leader-election", "--election-type", "PREFERRED", "--all-topic-partitions")
    assert "Successfully completed leader election" in out or "Valid replica already elected" in out, out
    final = described(topic)
    assert all(leader == int(replicas.split(",")[0]) for leader, replicas, _ in final.values()), final
    got = tool("kafka-console-consumer", "--topic", topic, "--from-beginning", "--max-messages", "3000", "--timeout-ms", "30000")
    assert len(got.splitlines()) == 3000, f"read back {len(got.splitlines())} of 3000"
    return "kafka-topics, kafka-reassign-partitions --execute --throttle / --verify, kafka-leader-election, records read back"
