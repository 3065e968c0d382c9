#!/usr/bin/env bash
# The broker's per-request cost under different network/runtime settings, alternating rounds so
# machine noise falls on every variant:
#   perf/runtime-ab.sh BINARY [rounds] VARIANT...
# A VARIANT is `label` or `label:ITEM,ITEM...`, each ITEM an extra `spate serve` flag
# (`--flag=value`) or an environment variable for it (`NAME=value`).
# Each run starts BINARY on a fresh data directory with --cores 1 (its executor pinned to CPU 0)
# and measures, with the client pinned to CPU 1:
#   - `ping` (perf/ping.rs) round trips, one at a time on one connection: ApiVersions, Produce
#     (acks=1, 100 B), Fetch (max.wait 0, served from memory); back to back and with a 200 us
#     pause before each request (a lightly loaded connection);
#   - `spate bench produce` 100 B records, acks=1, one librdkafka producer, 5 s: msg/s;
#   - `spate bench e2e` 1 KiB records at 5,000 msg/s, acks=1, linger.ms 0, 6 s: end-to-end p50
#     and p99 (a librdkafka producer and consumer, which pipeline and long-poll).
# Every line carries the broker's CPU time per round trip (or per 1,000 messages), all threads.
set -euo pipefail
bin=$1 rounds=$2
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
ping=${PING:-$here/target/release/examples/ping}
base=$(mktemp -d -p "${SPATE_PERF_DIR:-$PWD}" spate-rt-XXXX)
trap 'pkill -f "serve --cores 1 --data-dir $base" || true; rm -rf "$base"' EXIT
port=$((20000 + RANDOM % 20000))
tick=$(getconf CLK_TCK)
echo "# $(date -u +%FT%TZ) $(git -C "$here" rev-parse --short HEAD) $(uname -r) $(nproc) CPUs" >&2
for r in $(seq "$rounds"); do
  for v in "$@"; do
    label=${v%%:*}
    flags=() envs=()
    if [[ $v == *:* ]]; then
      IFS=, read -ra items <<<"${v#*:}"
      for i in "${items[@]}"; do if [[ $i == --* ]]; then flags+=("$i"); else envs+=("$i"); fi; done
    fi
    rm -rf "$base/data"
    env "${envs[@]}" "$bin" serve --cores 1 --data-dir "$base/data" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) "${flags[@]}" >"$base/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do "$bin" cluster info -b 127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.1; done
    for gap in 0 200; do
      for req in api-versions produce fetch; do
        "$ping" --bootstrap 127.0.0.1:$port --request $req --topic "t-$req-$gap" --cpu 1 --broker-pid $pid \
          --gap-us $gap --count 10000 --warmup 1000 --label "$label" --json
      done
    done
    before=$(awk '{print $14 + $15}' /proc/$pid/stat)
    json=$(taskset -c 1 "$bin" bench produce -b 127.0.0.1:$port --topic bench --acks 1 --message-size 100 --duration 5 --json 2>/dev/null)
    after=$(awk '{print $14 + $15}' /proc/$pid/stat)
    python3 -c 'import json,sys; j=json.loads(sys.argv[1])["produced"]; cpu=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); print(json.dumps({"label":sys.argv[5],"request":"bench-produce-100B","msg_per_s":round(j["msg_per_s"]),"broker_cpu_us_per_1k_msgs":round(cpu*1e9/j["messages"],1)}))' "$json" "$before" "$after" "$tick" "$label"
    json=$(taskset -c 1 "$bin" bench e2e -b 127.0.0.1:$port --topic e2e --acks 1 --message-size 1024 --rate 5000 --linger-ms 0 --duration 6 --json 2>/dev/null)
    python3 -c 'import json,sys; l=json.loads(sys.argv[1])["consumed"]["latency"]; print(json.dumps({"label":sys.argv[2],"request":"bench-e2e-5k-linger0","p50_us":l["p50_ms"]*1000,"p99_us":l["p99_ms"]*1000}))' "$json" "$label"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done | tee "$base/runs.jsonl"
python3 - "$base/runs.jsonl" <<'PY'
import json, statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    j = json.loads(line)
    runs[(j["request"], j.get("gap_us", ""), j["label"])].append(j)
med = lambda v, k: statistics.median(x[k] for x in v)
print(f"\n{'request':<20} {'gap us':>6} {'variant':<16} {'p50 us':>7} {'p99 us':>7} {'mean us':>8} {'broker CPU us':>14} {'client CPU us':>14}   (medians of {len(next(iter(runs.values())))} runs)")
for (req, gap, label), v in runs.items():
    if req.startswith("bench-e2e"):
        print(f"{req:<20} {'':>6} {label:<16} end-to-end p50 {med(v,'p50_us'):,.0f} us, p99 {med(v,'p99_us'):,.0f} us")
    elif req.startswith("bench"):
        print(f"{req:<20} {'':>6} {label:<16} {med(v,'msg_per_s'):>10,.0f} msg/s, broker CPU {med(v,'broker_cpu_us_per_1k_msgs'):.0f} us per 1,000 msgs")
    else:
        print(f"{req:<20} {gap:>6} {label:<16} {med(v,'p50_us'):>7.0f} {med(v,'p99_us'):>7.0f} {med(v,'mean_us'):>8.1f} {med(v,'broker_cpu_us'):>14.1f} {med(v,'client_cpu_us'):>14.1f}")
PY
