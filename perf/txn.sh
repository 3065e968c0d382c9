#!/usr/bin/env bash
# Transactional produce beside the idempotent producer, on Spate and on Apache Kafka, alternating
# brokers each round so machine noise falls on both:
#   perf/txn.sh SPATE_BINARY [rounds] [seconds] [record bytes]
# Each round starts Spate (--cores 2) and then Kafka (perf/kafka/run, one combined node) on fresh
# data directories and runs `spate bench produce` (librdkafka, acks=all, linger.ms 5, batch.size
# 1 MB, 3 partitions) four times: idempotent, and transactional committing every 10, 100 and
# 1,000 records (--transaction-records). Reports msg/s, the p99 send-to-delivery latency and the
# broker's CPU time per GB produced (utime + stime from /proc). Spate fdatasyncs before every
# acks=all answer (its default); Kafka does not (its default leaves it to the page cache).
set -euo pipefail
spate=$(realpath "$1") rounds=${2:-2} secs=${3:-10} size=${4:-1024}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d -p "${SPATE_PERF_DIR:-$PWD}" spate-txn-XXXX)
port=$((20000 + RANDOM % 20000))
tick=$(getconf CLK_TCK)
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
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # broker-name broker-pid
  local mode n before after json
  for mode in idempotent 10 100 1000; do
    n=(); [ "$mode" = idempotent ] || n=(--transaction-records "$mode")
    before=$(cpu_ticks "$2")
    json=$("$spate" bench produce -b 127.0.0.1:$port --topic "t-$mode" --partitions 3 --acks all --message-size "$size" \
      --duration "$secs" "${n[@]}" -X enable.idempotence=true --json 2>"$dir/bench.err") || { echo "bench failed: $(tail -3 "$dir/bench.err")" >&2; exit 1; }
    after=$(cpu_ticks "$2")
    python3 -c 'import json,sys; j=json.loads(sys.argv[1])["produced"]; cpu=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); gb=j["messages"]*int(sys.argv[7])/1e9
print(sys.argv[5], sys.argv[6], round(j["msg_per_s"]), round(j["latency"]["p99_ms"], 2), round(cpu/gb, 2))' \
      "$json" "$before" "$after" "$tick" "$1" "$mode" "$size"
  done
}
header="broker records_per_txn msg/s p99_ms broker_cpu_s_per_GB"
echo "$header"
for r in $(seq "$rounds"); do
  rm -rf "$dir/data"
  "$spate" serve --cores 2 --data-dir "$dir/data" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) >"$dir/spate.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do "$spate" cluster info -b 127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.1; done
  measure spate "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  rm -rf "$dir/kafka"
  "$here/kafka/run" start --dir "$dir/kafka" --port $port --config transaction.state.log.replication.factor=1 \
    --config transaction.state.log.min.isr=1 >/dev/null
  measure kafka "$(cat "$dir/kafka/kafka.pid")"
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
print("\n| broker | records per transaction | msg/s (median) | p99 ms | broker CPU s/GB | runs (msg/s) |\n|---|---|---|---|---|---|")
for (b, m), v in sorted(runs.items(), key=lambda kv: (order[kv[0][1]], kv[0][0])):
    med = [statistics.median(r[i] for r in v) for i in range(3)]
    print(f"| {b} | {m} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.2f} | {', '.join(f'{r[0]:,.0f}' for r in v)} |")
PY
