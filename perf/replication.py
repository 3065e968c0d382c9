#!/usr/bin/env python3
"""perf/replication.py: what replication costs, and Spate beside Apache Kafka replicating (issue 22).

  perf/replication.py [--spate BIN] [--rounds 2] [--messages 1000000] [--rate 20000] [--seconds 20]
                      [--no-kafka] [--kafka-warmup 60]

Targets, each on three brokers of its own on this machine, started afresh for each round:
  spate-rf1   three `spate serve --cores 1` (one metadata quorum), topic of 3 partitions, RF 1
  spate-rf3   the same, RF 3, min.insync.replicas=2 (each partition led by another broker)
  kafka-rf3   Apache Kafka 4.1.1, three combined KRaft nodes (`perf/kafka/run cluster start`),
              RF 3, min.insync.replicas=2, Kafka's defaults (page cache, no fsync), first given
              --kafka-warmup seconds of unmeasured produce (a fresh JVM's JIT is still at work)
The same client for all (`spate bench`: librdkafka, 1 KiB records, acks=all, linger.ms 5,
batch.size 1 MB, no compression), bootstrapped at the first broker:
  1. produce  `spate bench produce --messages N` over the 3 partitions, as fast as it goes: msg/s, MB/s;
  2. e2e      `spate bench e2e --rate R --duration S` (one producer, one consumer): p50/p99/p99.9;
and over each step the CPU of all three brokers together (utime+stime of their processes) per GB
of records produced, and for Spate the bytes its followers copied (spate_replicated_bytes, summed
over the brokers) per byte produced: what crosses between brokers for each client byte.
Durability differs and the table says so: Spate acknowledges acks=all once every in-sync replica
has fdatasync'd the batch; Kafka once every in-sync replica has it in its page cache.

Writes perf/results/<date>-<commit>-replication.md. Run on a quiet machine (nothing else building
or testing): 2 cores shared by three brokers and the clients is part of what is measured.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import start  # noqa: E402  (perf/cluster.py)
from retention import bench, free_port, machine, proc_cpu_s  # noqa: E402  (perf/retention.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "perf", "results")
KAFKA_RUN = os.path.join(ROOT, "perf", "kafka", "run")


def replicated_bytes(nodes):
    """spate_replicated_bytes summed over every broker's /metrics."""
    total = 0.0
    for n in nodes:
        with urllib.request.urlopen(f"http://127.0.0.1:{n.admin}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("spate_replicated_bytes_total"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


class Spate:
    def __init__(self, args, tmp, rf):
        self.args, self.rf, self.name = args, rf, f"spate-rf{rf}"
        self.nodes = start(args, tmp, True)
        self.bootstrap = self.nodes[0].bootstrap

    def create(self, topic):
        cmd = [self.args.spate, "topic", "create", "-b", self.bootstrap, topic, "-p", "3", "-r", str(self.rf)]
        if self.rf > 1:
            cmd += ["-c", "min.insync.replicas=2"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def cpu(self):
        return sum(n.cpu() for n in self.nodes)

    def copied(self):
        return replicated_bytes(self.nodes)

    def stop(self):
        return [p for n in self.nodes for p in n.stop()]


class Kafka:
    def __init__(self, args, tmp, rf):
        self.args, self.rf, self.name = args, rf, f"kafka-rf{rf}"
        self.dir = os.path.join(tmp, f"kafka-{time.monotonic_ns()}")
        base = free_port()
        subprocess.run([KAFKA_RUN, "cluster", "start", "--dir", self.dir, "--brokers", "3", "--base-port", str(base)],
                       check=True, capture_output=True, text=True, timeout=300)
        self.bootstrap = f"127.0.0.1:{base}"
        self.pids = []
        for i in range(1, 4):
            with open(os.path.join(self.dir, str(i), "kafka.pid")) as f:
                self.pids.append(int(f.read().strip()))
        if args.kafka_warmup > 0:
            self.create("warmup")
            bench(args.spate, self.bootstrap, "produce", "warmup", "--duration", str(args.kafka_warmup), "--acks", "all")

    def create(self, topic):
        subprocess.run([KAFKA_RUN, "tool", "kafka-topics", "--bootstrap-server", self.bootstrap, "--create", "--topic", topic,
                        "--partitions", "3", "--replication-factor", str(self.rf), "--config", "min.insync.replicas=2"],
                       check=True, capture_output=True, text=True, timeout=120)

    def cpu(self):
        return sum(proc_cpu_s(p) or 0.0 for p in self.pids)

    def copied(self):
        return None

    def stop(self):
        subprocess.run([KAFKA_RUN, "cluster", "stop", "--dir", self.dir], capture_output=True, text=True, timeout=300)
        shutil.rmtree(self.dir, ignore_errors=True)
        return []


def one(args, tmp, target):
    kind, rf = re.match(r"(spate|kafka)-rf(\d)", target).groups()
    t = (Spate if kind == "spate" else Kafka)(args, tmp, int(rf))
    row = {"target": target}
    try:
        t.create("produce")
        t.create("e2e")
        cpu0, copied0, t0 = t.cpu(), t.copied(), time.monotonic()
        p = bench(args.spate, t.bootstrap, "produce", "produce", "--messages", str(args.messages), "--acks", "all")["produced"]
        cpu1, copied1 = t.cpu(), t.copied()
        gb = args.messages * 1024 / 1e9
        row.update(msg_s=p["msg_per_s"], mb_s=p["mb_per_s"], cpu_per_gb=(cpu1 - cpu0) / gb, seconds=time.monotonic() - t0)
        row["copied_per_byte"] = None if copied0 is None else (copied1 - copied0) / (args.messages * 1024)
        e = bench(args.spate, t.bootstrap, "e2e", "e2e", "--rate", str(args.rate), "--duration", str(args.seconds),
                  "--partitions", "3", "--acks", "all")
        lat = e["consumed"]["latency"]
        row.update(p50=lat["p50_ms"], p99=lat["p99_ms"], p999=lat["p999_ms"], e2e_msg_s=e["produced"]["msg_per_s"])
    finally:
        row["problems"] = t.stop()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=os.path.join(ROOT, "target", "release", "spate"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--kafka-warmup", type=int, default=60)
    ap.add_argument("--no-kafka", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(args.spate):
        subprocess.run(["cargo", "build", "--release", "-j2"], cwd=ROOT, check=True)
    m = machine(args, "perf/replication.py")
    targets = ["spate-rf1", "spate-rf3"] + ([] if args.no_kafka else ["kafka-rf3"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="spate-perf-repl-") as tmp:
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for target in order:
                print(f"round {r + 1}/{args.rounds}: {target} ...", file=sys.stderr, flush=True)
                rows.append(dict(one(args, tmp, target), round=r + 1))
    f2 = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    out = (f"# Replication factor 3 against 1, and Spate against Apache Kafka at replication factor 3\n\n"
           f"Command: `{m['command']}`; commit {m['commit']} ({m['spate']}); {m['date']}; {m['cores']} x {m['cpu']}, "
           f"kernel {m['kernel']}. Three brokers per target on this one machine (Spate `--cores 1` each; Kafka 4.1.1 "
           f"combined KRaft nodes, 1 GiB heap each), a 3-partition topic, min.insync.replicas=2 at RF 3. Client: "
           f"`spate bench` (librdkafka), 1 KiB records, acks=all, linger.ms 5. Produce: `--messages {args.messages}` as fast "
           f"as it goes; e2e: `--rate {args.rate} --duration {args.seconds}`, 3 partitions. CPU: all three brokers' "
           f"utime+stime over the produce step per GB produced. Copied/byte: bytes Spate's followers appended per byte "
           f"produced (RF 3: 2 expected). Durability: Spate answers acks=all once every in-sync replica fdatasync'd the "
           f"batch; Kafka once every in-sync replica has it in memory (no fsync).\n\n")
    out += ("| round | target | produce msg/s | MB/s | broker CPU s/GB | copied/byte | e2e p50 ms | p99 ms | p99.9 ms | e2e msg/s |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        out += (f"| {r['round']} | {r['target']} | {r['msg_s']:.0f} | {r['mb_s']:.0f} | {r['cpu_per_gb']:.1f} | "
                f"{f2(r['copied_per_byte'])} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | {r['e2e_msg_s']:.0f} |\n")
    out += "\nMedians:\n\n| target | produce msg/s | broker CPU s/GB | e2e p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|\n"
    for target in targets:
        sel = [r for r in rows if r["target"] == target]
        med = lambda k: statistics.median(r[k] for r in sel)  # noqa: E731
        out += (f"| {target} | {med('msg_s'):.0f} | {med('cpu_per_gb'):.1f} | {med('p50'):.2f} | {med('p99'):.2f} | "
                f"{med('p999'):.2f} |\n")
    problems = [p for r in rows for p in r["problems"]]
    out += "\nBroker warnings and errors: " + ("; ".join(problems[:5]) if problems else "none") + "\n"
    path = os.path.join(RESULTS, f"{m['date'][:10]}-{m['commit']}-replication.md")
    with open(path, "w") as f:
        f.write(out)
    print(out)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
