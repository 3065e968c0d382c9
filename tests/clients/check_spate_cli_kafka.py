"""Spate's own client commands against Apache Kafka 4.1.1 (started by perf/kafka/run on free
ports in a temporary directory, and stopped at the end): what `spate topic` prints and changes
against Spate (tests/topic_cli.rs), checked against the broker it imitates."""

import json
import os
import shutil
import subprocess
import tempfile

from harness import Skip, check, free_port, run_cmd, wait_until

RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "perf", "kafka", "run")


class Kafka:
    """One Kafka broker+controller (KRaft) in a temporary directory; `stop()` ends it (SIGTERM,
    then SIGKILL after a while) and removes the directory, and is safe to call more than once."""

    def __init__(self, *configs):
        self.configs = configs
        self.dir = None
        self.port = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        if not (shutil.which("java") and shutil.which("mvn")):
            raise Skip("java or mvn is not installed")
        env = dict(os.environ, KAFKA_HEAP_OPTS="-Xmx512m -Xms512m")
        err = ""
        for _attempt in range(3):  # a free port can be taken before Kafka binds it
            self.dir = tempfile.mkdtemp(prefix="spate-kafka-")
            self.port = free_port()
            cmd = [RUN, "start", "--dir", self.dir, "--port", str(self.port), "--controller-port", str(free_port()),
                   "--timeout", "120"]
            for c in self.configs:
                cmd += ["--config", c]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=env, timeout=300)
            if r.returncode == 0:
                return self
            err = r.stderr.decode("utf-8", "replace")
            self.stop()
            if "in use" not in err:
                break
        raise AssertionError(f"Kafka did not start: {err.strip()[-800:]}")

    def stop(self):
        if self.dir is None:
            return
        subprocess.run([RUN, "stop", "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def _spate(ctx, bootstrap, *args, code=0, input_bytes=None):
    """Runs `spate <args>` against `bootstrap`; asserts the exit code; (stdout, stderr)."""
    cmd = [ctx.binary] + list(args) + ["-b", bootstrap]
    ctx.log(" ".join(cmd))
    r = run_cmd(cmd, input_bytes=input_bytes, timeout=60)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, f"spate {' '.join(args)} exited {r.returncode}, not {code}: {(err or out).strip()[-600:]}"
    return out, err


def _json(ctx, bootstrap, *args, code=0):
    out, _ = _spate(ctx, bootstrap, "topic", *args, "--json", code=code)
    return json.loads(out)


def _statuses(out):
    """{topic: status} of a TOPIC [PARTITIONS] STATUS table (the status is the last column, free text)."""
    rows = {}
    for line in out.splitlines()[1:]:
        name, rest = line.split(None, 1)
        rows[name] = rest.strip()
    return rows


@check("spate_topic_against_kafka")
def spate_topic_against_kafka(ctx):
    """Every `spate topic` subcommand against Kafka: create (a setting, an existing topic, an
    unknown key, --dry-run), list (-i, -d), describe (id, settings with Kafka's sources, offsets),
    trim-prefix (an offset, past the end, `end`), alter-config (set, append, delete, subtract, an
    unknown key), add-partitions and delete, each read back."""
    kafka = Kafka("log.cleaner.delete.retention.ms=3600000")
    ctx.extra_brokers.append(kafka)  # so the runner stops it too, on a watchdog or Ctrl-C
    try:
        kafka.start()
        b = kafka.bootstrap

        out, _ = _spate(ctx, b, "topic", "create", "k1", "k2", "-p", "3", "-c", "retention.ms=60000")
        assert _statuses(out) == {"k1": "OK", "k2": "OK"}, out
        out, _ = _spate(ctx, b, "topic", "create", "k1", code=1)
        assert _statuses(out)["k1"].startswith("TOPIC_ALREADY_EXISTS ("), out
        bad = _json(ctx, b, "create", "k3", "-c", "no.such.key=1", code=1)
        assert bad[0]["error"] == "INVALID_CONFIG" and "no.such.key" in bad[0]["message"], bad
        dry = _json(ctx, b, "create", "k4", "-p", "2", "--dry-run")
        assert dry == [{"topic": "k4", "error": None, "message": None, "partitions": 2, "replicas": 1}], dry

        def listed(*args):
            return {t["topic"]: (t["partition_count"], t["replication_factor"]) for t in _json(ctx, b, "list", *args)}

        wait_until(lambda: listed() == {"k1": (3, 1), "k2": (3, 1)}, 30, what=f"k1 and k2 listed, not {listed()}")
        out, _ = _spate(ctx, b, "topic", "list", "-d")
        assert [line.split() for line in out.splitlines() if line.startswith("k1 ")] == \
            [["k1", str(p), "1", "0", "1"] for p in range(3)], out  # node 1 leads every partition

        # The group lookup creates __consumer_offsets, listed only with -i. (Kafka may still be
        # loading the group's partition: the command's own exit code does not matter here.)
        run_cmd([ctx.binary, "group", "describe", "g", "-b", b], timeout=60)
        internal = {t["topic"]: t["internal"] for t in _json(ctx, b, "list", "-i")}
        assert internal.get("__consumer_offsets") is True and internal["k1"] is False, internal
        assert "__consumer_offsets" not in listed()

        _spate(ctx, b, "produce", "k1", "--partition", "0", input_bytes=b"".join(b"%d\n" % i for i in range(10)))
        d = _json(ctx, b, "describe", "k1")[0]
        assert len(d["id"]) == 22 and d["internal"] is False and d["partition_count"] == 3, d
        configs = {c["key"]: (c["value"], c["source"]) for c in d["configs"]}
        assert configs["retention.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG"), configs["retention.ms"]
        assert configs["delete.retention.ms"] == ("3600000", "STATIC_BROKER_CONFIG"), configs["delete.retention.ms"]
        assert configs["segment.ms"] == ("604800000", "DEFAULT_CONFIG"), configs["segment.ms"]
        offsets = [(p["log_start_offset"], p["high_watermark"]) for p in d["partitions"]]
        assert offsets == [(0, 10), (0, 0), (0, 0)], offsets
        out, _ = _spate(ctx, b, "topic", "describe", "k1")
        assert "SUMMARY\n" in out and f"ID          {d['id']}\n" in out and "CONFIGS\n" in out and "PARTITIONS\n" in out, out

        def starts():
            return [p["log_start_offset"] for p in _json(ctx, b, "describe", "k1", "-p")[0]["partitions"]]

        trimmed = _json(ctx, b, "trim-prefix", "k1", "-o", "4", "-p", "0")
        assert trimmed == [{"topic": "k1", "partition": 0, "new_start_offset": 4, "error": None}], trimmed
        assert starts() == [4, 0, 0]
        past = _json(ctx, b, "trim-prefix", "k1", "-o", "11", "-p", "0", code=1)
        assert past[0]["error"] == "OFFSET_OUT_OF_RANGE", past
        ends = _json(ctx, b, "trim-prefix", "k1", "--offset", "end")
        assert [(t["partition"], t["new_start_offset"]) for t in ends] == [(0, 10), (1, 0), (2, 0)], ends
        assert starts() == [10, 0, 0]

        def setting(key):
            c = {c["key"]: c for c in _json(ctx, b, "describe", "k1", "-c")[0]["configs"]}[key]
            return c["value"], c["source"]

        out, _ = _spate(ctx, b, "topic", "alter-config", "k1", "k2", "--set", "retention.ms=1000",
                        "--append", "cleanup.policy=compact")
        assert _statuses(out) == {"k1": "OK", "k2": "OK"}, out
        wait_until(lambda: setting("retention.ms") == ("1000", "DYNAMIC_TOPIC_CONFIG"), 30, what="retention.ms=1000")
        assert setting("cleanup.policy") == ("delete,compact", "DYNAMIC_TOPIC_CONFIG")
        _spate(ctx, b, "topic", "alter-config", "k1", "--delete", "retention.ms", "--subtract", "cleanup.policy=compact")
        wait_until(lambda: setting("retention.ms") == ("604800000", "DEFAULT_CONFIG"), 30, what="retention.ms back to default")
        assert setting("cleanup.policy") == ("delete", "DYNAMIC_TOPIC_CONFIG")
        out, _ = _spate(ctx, b, "topic", "alter-config", "k1", "--set", "no.such.key=1", code=1)
        assert _statuses(out)["k1"].startswith("INVALID_CONFIG ("), out

        out, _ = _spate(ctx, b, "topic", "add-partitions", "k1", "nope", "-n", "2", code=1)
        assert [line.split() for line in out.splitlines()] == [
            ["TOPIC", "PARTITIONS", "STATUS"], ["k1", "5", "OK"], ["nope", "-", "UNKNOWN_TOPIC_OR_PARTITION"]], out
        wait_until(lambda: listed().get("k1") == (5, 1), 30, what="k1 with 5 partitions")

        out, _ = _spate(ctx, b, "topic", "delete", "k2", "nope", code=1)
        rows = _statuses(out)
        assert rows["k2"] == "OK" and rows["nope"].startswith("UNKNOWN_TOPIC_OR_PARTITION"), out
        wait_until(lambda: listed() == {"k1": (5, 1)}, 30, what=f"only k1 left, not {listed()}")
        _, err = _spate(ctx, b, "topic", "describe", "nope", code=1)
        assert "topic 'nope': UNKNOWN_TOPIC_OR_PARTITION" in err, err
    finally:
        kafka.stop()
    return "create, list, describe, trim-prefix, alter-config, add-partitions, delete against Kafka 4.1.1"
