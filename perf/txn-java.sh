#!/usr/bin/env bash
# Transactions of the Java client 4.x (kafka-producer-perf-test from kafka-tools 4.1.1, which
# speaks transaction version 2 to both brokers: the brokers add the partitions, every commit
# bumps the epoch) on Spate and on Apache Kafka, alternating brokers each round:
#   perf/txn-java.sh SPATE_BINARY [rounds] [records] [record bytes]
# Each round starts Spate (--cores 2) and then Kafka (perf/kafka/run, one combined node) on fresh
# data directories and runs the perf test (acks=all, linger.ms 5, 3 partitions) idempotent, then
# committing every 10, 100 and 1,000 ms (--transaction-duration-ms). Reports records/s and the
# p99 latency the tool prints. Spate fdatasyncs before every acks=all answer (its default);
# Kafka does not (its default leaves it to the page cache).
set -euo pipefail
spate=$(realpath "$1") rounds=${2:-2} records=${3:-300000} size=${4:-1024}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d -p "${SPATE_PERF_DIR:-$PWD}" spate-txnj-XXXX)
port=$((20000 + RANDOM % 20000))
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  # The rounds run in a subshell (the pipe to tee) whose broker pid this shell never sees: a
  # failed run leaves its Spate to be found by its data directory, which is this run's alone.
  pkill -f -- "--data-dir $dir/data" 2>/dev/null || true
  "$here/kafka/run" stop --dir "$dir/kafka" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
measure() { # broker-name
  local mode t extra line
  for mode in idempotent 10 100 1000; do
    t="t-$mode-$RANDOM"
    "$here/kafka/run" tool kafka-topics --bootstrap-server 127.0.0.1:$port --create --topic "$t" --partitions 3 >/dev/null
    extra=(); [ "$mode" = idempotent ] || extra=(--transactional-id "perf-$t" --transaction-duration-ms "$mode")
    line=$("$here/kafka/run" tool kafka-producer-perf-test --topic "$t" --num-records "$records" --record-size "$size" \
      --throughput -1 "${extra[@]}" --producer-props bootstrap.servers=127.0.0.1:$port acks=all linger.ms=5 \
      enable.idempotence=true 2>"$dir/perf.err" | grep 'records sent' | tail -1) || { echo "perf test failed: $(tail -3 "$dir/perf.err")" >&2; exit 1; }
    # "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, p50, p95, p99, p99.9"
    python3 -c 'import re,sys; l=sys.argv[3]; rps=float(re.search(r"([\d.]+) records/sec", l).group(1)); p99=float(re.search(r"(\d+) ms 99th", l).group(1))
print(sys.argv[1], sys.argv[2], round(rps), p99)' "$1" "$mode" "$line"
  done
}
echo "broker commit_every_ms records/s p99_ms"
for r in $(seq "$rounds"); do
  rm -rf "$dir/data"
  "$spate" serve --cores 2 --data-dir "$dir/data" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) >"$dir/spate.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do "$spate" cluster info -b 127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.1; done
  measure spate
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  rm -rf "$dir/kafka"
  "$here/kafka/run" start --dir "$dir/kafka" --port $port --config transaction.state.log.replication.factor=1 \
    --config transaction.state.log.min.isr=1 >/dev/null
  measure kafka
  "$here/kafka/run" stop --dir "$dir/kafka" >/dev/null
done | tee "$dir/runs"
python3 - "$dir/runs" <<'PY'
import statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if f and f[0] in ("spate", "kafka"):
        runs[(f[0], f[1])].append([float(x) for x in f[2:]])
order = {"idempotent": 0, "10": 1, "100": 2, "1000": 3}
print("\n| broker | commit every (ms) | records/s (median) | p99 ms | runs (records/s) |\n|---|---|---|---|---|")
for (b, m), v in sorted(runs.items(), key=lambda kv: (order[kv[0][1]], kv[0][0])):
    med = [statistics.median(r[i] for r in v) for i in range(2)]
    print(f"| {b} | {m} | {med[0]:,.0f} | {med[1]:.0f} | {', '.join(f'{r[0]:,.0f}' for r in v)} |")
PY
