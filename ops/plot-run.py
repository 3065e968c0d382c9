#!/usr/bin/env python3
"""Plots Spate's own metrics over a benchmark run, from the data scraped off `/metrics`.

    ops/plot-run.py [--seconds 40] [--out docs/metrics-run.png]

Starts a release `spate serve` (durable, --cores 2) on free ports, runs `spate bench produce`
(1 KiB records, acks=all, 6 partitions) at a stepped rate and then as fast as it goes, scrapes
`/metrics` once a second meanwhile, keeps the scrapes as CSV beside the image, and draws what a
Grafana dashboard over ops/grafana/spate-dashboard.json would show: produce throughput, request
latency p50/p99 of Produce, fdatasync latency p99, records per fdatasync (group commit) and
open connections. Needs matplotlib (installed into .venv-perf if missing).
"""

import argparse
import csv
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPATE = os.path.join(ROOT, "target", "release", "spate")
SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN|\+Inf)$')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(sample, name, where=""):
    return sum(v for (n, labels), v in sample.items() if n == name and where in labels)


def buckets(sample, name, where=""):
    """{le: cumulative count} summed over label sets matching `where`."""
    b = {}
    for (n, labels), v in sample.items():
        if n == name + "_bucket" and where in labels:
            le = re.search(r'le="([^"]+)"', labels).group(1)
            le = float("inf") if le == "+Inf" else float(le)
            b[le] = b.get(le, 0) + v
    return b


def quantile(q, before, after):
    """The q-quantile of the observations between two scrapes (Prometheus' histogram_quantile)."""
    d = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    if not d or d[-1][1] <= 0:
        return None
    rank = q * d[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in d:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-12))
        prev_le, prev_c = le, c
    return prev_le


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "metrics-run.png"))
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        venv = os.path.join(ROOT, ".venv-perf")
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "matplotlib"], check=True)
        os.execv(os.path.join(venv, "bin", "python"), [os.path.join(venv, "bin", "python"), *sys.argv])
    subprocess.run(["cargo", "build", "--release", "-j2", "--bin", "spate"], cwd=ROOT, check=True)
    port, admin = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="spate-plot-")
    broker = subprocess.Popen([SPATE, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                               "--data-dir", data, "--cores", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scrapes = []
    stop = threading.Event()
    try:
        deadline = time.time() + 30
        while True:
            try:
                scrape(admin)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

        def scraper():
            t0 = time.time()
            while not stop.is_set():
                scrapes.append((time.time() - t0, scrape(admin)))
                stop.wait(1.0)

        th = threading.Thread(target=scraper)
        th.start()
        third = max(args.seconds // 3, 3)
        common = ["bench", "produce", "-b", f"127.0.0.1:{port}", "--topic", "plot", "--partitions", "6",
                  "--message-size", "1024", "--acks", "all", "--json"]
        for rate, secs in ((20_000, third), (60_000, third), (0, args.seconds - 2 * third)):
            subprocess.run([SPATE, *common, "--rate", str(rate), "--duration", str(secs)], check=True,
                           stdout=subprocess.DEVNULL)
        time.sleep(2)
        stop.set()
        th.join()
    finally:
        stop.set()
        broker.kill()
        broker.wait()
        subprocess.run(["rm", "-rf", data])

    rows = []
    for (t0, a), (t1, b) in zip(scrapes, scrapes[1:]):
        dt = t1 - t0
        fs_n = total(b, "spate_fsync_covered_records_count") - total(a, "spate_fsync_covered_records_count")
        fs_sum = total(b, "spate_fsync_covered_records_sum") - total(a, "spate_fsync_covered_records_sum")
        rows.append({
            "t": round(t1, 1),
            "produced_mb_s": (total(b, "spate_produced_bytes_total") - total(a, "spate_produced_bytes_total")) / dt / 1e6,
            "produced_rec_s": (total(b, "spate_produced_records_total") - total(a, "spate_produced_records_total")) / dt,
            "produce_p50_ms": (quantile(0.5, buckets(a, "spate_request_duration_seconds", 'api="Produce"'),
                                        buckets(b, "spate_request_duration_seconds", 'api="Produce"')) or 0) * 1000,
            "produce_p99_ms": (quantile(0.99, buckets(a, "spate_request_duration_seconds", 'api="Produce"'),
                                        buckets(b, "spate_request_duration_seconds", 'api="Produce"')) or 0) * 1000,
            "fsync_p99_ms": (quantile(0.99, buckets(a, "spate_fsync_duration_seconds"),
                                      buckets(b, "spate_fsync_duration_seconds")) or 0) * 1000,
            "records_per_fsync": fs_sum / fs_n if fs_n else 0,
            "connections": total(b, "spate_connections"),
        })
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    csv_path = os.path.splitext(args.out)[0] + ".csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    t = [r["t"] for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax[0].plot(t, [r["produced_mb_s"] for r in rows], label="produced MB/s (spate_produced_bytes_total)")
    ax[0].set_ylabel("MB/s")
    ax0b = ax[0].twinx()
    ax0b.plot(t, [r["produced_rec_s"] / 1000 for r in rows], color="tab:orange", linestyle="--", label="records/s (thousands)")
    ax0b.set_ylabel("thousand records/s")
    ax[0].set_title("Spate /metrics over `spate bench produce` (1 KiB, acks=all, 6 partitions): 20k/s, 60k/s, then flat out")
    ax[0].legend(loc="upper left")
    ax0b.legend(loc="lower right")
    ax[1].plot(t, [r["produce_p50_ms"] for r in rows], label="Produce p50")
    ax[1].plot(t, [r["produce_p99_ms"] for r in rows], label="Produce p99")
    ax[1].set_ylabel("ms (spate_request_duration_seconds)")
    ax[1].legend()
    ax[2].plot(t, [r["fsync_p99_ms"] for r in rows], label="fdatasync p99 (ms)")
    ax[2].set_ylabel("ms")
    ax2b = ax[2].twinx()
    ax2b.plot(t, [r["records_per_fsync"] for r in rows], color="tab:green", label="records per fdatasync")
    ax2b.set_ylabel("records / fdatasync")
    ax[2].legend(loc="upper left")
    ax2b.legend(loc="lower right")
    ax[3].plot(t, [r["connections"] for r in rows], label="open connections (spate_connections)")
    ax[3].set_ylabel("connections")
    ax[3].set_xlabel("seconds")
    ax[3].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out, csv_path)


if __name__ == "__main__":
    main()
