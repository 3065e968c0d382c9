#!/usr/bin/env python3
"""Spate against Apache Kafka 4.1.1 on this machine, side by side, in one run.

    perf/vs-kafka.py [--seconds 10] [--quick] [--spate PATH] [--out perf/results/<date>-<commit>-vs-kafka.md]

Targets:
  spate         spate serve --cores 1, default durability: acks=all answered after fdatasync
  spate-flushN  spate serve --cores 1 --flush-messages N (default 10000): fdatasync every N records
  kafka         Kafka 4.1.1 (perf/kafka/run start: one KRaft broker+controller, 1 GiB heap),
                defaults: page cache, no fsync
  kafka-fsync   the same with log.flush.interval.messages=1: fsync after every append (per batch)
Spate starts afresh (new data directory) for every cell. Kafka, by default (--kafka-lifetime run),
runs one JVM per Kafka target for the whole run: started at its first cell, given
--kafka-jit-warmup seconds (90) of unmeasured load first, because a fresh JVM's JIT compilers were
still at work 60-80 s into a steady load on the 2-core VM (jstat -compiler), which costs a fresh
JVM per cell up to half a core during its measured runs; after each cell its topics are deleted
and their files gone before the next cell. --kafka-lifetime cell: a fresh Kafka per cell, cold.
Every broker first gets --broker-warmup seconds (3) of unmeasured produce in each cell.

Workloads, each cell run against every target back to back (the first target rotating from cell
to cell) so that drift over time hits all of them alike:
  produce   record size x acks x partitions x producers (default 1 KiB and 100 B x 1 and all x 1
            and 6 x 1 and 4), as fast as possible for --seconds; spate-flushN and kafka-fsync only
            over the --durable-* subset (default: acks=all, all sizes, partitions and producers)
  consume   catch-up read from offset 0 after every 1-partition 1-producer produce cell
  e2e       end-to-end latency (send -> consumer) at fixed rates, the same for every target
            (--e2e, default 1 KiB at 20,000 and 50,000 msg/s, 100 B at 100,000 msg/s: rates Kafka
            sustained on the 2-core VM; at 1 KiB and 100,000 msg/s it fell behind, and fsync-per-append
            Kafka reached a third of it. A row whose producer delivered less than 95% of the rate
            says so in its error column)
  tools     Kafka's own kafka-producer-perf-test (--throughput -1) then kafka-consumer-perf-test,
            1 KiB, 1 partition, acks=all and acks=1, against every target
The load client is `spate bench` (librdkafka through the rdkafka crate; linger.ms=5,
batch.size=1000000, no compression) except for the tools cells. Every row carries the broker's and
the client's CPU seconds per GB (broker: utime+stime of its process over the run, for Kafka the
java pid in DIR/kafka.pid; client: RUSAGE_CHILDREN over the run) and the broker's peak RSS
(sampled every 0.2 s during the run).

Writes perf/results/<date>-<commit>-vs-kafka.md, with PNG plots next to it
(<same name>-throughput.png, -e2e.png, -cpu.png; matplotlib is installed into .venv-perf if
missing). Needs java 17+ and mvn (perf/kafka/run fetches Kafka's jars), python3; cargo only when
the default binary target/release/spate is missing. --quick: 1 KiB only, 1 partition and 1
producer, 3 s runs, one e2e rate, 100,000 records for the tools, 30 s of JIT warm-up: about 5
minutes. The full default run: about 30-40 minutes.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no perf/__pycache__ from the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import ROOT, children_cpu_s, free_port, sh, wait_port  # noqa: E402  (perf/compare.py)

KAFKA_RUN = os.path.join(ROOT, "perf", "kafka", "run")
KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
KAFKA_HEAP = os.environ.get("KAFKA_HEAP_OPTS", "-Xmx1g -Xms1g")
DEFAULT_SPATE = os.path.join(ROOT, "target", "release", "spate")
VENV = os.path.join(ROOT, ".venv-perf")
TARGETS = ("spate", "spate-flushN", "kafka", "kafka-fsync")
DURABLE_VARIANTS = ("spate-flushN", "kafka-fsync")
RSS_SAMPLE_S = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- matplotlib ---------------------------------------------------------------------------------

def ensure_matplotlib():
    """Makes matplotlib importable: if it is not, re-runs this script with .venv-perf's python
    (created, and matplotlib installed into it, if needed), as compare.py does for Tansu. Returns
    None when it can import matplotlib, else why not (the run goes on without plots)."""
    try:
        import matplotlib  # noqa: F401
        return None
    except ImportError:
        pass
    vpy = os.path.join(VENV, "bin", "python")
    if os.environ.get("SPATE_VS_KAFKA_REEXEC"):
        return f"matplotlib not importable even from {vpy}"
    try:
        if not os.path.exists(vpy):
            print("creating .venv-perf", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        if subprocess.run([vpy, "-c", "import matplotlib"], capture_output=True).returncode != 0:
            print("installing matplotlib into .venv-perf", file=sys.stderr)
            subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "matplotlib"], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"could not install matplotlib into {VENV}: {e}"
    os.environ["SPATE_VS_KAFKA_REEXEC"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(vpy, [vpy, os.path.abspath(__file__), *sys.argv[1:]])


# --- processes ----------------------------------------------------------------------------------

def proc_cpu_s(pid):
    """utime + stime of the process (all its threads, living and exited), seconds; None if it is
    gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RssSampler(threading.Thread):
    """Peak VmRSS of a process, sampled every RSS_SAMPLE_S until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.halt = pid, 0, threading.Event()

    def run(self):
        while True:
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS") or 0)
            if self.halt.wait(RSS_SAMPLE_S):
                return

    def stop(self):
        self.halt.set()
        self.join()
        self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS") or 0)


def alive(pid):
    return pid is not None and proc_cpu_s(pid) is not None


def run_client(cmd, timeout, broker_pid):
    """Runs a client to the end, like subprocess.run(capture_output=True), but stops it early when
    the broker it talks to is gone for 3 s (a client would otherwise wait out its own timeouts,
    minutes). Returns (CompletedProcess, or None when it was stopped; why it was stopped)."""
    p = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    dead_since = None
    why = None
    while True:
        try:
            out, err = p.communicate(timeout=1)
            return subprocess.CompletedProcess(cmd, p.returncode, out, err), None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if alive(broker_pid):
            dead_since = None
        else:
            dead_since = dead_since or now
        if dead_since and now - dead_since >= 3:
            why = "the broker exited during the run: client stopped"
        elif now > deadline:
            why = f"timeout after {timeout:.0f} s: client stopped"
        if why:
            p.kill()
            p.communicate()
            return None, why


def free_port_pair():
    """A loopback port P with P+1 free as well (Kafka's controller listens on P+1)."""
    for _ in range(100):
        p = free_port()
        if p >= 65535:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no two consecutive free loopback ports")


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_problems(path, pattern, running_bytes, limit=5, start=0):
    """A broker's errors: the first lines of its log (from byte `start`) matching pattern,
    shortened; those after the first running_bytes (written while it shut down) only counted,
    with the first of them."""
    during, after, n_after = [], None, 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            pos = start
            for raw in f:
                line = raw.decode(errors="replace")
                at_shutdown = pos >= running_bytes
                pos += len(raw)
                if not re.search(pattern, line):
                    continue
                line = re.sub(r"\x1b\[[0-9;]*m", "", line.strip())[:300]
                if at_shutdown:
                    n_after += 1
                    after = after or line
                elif len(during) < limit:
                    during.append(line)
    except OSError:
        pass
    if n_after:
        during.append(f"while shutting down, {n_after} such line(s), the first: {after}")
    return during


class BrokerError(Exception):
    pass


# Brokers started and not yet stopped, so that an interrupted run (Ctrl-C, SIGTERM, an exception)
# stops them too, even one interrupted while it started.
LIVE = set()


def stop_live():
    for b in list(LIVE):
        try:
            b.stop()
        except Exception as e:  # noqa: BLE001  (best effort, on the way out)
            print(f"warning: could not stop {b.target}: {e}", file=sys.stderr)


class SpateBroker:
    def __init__(self, target, args, tmpdir):
        self.target = target
        self.data = tempfile.mkdtemp(prefix=f"{target}-", dir=tmpdir)
        self.port = free_port()
        self.logfile = self.data + ".log"
        cmd = [args.spate, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-listen", "127.0.0.1:0",
               "--data-dir", self.data, "--cores", "1",
               # as perf/kafka/run configures Kafka (group.initial.rebalance.delay.ms=0)
               "--group-initial-rebalance-delay-ms", "0"]
        if target == "spate-flushN":
            cmd += ["--flush-messages", str(args.flush_messages)]
        self.cmd = cmd
        with open(self.logfile, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        LIVE.add(self)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                tail = self._tail()
                self.stop()
                raise BrokerError(f"spate serve exited with {self.proc.returncode}; log: {tail}")
            try:
                wait_port(self.port, timeout=0.5)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    tail = self._tail()
                    self.stop()
                    raise BrokerError(f"spate serve did not listen on {self.port} in 30 s; log: {tail}")

    def _tail(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-5:])[-600:]
        except OSError:
            return ""

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def cpu_s(self):
        return proc_cpu_s(self.pid)

    def hwm_kib(self):
        return proc_status_kib(self.pid, "VmHWM")

    def stop(self):
        """SIGTERM (Spate shuts down in its grace period), SIGKILL after 30 s; returns the errors
        and warnings it logged."""
        LIVE.discard(self)
        running = log_size(self.logfile)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        problems = log_problems(self.logfile, r"\b(ERROR|WARN)\b|panicked", running)
        shutil.rmtree(self.data, ignore_errors=True)
        try:
            os.remove(self.logfile)
        except OSError:
            pass
        return problems


class KafkaBroker:
    def __init__(self, target, args, tmpdir):
        self.target = target
        self.dir = tempfile.mkdtemp(prefix=f"{target}-", dir=tmpdir)
        self.port = free_port_pair()
        cmd = [KAFKA_RUN, "start", "--dir", self.dir, "--port", str(self.port), "--timeout", "120"]
        if target == "kafka-fsync":
            cmd += ["--config", "log.flush.interval.messages=1"]
        if args.kafka_lifetime == "run":
            # The files of a topic deleted after its cell go within a second, not a minute later in
            # the middle of another cell's run (the broker-wide name of file.delete.delay.ms; it
            # concerns deleted topics' files only; 0 would make the deleting task spin).
            cmd += ["--config", "log.segment.delete.delay.ms=1000"]
        self.cmd = cmd
        self.args = args
        self.pid = None
        LIVE.add(self)
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, text=True, capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BrokerError("perf/kafka/run start took more than 300 s")
        self.start_s = time.monotonic() - t0
        if r.returncode != 0:
            self.stop()
            raise BrokerError(f"perf/kafka/run start failed: {(r.stderr or r.stdout).strip()[-600:]}")
        with open(os.path.join(self.dir, "kafka.pid")) as f:
            self.pid = int(f.read().strip())

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def cpu_s(self):
        return proc_cpu_s(self.pid)

    def hwm_kib(self):
        return proc_status_kib(self.pid, "VmHWM")

    @property
    def log(self):
        return os.path.join(self.dir, "kafka.log")

    def log_mark(self):
        return log_size(self.log)

    def jit_s(self):
        """Seconds the JVM's JIT compilers have spent so far (jstat -compiler), or None."""
        try:
            out = subprocess.run(["jstat", "-compiler", str(self.pid)], text=True, capture_output=True,
                                 timeout=30).stdout.splitlines()
            # Compiled Failed Invalid Time FailedType FailedMethod
            return float(out[1].split()[3])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def end_cell(self, mark):
        """A long-lived broker after a cell: deletes the cell's topics (all named vk-...), waits
        until their files are gone, and returns the errors Kafka logged since `mark`."""
        problems = []
        if not alive(self.pid):
            return log_problems(self.log, r"^\[[^]]*\] (ERROR|FATAL) ", 1 << 62, start=mark) + ["Kafka exited"]
        r, why = run_client([KAFKA_RUN, "tool", "kafka-topics", "--bootstrap-server", self.bootstrap, "--delete",
                             "--if-exists", "--topic", "vk-.*"], 120, self.pid)
        if r is None or r.returncode != 0:
            problems.append(f"kafka-topics --delete failed: {why or (r.stderr or r.stdout).strip()[-300:]}")
        data = os.path.join(self.dir, "data")
        deadline = time.monotonic() + 120

        def left():
            try:
                return any(d.startswith("vk-") for d in os.listdir(data))
            except OSError as e:
                problems.append(f"cannot list {data}: {e}")
                return False

        while left():
            if time.monotonic() > deadline:
                problems.append("the deleted topics' files were still there after 120 s")
                break
            if not alive(self.pid):
                problems.append("Kafka exited while its topics were being deleted")
                break
            time.sleep(0.2)
        problems += log_problems(self.log, r"^\[[^]]*\] (ERROR|FATAL) ", 1 << 62, start=mark)
        return problems

    def stop(self):
        LIVE.discard(self)
        log = os.path.join(self.dir, "kafka.log")
        running = log_size(log)
        r = subprocess.run([KAFKA_RUN, "stop", "--dir", self.dir], text=True, capture_output=True, timeout=180)
        problems = log_problems(log, r"^\[[^]]*\] (ERROR|FATAL) ", running)
        if r.returncode != 0:
            problems.append(f"perf/kafka/run stop: {(r.stderr or r.stdout).strip()[-300:]}")
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems


def start_broker(target, args, tmpdir):
    return (SpateBroker if target.startswith("spate") else KafkaBroker)(target, args, tmpdir)


# --- one measured client run --------------------------------------------------------------------

def measured(broker, cmd, timeout):
    """Runs a client command against the broker; returns (completed process or None on timeout,
    resources): the client's CPU seconds (RUSAGE_CHILDREN: it is the only child reaped meanwhile),
    the broker's CPU seconds, the wall time and the broker's peak RSS over the run."""
    sampler = RssSampler(broker.pid)
    sampler.start()
    others = [b for b in LIVE if b is not broker and b.pid]
    o0 = [b.cpu_s() for b in others]
    c0, b0, t0 = children_cpu_s(), broker.cpu_s(), time.monotonic()
    r, why = run_client(cmd, timeout, broker.pid)
    wall = time.monotonic() - t0
    b1 = broker.cpu_s()
    res = dict(command=" ".join(shlex.quote(a) for a in cmd).replace(KAFKA_RUN, "perf/kafka/run"),
               client_cpu_s=children_cpu_s() - c0, broker_cpu_s=b1 - b0 if b0 is not None and b1 is not None else None,
               wall_s=wall, stopped=why)
    if b1 is None:
        res["broker_exited"] = True
    if others:
        # Long-lived Kafka JVMs idle meanwhile (--kafka-lifetime run): what they took from this run.
        o1 = [b.cpu_s() for b in others]
        res["other_brokers_cpu_s"] = sum(y - x for x, y in zip(o0, o1) if x is not None and y is not None)
    sampler.stop()
    res["broker_peak_rss_mib"] = sampler.peak_kib / 1024
    hwm = broker.hwm_kib()
    res["broker_hwm_mib"] = hwm / 1024 if hwm else None
    return r, res


def per_gb(row):
    """Adds CPU seconds per GB; notes in the error column a broker that exited during the run."""
    if row.get("broker_exited"):
        row["error"] = "; ".join(e for e in (row.get("error"), "the broker exited during the run") if e)
    gb = (row.get("bytes_total") or 0) / 1e9
    for side in ("broker", "client"):
        cpu = row.get(f"{side}_cpu_s")
        row[f"{side}_cpu_s_per_gb"] = cpu / gb if gb > 0 and cpu is not None else None
    return row


def durability(target, acks, args):
    if target == "spate":
        return "fdatasync before ack" if acks == "all" else "acks=1: O_DIRECT write before ack, no fdatasync"
    if target == "spate-flushN":
        return f"fdatasync every {args.flush_messages} records (acks=all waits for the write only)"
    if target == "kafka":
        return "page cache, no fsync"
    return "fsync every append (before the answer)"


def base_row(family, target, args, size, acks, parts, prods, client, **kw):
    return dict(family=family, target=target, durability=durability(target, acks, args), size=size,
                acks=acks, partitions=parts, producers=prods, client=client, msg_s=None, mb_s=None,
                p50=None, p99=None, p999=None, latency=None, bytes_total=None, error=None, **kw)


def spate_bench(broker, args, mode, topic, extra, cpu=None, timeout=None):
    cmd = [args.spate, "bench", mode, "-b", broker.bootstrap, "--topic", topic, "--json", *extra]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    r, res = measured(broker, cmd, timeout or 600)
    rep, err = {}, None
    if r is None:
        err = res["stopped"]
    else:
        try:
            rep = json.loads(r.stdout)
        except json.JSONDecodeError:
            err = f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}"
        else:
            problems = []
            if rep.get("errors"):
                problems.append(f"{rep['errors']} messages failed: {'; '.join(rep.get('error_samples') or [])}")
            elif rep.get("error_samples"):
                problems.append("; ".join(rep["error_samples"]))
            if rep.get("missing"):
                problems.append(f"{rep['missing']} messages never consumed")
            if r.returncode != 0 and not problems:
                problems.append(f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
            err = "; ".join(problems) or None
    return rep, res, err


def fill_side(row, rep, side, warmup):
    s = (rep or {}).get(side) or {}
    lat = s.get("latency") or {}
    row.update(msg_s=s.get("msg_per_s"), mb_s=s.get("mb_per_s"), p50=lat.get("p50_ms"), p99=lat.get("p99_ms"),
               p999=lat.get("p999_ms"), latency=s.get("latency_kind"), messages=s.get("messages"))
    if s.get("bytes") is not None:
        # CPU covers the whole client process, warm-up included: the bytes of the warm-up are
        # estimated at the measured rate (the measured ones are exact).
        row["bytes_total"] = s["bytes"] + (s.get("mb_per_s") or 0) * 1e6 * warmup
    if rep:
        row["librdkafka"] = rep.get("librdkafka")


# --- cells --------------------------------------------------------------------------------------

def consume_cpu(args):
    c = args.consume_client_cpu
    return c if 0 <= c < (os.cpu_count() or 1) else None


def run_produce_cell(b, target, cell, args, rows):
    size, acks, parts, prods = cell
    topic = f"vk-{size}-{acks}-{parts}-{prods}"
    rep, res, err = spate_bench(b, args, "produce", topic,
                                ["--message-size", str(size), "--acks", acks, "--partitions", str(parts),
                                 "--producers", str(prods), "--duration", str(args.seconds),
                                 "--warmup", str(args.warmup)],
                                timeout=max(300, 10 * args.seconds + 120))
    row = base_row("produce", target, args, size, acks, parts, prods, "spate bench produce", **res)
    fill_side(row, rep, "produced", args.warmup)
    row["error"] = err
    rows.append(per_gb(row))
    if parts == 1 and prods == 1:
        # Read back from offset 0 what was just written, up to the end offset at the start.
        rep, res, err = spate_bench(b, args, "consume", topic, ["--message-size", str(size)],
                                    cpu=consume_cpu(args), timeout=600)
        row = base_row("consume", target, args, size, acks, 1, 1, "spate bench consume", **res)
        fill_side(row, rep, "consumed", 0)
        row["error"] = err
        rows.append(per_gb(row))


def run_e2e_cell(b, target, cell, args, rows):
    size, rate = cell
    acks = args.e2e_acks
    rep, res, err = spate_bench(b, args, "e2e", f"vk-e2e-{size}-{rate}",
                                ["--message-size", str(size), "--acks", acks, "--rate", str(rate),
                                 "--duration", str(args.e2e_seconds), "--warmup", str(args.warmup)],
                                timeout=max(300, 10 * args.e2e_seconds + 120))
    row = base_row("e2e", target, args, size, acks, 1, 1, "spate bench e2e", rate=rate, **res)
    fill_side(row, rep, "consumed", args.warmup)
    if rep.get("produced"):
        row["produced_msg_s"] = rep["produced"].get("msg_per_s")
        if row["produced_msg_s"] is not None and row["produced_msg_s"] < 0.95 * rate:
            note = f"rate not sustained: {row['produced_msg_s']:,.0f} of {rate:,} msg/s delivered"
            err = f"{err}; {note}" if err else note
    row["error"] = err
    rows.append(per_gb(row))


PRODUCER_PERF_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th")


def tool_notes(stderr):
    """Warnings and errors a Kafka tool printed (log4j WARN/ERROR lines, exceptions), shortened."""
    lines = [line.strip() for line in (stderr or "").splitlines()
             if re.search(r"\b(WARN|ERROR|FATAL)\b|Exception|Error:", line)]
    return "; ".join(dict.fromkeys(line[:200] for line in lines[:5])) or None


def kafka_tool(b, args, tool, tool_args, timeout):
    cmd = [KAFKA_RUN, "tool", tool, *tool_args]
    r, res = measured(b, cmd, timeout)
    return cmd, r, res


def run_tools_cell(b, target, args, rows):
    size = args.tool_record_size
    for acks in args.tool_acks:
        topic = f"vk-tools-{acks}"
        # The topic first, with Kafka's own admin tool (CreateTopics), 1 partition.
        r = subprocess.run([KAFKA_RUN, "tool", "kafka-topics", "--bootstrap-server", b.bootstrap, "--create",
                            "--topic", topic, "--partitions", "1", "--replication-factor", "1"],
                           text=True, capture_output=True, timeout=120)
        topic_err = None if r.returncode == 0 else \
            f"kafka-topics --create failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}"
        props = [f"bootstrap.servers={b.bootstrap}", f"acks={acks}", f"linger.ms={args.tool_linger_ms}",
                 f"batch.size={args.tool_batch_size}"]
        pargs = ["--topic", topic, "--num-records", str(args.tool_records), "--record-size", str(size),
                 "--throughput", "-1", "--producer-props", *props]
        cmd, r, res = kafka_tool(b, args, "kafka-producer-perf-test", pargs, timeout=900)
        row = base_row("tools", target, args, size, acks, 1, 1, "kafka-producer-perf-test", **res)
        m = PRODUCER_PERF_RE.findall(r.stdout if r else "")
        if m:
            n, rps, mibs, avg, mx, p50, p95, p99, p999 = m[-1]
            row.update(messages=int(n), msg_s=float(rps), mb_s=float(rps) * size / 1e6, tool_mib_s=float(mibs),
                       avg_ms=float(avg), max_ms=float(mx), p50=float(p50), p95=float(p95), p99=float(p99),
                       p999=float(p999), latency="send -> ack (kafka-producer-perf-test)",
                       bytes_total=int(n) * size)
        errs = [e for e in (topic_err,) if e]
        if r is None:
            errs.append(res["stopped"])
        elif r.returncode != 0 or not m:
            errs.append(f"exit {r.returncode}, no summary line: {(r.stderr or r.stdout).strip()[-400:]}")
        elif int(m[-1][0]) < args.tool_records:
            errs.append(f"only {m[-1][0]} of {args.tool_records} records sent")
        if r is not None:
            row["notes"] = tool_notes(r.stderr)
        row["error"] = "; ".join(errs) or None
        rows.append(per_gb(row))
        produced = row.get("messages") or 0
        if not produced:
            continue
        cargs = ["--bootstrap-server", b.bootstrap, "--topic", topic, "--messages", str(produced),
                 "--group", f"vk-perf-{acks}-{os.getpid()}", "--timeout", "30000"]
        cmd, r, res = kafka_tool(b, args, "kafka-consumer-perf-test", cargs, timeout=900)
        row = base_row("tools", target, args, size, acks, 1, 1, "kafka-consumer-perf-test", **res)
        stats = parse_consumer_perf(r.stdout if r else "")
        errs = []
        if stats:
            nmsg = int(float(stats.get("data.consumed.in.nMsg", 0)))
            fetch_rate = float(stats.get("fetch.nMsg.sec", 0))
            row.update(messages=nmsg, msg_s=fetch_rate, mb_s=fetch_rate * size / 1e6, bytes_total=nmsg * size,
                       rebalance_ms=float(stats.get("rebalance.time.ms", 0)),
                       fetch_ms=float(stats.get("fetch.time.ms", 0)), tool_stats=stats)
            if nmsg < produced:
                errs.append(f"only {nmsg} of {produced} records consumed")
        if r is None:
            errs.append(res["stopped"])
        elif r.returncode != 0 or not stats:
            errs.append(f"exit {r.returncode}, no summary line: {(r.stderr or r.stdout).strip()[-400:]}")
        if r is not None:
            row["notes"] = tool_notes(r.stderr)
            if "Exiting before consuming the expected number of messages" in (r.stdout + r.stderr):
                errs.append("timeout: exited before consuming the expected number of messages")
        row["error"] = "; ".join(errs) or None
        rows.append(per_gb(row))


def parse_consumer_perf(out):
    """kafka-consumer-perf-test's header line and summary line, as a dict."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            keys = [k.strip() for k in line.split(",")]
            vals = [v.strip() for v in lines[i + 1].split(",")]
            if len(keys) == len(vals):
                return dict(zip(keys, vals))
    return None


# --- the run ------------------------------------------------------------------------------------

def csv_list(s, conv=str):
    return [conv(x) for x in s.split(",") if x.strip()]


def parse_e2e(s):
    out = []
    for item in csv_list(s):
        size, _, rate = item.partition("@")
        if not rate:
            raise argparse.ArgumentTypeError(f"--e2e wants SIZE@RATE items, not '{item}'")
        out.append((int(size), int(rate)))
    return out


class Brokers:
    """Where each cell gets its broker: Spate always fresh (new data directory); Kafka fresh per
    cell (--kafka-lifetime cell) or one JVM per Kafka target for the whole run (run), started at
    its first cell and warmed up (jit_warmup) before anything is measured, its cells' topics
    deleted after each cell."""

    def __init__(self, args, tmpdir, progress):
        self.args, self.tmpdir, self.progress = args, tmpdir, progress
        self.kept = {}  # target -> KafkaBroker, --kafka-lifetime run
        self.failed = {}  # target -> why its long-lived broker could not start
        self.jit = {}  # target -> what the JIT warm-up did

    def kept_for(self, target):
        return self.args.kafka_lifetime == "run" and target.startswith("kafka")

    def get(self, target):
        if not self.kept_for(target):
            return start_broker(target, self.args, self.tmpdir)
        if target in self.failed:
            raise BrokerError(self.failed[target])
        if target not in self.kept:
            self.progress(f"starting {target} for the whole run, then {self.args.kafka_jit_warmup:g} s of JIT warm-up")
            try:
                b = start_broker(target, self.args, self.tmpdir)
            except BrokerError as e:
                self.failed[target] = str(e)
                raise
            self.kept[target] = b
            self.jit[target] = jit_warmup(b, self.args)
        b = self.kept[target]
        if not alive(b.pid):
            # Gone (crashed, or stopped by someone else): every later cell of this target says so.
            problems = b.stop()
            del self.kept[target]
            self.failed[target] = f"the Kafka kept for the whole run (pid {b.pid}) exited: " + " / ".join(problems)
            raise BrokerError(self.failed[target])
        return b

    def done(self, b, mark):
        """After a cell: stops a fresh broker, or cleans a long-lived one up; returns its errors."""
        if self.kept.get(b.target) is b:
            return b.end_cell(mark)
        return b.stop()

    def stop_all(self, broker_notes):
        for target, b in list(self.kept.items()):
            j = self.jit.get(target)
            if j is not None:
                j["jit_s_at_end"] = b.jit_s()
            problems = b.stop()
            if problems:
                broker_notes.append(dict(family="-", cell="shutdown at the end of the run", target=target,
                                         problems=problems))
        self.kept.clear()


def jit_warmup(b, args):
    """Unmeasured load on a Kafka JVM kept for the whole run, before its first cell: on the 2-core
    VM a fresh JVM's JIT compilers were still busy 60-80 s into a steady e2e load (jstat -compiler:
    35 s of compile time by then, flat afterwards). Produce (both record sizes, acks=1 and all,
    partitions and producers as in the matrix), end to end at a fixed rate, then catch-up reads."""
    w = args.kafka_jit_warmup
    t0 = time.monotonic()
    steps = [
        ("produce", "vk-jit-a", 0.25, ["--message-size", "1024", "--acks", "1", "--partitions", "6", "--producers", "4"]),
        ("produce", "vk-jit-b", 0.2, ["--message-size", "100", "--acks", "all", "--partitions", "1"]),
        ("e2e", "vk-jit-c", 0.3, ["--message-size", "1024", "--acks", "all", "--rate", "20000"]),
        ("consume", "vk-jit-a", 0.15, ["--message-size", "1024"]),
        ("consume", "vk-jit-b", 0.1, ["--message-size", "100"]),
    ]
    errors = []
    jit0 = b.jit_s()
    for mode, topic, share, extra in steps if w > 0 else []:
        cmd = [args.spate, "bench", mode, "-b", b.bootstrap, "--topic", topic, "--json", *extra,
               "--duration", f"{max(1.0, w * share):g}"]
        r, why = run_client(cmd, max(300, 5 * w), b.pid)
        if r is None:
            errors.append(f"{mode} {topic}: {why}")
            break
        if r.returncode != 0:
            errors.append(f"{mode} {topic}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
    problems = b.end_cell(0) if alive(b.pid) else []
    return dict(seconds=time.monotonic() - t0, jit_s_at_start=jit0, jit_s_after_warmup=b.jit_s(),
                errors=errors + problems)


def run_cells(name, cells, targets_for, runner, args, brokers, rows, broker_notes, progress):
    """Each cell against each of its targets back to back, the first target rotating."""
    for i, cell in enumerate(cells):
        ts = targets_for(cell)
        k = i % len(ts) if ts else 0
        for target in ts[k:] + ts[:k]:
            progress(f"{name} {cell} {target}")
            t0 = time.monotonic()
            before = len(rows)
            try:
                b = brokers.get(target)
            except BrokerError as e:
                rows.append(failed_row(name, target, cell, args, f"no broker: {e}"))
                continue
            except Exception as e:  # noqa: BLE001  (recorded, the run goes on)
                rows.append(failed_row(name, target, cell, args, f"no broker: {type(e).__name__}: {e}"))
                continue
            mark = b.log_mark() if isinstance(b, KafkaBroker) else 0
            try:
                warm_up(b, name, cell, args)
                runner(b, target, cell, args, rows)
            except Exception as e:  # noqa: BLE001  (a bug in a runner: recorded, the run goes on)
                rows.append(failed_row(name, target, cell, args, f"driver error: {type(e).__name__}: {e}"))
            finally:
                problems = brokers.done(b, mark)
                os.sync()  # nothing of this cell left to write back during the next one
            for r in rows[before:]:
                r["cell_s"] = time.monotonic() - t0
                if isinstance(b, KafkaBroker):
                    r["broker_start_s"] = b.start_s
                    r["kafka_lifetime"] = args.kafka_lifetime
            if problems:
                broker_notes.append(dict(family=name, cell=str(cell), target=target, problems=problems))


def warm_up(b, name, cell, args):
    """An unmeasured produce to a topic of its own before the cell's runs, so that a fresh JVM's
    JIT has compiled Kafka's hot paths (and both brokers have created a topic and a segment) before
    anything is measured; the same for every target."""
    if args.broker_warmup <= 0:
        return
    size = cell[0] if name in ("produce", "e2e") else args.tool_record_size
    acks = cell[1] if name == "produce" else "all"
    cmd = [args.spate, "bench", "produce", "-b", b.bootstrap, "--topic", "vk-warmup", "--json",
           "--message-size", str(size), "--acks", acks, "--duration", str(args.broker_warmup)]
    r, why = run_client(cmd, max(120, 10 * args.broker_warmup), b.pid)
    if r is None or r.returncode != 0:
        print(f"warning: the warm-up of {b.target} failed: {why or r.stderr.strip()[-300:]}", file=sys.stderr)


def failed_row(name, target, cell, args, error):
    """The row of a cell that could not run (its broker did not start, or the driver failed)."""
    if name == "produce":
        row = base_row(name, target, args, *cell, "spate bench produce")
    elif name == "e2e":
        row = base_row(name, target, args, cell[0], args.e2e_acks, 1, 1, "spate bench e2e", rate=cell[1])
    else:
        row = base_row(name, target, args, args.tool_record_size, ",".join(args.tool_acks), 1, 1,
                       "kafka tools")
    row["error"] = error
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=os.environ.get("SPATE_BIN", DEFAULT_SPATE),
                    help="the spate binary, broker and `spate bench` client (env SPATE_BIN; default "
                         "target/release/spate, built with cargo if missing)")
    ap.add_argument("--quick", action="store_true",
                    help="1 KiB, 1 partition, 1 producer, 3 s runs, e2e 1024@20000, 100,000 tool records: ~5 min")
    ap.add_argument("--seconds", type=float, help="measured seconds per produce run (default 10; --quick 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each produce/e2e run")
    ap.add_argument("--broker-warmup", type=float,
                    help="seconds of unmeasured produce to each fresh broker before a cell's runs, so Kafka's "
                         "JIT is warm (default 3; --quick 1; 0: none)")
    ap.add_argument("--kafka-lifetime", choices=("run", "cell"), default="run",
                    help="run (default): one Kafka JVM per Kafka target for the whole run, JIT-warmed first, "
                         "its topics deleted after each cell; cell: a fresh Kafka (directory and JVM) per cell, "
                         "whose JIT is still compiling during the measured runs")
    ap.add_argument("--kafka-jit-warmup", type=float,
                    help="seconds of unmeasured load on each long-lived Kafka before its first cell (default 90; "
                         "--quick 30)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    ap.add_argument("--flush-messages", type=int, default=10000, help="N of spate-flushN (--flush-messages N)")
    ap.add_argument("--sizes", help="record sizes, bytes (default 1024,100; --quick 1024)")
    ap.add_argument("--acks", help="default 1,all")
    ap.add_argument("--partitions", help="default 1,6 (--quick 1)")
    ap.add_argument("--producers", help="default 1,4 (--quick 1)")
    ap.add_argument("--durable-sizes", help="produce cells of spate-flushN and kafka-fsync (default: --sizes)")
    ap.add_argument("--durable-acks", default="all", help="default all")
    ap.add_argument("--durable-partitions", help="default: --partitions")
    ap.add_argument("--durable-producers", help="default: --producers")
    ap.add_argument("--e2e", help="fixed-rate end-to-end cells SIZE@MSG_PER_S,... "
                                  "(default 1024@20000,1024@50000,100@100000; --quick 1024@20000)")
    ap.add_argument("--e2e-seconds", type=float, help="measured seconds per e2e run (default: --seconds)")
    ap.add_argument("--e2e-acks", default="all", help="acks of the e2e producer (default all)")
    ap.add_argument("--tool-records", type=int, help="kafka-producer-perf-test --num-records (default 1000000; "
                                                      "--quick 100000)")
    ap.add_argument("--tool-record-size", type=int, default=1024)
    ap.add_argument("--tool-acks", default="all,1")
    ap.add_argument("--tool-linger-ms", type=int, default=5, help="the Java producer's linger.ms (default 5, "
                                                                    "as spate bench)")
    ap.add_argument("--tool-batch-size", type=int, default=1000000, help="the Java producer's batch.size "
                                                                           "(default 1000000, as spate bench)")
    ap.add_argument("--families", default="produce,e2e,tools", help="subset of produce,e2e,tools "
                                                                    "(consume runs with produce)")
    ap.add_argument("--consume-client-cpu", type=int, default=1,
                    help="CPU the catch-up consume client is pinned to, as compare.py (-1: unpinned)")
    ap.add_argument("--tmp-dir", default=os.environ.get("SPATE_PERF_DIR", ROOT),
                    help="where the brokers' data directories go (a disk, not tmpfs; default the repo, "
                         "or SPATE_PERF_DIR)")
    ap.add_argument("--out", help="report path (default perf/results/<date>-<commit>-vs-kafka.md)")
    args = ap.parse_args()

    q = args.quick
    args.seconds = args.seconds or (3.0 if q else 10.0)
    args.e2e_seconds = args.e2e_seconds or args.seconds
    if args.kafka_jit_warmup is None:
        args.kafka_jit_warmup = 30.0 if q else 90.0
    if args.broker_warmup is None:
        args.broker_warmup = 1.0 if q else 3.0
    args.sizes = csv_list(args.sizes or ("1024" if q else "1024,100"), int)
    args.acks = csv_list(args.acks or "1,all")
    args.partitions = csv_list(args.partitions or ("1" if q else "1,6"), int)
    args.producers = csv_list(args.producers or ("1" if q else "1,4"), int)
    args.durable_sizes = csv_list(args.durable_sizes, int) if args.durable_sizes else args.sizes
    args.durable_acks = csv_list(args.durable_acks)
    args.durable_partitions = csv_list(args.durable_partitions, int) if args.durable_partitions else args.partitions
    args.durable_producers = csv_list(args.durable_producers, int) if args.durable_producers else args.producers
    args.e2e = parse_e2e(args.e2e or ("1024@20000" if q else "1024@20000,1024@50000,100@100000"))
    args.tool_records = args.tool_records or (100000 if q else 1000000)
    args.tool_acks = csv_list(args.tool_acks)
    args.targets = sorted(csv_list(args.targets), key=lambda t: TARGETS.index(t) if t in TARGETS else -1)
    args.families = csv_list(args.families)
    bad = [t for t in args.targets if t not in TARGETS]
    if bad:
        ap.error(f"unknown targets {bad}: pick from {','.join(TARGETS)}")
    for a in args.acks + args.durable_acks + [args.e2e_acks] + args.tool_acks:
        if a not in ("0", "1", "all"):
            ap.error(f"acks: 0, 1 or all, not '{a}'")

    plot_problem = ensure_matplotlib()
    if plot_problem:
        print(f"warning: {plot_problem}; no plots", file=sys.stderr)

    args.spate = os.path.abspath(args.spate)
    if not os.path.exists(args.spate):
        if args.spate != DEFAULT_SPATE:
            sys.exit(f"no spate binary at {args.spate}")
        print("building the release binary (cargo build --release --bin spate)", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--bin", "spate"], cwd=ROOT, check=True)

    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    out = args.out or os.path.join(ROOT, "perf", "results", f"{datetime.date.today()}-{commit}-vs-kafka.md")
    meta = machine(args, commit)
    fs = sh(["df", "--output=fstype,source", args.tmp_dir]).splitlines()[-1].split()
    meta["data_fs"] = f"{fs[1]} ({fs[0]})"
    if fs[0] == "tmpfs":
        print(f"warning: {args.tmp_dir} is tmpfs: fsync costs nothing there; give --tmp-dir on a disk",
              file=sys.stderr)

    # Stop on SIGTERM as on Ctrl-C: the finally blocks stop the brokers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmpdir = tempfile.mkdtemp(prefix="spate-vs-kafka-", dir=args.tmp_dir)
    rows, broker_notes = [], []
    t_start = time.monotonic()

    def progress(what):
        print(f"[{(time.monotonic() - t_start) / 60:5.1f} min] {what}", file=sys.stderr, flush=True)

    brokers = Brokers(args, tmpdir, progress)
    try:
        progress(f"fetching Kafka {KAFKA_VERSION}'s jars if needed")
        subprocess.run([KAFKA_RUN, "fetch"], check=True, stdout=subprocess.DEVNULL)
        if "produce" in args.families:
            cells = [(s, a, p, n) for s in args.sizes for a in args.acks for p in args.partitions
                     for n in args.producers]

            def produce_targets(cell):
                s, a, p, n = cell
                durable_ok = (s in args.durable_sizes and a in args.durable_acks and p in args.durable_partitions
                              and n in args.durable_producers)
                return [t for t in args.targets if t not in DURABLE_VARIANTS or durable_ok]

            run_cells("produce", cells, produce_targets, run_produce_cell, args, brokers, rows, broker_notes,
                      progress)
        if "e2e" in args.families:
            run_cells("e2e", args.e2e, lambda c: list(args.targets), run_e2e_cell, args, brokers, rows,
                      broker_notes, progress)
        if "tools" in args.families:
            run_cells("tools", [("tools",)], lambda c: list(args.targets),
                      lambda b, t, c, a, r: run_tools_cell(b, t, a, r), args, brokers, rows, broker_notes, progress)
    finally:
        brokers.stop_all(broker_notes)
        stop_live()
        shutil.rmtree(tmpdir, ignore_errors=True)
    meta["run_minutes"] = (time.monotonic() - t_start) / 60
    meta["kafka_jit"] = brokers.jit
    progress("writing the report")
    write_report(out, rows, broker_notes, meta, args, plot_problem)
    print(out)


def machine(args, commit):
    def first(cmd):
        try:
            r = subprocess.run(cmd, text=True, capture_output=True, timeout=30)
            return (r.stdout + r.stderr).strip()
        except OSError as e:
            return f"({e})"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        pass
    java = first(["java", "-version"]).splitlines()
    return dict(
        commit=commit, date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        host=platform.node(), cores=os.cpu_count(), cpu=cpu, mem_gib=mem, kernel=platform.release(),
        spate=args.spate, spate_version=first([args.spate, "--version"]).splitlines()[0],
        kafka_version=KAFKA_VERSION, java=" / ".join(java[:2]), kafka_heap=KAFKA_HEAP,
        command="perf/vs-kafka.py " + " ".join(sys.argv[1:]),
    )


# --- the report ---------------------------------------------------------------------------------

def fmt(v, d=0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{d}f}"


def ratio(a, b, d=2):
    return "-" if not a or not b else f"{a / b:.{d}f}"


def cell_key(r):
    if r["family"] == "e2e":
        return (r["size"], r.get("rate"))
    if r["family"] == "tools":
        return (r["client"], r["acks"])
    return (r["size"], r["acks"], r["partitions"], r["producers"])


def cell_name(family, k):
    if family == "e2e":
        return f"{k[0]} B @ {k[1]:,}/s" if k[1] else f"{k[0]} B"
    if family == "tools":
        return f"{k[0]} acks={k[1]}"
    return f"{k[0]} B acks={k[1]} p={k[2]} n={k[3]}"


def sort_key(kv):
    """Cells in reading order: 1 KiB before 100 B; the producer tool before the consumer tool."""
    k = tuple("" if x is None else x for x in kv[0])
    if isinstance(k[0], int):
        return (-k[0], *k[1:])
    return (k[0] != "kafka-producer-perf-test", *k)


def grouped(rows, family):
    cells = {}
    for r in rows:
        if r["family"] == family:
            cells.setdefault(cell_key(r), {})[r["target"]] = r
    return cells


def write_report(out, rows, broker_notes, meta, args, plot_problem):
    stem = out[:-3] if out.endswith(".md") else out
    targets = args.targets
    lines = [
        f"# Spate vs Apache Kafka {meta['kafka_version']}, commit {meta['commit']}",
        "",
        f"- command: `{meta['command']}` ({args.seconds:g} s per produce run, {args.e2e_seconds:g} s per e2e run, "
        f"{args.warmup:g} s warm-up each; the whole run took {meta['run_minutes']:.1f} min)",
        f"- commit {meta['commit']}, {meta['date']}",
        f"- host: {meta['host']}, {meta['cores']} cores ({meta['cpu']}), {fmt(meta['mem_gib'], 1)} GiB, "
        f"kernel {meta['kernel']}; data directories on {meta['data_fs']}",
        f"- Spate: `{meta['spate']}` ({meta['spate_version']}), `spate serve --cores 1 "
        "--group-initial-rebalance-delay-ms 0` (as perf/kafka/run sets Kafka), a fresh data directory per cell",
        f"- Kafka {meta['kafka_version']} via `perf/kafka/run start` (one KRaft broker+controller, "
        f"heap `{meta['kafka_heap']}`, G1); JVM: {meta['java']}; " + kafka_lifetime_words(meta, rows, args),
        "- targets and durability: spate = fdatasync before ack (acks=all; acks=1 is answered after the O_DIRECT "
        f"write); spate-flushN = `--flush-messages {args.flush_messages}`, fdatasync every {args.flush_messages} "
        "records; kafka = defaults, page cache, no fsync; kafka-fsync = `log.flush.interval.messages=1`, fsync "
        "every append",
        "- client: `spate bench` (librdkafka "
        f"{next((r['librdkafka'] for r in rows if r.get('librdkafka')), '?')} via the rdkafka crate), "
        "linger.ms=5, batch.size=1000000, no compression; tools: Kafka's kafka-producer-perf-test "
        f"(--throughput -1, acks as given, linger.ms={args.tool_linger_ms}, batch.size={args.tool_batch_size}) "
        "and kafka-consumer-perf-test (Java client 4.1.1, heap -Xmx512m)",
        "- pinning: Spate's executor pinned to core 0 by glommio (`--cores 1`); Kafka unpinned; the client "
        "unpinned, except the catch-up consume runs of `spate bench`, "
        + (f"pinned to core {consume_cpu(args)} as in compare.py (librdkafka's consumer spends about twice the "
           "CPU when its fetch and poll threads run on different CPUs; perf/README.md)"
           if consume_cpu(args) is not None else "unpinned too (--consume-client-cpu -1)"),
        f"- warm-up: every cell starts with {args.broker_warmup:g} s of unmeasured produce to its broker "
        "(`spate bench`, the cell's record size, to a topic of its own); then every produce and e2e run has its "
        f"own {args.warmup:g} s warm-up, left out of its figures",
        "- order: for each cell every target runs back to back, the first one rotating from cell to cell; "
        "`sync` after each cell (its broker stopped and its directory removed, or its topics deleted)",
        "- CPU s/GB: CPU seconds (user+system) over the whole client run per GB (10^9 bytes) of payload moved; "
        "broker: its process (Kafka: the java pid in DIR/kafka.pid, GC and all threads), client: "
        "RUSAGE_CHILDREN (for the Kafka tools, a JVM, whose start-up is included). The warm-up's bytes "
        "are estimated at the measured rate. Peak RSS: the broker's VmRSS sampled every 0.2 s during the run "
        f"(Kafka's heap is fixed at `{meta['kafka_heap']}`, touched as it is used).",
        "- latency: produce = send -> delivery report (librdkafka; linger included); e2e = send time written "
        "in the record -> consumer poll; tools = kafka-producer-perf-test's send -> ack (whole ms)",
        "",
    ]
    lines += targets_section(rows, args)
    plots = make_plots(stem, rows, targets, plot_problem)
    if plots:
        lines += ["## Plots", ""] + [f"![{t}]({os.path.basename(p)})" for t, p in plots] + [""]
    elif plot_problem:
        lines += [f"(No plots: {plot_problem}.)", ""]

    for family, title in (("produce", "Produce, as fast as possible"),
                          ("consume", "Catch-up consume from offset 0 (after the 1-partition 1-producer cells)"),
                          ("e2e", f"End to end at fixed rates (acks={args.e2e_acks})"),
                          ("tools", "Kafka's own perf tools (1 partition)")):
        cells = grouped(rows, family)
        if not cells:
            continue
        lines += [f"## {title}", ""]
        # Side by side: msg/s of each target, and the ratios.
        hdr = ["cell"] + [f"{t} msg/s" for t in targets]
        pairs = [(a, b) for a, b in (("spate", "kafka"), ("spate", "kafka-fsync"), ("spate-flushN", "kafka"))
                 if a in targets and b in targets]
        metric = "p99" if family == "e2e" else "msg_s"
        if family == "e2e":
            hdr = ["cell"] + [f"{t} p99 ms" for t in targets]
        hdr += [f"{a}/{b}" + (" p99" if family == "e2e" else "") for a, b in pairs]
        lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        for k, by in sorted(cells.items(), key=sort_key):
            cols = [cell_name(family, k)]
            cols += [fmt((by.get(t) or {}).get(metric), 2 if family == "e2e" else 0) for t in targets]
            cols += [ratio((by.get(a) or {}).get(metric), (by.get(b) or {}).get(metric)) for a, b in pairs]
            lines.append("| " + " | ".join(cols) + " |")
        lines += ["", "Every row:", ""]
        hdr = ["cell", "target", "durability", "client", "msg/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms",
               "broker CPU s/GB", "client CPU s/GB", "broker peak RSS MiB", "error"]
        lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        for k, by in sorted(cells.items(), key=sort_key):
            for t in targets:
                r = by.get(t)
                if not r:
                    continue
                lines.append("| " + " | ".join([
                    cell_name(family, k), t, r["durability"], r["client"], fmt(r.get("msg_s")),
                    fmt(r.get("mb_s"), 1), fmt(r.get("p50"), 2), fmt(r.get("p99"), 2), fmt(r.get("p999"), 2),
                    fmt(r.get("broker_cpu_s_per_gb"), 2), fmt(r.get("client_cpu_s_per_gb"), 2),
                    fmt(r.get("broker_peak_rss_mib")), (r.get("error") or "").replace("|", "/")]) + " |")
        lines.append("")

    errs = [r for r in rows if r.get("error")]
    notes = [r for r in rows if r.get("notes")]
    if errs or notes or broker_notes:
        lines += ["## Errors and warnings", ""]
        lines += [f"- {r['family']} {cell_name(r['family'], cell_key(r))} {r['target']} ({r['client']}): "
                  f"{r['error']}" for r in errs]
        lines += [f"- {r['family']} {cell_name(r['family'], cell_key(r))} {r['target']} ({r['client']}), "
                  f"tool stderr: {r['notes']}" for r in notes]
        lines += [f"- broker {n['target']} in {n['family']} cell {n['cell']} logged: " + " / ".join(n["problems"])
                  for n in broker_notes]
        lines.append("")
    lines += ["## Raw rows (JSON)", "", "```json", json.dumps(rows, indent=1, default=str), "```", ""]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))


def kafka_lifetime_words(meta, rows, args):
    if args.kafka_lifetime == "cell":
        return ("a fresh directory and JVM per cell (`--kafka-lifetime cell`; start-up is outside every measured "
                "run, but the JIT compilers are still at work during it)")
    jit = meta.get("kafka_jit") or {}
    parts = []
    for t, j in sorted(jit.items()):
        def s(k):
            return "?" if j.get(k) is None else f"{j[k]:.1f}"
        parts.append(f"{t}: {j['seconds']:.0f} s of warm-up, JIT compile time {s('jit_s_at_start')} s after start, "
                     f"{s('jit_s_after_warmup')} s after the warm-up, {s('jit_s_at_end')} s at the end of the run"
                     + (f"; warm-up errors: {'; '.join(j['errors'])}" if j.get("errors") else ""))
    idle = [r["other_brokers_cpu_s"] / r["wall_s"] for r in rows
            if r.get("other_brokers_cpu_s") is not None and r.get("wall_s")]
    return ("one JVM per Kafka target for the whole run (`--kafka-lifetime run`): started at its first cell, "
            f"then {args.kafka_jit_warmup:g} s of unmeasured load (produce, e2e, catch-up consume) so that the "
            "JIT compilers are done before anything is measured (a fresh JVM was still compiling 60-80 s into "
            "a steady load on the 2-core VM); after each cell its topics are deleted (`log.segment.delete.delay.ms=1000` "
            "instead of 60 s, so their files go within a second) and the next cell starts once they are gone. "
            + ("; ".join(parts) + ". " if parts else "")
            + (f"While the other targets ran, the idle Kafka JVM(s) used {sum(idle) / len(idle):.3f} cores on "
               f"average (at most {max(idle):.3f})." if idle else ""))


def targets_section(rows, args):
    prod = grouped(rows, "produce")
    e2e = grouped(rows, "e2e")
    out = ["## Targets", ""]

    def verdict(name, pairs, want, better, explain):
        """pairs: (cell label, spate figure, kafka figure); met when every cell's ratio is on the
        right side of `want`."""
        got = [(c, a, b, a / b) for c, a, b in pairs if a and b]
        if not got:
            out.append(f"- **{name}: not measured** ({explain}: no cell with figures from both).")
            return
        ok = all((x >= want) if better == "higher" else (x <= want) for *_, x in got)
        geo = math.exp(sum(math.log(x) for *_, x in got) / len(got))
        detail = "; ".join(f"{c}: {fa} vs {fb} = {x:.2f}x" for c, fa, fb, x in
                           [(c, fmt_fig(a), fmt_fig(b), x) for c, a, b, x in got])
        out.append(f"- **{name}: {'met' if ok else 'missed'}** (in {sum(1 for *_, x in got if (x >= want if better == 'higher' else x <= want))} "
                   f"of {len(got)} cells; geometric mean {geo:.2f}x). {explain}: {detail}.")

    def fmt_fig(v):
        return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"

    kib = [(k, by) for k, by in sorted(prod.items(), key=sort_key) if k[0] == 1024 and k[1] == "all"]
    verdict("(1) Spate durable produce >= 2x Kafka default at 1 KiB",
            [(cell_name("produce", k), (by.get("spate") or {}).get("msg_s"), (by.get("kafka") or {}).get("msg_s"))
             for k, by in kib], 2.0, "higher",
            "spate (fdatasync before ack) msg/s over kafka (page cache) msg/s, 1 KiB acks=all produce cells")
    verdict("(2) Spate durable produce >= 5x Kafka fsync-per-batch at 1 KiB",
            [(cell_name("produce", k), (by.get("spate") or {}).get("msg_s"),
              (by.get("kafka-fsync") or {}).get("msg_s")) for k, by in kib], 5.0, "higher",
            "spate msg/s over kafka-fsync (log.flush.interval.messages=1) msg/s, 1 KiB acks=all produce cells")
    verdict("(3) End-to-end p99 <= 1/5 of Kafka's at the same fixed rate",
            [(cell_name("e2e", k), (by.get("spate") or {}).get("p99"), (by.get("kafka") or {}).get("p99"))
             for k, by in sorted(e2e.items(), key=sort_key)], 0.2, "lower",
            f"spate e2e p99 ms over kafka e2e p99 ms, acks={args.e2e_acks}")
    short = [f"{cell_name('e2e', k)} {t}" for k, by in sorted(e2e.items(), key=sort_key)
             for t, r in by.items() if "rate not sustained" in (r.get("error") or "")]
    if short:
        out.append(f"  - Caution for (3): the rate was not sustained (less than 95% delivered) by: {', '.join(short)}; "
                   "a latency there includes queueing behind the backlog.")
    verdict("(4) Broker CPU per GB <= 1/2 of Kafka's",
            [(cell_name("produce", k), (by.get("spate") or {}).get("broker_cpu_s_per_gb"),
              (by.get("kafka") or {}).get("broker_cpu_s_per_gb")) for k, by in sorted(prod.items(), key=sort_key)],
            0.5, "lower", "spate broker CPU s/GB over kafka broker CPU s/GB, every produce cell")
    cons = grouped(rows, "consume")
    for fam, name in (("consume", "catch-up consume"), ("e2e", "e2e")):
        got = [(cell_name(fam, k), (by.get("spate") or {}).get("broker_cpu_s_per_gb"),
                (by.get("kafka") or {}).get("broker_cpu_s_per_gb"))
               for k, by in sorted((cons if fam == "consume" else e2e).items(), key=sort_key)]
        got = [f"{c}: {a:.2f} vs {b:.2f} = {a / b:.2f}x" for c, a, b in got if a and b]
        if got:
            out.append(f"- (for reference) broker CPU s/GB, {name}, spate vs kafka: {'; '.join(got)}.")
    fsync_e2e = [(cell_name("e2e", k), (by.get("spate") or {}).get("p99"), (by.get("kafka-fsync") or {}).get("p99"))
                 for k, by in sorted(e2e.items(), key=sort_key)]
    fsync_e2e = [f"{c}: {a:.2f} vs {b:.2f} ms" for c, a, b in fsync_e2e if a and b]
    if fsync_e2e:
        out.append(f"- (for reference) e2e p99, spate vs kafka-fsync: {'; '.join(fsync_e2e)}.")
    out.append("")
    return out


def make_plots(stem, rows, targets, plot_problem):
    if plot_problem:
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    colors = {"spate": "#1f77b4", "spate-flushN": "#17becf", "kafka": "#d62728", "kafka-fsync": "#ff9896"}
    plots = []

    def bars(ax, labels, series, ylabel, log=False):
        n = max(1, len(series))
        w = 0.8 / n
        for i, (name, vals, color, hatch) in enumerate(series):
            xs = [j + (i - (n - 1) / 2) * w for j in range(len(labels))]
            ax.bar(xs, [v if v else float("nan") for v in vals], w, label=name, color=color, hatch=hatch, edgecolor="black",
                   linewidth=0.3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)

    # Throughput per cell per target: produce and consume one panel per record size, then the tools.
    panels = []
    for fam in ("produce", "consume"):
        cells = sorted(grouped(rows, fam).items(), key=sort_key)
        for size in sorted({k[0] for k, _ in cells}, reverse=True):
            panels.append((f"{fam}, {size} B records: msg/s per cell", fam, [c for c in cells if c[0][0] == size]))
    if grouped(rows, "tools"):
        panels.append(("Kafka's perf tools, 1 partition: msg/s", "tools",
                       sorted(grouped(rows, "tools").items(), key=sort_key)))
    if panels:
        widest = max(len(c) for *_, c in panels)
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.9 * widest + 4), 3.6 * len(panels)),
                                 squeeze=False)
        for ax, (title, fam, cells) in zip(axes[:, 0], panels):
            labels = [cell_name(fam, k) for k, _ in cells]
            series = [(t, [(by.get(t) or {}).get("msg_s") for _, by in cells], colors.get(t), None) for t in targets]
            bars(ax, labels, series, "msg/s")
            ax.set_title(title)
        fig.tight_layout()
        p = f"{stem}-throughput.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        plots.append(("throughput per cell per target", p))
    # e2e latency percentiles per target.
    e2e = sorted(grouped(rows, "e2e").items(), key=sort_key)
    if e2e:
        fig, axes = plt.subplots(1, len(e2e), figsize=(4.5 * len(e2e), 4), squeeze=False)
        for ax, (k, by) in zip(axes[0], e2e):
            labels = ["p50", "p99", "p99.9"]
            series = [(t, [(by.get(t) or {}).get(x) for x in ("p50", "p99", "p999")], colors.get(t), None)
                      for t in targets]
            bars(ax, labels, series, "ms (log)", log=True)
            ax.set_title(f"e2e {cell_name('e2e', k)}", fontsize=9)
        fig.tight_layout()
        p = f"{stem}-e2e.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        plots.append(("end-to-end latency percentiles per target", p))
    # CPU per GB, broker and client, produce cells.
    prod = sorted(grouped(rows, "produce").items(), key=sort_key)
    other = [(f, k, by) for f in ("consume", "e2e") for k, by in sorted(grouped(rows, f).items(), key=sort_key)]
    if prod or other:
        panels = ([("produce", "broker", prod), ("produce", "client", prod)] if prod else []) + \
            ([("consume and e2e", "broker", other)] if other else [])
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.6 * max(len(prod), len(other)) + 4),
                                                          4 * len(panels)), squeeze=False)
        for ax, (title, side, cells) in zip(axes[:, 0], panels):
            labels = [cell_name("produce", c[0]) if len(c) == 2 else f"{c[0]} {cell_name(c[0], c[1])}"
                      for c in cells]
            series = [(t, [(c[-1].get(t) or {}).get(f"{side}_cpu_s_per_gb") for c in cells], colors.get(t), None)
                      for t in targets]
            bars(ax, labels, series, "CPU s / GB")
            ax.set_title(f"{title}: {side} CPU seconds per GB")
        fig.tight_layout()
        p = f"{stem}-cpu.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        plots.append(("CPU seconds per GB, broker and client", p))
    return plots


if __name__ == "__main__":
    main()
