#!/usr/bin/env python3
"""Issue 22's fault-injection checker for replication, in the spirit of Jepsen (stdlib,
confluent-kafka and kafka-python; needs root and iproute2 for the network namespaces of
`netns.py`).

    python3 tests/nemesis/replication_checker.py --spate target/debug/spate --minutes 10 --seed 7
    python3 tests/nemesis/replication_checker.py --self-test     # the checks catch planted faults

What it does:

- **Cluster.** Three `spate serve` nodes (ids 1-3, all controller voters and brokers), node K in
  network namespace K of a `netns.Net(4)`; namespace 4 holds the clients only. Short broker
  heartbeats and sessions (300/3000 ms), `--replica-lag-time-max-ms 5000`, 64 KiB segments (so
  segments roll during a run, at other offsets on each replica). One topic, 3 partitions,
  replication factor 3, `min.insync.replicas=2`.
- **Clients** (all in namespace 4, on threads started there, so librdkafka's threads are there
  too): one idempotent acks=all confluent-kafka producer per partition writing the numbers
  0, 1, 2, ... as record values (a steady rate, at most `window` unanswered), recording every
  acknowledgement (value, offset, time) and every failed delivery (after a fatal error a new
  producer goes on with the next numbers); readers (kafka-python, manual assignment of every
  partition from offset 0, read_uncommitted, no group, so no `__consumer_offsets`) recording
  every (partition, offset, value) they were given.
- **Nemesis** (seeded; the seed is printed): for a bounded time, fault after fault in random
  order (each kind once per round, rounds shuffled), each held for a random time and then
  undone, with a random quiet time before the next:
    kill      SIGKILL a random broker, restart it on the same data directory;
    pause     SIGSTOP a random broker, SIGCONT it;
    isolate   cut the leader of a random partition off from both other brokers, both ways
              (silent loss; it is a controller voter, so it is cut from the quorum too); the
              client namespace still reaches it, so clients keep talking to a stale leader;
              then heal;
    delay     tc netem delay on a random broker's link      } only where the kernel has netem;
    loss      tc netem loss on a random broker's link       } otherwise skipped and said so.
- **Settling.** Every fault undone (heal, SIGCONT, restart), then until every broker is
  unfenced, every partition's ISR is all three replicas and every producer has been
  acknowledged again (bounded: a violation otherwise). Producers stop and flush, the consumers
  read up to the high watermark, and every replica's log reaches it (bounded, likewise).
- **Checks** (each a list of violations; any violation makes the run fail):
    (a) every acknowledged value is in its partition exactly once, at the offset it was
        acknowledged with (an implicit acknowledgement, without an offset: at some offset), on
        every replica in the final ISR (all three, else a convergence violation); no value is in
        a partition twice (the producer never resends a number, so a duplicate is the
        broker's); values increase along the offsets (one producer per partition);
    (b) the replicas in the ISR hold byte-identical batches below the high watermark: each node's
        segment files (`<data>/topics/<topic>/<p>/*.log`) are walked batch by batch (length at
        bytes 8..12, total 12 + length, a zero length ends a preallocated file), the batch
        streams are compared, not the files (replicas roll segments at other offsets); the
        batches follow on without gaps from offset 0, each replica's log ends at the high
        watermark, and the CRC-32C of every batch checks;
    (c) every record a consumer was given is still at that offset, with that value, below the
        high watermark at the end;
    and beside them: a reader started at the end reads from the leader exactly what the
    leader's files hold (so the file walk is checked against the broker), no broker exits
    unless killed by the nemesis, no broker logs a panic, no producer gets a fatal error from
    the broker (librdkafka's own fatal errors are listed in the summary), every replica ends in
    the ISR, and producers are acknowledged again after the heal (liveness).
- **Availability**: per partition, the gaps between consecutive acknowledgements; each gap is
  charged to the fault window (a fault's injection to the next one's) it overlaps most; per
  fault kind the longest gap, and the mean of each fault's longest, are reported, with the
  baseline before the first fault and the time after the final heal.
"""

import argparse
import bisect
import json
import logging
import os
import random
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "clients"))
import netns  # noqa: E402
from harness import crc32c  # noqa: E402  (tests/clients/harness.py: record batches' CRC-32C)

KAFKA_PORT, CONTROLLER_PORT, ADMIN_PORT = 9092, 9093, 9644
BROKERS = (1, 2, 3)
CLIENT = 4
TOPIC = "nemesis"


class Config:
    def __init__(self, **kw):
        self.binary = kw.get("binary", "target/debug/spate")
        self.seed = kw.get("seed")
        self.duration = float(kw.get("duration", 35.0))  # seconds of faults
        self.partitions = int(kw.get("partitions", 3))
        self.rate = float(kw.get("rate", 40.0))  # records per second per partition
        self.window = int(kw.get("window", 400))  # unanswered records per producer, at most
        self.consumers = int(kw.get("consumers", 1))
        self.hold = tuple(kw.get("hold", (2.0, 7.0)))  # how long a fault lasts
        self.quiet = tuple(kw.get("quiet", (3.0, 6.0)))  # between a heal and the next fault
        self.kinds = list(kw.get("kinds", ("kill", "pause", "isolate", "delay", "loss")))
        self.heartbeat_ms = int(kw.get("heartbeat_ms", 300))
        self.session_ms = int(kw.get("session_ms", 3000))
        self.replica_lag_ms = int(kw.get("replica_lag_ms", 5000))
        self.segment_bytes = int(kw.get("segment_bytes", 65536))
        self.settle_timeout = float(kw.get("settle_timeout", 60.0))
        self.request_timeout_ms = int(kw.get("request_timeout_ms", 5000))
        self.message_timeout_ms = int(kw.get("message_timeout_ms", 120000))
        self.workdir = kw.get("workdir")  # kept afterwards when given
        self.on_net = kw.get("on_net")  # called with the Net as soon as it exists (for a watchdog)
        self.log = kw.get("log") or (lambda msg: print(msg, flush=True))


# ---------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------


class Cluster:
    """Nodes 1-3 of `net`, each `spate serve` in its own namespace, all voters."""

    def __init__(self, net, cfg, tmp):
        self.net, self.cfg, self.tmp = net, cfg, tmp
        self.procs, self.logs = {}, {}
        self.killed, self.paused = set(), set()  # what the nemesis did, not yet undone
        self.crashes = []  # (node, exit code, log tail) of exits the nemesis did not cause
        self.voters = ",".join(f"{k}@{net.addr(k)}:{CONTROLLER_PORT}" for k in BROKERS)
        self.lock = threading.Lock()

    def bootstrap(self, k):
        return f"{self.net.addr(k)}:{KAFKA_PORT}"

    def bootstrap_all(self):
        return ",".join(self.bootstrap(k) for k in BROKERS)

    def data_dir(self, k):
        return os.path.join(self.tmp, f"n{k}")

    def start(self, k):
        path = os.path.join(self.tmp, f"n{k}.log")
        self.logs[k] = path
        with open(path, "ab") as f:
            f.write(f"==== checker: starting node {k} at {time.strftime('%H:%M:%S')}\n".encode())
            f.flush()
            self.procs[k] = self.net.popen(k, [
                self.cfg.binary, "serve",
                "--node-id", str(k),
                "--listen", self.bootstrap(k),
                "--admin-listen", f"{self.net.addr(k)}:{ADMIN_PORT}",
                "--data-dir", self.data_dir(k),
                "--controller-quorum-voters", self.voters,
                "--cores", "1",
                "--broker-heartbeat-interval-ms", str(self.cfg.heartbeat_ms),
                "--broker-session-timeout-ms", str(self.cfg.session_ms),
                "--replica-lag-time-max-ms", str(self.cfg.replica_lag_ms),
                "--segment-bytes", str(self.cfg.segment_bytes),
                "--auto-create-topics", "false",
            ], stdout=f, stderr=f)

    def start_all(self):
        for k in BROKERS:
            self.start(k)

    def kill(self, k):
        with self.lock:
            p = self.procs[k]
            self.killed.add(k)
            self.paused.discard(k)
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def restart(self, k):
        with self.lock:
            self.killed.discard(k)
            self.start(k)

    def pause(self, k):
        with self.lock:
            self.paused.add(k)
            os.kill(self.procs[k].pid, signal.SIGSTOP)

    def resume(self, k):
        with self.lock:
            self.paused.discard(k)
            os.kill(self.procs[k].pid, signal.SIGCONT)

    def check_alive(self):
        """Records (and restarts) a node that exited without the nemesis killing it."""
        with self.lock:
            for k, p in list(self.procs.items()):
                if k in self.killed or p.poll() is None:
                    continue
                tail = self.tail(k, 40)
                self.crashes.append((k, p.returncode, tail))
                self.start(k)

    def tail(self, k, lines=30):
        try:
            with open(self.logs[k], "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def get(self, k, path, timeout=2.0):
        """Node k's admin endpoint as JSON, asked inside its namespace; None if it does not
        answer (or is paused or dead: not asked)."""
        if k in self.killed or k in self.paused:
            return None
        try:
            status, body = self.net.http_get(k, self.net.addr(k), ADMIN_PORT, path, timeout=timeout)
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def image(self):
        """The newest installed metadata image among the nodes that answer (None: none does)."""
        best = None
        for k in BROKERS:
            d = self.get(k, "/v1/metadata")
            img = (d or {}).get("installed")
            if img is not None and (best is None or img["index"] > best["index"]):
                best = img
        return best

    def leaders(self, image):
        parts = ((image or {}).get("topics") or {}).get(TOPIC, {}).get("partitions") or []
        return [p.get("leader") for p in parts]

    def healthy(self):
        """(True, image) once every node answers, every broker is unfenced in the newest image,
        every partition of the topic has a leader and all its replicas in the ISR."""
        imgs = {k: ((self.get(k, "/v1/metadata") or {}).get("installed")) for k in BROKERS}
        if any(v is None for v in imgs.values()):
            return False, None
        img = max(imgs.values(), key=lambda i: i["index"])
        brokers = img.get("brokers") or {}
        if len(brokers) != 3 or any(b["fenced"] for b in brokers.values()):
            return False, img
        parts = ((img.get("topics") or {}).get(TOPIC) or {}).get("partitions") or []
        for p in parts:
            if p["leader"] not in BROKERS or sorted(p["isr"]) != sorted(p["replicas"]):
                return False, img
        return True, img


# ---------------------------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------------------------


def _client_logger(tmp):
    log = logging.getLogger(f"rdkafka-{id(tmp)}")
    log.propagate = False
    if not log.handlers:
        h = logging.FileHandler(os.path.join(tmp, "clients.log"))
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    return log


class ProducerWorker:
    """One idempotent acks=all producer writing 0, 1, 2, ... to one partition."""

    def __init__(self, cfg, cluster, partition, logger):
        self.cfg, self.cluster, self.partition, self.logger = cfg, cluster, partition, logger
        self.acks = []  # (value, offset, monotonic time)
        self.failures = []  # (value, error code name, message, time)
        self.errors = []  # (time, code name, message, fatal) from error_cb
        self.restarts = []  # (time, code name, message, unanswered) after fatal errors
        self.sent = 0  # values 0 .. sent-1 were handed to librdkafka
        self.outstanding = 0
        self.unresolved = None  # after flush: how many never got an answer
        self.stop = threading.Event()
        self.aborted = False
        self.thread = None

    def start(self, net):
        self.thread = net.thread(CLIENT, self._run, name=f"producer-{self.partition}")

    def abort(self):
        """Stops without waiting for what is unanswered (a run that failed)."""
        self.aborted = True
        self.stop.set()

    def _on_delivery(self, err, msg):
        self.outstanding -= 1
        v = int(msg.value())
        now = time.monotonic()
        if err is None:
            off = msg.offset()  # None (or negative) for an implicit acknowledgement: no offset known
            self.acks.append((v, off if off is not None and off >= 0 else None, now))
        else:
            self.failures.append((v, err.name(), err.str(), now))

    def _on_error(self, err):
        self.errors.append((time.monotonic(), err.name(), err.str(), err.fatal()))

    def _producer(self):
        from confluent_kafka import Producer

        return Producer({
            "bootstrap.servers": self.cluster.bootstrap_all(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "none",
            "request.timeout.ms": self.cfg.request_timeout_ms,
            "message.timeout.ms": self.cfg.message_timeout_ms,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "error_cb": self._on_error,
            "logger": self.logger,
            "log_level": 4,
            "client.id": f"nemesis-producer-{self.partition}",
        })

    def _run(self):
        from confluent_kafka import KafkaException

        p = self._producer()
        period = 1.0 / self.cfg.rate
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if now >= due and self.outstanding < self.cfg.window:
                    p.produce(TOPIC, value=str(self.sent).encode(), partition=self.partition,
                              on_delivery=self._on_delivery)
                    self.sent += 1
                    self.outstanding += 1
                    due = max(due + period, now - 1.0)  # no burst of more than a second's worth
                p.poll(max(0.0, min(0.02, due - time.monotonic())))
            except KafkaException as e:
                err = e.args[0]
                if not err.fatal():
                    raise
                # The idempotent producer gave up (error_cb has recorded it): what it still
                # holds fails, and a new producer (a new producer id) goes on with the next
                # numbers, so the history goes on too.
                left = self.outstanding
                p.purge()
                p.flush(5)
                self.restarts.append((time.monotonic(), err.name(), err.str(), left))
                self.outstanding = 0
                p = self._producer()
        if self.aborted:
            p.purge()
            p.flush(2)
        else:
            p.flush(self.cfg.message_timeout_ms / 1000.0 + 5)
        self.unresolved = self.outstanding


class ConsumerWorker:
    """Reads every partition from offset 0 (manual assignment, no group), recording what it
    was given."""

    def __init__(self, cfg, cluster, index):
        self.cfg, self.cluster, self.index = cfg, cluster, index
        self.seen = []  # (partition, offset, value, time)
        self.last = {}  # partition -> last offset given
        self.rewinds = []  # (partition, from offset, to offset, time)
        self.errors = []  # (time, code name, message)
        self.stop = threading.Event()
        self.thread = None

    def start(self, net):
        self.thread = net.thread(CLIENT, self._run, name=f"consumer-{self.index}")

    def abort(self):
        self.stop.set()

    def position(self, p):
        return self.last.get(p, -1) + 1

    def _run(self):
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(
            bootstrap_servers=self.cluster.bootstrap_all().split(","),
            group_id=None,  # no group, no coordinator, no commits: manual assignment only
            enable_auto_commit=False,
            isolation_level="read_uncommitted",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            request_timeout_ms=10000,
            metadata_max_age_ms=5000,
            client_id=f"nemesis-consumer-{self.index}",
        )
        tps = [TopicPartition(TOPIC, p) for p in range(self.cfg.partitions)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        try:
            while not self.stop.is_set():
                try:
                    batches = c.poll(timeout_ms=100, max_records=500)
                except Exception as e:  # noqa: BLE001 - kept and retried: the broker may be away
                    self.errors.append((time.monotonic(), type(e).__name__, str(e)[:200]))
                    time.sleep(0.1)
                    continue
                now = time.monotonic()
                for tp, recs in batches.items():
                    for m in recs:
                        p, off = tp.partition, m.offset
                        if p in self.last and off <= self.last[p]:
                            self.rewinds.append((p, self.last[p], off, now))
                        self.last[p] = off
                        self.seen.append((p, off, int(m.value), now))
        finally:
            c.close()


def _reader(cluster):
    from kafka import KafkaConsumer
    return KafkaConsumer(bootstrap_servers=cluster.bootstrap_all().split(","), group_id=None,
                         enable_auto_commit=False, isolation_level="read_uncommitted",
                         auto_offset_reset="none", request_timeout_ms=10000, fetch_max_wait_ms=100,
                         client_id="nemesis-final")


def watermarks(net, cluster, partitions):
    """{partition: high watermark} from the partitions' leaders (ListOffsets latest,
    read_uncommitted), asked from the client namespace."""
    def ask():
        from kafka import TopicPartition
        c = _reader(cluster)
        try:
            ends = c.end_offsets([TopicPartition(TOPIC, p) for p in range(partitions)])
            return {tp.partition: off for tp, off in ends.items()}
        finally:
            c.close()
    return net.call_in(CLIENT, ask)


def read_all(net, cluster, partitions, ends, timeout=60.0):
    """Everything below `ends[p]` of each partition as a fresh reader gets it from the
    leaders: {p: [(offset, value bytes)]}."""
    def read():
        from kafka import TopicPartition
        c = _reader(cluster)
        out = {p: [] for p in range(partitions)}
        tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        deadline = time.monotonic() + timeout
        try:
            while any((out[p][-1][0] + 1 if out[p] else 0) < ends[p] for p in out):
                if time.monotonic() > deadline:
                    raise AssertionError(f"final read did not reach the high watermarks {ends} within {timeout:.0f}s: "
                                         f"{ {p: (v[-1][0] + 1 if v else 0) for p, v in out.items()} }")
                for tp, recs in c.poll(timeout_ms=500, max_records=2000).items():
                    for m in recs:
                        if m.offset < ends[tp.partition]:
                            out[tp.partition].append((m.offset, m.value))
        finally:
            c.close()
        return out
    return net.call_in(CLIENT, read)


def create_topic(net, cluster, partitions):
    def create():
        from confluent_kafka.admin import AdminClient, NewTopic
        a = AdminClient({"bootstrap.servers": cluster.bootstrap_all(), "log_level": 0})
        fs = a.create_topics([NewTopic(TOPIC, partitions, 3, config={"min.insync.replicas": "2"})],
                             request_timeout=30)
        fs[TOPIC].result(timeout=60)
    net.call_in(CLIENT, create)


# ---------------------------------------------------------------------------------------------
# Segment files
# ---------------------------------------------------------------------------------------------


def read_batches(partition_dir):
    """The batches of a partition directory's segment files, in order of their base offsets:
    [(base offset, last offset, bytes)]. Walks each `.log` file by the batches' length field
    (bytes 8..12, total 12 + length) and stops at a zero length (the preallocated tail) or at
    the file's end."""
    out = []
    names = sorted((n for n in os.listdir(partition_dir) if n.endswith(".log")), key=lambda n: int(n[:-4]))
    for n in names:
        with open(os.path.join(partition_dir, n), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            if length == 0:
                break
            if length < 49 or pos + 12 + length > len(data):
                raise AssertionError(f"{partition_dir}/{n}: a batch at byte {pos} (offset {base}) claims "
                                     f"length {length}, the file has {len(data) - pos - 12} more bytes")
            (last_delta,) = struct.unpack_from(">i", data, pos + 23)
            out.append((base, base + last_delta, data[pos:pos + 12 + length]))
            pos += 12 + length
    return out


def _varint(buf, pos):
    """A zigzag varint at buf[pos:]: (value, next position)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return (result >> 1) ^ -(result & 1), pos


def batch_records(batch):
    """(offset, value bytes or None) of each record of an uncompressed magic-2 batch."""
    base, _length, _epoch, magic, _crc, attrs, _last_delta = struct.unpack_from(">qiibIhi", batch, 0)
    if magic != 2:
        raise AssertionError(f"batch at offset {base}: magic {magic}")
    if attrs & 0x07:
        raise AssertionError(f"batch at offset {base} is compressed (attributes {attrs:#x}); the producers send none")
    if attrs & 0x20:
        return []  # a control batch (none are expected: no transactions)
    (count,) = struct.unpack_from(">i", batch, 57)
    pos = 61
    out = []
    for _ in range(count):
        length, pos = _varint(batch, pos)
        end = pos + length
        pos += 1  # attributes
        _ts, pos = _varint(batch, pos)
        delta, pos = _varint(batch, pos)
        klen, pos = _varint(batch, pos)
        pos += max(klen, 0)
        vlen, pos = _varint(batch, pos)
        value = None if vlen < 0 else bytes(batch[pos:pos + vlen])
        out.append((base + delta, value))
        pos = end
    return out


def batch_crc_ok(batch):
    (crc,) = struct.unpack_from(">I", batch, 17)
    return crc32c(batch[21:]) == crc


# ---------------------------------------------------------------------------------------------
# The nemesis
# ---------------------------------------------------------------------------------------------


class Fault:
    def __init__(self, kind, node, detail, t_inject):
        self.kind, self.node, self.detail, self.t_inject = kind, node, detail, t_inject
        self.t_heal = None


class Nemesis:
    def __init__(self, cfg, net, cluster, rng, t0, netem_reason):
        self.cfg, self.net, self.cluster, self.rng, self.t0 = cfg, net, cluster, rng, t0
        self.faults = []
        self.kinds = [k for k in cfg.kinds if k not in ("delay", "loss") or netem_reason is None]
        self.bag = []

    def _next_kind(self):
        if not self.bag:
            self.bag = list(self.kinds)
            self.rng.shuffle(self.bag)
        return self.bag.pop()

    def _log(self, msg):
        self.cfg.log(f"  t={time.monotonic() - self.t0:6.1f}s {_utc()}  {msg}")

    def run(self, stop_at):
        while time.monotonic() < stop_at:
            self.cluster.check_alive()
            kind = self._next_kind()
            hold = self.rng.uniform(*self.cfg.hold)
            quiet = self.rng.uniform(*self.cfg.quiet)
            f = self.inject(kind, hold)
            self._sleep(hold)
            self.heal(f)
            self._sleep(quiet)
            self.cluster.check_alive()

    def _sleep(self, secs):
        end = time.monotonic() + secs
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))
            self.cluster.check_alive()

    def inject(self, kind, hold):
        c, rng = self.cluster, self.rng
        node = rng.choice(BROKERS)
        detail = ""
        if kind == "kill":
            c.kill(node)
        elif kind == "pause":
            c.pause(node)
        elif kind == "isolate":
            p = rng.randrange(self.cfg.partitions)
            leaders = c.leaders(c.image())
            lead = leaders[p] if p < len(leaders) else None
            if lead in BROKERS:
                node, detail = lead, f"leader of partition {p}"
            else:
                detail = f"partition {p} has no leader now ({lead}); a random broker"
            for j in BROKERS:
                if j != node:
                    self.net.cut(node, j)
        elif kind == "delay":
            ms, jitter = rng.randint(50, 400), rng.randint(0, 50)
            self.net.impair(node, delay_ms=ms, jitter_ms=jitter)
            detail = f"{ms}±{jitter} ms each way"
        elif kind == "loss":
            pct = rng.choice((5, 10, 20, 40))
            self.net.impair(node, loss_pct=pct)
            detail = f"{pct}% each way"
        else:
            raise ValueError(kind)
        f = Fault(kind, node, detail, time.monotonic())
        self.faults.append(f)
        self._log(f"{kind:8s} node {node} {detail} (for {hold:.1f}s)")
        return f

    def heal(self, f):
        c = self.cluster
        if f.kind == "kill":
            c.restart(f.node)
        elif f.kind == "pause":
            c.resume(f.node)
        elif f.kind == "isolate":
            self.net.heal()
        elif f.kind in ("delay", "loss"):
            self.net.clear_impairment(f.node)
        f.t_heal = time.monotonic()
        self._log(f"heal     {f.kind} of node {f.node}")

    def heal_everything(self):
        """Undoes whatever is still in effect (the loop always heals its fault; this is for an
        interrupted run)."""
        self.net.heal()
        for k in list(self.net.impaired):
            self.net.clear_impairment(k)
        for k in list(self.cluster.paused):
            self.cluster.resume(k)
        for k in list(self.cluster.killed):
            self.cluster.restart(k)


# ---------------------------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------------------------


def availability(producers, faults, t_final_heal, t_stop):
    """Charges each gap between consecutive acknowledgements of each producer to the window it
    overlaps most: "no fault" before the first fault, each fault's window (its injection to the
    next fault's), and "after final heal". Returns {kind: [(longest gap, fault, partition)]}
    with one entry per window."""
    windows = []
    if faults:
        windows.append(("no fault", None, float("-inf"), faults[0].t_inject))
        for i, f in enumerate(faults):
            end = faults[i + 1].t_inject if i + 1 < len(faults) else t_final_heal
            windows.append((f.kind, f, f.t_inject, end))
        windows.append(("after final heal", None, t_final_heal, float("inf")))
    else:
        windows.append(("no fault", None, float("-inf"), float("inf")))
    longest = [(0.0, None) for _ in windows]
    starts = [w[2] for w in windows]
    for pw in producers:
        times = sorted(t for _v, _o, t in pw.acks if t <= t_stop)
        if not times:
            continue
        times.append(t_stop)  # a producer left unanswered until the end
        for a, b in zip(times, times[1:]):
            best, best_i = -1.0, 0
            # The windows are contiguous and in order: only those from a's to b's can overlap.
            lo = max(0, bisect.bisect_right(starts, a) - 1)
            hi = max(0, bisect.bisect_right(starts, b) - 1)
            for i in range(lo, hi + 1):
                _k, _f, ws, we = windows[i]
                ov = min(b, we) - max(a, ws)
                if ov > best:
                    best, best_i = ov, i
            if b - a > longest[best_i][0]:
                longest[best_i] = (b - a, pw.partition)
    out = {}
    for (kind, f, _s, _e), (gap, p) in zip(windows, longest):
        out.setdefault(kind, []).append((gap, f, p))
    return out


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class Result:
    def __init__(self):
        self.violations = []  # (check, text)
        self.lines = []  # the summary
        self.note = ""
        self.workdir = None

    @property
    def ok(self):
        return not self.violations

    def violation(self, check, text):
        self.violations.append((check, text))

    def summary(self):
        out = list(self.lines)
        if self.violations:
            out.append(f"VIOLATIONS ({len(self.violations)}):")
            for check, text in self.violations[:40]:
                out.append(f"  [{check}] {text}")
            if len(self.violations) > 40:
                out.append(f"  ... and {len(self.violations) - 40} more")
        out.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(out)


def _utc():
    """The wall clock in UTC as the brokers' logs print it (HH:MM:SS.mmm), to find a fault there."""
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _wait(pred, timeout, interval=0.25):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def run(cfg):
    """One checker run. Returns a Result (violations empty on success); raises netns.Unsupported
    when namespaces cannot be made here, RuntimeError when the cluster or the clients do not
    start. Every process and namespace it made is gone when it returns."""
    if cfg.seed is None:
        cfg.seed = random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(cfg.seed)
    res = Result()
    tmp = cfg.workdir or tempfile.mkdtemp(prefix="spate-nemesis-")
    os.makedirs(tmp, exist_ok=True)
    res.workdir = tmp
    # Everything said goes to <workdir>/checker.log too, beside the nodes' logs.
    shown, logf = cfg.log, open(os.path.join(tmp, "checker.log"), "a")

    def log(msg):
        shown(msg)
        logf.write(msg + "\n")
        logf.flush()

    cfg.log = log
    try:
        return _run(cfg, rng, tmp, res)
    finally:
        cfg.log = shown
        logf.close()


def _run(cfg, rng, tmp, res):
    cfg.log(f"replication nemesis: seed {cfg.seed}, {cfg.duration:.0f}s of faults, work dir {tmp}")
    workers = []
    net = netns.Net(4)
    if cfg.on_net is not None:
        cfg.on_net(net)
    with net:
        try:
            _run_in(cfg, net, rng, tmp, res, workers)
        finally:
            # Clients left running by a failure stop too, before the brokers go.
            for w in workers:
                w.abort()
            for w in workers:
                if w.thread is not None:
                    w.thread.join(10)
    return res


def _run_in(cfg, net, rng, tmp, res, workers):
    log = cfg.log
    why_netem = None
    try:
        net.impair(1, delay_ms=0)
        net.clear_impairment(1)
    except netns.Unsupported as e:
        why_netem = str(e)
    wanted_netem = [k for k in cfg.kinds if k in ("delay", "loss")]
    if why_netem and wanted_netem:
        log(f"netem faults ({', '.join(wanted_netem)}) SKIPPED: {why_netem}")

    c = Cluster(net, cfg, tmp)
    t_setup = time.monotonic()
    c.start_all()

    def brokers_up():
        c.check_alive()
        img = c.image()
        return img is not None and len(img.get("brokers") or {}) == 3 \
            and not any(b["fenced"] for b in img["brokers"].values())

    if not _wait(brokers_up, 60):
        raise RuntimeError(f"the cluster did not come up within 60 s:\n{_tails(c)}")
    create_topic(net, c, cfg.partitions)
    if not _wait(lambda: c.healthy()[0], 30):
        raise RuntimeError(f"topic {TOPIC} not placed with full ISRs within 30 s:\n{_tails(c)}")
    logger = _client_logger(tmp)
    producers = [ProducerWorker(cfg, c, p, logger) for p in range(cfg.partitions)]
    consumers = [ConsumerWorker(cfg, c, i) for i in range(cfg.consumers)]
    workers.extend(producers + consumers)
    for w in workers:
        w.start(net)
    if not _wait(lambda: all(len(p.acks) >= 5 for p in producers), 30, 0.1):
        raise RuntimeError(f"producers not acknowledged within 30 s of start: "
                           f"{[(len(p.acks), p.failures[-1:], p.errors[-3:]) for p in producers]}\n{_tails(c)}")
    log(f"cluster up, topic {TOPIC} ({cfg.partitions} partitions, RF 3, min.insync.replicas 2), "
        f"{cfg.partitions} producers at {cfg.rate:.0f}/s each, {cfg.consumers} consumer(s): "
        f"{time.monotonic() - t_setup:.1f}s")

    t0 = time.monotonic()
    log(f"  t=   0.0s {_utc()}  start (t is seconds since here; the wall clock is UTC, as in the brokers' logs)")
    time.sleep(2.0)  # a baseline before the first fault
    nem = Nemesis(cfg, net, c, rng, t0, why_netem)
    try:
        nem.run(time.monotonic() + cfg.duration)
    finally:
        nem.heal_everything()
    t_final_heal = time.monotonic()
    log(f"  t={t_final_heal - t0:6.1f}s {_utc()}  everything healed; settling")

    # Settle: every broker unfenced, every ISR full, every producer acknowledged again.
    def settled():
        c.check_alive()
        ok, _img = c.healthy()
        return ok and all(any(t > t_final_heal for _v, _o, t in p.acks) for p in producers)

    if not _wait(settled, cfg.settle_timeout):
        ok, img = c.healthy()
        parts = ((img or {}).get("topics") or {}).get(TOPIC, {}).get("partitions")
        res.violation("liveness", f"not settled {cfg.settle_timeout:.0f}s after healing everything: healthy={ok}, "
                      f"partitions {parts}, brokers {(img or {}).get('brokers')}, acks after the heal "
                      f"{[sum(1 for a in p.acks if a[2] > t_final_heal) for p in producers]}, "
                      f"last producer errors {[p.errors[-2:] for p in producers]}")
    t_settled = time.monotonic()
    log(f"  t={t_settled - t0:6.1f}s {_utc()}  settled")
    time.sleep(2.0)
    t_stop = time.monotonic()
    for w in producers:
        w.stop.set()
    for w in producers:
        w.thread.join(cfg.message_timeout_ms / 1000.0 + 30)
        if w.thread.is_alive():
            res.violation("liveness", f"producer {w.partition} did not finish flushing")
        if w.thread.error is not None:
            res.violation("client", f"producer {w.partition} failed: {w.thread.error!r}")

    # The high watermarks, then the consumers up to them, then every replica up to them.
    hw = watermarks(net, c, cfg.partitions)
    if not _wait(lambda: all(all(w.position(p) >= hw[p] for p in hw) for w in consumers), 30):
        res.violation("liveness", f"consumers did not reach the high watermarks {hw} within 30 s: "
                      f"{[{p: w.position(p) for p in hw} for w in consumers]}")
    for w in consumers:
        w.stop.set()
    for w in consumers:
        w.thread.join(30)
        if w.thread.error is not None:
            res.violation("client", f"consumer {w.index} failed: {w.thread.error!r}")

    def replica_ends():
        ends = {}
        for p in range(cfg.partitions):
            for k in BROKERS:
                d = os.path.join(c.data_dir(k), "topics", TOPIC, str(p))
                b = read_batches(d) if os.path.isdir(d) else []
                ends[(p, k)] = b[-1][1] + 1 if b else 0
        return ends

    if not _wait(lambda: all(e == hw[p] for (p, _k), e in replica_ends().items()), 30, 0.5):
        res.violation("convergence", f"replicas' logs do not end at the high watermarks {hw} 30 s after the "
                      f"producers stopped: {replica_ends()}")
    hw2 = watermarks(net, c, cfg.partitions)
    if hw2 != hw:
        res.violation("convergence", f"high watermarks moved after the producers stopped: {hw} then {hw2}")
    ok, img = c.healthy()
    leaders = c.leaders(img)
    parts = ((img or {}).get("topics") or {}).get(TOPIC, {}).get("partitions") or []
    isrs = {p: list(rec.get("isr") or []) for p, rec in enumerate(parts)}
    if not ok:
        res.violation("convergence", f"the cluster is not healthy at the end: {img}")

    try:
        served = read_all(net, c, cfg.partitions, hw)
    except AssertionError as e:
        res.violation("read", str(e))
        served = None
    _check(cfg, c, producers, consumers, hw, leaders, res, served, isrs)

    # Broker logs: panics are crashes even if the process lived on.
    logs = {}
    for k in BROKERS:
        try:
            with open(c.logs[k], "rb") as f:
                logs[k] = f.read().decode("utf-8", "replace")
        except OSError:
            pass
    for k, text in logs.items():
        for line in text.splitlines():
            if "panicked" in line or "PANIC" in line:
                res.violation("crash", f"node {k} log: {line.strip()[:300]}")
    for k, code, tail in c.crashes:
        res.violation("crash", f"node {k} exited with code {code} without being killed; its log ended:\n{tail}")

    # What the brokers say they did (context for the availability figures, not a check).
    said = {"fenced a broker": "fencing it", "cut a diverging log back": "cutting it back",
            "proposed an ISR shrink": "shrinking the ISR", "refused a stale ISR change": "ISR change not made"}
    counts = {k: 0 for k in said}
    for text in logs.values():
        for name, needle in said.items():
            counts[name] += text.count(needle)
    res.broker_events = counts
    gaps = availability(producers, nem.faults, t_final_heal, t_stop)
    _report(cfg, res, nem, producers, consumers, hw, gaps, why_netem, t0, t_final_heal, t_settled)


def _check(cfg, c, producers, consumers, hw, leaders, res, served, isrs=None):
    """Checks (a), (b), (c) and the final read (`served`: {p: [(offset, value)]} a reader got
    from the leaders, None if it failed) against each replica's segment files under
    `c.data_dir(k)`; adds what it finds to `res.violations`. (a) and (b) hold for the replicas
    in each partition's final ISR (`isrs`: {p: [broker]}, default all three); a replica out
    of it is a convergence violation (the run waited for every ISR to be full)."""
    isrs = isrs or {}
    members = {p: sorted(k for k in (isrs.get(p) or BROKERS) if k in BROKERS) for p in range(cfg.partitions)}
    for p in range(cfg.partitions):
        out = [k for k in BROKERS if k not in members[p]]
        if out:
            res.violation("convergence", f"partition {p}: replica(s) {out} not in the ISR {members[p]} at the end; "
                          f"(a) and (b) are checked on the ISR only")
    # Each replica's batches, and the records in them.
    streams = {}
    for p in range(cfg.partitions):
        for k in BROKERS:
            d = os.path.join(c.data_dir(k), "topics", TOPIC, str(p))
            try:
                streams[(p, k)] = read_batches(d)
            except (OSError, AssertionError) as e:
                res.violation("b", f"partition {p} node {k}: {e}")
                streams[(p, k)] = []
    crc_checked = 0
    records = {}
    for p in range(cfg.partitions):
        below = {k: [b for b in streams[(p, k)] if b[0] < hw[p]] for k in BROKERS}
        # (b) the batch streams follow on from 0 and end at the high watermark.
        for k in members[p]:
            nxt = 0
            for base, last, _b in below[k]:
                if base != nxt:
                    res.violation("b", f"partition {p} node {k}: a batch at offset {base} where {nxt} was due")
                    break
                nxt = last + 1
            if nxt != hw[p]:
                res.violation("b", f"partition {p} node {k}: batches below the high watermark {hw[p]} end at {nxt}")
        # (b) byte-identical across the replicas.
        ref_k = leaders[p] if p < len(leaders) and leaders[p] in members[p] else members[p][0]
        ref = below[ref_k]
        for k in members[p]:
            if k == ref_k:
                continue
            other = below[k]
            for i in range(max(len(ref), len(other))):
                a = ref[i] if i < len(ref) else None
                b = other[i] if i < len(other) else None
                if a is None or b is None or a[2] != b[2]:
                    where = (a or b)[0]
                    res.violation("b", f"partition {p}: node {k} disagrees with the leader {ref_k} at the batch "
                                  f"at offset {where} (below the high watermark {hw[p]}): "
                                  f"leader {_desc(a)}, node {k} {_desc(b)}")
                    break
        for base, _last, b in ref:
            crc_checked += 1
            if not batch_crc_ok(b):
                res.violation("b", f"partition {p} node {ref_k}: batch at offset {base} fails its CRC-32C")
        recs = {}
        for k in members[p]:
            r = []
            for _base, _last, b in below[k]:
                r.extend(batch_records(b))
            recs[k] = r
        records[p] = recs

    # The broker serves what the leader's files hold.
    if served is not None:
        for p in range(cfg.partitions):
            ref_k = leaders[p] if p < len(leaders) and leaders[p] in members[p] else members[p][0]
            if served[p] != records[p][ref_k]:
                first = next((i for i, (x, y) in enumerate(zip(served[p], records[p][ref_k])) if x != y),
                             min(len(served[p]), len(records[p][ref_k])))
                res.violation("read", f"partition {p}: a reader gets other records from the leader {ref_k} than "
                              f"its files hold, from record {first}: read {served[p][first:first + 3]}, "
                              f"files {records[p][ref_k][first:first + 3]}")

    # (a) acknowledged values: once, at their offsets, in order, on every replica.
    res.acked = sum(len(w.acks) for w in producers)
    for w in producers:
        p = w.partition
        for k in members[p]:
            at = {}
            count = {}
            prev = None
            for off, val in records[p][k]:
                try:
                    v = int(val)
                except (TypeError, ValueError):
                    res.violation("a", f"partition {p} node {k}: offset {off} holds {val!r}, not a number")
                    continue
                at[off] = v
                count[v] = count.get(v, 0) + 1
                if v >= w.sent:
                    res.violation("a", f"partition {p} node {k}: offset {off} holds {v}, never sent (sent 0..{w.sent - 1})")
                if prev is not None and v <= prev[1]:
                    res.violation("a", f"partition {p} node {k}: out of order: {prev[1]} at offset {prev[0]}, "
                                  f"then {v} at offset {off}")
                prev = (off, v)
            dups = sorted(v for v, n in count.items() if n > 1)
            if dups:
                res.violation("a", f"partition {p} node {k}: {len(dups)} value(s) written more than once: {dups[:10]}")
            # An acknowledgement without an offset is librdkafka's implicit one (a request timed
            # out, a later batch of the same producer was accepted, so this one was written): the
            # value must be there, at some offset.
            missing = [(v, o) for v, o, _t in w.acks if (at.get(o) != v if o is not None else v not in count)]
            for v, o in missing[:5]:
                if o is None:
                    res.violation("a", f"partition {p} node {k}: value {v} was acknowledged (without an offset: "
                                  f"an implicit acknowledgement) and is not in the log (high watermark {hw[p]})")
                    continue
                res.violation("a", f"partition {p} node {k}: value {v} was acknowledged at offset {o}, "
                              f"the log holds {at.get(o, 'nothing')} there (high watermark {hw[p]})")
            if len(missing) > 5:
                res.violation("a", f"partition {p} node {k}: ... {len(missing)} acknowledged values missing in all")

    # (c) what consumers saw is still there.
    res.seen = sum(len(w.seen) for w in consumers)
    final = {}
    for p in range(cfg.partitions):
        ref_k = leaders[p] if p < len(leaders) and leaders[p] in members[p] else members[p][0]
        final[p] = dict(records[p][ref_k])
    for w in consumers:
        bad = []
        for p, off, v, _t in w.seen:
            got = final[p].get(off)
            if off >= hw[p] or got is None or int(got) != v:
                bad.append((p, off, v, got))
        for p, off, v, got in bad[:10]:
            res.violation("c", f"consumer {w.index} was given {v} at partition {p} offset {off}; at the end the "
                          f"log holds {got!r} there (high watermark {hw[p]})")
        if len(bad) > 10:
            res.violation("c", f"consumer {w.index}: ... {len(bad)} records seen and later lost in all")
    res.crc_checked = crc_checked

    # Fatal producer errors. One the broker caused (an error code from it: a sequence or epoch
    # it refused) is a violation; librdkafka's own (a local code, starting with "_", such as
    # _INCONSISTENT "Unable to reconstruct MessageSet" after messages timed out in a partition
    # that stayed unwritable: librdkafka's, see confluent-kafka-dotnet issue 2519) is reported
    # in the summary, since what made the partition unwritable shows as liveness.
    for w in producers:
        for t, name, msg, fatal in w.errors:
            if fatal and not name.startswith("_"):
                res.violation("producer", f"producer {w.partition} got a fatal error from the broker: {name}: {msg}")


def _desc(b):
    if b is None:
        return "no batch"
    base, last, data = b
    (epoch,) = struct.unpack_from(">i", data, 12)
    try:
        vals = [int(v) for _o, v in batch_records(data)]
    except Exception:  # noqa: BLE001
        vals = "?"
    return f"offsets {base}..{last} epoch {epoch} values {vals} ({len(data)} bytes)"


def _tails(c, lines=15):
    return "\n".join(f"--- node {k} ---\n{c.tail(k, lines)}" for k in BROKERS)


def _report(cfg, res, nem, producers, consumers, hw, gaps, why_netem, t0, t_final_heal, t_settled):
    L = res.lines
    counts = {}
    for f in nem.faults:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    L.append(f"seed {cfg.seed}; {cfg.duration:.0f}s of faults ({t_final_heal - t0:.0f}s with the last heal), "
             f"{len(nem.faults)} faults; settled {t_settled - t_final_heal:.1f}s after the final heal")
    L.append(f"{'fault kind':18s} {'count':>5s} {'longest no-ack gap':>19s} {'mean per fault':>15s}  (worst fault)")
    for kind in list(dict.fromkeys(["no fault"] + cfg.kinds + ["after final heal"])):
        if kind in ("delay", "loss") and why_netem:
            L.append(f"{kind:18s} {'-':>5s} {'skipped: ' + why_netem}")
            continue
        entries = gaps.get(kind)
        n = counts.get(kind, "-") if kind in cfg.kinds else "-"
        if not entries:
            L.append(f"{kind:18s} {n!s:>5s} {'-':>19s}")
            continue
        worst = max(entries, key=lambda e: e[0])
        mean = statistics.mean(e[0] for e in entries)
        where = ""
        if worst[1] is not None:
            f = worst[1]
            where = f"  (t={f.t_inject - t0:.0f}s node {f.node}{' ' + f.detail if f.detail else ''}, partition {worst[2]})"
        L.append(f"{kind:18s} {n!s:>5s} {worst[0]:>18.2f}s {mean:>14.2f}s{where}")
    sent = sum(w.sent for w in producers)
    acked = sum(len(w.acks) for w in producers)
    failed = sum(len(w.failures) for w in producers)
    unresolved = sum(w.unresolved or 0 for w in producers)
    codes = {}
    for w in producers:
        for _v, name, _m, _t in w.failures:
            codes[name] = codes.get(name, 0) + 1
    implicit = sum(1 for w in producers for _v, o, _t in w.acks if o is None)
    L.append(f"records: sent {sent}, acknowledged {acked} ({implicit} without an offset: implicit), failed {failed}{' ' + str(codes) if codes else ''}, "
             f"unanswered {unresolved}; "
             f"high watermarks {hw}")
    seen = sum(len(w.seen) for w in consumers)
    rewinds = sum(len(w.rewinds) for w in consumers)
    cerr = {}
    for w in consumers:
        for _t, name, _m in w.errors:
            cerr[name] = cerr.get(name, 0) + 1
    for w in producers:
        for t, name, msg, left in w.restarts:
            L.append(f"producer {w.partition}: fatal error at t={t - t0:.0f}s ({name}: {msg[:160]}); {left} unanswered "
                     f"failed with it; a new producer went on")
    L.append(f"consumers: given {seen} records, {rewinds} rewind(s), errors {cerr or 'none'}")
    L.append("brokers' logs: " + ", ".join(f"{k} {n}x" for k, n in getattr(res, "broker_events", {}).items()))
    checks = {
        "a": f"acknowledged values once, in order, at their offsets on all 3 replicas ({acked} acks)",
        "b": f"replicas byte-identical below the high watermark ({getattr(res, 'crc_checked', 0)} batches, CRCs checked)",
        "c": f"records consumers saw still there ({seen})",
        "read": "a final reader gets what the leader's files hold",
        "liveness": "available again after healing",
        "convergence": "replicas converge at the high watermark",
        "crash": "no broker crashed or panicked",
        "producer": "no fatal producer error caused by the broker",
        "client": "clients ran",
    }
    bad = {v[0] for v in res.violations}
    for key, text in checks.items():
        L.append(f"  ({key}) {text}: {'VIOLATED' if key in bad else 'ok'}")
    parts = [f"seed {cfg.seed}", f"{len(nem.faults)} faults " + ", ".join(f"{k} {n}" for k, n in counts.items()),
             f"{acked} acks"]
    gap_txt = ", ".join(f"{k} {max(e[0] for e in gaps[k]):.1f}s" for k in cfg.kinds if k in gaps)
    if gap_txt:
        parts.append("longest no-ack gap: " + gap_txt)
    if why_netem and any(k in cfg.kinds for k in ("delay", "loss")):
        parts.append("netem faults skipped (no netem)")
    res.note = "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Self-test: the checks catch what they are for
# ---------------------------------------------------------------------------------------------


def _zz(n):
    n = (n << 1) ^ (n >> 63)
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def make_batch(base, values, epoch=0, pid=7, seq=None):
    """An uncompressed magic-2 batch of `values` (ints, as the producers write them) at offset
    `base`, as an idempotent producer's (producer id, sequence) would be."""
    body = b""
    for i, v in enumerate(values):
        val = str(v).encode()
        r = b"\x00" + _zz(0) + _zz(i) + _zz(-1) + _zz(len(val)) + val + _zz(0)
        body += _zz(len(r)) + r
    seq = base if seq is None else seq
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, 1_700_000_000_000, 1_700_000_000_000, pid, 0, seq,
                            len(values)) + body
    tail = struct.pack(">ibI", epoch, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", base, len(tail)) + tail


class _Fake:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def selftest(log=print):
    """Runs the checks (a), (b), (c) and the final-read comparison on hand-made segment files and
    histories: a clean history (with replicas rolling segments at different offsets and a
    preallocated zero tail) must pass, and each planted fault must be reported by the check
    meant to catch it. Returns a list of failures (empty: the checks work)."""
    failures = []
    cfg = Config(partitions=1)

    def scenario(name, expect, values=None, replicas=None, acks=None, seen=None, hw=None, served=None,
                 split=None, sent=None, isr=None):
        values = list(range(10)) if values is None else values
        batches = [make_batch(i, [v]) for i, v in enumerate(values)]
        replicas = replicas or {}
        tmp = tempfile.mkdtemp(prefix="spate-nemesis-selftest-")
        try:
            for k in BROKERS:
                mine = replicas.get(k, batches)
                d = os.path.join(tmp, f"n{k}", "topics", TOPIC, "0")
                os.makedirs(d)
                cut = (split or {}).get(k)
                parts = [mine] if cut is None else [mine[:cut], mine[cut:]]
                for part in parts:
                    if not part:
                        continue
                    (base,) = struct.unpack_from(">q", part[0], 0)
                    with open(os.path.join(d, f"{base:020}.log"), "wb") as f:
                        f.write(b"".join(part) + b"\x00" * 512)  # a preallocated tail
            c = _Fake(data_dir=lambda k, tmp=tmp: os.path.join(tmp, f"n{k}"))
            ack_list = acks if acks is not None else [(v, i, 0.0) for i, v in enumerate(values)]
            prod = _Fake(partition=0, acks=ack_list, sent=sent if sent is not None else 1 + max(values),
                         errors=[], failures=[])
            cons = _Fake(index=0, seen=seen if seen is not None else [(0, i, v, 0.0) for i, v in enumerate(values)])
            leader_recs = []
            for b in replicas.get(1, batches):
                leader_recs.extend(batch_records(b))
            res = Result()
            _check(cfg, c, [prod], [cons], {0: len(values) if hw is None else hw}, [1], res,
                   served if served is not None else {0: [r for r in leader_recs
                                                           if r[0] < (len(values) if hw is None else hw)]},
                   {0: isr} if isr else None)
            got = sorted({v[0] for v in res.violations})
            ok = got == sorted(expect)
            log(f"  self-test {name:44s} expects {expect or 'nothing'}, reported {got or 'nothing'}: "
                f"{'ok' if ok else 'WRONG'}")
            if not ok:
                failures.append(f"{name}: expected {expect}, got {res.violations}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    vals = list(range(10))
    clean = [make_batch(i, [v]) for i, v in enumerate(vals)]
    scenario("clean, segments rolled differently", [], split={2: 4, 3: 7})
    scenario("clean, multi-record batches", [],
             replicas={k: [make_batch(0, [0, 1, 2]), make_batch(3, [3, 4]), make_batch(5, [5, 6, 7, 8, 9])]
                       for k in BROKERS}, split={3: 1})
    scenario("acknowledged record lost", ["a"], values=vals[:9], hw=9,
             acks=[(v, v, 0.0) for v in vals], seen=[])
    scenario("acknowledged at another offset", ["a"], acks=[(5, 6, 0.0)])
    scenario("implicitly acknowledged (no offset), there", [], acks=[(5, None, 0.0), (6, 6, 0.0)])
    scenario("implicitly acknowledged (no offset), lost", ["a"], values=vals[:9], hw=9, acks=[(9, None, 0.0)],
             seen=[])
    scenario("a value written twice", ["a"], values=[0, 1, 2, 2, 3])
    scenario("values out of order", ["a"], values=[0, 2, 1, 3])
    scenario("a value never sent", ["a"], values=[0, 1, 2], sent=2)
    other = list(clean)
    other[4] = make_batch(4, [99])
    scenario("a follower holds another value", ["a", "b"], replicas={3: other})
    other = list(clean)
    other[4] = make_batch(4, [4], epoch=3)
    scenario("a follower's batch differs (epoch)", ["b"], replicas={2: other})
    scenario("a follower is short", ["a", "b"], replicas={2: clean[:8]}, split={2: 3})
    scenario("a follower out of the ISR is short", ["convergence"], replicas={2: clean[:8]}, isr=[1, 3])
    scenario("a gap in the offsets", ["b"], replicas={k: clean[:5] + [make_batch(6, [5])] + clean[6:] for k in BROKERS},
             acks=[], seen=[])
    bad = bytearray(clean[3])
    bad[-1] ^= 1
    scenario("a corrupt batch (CRC)", ["b"], replicas={k: clean[:3] + [bytes(bad)] + clean[4:] for k in BROKERS},
             acks=[])
    scenario("a consumer saw a record later lost", ["c"], seen=[(0, 3, 3, 0.0), (0, 10, 10, 0.0)])
    scenario("a consumer saw another value", ["c"], seen=[(0, 3, 42, 0.0)])
    scenario("the broker serves other records", ["read"], served={0: [(i, str(v).encode()) for i, v in enumerate(vals[:9])]})

    # Availability: acknowledgements every 0.1 s from 0 to 20 s, none from 3.0 to 6.0 s (a kill
    # at 2.5 s) nor from 12.0 to 13.5 s (a pause at 11 s), none after 18.0 s (stop at 20 s,
    # final heal at 16 s).
    times = [i / 10 for i in range(0, 181) if not (30 < i < 60 or 120 < i < 135)]
    prod = _Fake(partition=0, acks=[(i, i, t) for i, t in enumerate(times)])
    faults = [Fault("kill", 1, "", 2.5), Fault("pause", 2, "", 11.0)]
    gaps = availability([prod], faults, 16.0, 20.0)
    want = {"no fault": 0.1, "kill": 3.0, "pause": 1.5, "after final heal": 2.0}
    got = {k: round(max(e[0] for e in v), 2) for k, v in gaps.items()}
    ok = got == want
    log(f"  self-test {'availability charged to fault windows':44s} expects {want}, got {got}: {'ok' if ok else 'WRONG'}")
    if not ok:
        failures.append(f"availability: expected {want}, got {got}")
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=os.path.join(HERE, "..", "..", "target", "debug", "spate"))
    ap.add_argument("--duration", "--seconds", type=float, default=600.0, help="seconds of faults (default 600)")
    ap.add_argument("--minutes", type=float, help="minutes of faults (instead of --duration)")
    ap.add_argument("--seed", type=int, help="the nemesis's seed (default: a random one, printed)")
    ap.add_argument("--rate", type=float, default=40.0, help="records per second per partition (default 40)")
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--kinds", default="kill,pause,isolate,delay,loss",
                    help="fault kinds (default kill,pause,isolate,delay,loss; delay/loss need netem)")
    ap.add_argument("--hold", default="2,8", help="a fault lasts MIN,MAX seconds (default 2,8)")
    ap.add_argument("--quiet", default="3,8", help="MIN,MAX seconds between a heal and the next fault (default 3,8)")
    ap.add_argument("--workdir", help="keep the nodes' logs and data here (default: a temporary directory, "
                    "removed after a passing run)")
    ap.add_argument("--self-test", action="store_true",
                    help="only check that the checks catch planted faults (no cluster; about a second)")
    a = ap.parse_args(argv)
    if a.self_test:
        failures = selftest()
        print("self-test: " + ("PASS" if not failures else f"FAIL: {failures}"))
        return 0 if not failures else 1
    why = netns.unavailable_reason()
    if why:
        print(f"cannot run: {why}")
        return 2
    cfg = Config(binary=os.path.abspath(a.spate), seed=a.seed,
                 duration=a.minutes * 60 if a.minutes else a.duration, rate=a.rate, consumers=a.consumers,
                 kinds=[k for k in a.kinds.split(",") if k], hold=tuple(float(x) for x in a.hold.split(",")),
                 quiet=tuple(float(x) for x in a.quiet.split(",")), workdir=a.workdir,
                 settle_timeout=90.0)
    started = time.monotonic()
    res = run(cfg)
    summary = res.summary()
    print(summary)
    with open(os.path.join(res.workdir, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    print(f"total {time.monotonic() - started:.0f}s; node logs in {res.workdir}")
    if res.ok and not a.workdir:
        shutil.rmtree(res.workdir, ignore_errors=True)
        print("(work dir removed: the run passed)")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
