#!/usr/bin/env bash
# End-to-end produce/consume figures: the same librdkafka load client (perf/client.rs) against a
# durable Spate and against librdkafka's in-process mock cluster (the client-side ceiling), in one
# run. Writes a markdown report to perf/results/<date>-<commit>.md and prints it.
#
#   perf/run.sh [records] [record-bytes]        (defaults: 300000 1024)
#
# On a 2-core machine the broker runs on one core (--cores 1, pinned by glommio) and the client is
# pinned to the other with taskset, so neither steals the other's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-300000}
size=${2:-1024}
cargo build -j2 --release --bin spate --example perf_client >/dev/null
ncpu=$(nproc)
client_cpu=$((ncpu - 1))
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo "-dirty")
out=perf/results/$(date -u +%Y-%m-%d)-${commit}.md
mkdir -p perf/results
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/spate serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:0 --data-dir "$data" --cores 1 2>"$data.log" &
broker=$!
trap 'rc=$?; kill $broker 2>/dev/null; wait $broker 2>/dev/null || true; rm -rf "$data" "$data.log"; exit $rc' EXIT
for _ in $(seq 100); do grep -q "spate ready" "$data.log" && break; sleep 0.1; done

run() { # name, cpus, args...
    local name=$1 cpus=$2; shift 2
    echo "  running: $name" >&2
    taskset -c "$cpus" target/release/examples/perf_client --json --records $records --size $size "$@"
}
rows=()
for acks in 1 all; do
    # Spate: broker on CPU 0, client on the last CPU. Mock: client and its in-process mock broker
    # share all CPUs, so both set-ups have the same two cores.
    rows+=("spate|acks=$acks|$(run "spate acks=$acks" $client_cpu --bootstrap 127.0.0.1:$port --topic perf-acks-$acks --acks $acks)")
    rows+=("librdkafka mock|acks=$acks|$(run "mock acks=$acks" 0-$client_cpu --mock --topic perf-acks-$acks --acks $acks)")
done

{
    echo "# End-to-end: $records x $size B records, 1 partition, linger.ms=5"
    echo
    echo "- command: \`perf/run.sh $records $size\`"
    echo "- commit: $commit; date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r)"
    echo "- disk: $(df -T "$data" | awk 'NR==2{print $1" "$2}'); spate: --cores 1 (release, pinned to CPU 0), client pinned to CPU $client_cpu; mock: client and mock broker on CPUs 0-$client_cpu"
    echo "- client: perf/client.rs (rdkafka crate, librdkafka $(grep -A1 'name = "rdkafka-sys"' Cargo.lock | tail -1 | cut -d'"' -f2 | cut -d+ -f2))"
    echo "- send->ack is per record from send() to its delivery report in a producer kept saturated, so it is mostly time queued in the client, not broker latency"
    echo
    echo "| target | acks | produce rec/s | produce MB/s | send->ack p50 ms | p99 ms | max ms | consume rec/s | consume MB/s | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for r in "${rows[@]}"; do
        IFS='|' read -r target acks json <<<"$r"
        python3 - "$target" "$acks" "$json" <<'PY'
import json, sys
t, a, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
f = lambda k, d: "n/a" if j[k] is None else f"{j[k]:.{d}f}"
print(f"| {t} | {a} | {f('produce_rec_per_s', 0)} | {f('produce_mb_per_s', 1)} | {f('produce_latency_p50_ms', 2)} | {f('produce_latency_p99_ms', 2)} | {f('produce_latency_max_ms', 2)} | {f('consume_rec_per_s', 0) if t != 'librdkafka mock' else 'n/a'} | {f('consume_mb_per_s', 1) if t != 'librdkafka mock' else 'n/a'} | {j['delivery_errors']} |")
PY
    done
} | tee "$out"
echo "wrote $out" >&2
