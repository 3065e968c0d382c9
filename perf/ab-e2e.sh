#!/usr/bin/env bash
# A/B of end-to-end latency between two spate binaries, alternating runs so machine noise falls on both:
#   perf/ab-e2e.sh OLD_BINARY NEW_BINARY [rounds] [rate msg/s] [linger.ms] [acks] [seconds] [record bytes]
# Each run starts the binary on a fresh data directory (--cores 1) and runs `spate bench e2e` (one librdkafka
# producer at the fixed rate, one consumer; 2 s of warm-up left out) against it. Reports the end-to-end
# p50/p99/p99.9 (send time in the record -> consumer) and the broker's CPU time per 1,000 messages
# (utime + stime of all its threads, kernel workers included, from /proc).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} rate=${4:-50000} linger=${5:-0} acks=${6:-1} secs=${7:-8} size=${8:-1024}
source "$(dirname "$0")/ab-lib.sh"
header="binary p50_ms p99_ms p999_ms broker_cpu_ms_per_1000_msgs"
echo "$header"
run() {
  local before after json
  before=$(cpu_ticks)
  json=$("$new" bench e2e -b 127.0.0.1:$port --topic e2e --acks "$acks" --rate "$rate" --linger-ms "$linger" \
    --message-size "$size" --duration "$secs" --warmup 2 --json 2>/dev/null)
  after=$(cpu_ticks)
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); c=j["consumed"]; l=c["latency"]; cpu=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); n=j["produced"]["messages"]; print(sys.argv[5], l["p50_ms"], l["p99_ms"], l["p999_ms"], round(cpu*1e6/n, 3))' "$json" "$before" "$after" "$tick" "$1"
}
alternate "$rounds" run fresh | tee "$dir/runs"
medians 1 "$header"
