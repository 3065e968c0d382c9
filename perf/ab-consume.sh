#!/usr/bin/env bash
# A/B of catch-up consume (reading a topic from disk from its start) between two spate binaries,
# alternating runs against the same data so machine noise falls on both:
#   perf/ab-consume.sh OLD_BINARY NEW_BINARY [rounds] [GiB]
# Writes GiB (default 1) of 1 KiB and of 16 KiB records once (with NEW), then for each round starts each binary
# in turn on that data directory (--cores 1) and reads each topic back with `spate bench consume`
# (librdkafka, one consumer). Prints one line per run and the median per binary and topic.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} gib=${4:-1}
source "$(dirname "$0")/ab-lib.sh"
serve "$new"
"$new" bench produce -b 127.0.0.1:$port --topic t1k --message-size 1024 --messages $((gib * 1048576)) --acks 1 >/dev/null
"$new" bench produce -b 127.0.0.1:$port --topic t16k --message-size 16384 --messages $((gib * 65536)) --acks 1 >/dev/null
stop
header="binary topic MB/s"
echo "$header"
run() {
  local t size mb
  for t in t1k t16k; do
    size=1024; [ $t = t16k ] && size=16384
    mb=$("$new" bench consume -b 127.0.0.1:$port --topic $t --message-size $size --json 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["consumed"]["mb_per_s"]))')
    echo "$1 $t $mb"
  done
}
alternate "$rounds" run | tee "$dir/runs"
medians 2 "$header"
