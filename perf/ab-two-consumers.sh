#!/usr/bin/env bash
# A/B of two catch-up consumers reading the same partition at once (two consumer groups replaying a
# topic), between two spate binaries, alternating runs against the same data:
#   perf/ab-two-consumers.sh OLD_BINARY NEW_BINARY [rounds] [GiB]
# Writes GiB (default 2) of 1 KiB records to one partition once (with NEW), then for each round
# starts each binary in turn on that data directory (--cores 1) and reads the topic back with
# `spate bench consume` (librdkafka): one consumer alone, then two started together. Prints per
# run each consumer's MB/s, their sum, and the MiB the data directory's block device read meanwhile
# (/proc/diskstats): about GiB x 1024 per consumer that read from the device for itself.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} gib=${4:-2}
source "$(dirname "$0")/ab-lib.sh"
dev=$(basename "$(df --output=source "$dir" | tail -1)")
read_mib() { awk -v d="$dev" '$3 == d {printf "%.0f\n", $6 * 512 / 1048576}' /proc/diskstats; }
serve "$new"
"$new" bench produce -b 127.0.0.1:$port --topic t --message-size 1024 --messages $((gib * 1048576)) --acks 1 >/dev/null
stop
consume() {
  "$new" bench consume -b 127.0.0.1:$port --topic t --message-size 1024 --json 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["consumed"]["mb_per_s"]))'
}
header="binary consumers MB/s_sum disk_MiB"
echo "$header (device $dev)"
run() {
  local before one c1 two
  before=$(read_mib); one=$(consume)
  echo "$1 one $one $(( $(read_mib) - before ))"
  before=$(read_mib)
  consume >"$dir/c1" & c1=$!
  two=$(consume); wait $c1
  echo "$1 two $(( two + $(cat "$dir/c1") )) $(( $(read_mib) - before ))"
}
alternate "$rounds" run | tee "$dir/runs"
medians 2 "$header"
