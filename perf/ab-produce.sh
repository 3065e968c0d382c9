#!/usr/bin/env bash
# A/B of produce between two spate binaries, alternating runs so machine noise falls on both:
#   perf/ab-produce.sh OLD_BINARY NEW_BINARY [rounds] [seconds] [record bytes] [producers] [partitions]
# Each run starts the binary on a fresh data directory (--cores 1, or $SPATE_AB_CORES) and produces
# records (1 KiB unless told) as fast as one librdkafka producer (or [producers]) goes, to one
# partition (or [partitions]: with SPATE_AB_CORES=2 they spread over both cores, so requests cross
# cores) (`spate bench produce`, linger.ms 5, batch.size 1 MB), once with acks=all and once with
# acks=1. Reports msg/s and the broker's CPU time per GB produced (utime + stime from /proc, so
# what the broker spends, whoever is the bottleneck).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} secs=${4:-5} size=${5:-1024} producers=${6:-1} partitions=${7:-1}
source "$(dirname "$0")/ab-lib.sh"
header="binary acks msg/s broker_cpu_s_per_GB"
echo "$header"
run() {
  local acks before after json
  for acks in all 1; do
    before=$(cpu_ticks)
    json=$("$new" bench produce -b 127.0.0.1:$port --topic "p-$acks" --acks $acks --message-size "$size" --producers "$producers" --partitions "$partitions" --duration "$secs" --json 2>/dev/null)
    after=$(cpu_ticks)
    python3 -c 'import json,sys; j=json.loads(sys.argv[1])["produced"]; cpu=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); gb=j["messages"]*int(sys.argv[7])/1e9; print(sys.argv[5], sys.argv[6], round(j["msg_per_s"]), round(cpu/gb, 2))' "$json" "$before" "$after" "$tick" "$1" "$acks" "$size"
  done
}
alternate "$rounds" run fresh | tee "$dir/runs"
medians 2 "$header"
