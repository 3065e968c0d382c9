#!/usr/bin/env python3
"""perf/cluster.py: what the cluster machinery costs the data path (issue 21).

  perf/cluster.py [--spate BIN] [--rounds 3] [--seconds 30] [--rate 20000] [--messages 2000000] [--creates 20]

Each round, in alternating order, on fresh durable brokers (`--cores 1` each):
  - single: one `spate serve`, no quorum;
  - cluster: three `spate serve` with the same --controller-quorum-voters (a metadata quorum of
    three, brokers heartbeating every 2 s), the partition led by whichever broker placement picks,
    the clients bootstrapped at node 1 (they follow Metadata to the leader).
On a one-partition topic (1 KiB records, acks=all, linger.ms 5) it runs
  1. `spate bench produce --messages N --acks all` (as fast as it goes): msg/s and MB/s;
  2. `spate bench consume` of those N from the start (catch-up): MB/s;
  3. `spate bench e2e --rate R --duration S` (one producer, one consumer): end-to-end p50/p99/p99.9;
and samples, over step 3, the CPU of the broker leading the partition, of the other brokers, and
of every node's `controller` thread (the quorum and the broker lifecycle, from
/proc/<pid>/task/<tid>/stat). In the cluster it then creates --creates topics through node 1 and
polls node 3's `/v1/metadata` every millisecond: how long after CreateTopics was answered node 3
serves the topic (the metadata propagation lag).

Writes perf/results/<date>-<commit>-cluster.md. Run on a quiet machine: nothing else building or
testing. The machine has 2 cores and the cluster 3 processes: the two that lead nothing share
the cores with the leader and the clients, which is part of what is measured.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from retention import Broker, free_port, machine, proc_cpu_s  # noqa: E402  (perf/retention.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "perf", "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Spate's (and Kafka's) default: retention plays no part here.
RETENTION_CHECK_MS = 300_000


def thread_cpu_s(pid, name):
    """CPU seconds of `pid`'s thread called `name` (0 when there is none)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            pass
    return 0.0


class Node(Broker):
    """A broker of perf/retention.py's kind, alone or one of a cluster (`voters`)."""

    def __init__(self, spate, tmp, node_id=None, voters=None):
        extra = ["--node-id", str(node_id), "--controller-quorum-voters", voters] if voters else []
        super().__init__(spate, tmp, RETENTION_CHECK_MS, extra, wait=False)

    def problems(self):
        # openraft warns about peers it cannot reach yet while the cluster forms.
        return [p for p in super().problems() if "openraft" not in p]

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as r:
            return json.loads(r.read())

    def cpu(self):
        return proc_cpu_s(self.proc.pid) or 0.0

    def controller_cpu(self):
        return thread_cpu_s(self.proc.pid, "controller")


def start(args, tmp, cluster):
    if not cluster:
        n = Node(args.spate, tmp)
        n.wait_ready()
        return [n]
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    nodes = [Node(args.spate, tmp, i + 1, voters) for i in range(3)]
    for n in nodes:
        n.wait_ready()
    deadline = time.monotonic() + 60
    while True:
        brokers = [n.get("/v1/status").get("brokers") or [] for n in nodes]
        if all(len([b for b in bs if not b["fenced"]]) == 3 for bs in brokers):
            return nodes
        if time.monotonic() > deadline:
            raise RuntimeError(f"brokers not all unfenced: {brokers}")
        time.sleep(0.2)


def leader_of(nodes, topic):
    if len(nodes) == 1:
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t = nodes[0].get("/v1/metadata")["installed"]["topics"].get(topic)
        if t:
            return t["partitions"][0]["leader"] - 1
        time.sleep(0.05)
    raise RuntimeError(f"{topic} not in node 1's metadata")


def propagation(args, nodes):
    lags = []
    for i in range(args.creates):
        name = f"lag-{i}"
        nodes[0].topic(name, 1, {})
        answered = time.monotonic()
        while name not in nodes[2].get("/v1/metadata")["installed"]["topics"]:
            if time.monotonic() - answered > 30:
                raise RuntimeError(f"{name} not on node 3 after 30 s")
            time.sleep(0.001)
        lags.append((time.monotonic() - answered) * 1000)
    return lags


def one_round(args, tmp, cluster):
    nodes = start(args, tmp, cluster)
    row = {"setup": "cluster" if cluster else "single"}
    try:
        b = nodes[0]
        b.topic("one", 1, {})
        b.topic("e2e", 1, {})
        row["leader"] = leader_of(nodes, "one") + 1 if cluster else "-"
        p = b.bench("produce", "one", "--messages", str(args.messages), "--acks", "all")["produced"]
        c = b.bench("consume", "one")["consumed"]
        lead = leader_of(nodes, "e2e")
        before = [(n.cpu(), n.controller_cpu()) for n in nodes]
        t0 = time.monotonic()
        e = b.bench("e2e", "e2e", "--rate", str(args.rate), "--duration", str(args.seconds), "--partitions", "1")
        dt = time.monotonic() - t0
        after = [(n.cpu(), n.controller_cpu()) for n in nodes]
        lat = e["consumed"]["latency"]
        cores = [(a[0] - b0[0]) / dt for a, b0 in zip(after, before)]
        ctl = [(a[1] - b0[1]) / dt for a, b0 in zip(after, before)]
        row.update(produce_msg_s=p["msg_per_s"], produce_mb_s=p["mb_per_s"], consume_mb_s=c["mb_per_s"],
                   p50=lat["p50_ms"], p99=lat["p99_ms"], p999=lat["p999_ms"], e2e_msg_s=e["produced"]["msg_per_s"],
                   leader_cores=cores[lead], other_cores=sum(cores) - cores[lead], controller_ms_s=[x * 1000 for x in ctl])
        if cluster:
            row["lags"] = propagation(args, nodes)
    finally:
        row["problems"] = [p for n in nodes for p in n.stop()]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=os.path.join(ROOT, "target", "release", "spate"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--creates", type=int, default=20)
    args = ap.parse_args()
    if not os.path.exists(args.spate):
        subprocess.run(["cargo", "build", "--release", "-j2"], cwd=ROOT, check=True)
    m = machine(args, "perf/cluster.py")
    rows = []
    with tempfile.TemporaryDirectory(prefix="spate-perf-cluster-") as tmp:
        for r in range(args.rounds):
            for cluster in ((False, True) if r % 2 == 0 else (True, False)):
                print(f"round {r + 1}/{args.rounds}: {'cluster' if cluster else 'single'} ...", file=sys.stderr, flush=True)
                rows.append(one_round(args, tmp, cluster))
    out = (f"# One partition on a three-broker cluster (replication factor 1) beside a single node\n\n"
           f"Command: `{m['command']}`; commit {m['commit']} ({m['spate']}); {m['date']}; {m['cores']} x {m['cpu']}, "
           f"kernel {m['kernel']}. Brokers: `--cores 1`, durable (acks=all waits for fdatasync). Records 1 KiB, acks=all, "
           f"linger.ms 5. Produce: `spate bench produce --messages {args.messages}`; consume: `spate bench consume` of them "
           f"(catch-up); e2e: `spate bench e2e --rate {args.rate} --duration {args.seconds}` (one producer, one consumer, "
           f"send to seen). CPU over the e2e run in cores; the controller threads' in ms of CPU per second, node 1, 2, 3.\n\n")
    out += ("| round | setup | leader | produce msg/s | produce MB/s | consume MB/s | e2e p50 ms | p99 ms | p99.9 ms | "
            "leader cores | other brokers' cores | controller threads ms/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for i, r in enumerate(rows):
        out += (f"| {i // 2 + 1} | {r['setup']} | {r['leader']} | {r['produce_msg_s']:.0f} | {r['produce_mb_s']:.0f} | "
                f"{r['consume_mb_s']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | {r['leader_cores']:.2f} | "
                f"{r['other_cores']:.2f} | {', '.join(f'{x:.1f}' for x in r['controller_ms_s'])} |\n")
    out += "\nMedians:\n\n| setup | produce msg/s | consume MB/s | e2e p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|\n"
    for setup in ("single", "cluster"):
        sel = [r for r in rows if r["setup"] == setup]
        med = lambda k: statistics.median(r[k] for r in sel)  # noqa: E731
        out += (f"| {setup} | {med('produce_msg_s'):.0f} | {med('consume_mb_s'):.0f} | {med('p50'):.2f} | {med('p99'):.2f} | "
                f"{med('p999'):.2f} |\n")
    lags = sorted(x for r in rows for x in r.get("lags", []))
    if lags:
        out += (f"\nMetadata propagation: {len(lags)} topics created through node 1; node 3 served each "
                f"{lags[len(lags) // 2]:.1f} ms (median) and at most {lags[-1]:.1f} ms after node 1 answered CreateTopics "
                f"(0 would mean already there when the answer came).\n")
    problems = [p for r in rows for p in r["problems"]]
    out += "\nBroker warnings and errors (openraft's connection warnings at formation left out): " + (
        "; ".join(problems[:5]) if problems else "none") + "\n"
    path = os.path.join(RESULTS, f"{m['date'][:10]}-{m['commit']}-cluster.md")
    with open(path, "w") as f:
        f.write(out)
    print(out)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
