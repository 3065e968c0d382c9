#!/usr/bin/env python3
"""perf/retention.py: what retention costs the data path, and a soak with retention on.

  perf/retention.py ab   [--spate BIN] [--rounds 3] [--seconds 30] [--rate 30000] [--cold-messages 2000000]
                         [--check-ms 1000] [--out-suffix S]
  perf/retention.py soak [--spate BIN] [--minutes 30] [--rate 10000] [--check-ms 1000]

`ab` runs, on a fresh durable broker each time (`--cores 1`, retention checked every --check-ms,
1 s by default: Kafka's and Spate's default is 5 minutes, too rare to see in a short run),
the same two phases with the produced topic's retention on (`retention.bytes` 48 MiB per
partition over 16 MiB segments: a segment is deleted every second or so) and off, the order
alternating by round:
  1. produce: `spate bench produce --rate R` into the topic (3 partitions, 1 KiB, acks=all):
     throughput and the send -> delivery-report latency (p50, p99, p99.9);
  2. consume: the same producer in the background while `spate bench consume` reads a 2 GiB
     topic without retention from its start (catch-up): MB/s.
It counts the segments deleted during each phase (from the broker's log) and writes
perf/results/<date>-<commit>-retention-ab.md.

`soak` runs one broker for --minutes with a 6-partition topic under retention (`retention.bytes`
64 MiB per partition, 16 MiB segments) and `spate bench e2e --rate R` back to back, one
55-second run per minute; every 5 s it samples the data directory's disk use, the broker's RSS
and its CPU. It writes perf/results/<date>-<commit>-retention-soak.md (a row per minute: e2e
p50/p99/p99.9, disk, RSS, segments deleted) and a PNG of the three over time (matplotlib from
.venv-perf, installed there if missing).

Run on a quiet machine: nothing else building or testing. Spate's binary: --spate (default
target/release/spate, built first if missing).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "perf", "results")
VENV = os.path.join(ROOT, ".venv-perf")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
SEGMENT = 16 * MIB


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def disk_mib(path):
    """Blocks the files under `path` occupy, MiB (preallocated space included)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total / MIB


class Broker:
    """A durable Spate on a fresh data directory (`--cores 1`), retention checked every
    `check_ms`, with `extra` flags; waits until it is ready unless `wait` is false (then call
    `wait_ready`). perf/cluster.py's nodes are these too."""

    def __init__(self, spate, tmp, check_ms, extra=(), wait=True):
        self.spate = spate
        self.data = tempfile.mkdtemp(prefix="spate-", dir=tmp)
        self.port, self.admin = free_port(), free_port()
        self.log = self.data + ".log"
        cmd = [spate, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin}",
               "--data-dir", self.data, "--cores", "1", "--log-retention-check-interval-ms", str(check_ms), *extra]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while "spate ready" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"spate did not start: {self.log_text()[-600:]}")
            time.sleep(0.1)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def deleted_segments(self):
        return self.log_text().count("deleting segment below the log start offset")

    def problems(self):
        return [line.strip()[:300] for line in self.log_text().splitlines() if re.search(r"\b(ERROR|WARN)\b|panicked", line)]

    def topic(self, name, partitions, configs):
        cmd = [self.spate, "topic", "create", "-b", self.bootstrap, name, "-p", str(partitions)]
        for k, v in configs.items():
            cmd += ["-c", f"{k}={v}"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def bench(self, mode, topic, *extra, timeout=900):
        return bench(self.spate, self.bootstrap, mode, topic, *extra, timeout=timeout)

    def stop(self):
        problems = self.problems()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)
        os.remove(self.log)
        return problems


def retention_configs(on, per_partition_mib):
    c = {"segment.bytes": SEGMENT}
    c["retention.bytes"] = per_partition_mib * MIB if on else -1
    return c


def ab_round(args, tmp, on):
    b = Broker(args.spate, tmp, args.check_ms)
    try:
        b.topic("t", 3, retention_configs(on, 48))
        b.topic("cold", 1, {})
        b.bench("produce", "cold", "--messages", str(args.cold_messages), "--acks", "1")
        row = {"retention": "on" if on else "off"}
        cpu0, del0 = proc_cpu_s(b.proc.pid), b.deleted_segments()
        p = b.bench("produce", "t", "--rate", str(args.rate), "--duration", str(args.seconds), "--warmup", "3")["produced"]
        row.update(msg_s=p["msg_per_s"], p50=p["latency"]["p50_ms"], p99=p["latency"]["p99_ms"], p999=p["latency"]["p999_ms"],
                   produce_deleted=b.deleted_segments() - del0, produce_cpu=(proc_cpu_s(b.proc.pid) - cpu0) / (args.seconds + 3))
        # Consume while the producer (and, with retention, deletion) runs in the background.
        del0 = b.deleted_segments()
        bg = subprocess.Popen([args.spate, "bench", "produce", "-b", b.bootstrap, "--topic", "t", "--rate", str(args.rate),
                               "--duration", "600", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)
            c = b.bench("consume", "cold")["consumed"]
        finally:
            bg.terminate()
            bg.wait()
        row.update(consume_mb_s=c["mb_per_s"], consume_s=c["seconds"], consume_deleted=b.deleted_segments() - del0,
                   disk_mib=disk_mib(os.path.join(b.data, "topics", "t")))
    finally:
        row["problems"] = b.stop()
    return row


def bench(spate, bootstrap, mode, topic, *extra, timeout=900):
    """`spate bench MODE --json` against `bootstrap`: its report; raises on errors or missing records."""
    cmd = [spate, "bench", mode, "-b", bootstrap, "--topic", topic, "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        rep = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-400:]}")
    if rep.get("errors") or rep.get("missing"):
        raise RuntimeError(f"{mode}: {rep.get('errors')} errors, {rep.get('missing')} missing: {rep.get('error_samples')}")
    return rep


def machine(args, script="perf/retention.py"):
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return dict(commit=commit, date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
                cores=os.cpu_count(), cpu=cpu, kernel=platform.release(),
                command=script + " " + " ".join(sys.argv[1:]),
                spate=subprocess.run([args.spate, "--version"], capture_output=True, text=True).stdout.strip())


def header(m, title, check_ms):
    return (f"# {title}\n\nCommand: `{m['command']}`; commit {m['commit']} ({m['spate']}); {m['date']}; "
            f"{m['cores']} x {m['cpu']}, kernel {m['kernel']}. Broker: `--cores 1`, durable (acks=all waits for "
            f"fdatasync), retention checked every {check_ms} ms (`--log-retention-check-interval-ms`).\n\n")


def run_ab(args, tmp):
    m = machine(args)
    rows = []
    for r in range(args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            print(f"round {r + 1}/{args.rounds}, retention {'on' if on else 'off'} ...", file=sys.stderr, flush=True)
            rows.append(ab_round(args, tmp, on))
    out = header(m, "Retention deleting continuously vs no retention: produce latency and consume throughput", args.check_ms)
    out += (f"Topic `t`: 3 partitions, 16 MiB segments, retention.bytes 48 MiB per partition (on) or -1 (off). "
            f"Produce: `spate bench produce --rate {args.rate} --duration {args.seconds} --warmup 3` (1 KiB, acks=all, linger.ms 5). "
            f"Consume: `spate bench consume` of a {args.cold_messages} x 1 KiB topic without retention, from its start, "
            f"while the same producer runs in the background.\n\n")
    out += "| round | retention | produce msg/s | p50 ms | p99 ms | p99.9 ms | broker cores | segments deleted | consume MB/s | segments deleted meanwhile | topic disk MiB |\n"
    out += "|---|---|---|---|---|---|---|---|---|---|---|\n"
    for i, r in enumerate(rows):
        out += (f"| {i // 2 + 1} | {r['retention']} | {r['msg_s']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | "
                f"{r['produce_cpu']:.2f} | {r['produce_deleted']} | {r['consume_mb_s']:.0f} | {r['consume_deleted']} | {r['disk_mib']:.0f} |\n")
    out += "\nMedians:\n\n| retention | p99 ms | p99.9 ms | consume MB/s |\n|---|---|---|---|\n"
    for on in ("on", "off"):
        sel = [r for r in rows if r["retention"] == on]
        out += (f"| {on} | {statistics.median(r['p99'] for r in sel):.2f} | {statistics.median(r['p999'] for r in sel):.2f} | "
                f"{statistics.median(r['consume_mb_s'] for r in sel):.0f} |\n")
    problems = [p for r in rows for p in r["problems"]]
    out += "\nBroker warnings and errors: " + ("; ".join(problems[:5]) if problems else "none") + "\n"
    path = os.path.join(RESULTS, f"{m['date'][:10]}-{m['commit']}-retention-ab{args.out_suffix}.md")
    with open(path, "w") as f:
        f.write(out)
    print(out)
    print(f"wrote {path}", file=sys.stderr)


class Sampler(threading.Thread):
    def __init__(self, broker, every):
        super().__init__(daemon=True)
        self.b, self.every, self.halt, self.samples = broker, every, threading.Event(), []
        self.t0 = time.monotonic()

    def run(self):
        while not self.halt.is_set():
            self.samples.append(dict(t=time.monotonic() - self.t0, disk=disk_mib(self.b.data), rss=rss_mib(self.b.proc.pid),
                                     cpu=proc_cpu_s(self.b.proc.pid), deleted=self.b.deleted_segments()))
            self.halt.wait(self.every)


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    vpy = os.path.join(VENV, "bin", "python")
    if os.environ.get("SPATE_RETENTION_REEXEC"):
        return False
    if not os.path.exists(vpy):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    if subprocess.run([vpy, "-c", "import matplotlib"], capture_output=True).returncode != 0:
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "matplotlib"], check=True)
    os.environ["SPATE_RETENTION_REEXEC"] = "1"
    os.execv(vpy, [vpy, os.path.abspath(__file__), *sys.argv[1:]])


def run_soak(args, tmp):
    m = machine(args)
    b = Broker(args.spate, tmp, args.check_ms)
    minutes = []
    try:
        b.topic("soak", 6, retention_configs(True, 64))
        s = Sampler(b, 5)
        s.start()
        for i in range(args.minutes):
            start = time.monotonic()
            rep = b.bench("e2e", "soak", "--rate", str(args.rate), "--duration", "55", "--partitions", "6")
            lat = rep["consumed"]["latency"] if rep.get("consumed") else rep["produced"]["latency"]
            last = s.samples[-1] if s.samples else {}
            minutes.append(dict(minute=i + 1, msg_s=rep["produced"]["msg_per_s"], p50=lat["p50_ms"], p99=lat["p99_ms"],
                                p999=lat["p999_ms"], disk=last.get("disk"), rss=last.get("rss"), deleted=b.deleted_segments()))
            print(f"minute {i + 1}/{args.minutes}: p99 {lat['p99_ms']:.2f} ms, disk {last.get('disk', 0):.0f} MiB, "
                  f"rss {last.get('rss', 0):.0f} MiB, {b.deleted_segments()} segments deleted", file=sys.stderr, flush=True)
            time.sleep(max(0.0, 60 - (time.monotonic() - start)))
        s.halt.set()
        s.join()
    finally:
        problems = b.stop()
    stem = os.path.join(RESULTS, f"{m['date'][:10]}-{m['commit']}-retention-soak")
    out = header(m, f"Soak: {args.minutes} minutes at {args.rate} msg/s with retention deleting continuously", args.check_ms)
    out += (f"Topic `soak`: 6 partitions, 16 MiB segments, retention.bytes 64 MiB per partition. Each minute: "
            f"`spate bench e2e --rate {args.rate} --duration 55` (1 KiB, acks=all, linger.ms 5, one producer, one consumer; "
            f"latency from send to the consumer seeing the record). Disk: blocks under the data directory (preallocated "
            f"space of the active segments included). Samples every 5 s: ![soak]({os.path.basename(stem)}.png)\n\n")
    first, last = s.samples[0], s.samples[-1]
    cpu = (last["cpu"] - first["cpu"]) / max(1e-9, last["t"] - first["t"])
    half = len(minutes) // 2
    out += (f"Summary: {last['deleted']} segments deleted ({last['deleted'] * 16 / 1024:.1f} GiB); broker {cpu:.2f} cores on "
            f"average; disk {min(x['disk'] for x in s.samples[12:] or s.samples):.0f}-{max(x['disk'] for x in s.samples[12:] or s.samples):.0f} MiB "
            f"after the first minute; RSS {min(x['rss'] for x in s.samples):.0f}-{max(x['rss'] for x in s.samples):.0f} MiB; "
            f"median p99 {statistics.median(x['p99'] for x in minutes[:half] or minutes):.2f} ms in the first half, "
            f"{statistics.median(x['p99'] for x in minutes[half:]):.2f} ms in the second.\n\n")
    out += "| minute | msg/s | p50 ms | p99 ms | p99.9 ms | disk MiB | RSS MiB | segments deleted so far |\n|---|---|---|---|---|---|---|---|\n"
    for x in minutes:
        out += (f"| {x['minute']} | {x['msg_s']:.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {x['p999']:.2f} | {x['disk']:.0f} | "
                f"{x['rss']:.0f} | {x['deleted']} |\n")
    out += "\nBroker warnings and errors: " + ("; ".join(problems[:5]) if problems else "none") + "\n"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
        t = [x["t"] / 60 for x in s.samples]
        ax[0].plot(t, [x["disk"] for x in s.samples])
        ax[0].set_ylabel("data dir, MiB")
        ax[1].plot(t, [x["rss"] for x in s.samples])
        ax[1].set_ylabel("broker RSS, MiB")
        ax[2].plot([x["minute"] - 0.5 for x in minutes], [x["p99"] for x in minutes], marker="o", label="p99")
        ax[2].plot([x["minute"] - 0.5 for x in minutes], [x["p50"] for x in minutes], marker=".", label="p50")
        ax[2].set_ylabel("e2e latency, ms")
        ax[2].set_xlabel("minutes")
        ax[2].legend()
        for a in ax:
            a.set_ylim(bottom=0)
            a.grid(alpha=0.3)
        fig.suptitle(f"Spate {m['commit']}: {args.rate} msg/s, retention.bytes 64 MiB x 6 partitions")
        fig.tight_layout()
        fig.savefig(stem + ".png", dpi=90)
    except ImportError:
        out += "\n(no plot: matplotlib is not importable)\n"
    with open(stem + ".md", "w") as f:
        f.write(out)
    with open(stem + ".json", "w") as f:
        json.dump(dict(machine=m, minutes=minutes, samples=s.samples), f)
    print(out)
    print(f"wrote {stem}.md", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ab", "soak"])
    ap.add_argument("--spate", default=os.path.join(ROOT, "target", "release", "spate"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--rate", type=int, default=None, help="msg/s (ab: 30000, soak: 10000)")
    ap.add_argument("--cold-messages", type=int, default=2_000_000)
    ap.add_argument("--check-ms", type=int, default=1000, help="--log-retention-check-interval-ms of the broker")
    ap.add_argument("--out-suffix", default="", help="added to the result file names (a second run of the same commit)")
    args = ap.parse_args()
    args.rate = args.rate or (30000 if args.mode == "ab" else 10000)
    if args.mode == "soak":
        ensure_matplotlib()
    if not os.path.exists(args.spate):
        subprocess.run(["cargo", "build", "-j2", "--release"], cwd=ROOT, check=True)
    os.makedirs(RESULTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="spate-retention-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        (run_ab if args.mode == "ab" else run_soak)(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
