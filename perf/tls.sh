#!/usr/bin/env bash
# What TLS costs: produce and consume throughput, latency at a fixed rate, and the CPU the broker
# and the client spend per byte, plaintext against TLS 1.3, on one Spate in one run:
#   perf/tls.sh [SPATE_BINARY] [rounds] [records] [rate] [rate seconds] [record bytes]
#   (defaults: target/release/spate 3 2000000 5000 30 1024; ~5 min on the quiet 2-vCPU VM)
# The client must speak TLS, and the repo's librdkafka clients (`spate bench`, perf/client.rs)
# are built without it, so the load comes from Apache Kafka's Java tools (kafka-tools 4.1.1
# through perf/kafka/run, which caches the jars under ~/.cache/spate/kafka).
# It makes a CA and a server certificate (RSA 2048, SAN IP:127.0.0.1) with openssl in a scratch
# directory, starts one Spate (`--cores 2`, its own data directory) with a PLAINTEXT and an SSL
# listener on free ports, and runs rounds alternating plaintext and TLS (P, T, P, T, ...), each
# on fresh 6-partition topics:
#   produce  kafka-producer-perf-test, `records` records as fast as it goes (--throughput -1),
#            acks=all, linger.ms 5, batch.size 65536: records/s, MB/s and the latencies it prints;
#   consume  kafka-consumer-perf-test reading those records back (from the broker's disk):
#            fetch.MB.sec (the fetch phase, without the group join) and MB.sec (all of it);
#   rate     kafka-producer-perf-test at `rate` records/s for `rate seconds`, acks=all,
#            linger.ms 0 (nearly a request per record): avg, p50, p99, p99.9 latency, and the
#            avg and max of the first 5 s window (the client's start) and of the windows after.
# Around each run it reads the broker's CPU time (utime + stime, /proc/<pid>/stat) and the
# client JVM's (/usr/bin/time, JVM start and JIT included), and reports both per GB of record
# bytes (per 1,000 records for `rate`). Client and broker share the machine's CPUs.
# Before each run it waits while anyone's cargo or rustc runs, and says how long it waited; a run
# during which one ran anyway is made again, up to SPATE_TLS_TRIES (3) tries, and the row kept
# says how many seconds of it were disturbed (column "cargo s").
# Prints the machine, every run and the medians with TLS's cost in %, as markdown.
# SPATE_PERF_DIR: where the scratch directory goes (default: the current directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spate=$(realpath "${1:-$here/../target/release/spate}")
rounds=${2:-3} records=${3:-2000000} rate=${4:-5000} rate_s=${5:-30} size=${6:-1024}
tries=${SPATE_TLS_TRIES:-3}
kafka=$here/kafka/run
dir=$(mktemp -d -p "${SPATE_PERF_DIR:-$PWD}" spate-tls-XXXX)
tick=$(getconf CLK_TCK)
pid= sampler=
cleanup() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
say() { echo "tls.sh: $*" >&2; }

# Three free ports on 127.0.0.1 (Kafka PLAINTEXT, SSL, admin HTTP).
read -r plain ssl admin < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# --- Certificates -------------------------------------------------------------------------------
(
  cd "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=spate-perf-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
)
printf 'security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location=%s\n' "$dir/ca.pem" >"$dir/ssl.properties"
: >"$dir/plain.properties"

# --- The broker ---------------------------------------------------------------------------------
"$spate" serve --cores 2 --data-dir "$dir/data" --admin-listen 127.0.0.1:$admin \
  --listeners PLAINTEXT://127.0.0.1:$plain,SSL://127.0.0.1:$ssl \
  --ssl-cert-file "$dir/server.pem" --ssl-key-file "$dir/server.key" >"$dir/spate.log" 2>&1 &
pid=$!
for _ in $(seq 100); do "$spate" cluster info -b 127.0.0.1:$plain >/dev/null 2>&1 && break; sleep 0.1; done
"$spate" cluster info -b 127.0.0.1:$plain >/dev/null 2>&1 || { say "spate did not start: $(tail -3 "$dir/spate.log")"; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

# What the broker picks for a client offering the Java 17 client's TLS 1.3 suites in its order.
negotiated=$(openssl s_client -connect 127.0.0.1:$ssl -CAfile "$dir/ca.pem" -verify_return_error \
  -ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256 </dev/null 2>/dev/null |
  sed -n 's/^New, \(.*\)$/\1/p' | head -1)

# Waits while cargo or rustc (anyone's) runs; appends what it waited to $dir/waits.
quiet() {
  local t0=$SECONDS
  while pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; do sleep 5; done
  [ $((SECONDS - t0)) -eq 0 ] || echo "$1: waited $((SECONDS - t0)) s for cargo/rustc" >>"$dir/waits"
}

# timed LABEL CMD...: runs CMD with its output in $dir/out and its CPU (user + sys seconds) in
# $dir/client; the broker's CPU seconds over the run in $dir/broker; in BUSY the seconds in which
# cargo or rustc ran meanwhile. Fails with the output's tail.
timed() {
  local label=$1 b0 b1
  shift
  quiet "$label"
  # Seconds during the run in which someone's cargo or rustc ran: the row's last column.
  : >"$dir/busy"
  (while :; do { pgrep -x cargo || pgrep -x rustc; } >/dev/null && echo >>"$dir/busy"; sleep 1; done) &
  sampler=$!
  b0=$(cpu_ticks)
  if ! /usr/bin/time -f '%U %S' -o "$dir/time" "$@" >"$dir/out" 2>&1; then
    say "$label failed: $(tail -5 "$dir/out")"
    exit 1
  fi
  b1=$(cpu_ticks)
  kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=
  export BUSY; BUSY=$(wc -l <"$dir/busy")
  awk '{print $1 + $2}' "$dir/time" >"$dir/client"
  awk -v a="$b0" -v b="$b1" -v t="$tick" 'BEGIN { print (b - a) / t }' >"$dir/broker"
}

# again LABEL TRY: true if the try just made saw cargo or rustc and may be made again (notes it).
again() {
  [ "$BUSY" -gt 0 ] && [ "$2" -lt "$tries" ] || return 1
  echo "$1: cargo/rustc ran during try $2 ($BUSY s), made again" >>"$dir/waits"
}

# measure ROUND PROTO: one round's three runs on one listener; appends rows to $dir/runs. A run
# during which cargo or rustc ran is made again (on a fresh topic for the producers), up to
# $tries times in all; the last try's row is kept, its "cargo s" column says if it was quiet.
measure() {
  local r=$1 proto=$2 port=$plain props=$dir/plain.properties t l line try
  [ "$proto" = tls ] && { port=$ssl; props=$dir/ssl.properties; }

  for try in $(seq "$tries"); do
    t=tp-$proto-$r-$try
    "$spate" topic create -b 127.0.0.1:$plain -p 6 "$t" >/dev/null
    timed "round $r $proto produce" "$kafka" tool kafka-producer-perf-test --topic "$t" --num-records "$records" \
      --record-size "$size" --throughput -1 --producer-props bootstrap.servers=127.0.0.1:$port acks=all linger.ms=5 \
      batch.size=65536 --producer.config "$props"
    line=$(grep 'records sent' "$dir/out" | tail -1)
    # "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, p50 ms 50th, p95 ms 95th, p99 ms 99th, p999 ms 99.9th."
    python3 - "$r" "$proto" "$line" "$(cat "$dir/broker")" "$(cat "$dir/client")" "$records" "$size" >"$dir/row" <<'PY'
import os, re, sys
r, proto, l, broker, client, n, size = sys.argv[1:]
g = lambda p: float(re.search(p, l).group(1))
gb = int(n) * int(size) / 1e9
print(proto, r, "produce", g(r"([\d.]+) records/sec"), g(r"\(([\d.]+) MB/sec"), g(r"([\d.]+) ms avg"),
      g(r"(\d+) ms 50th"), g(r"(\d+) ms 99th"), g(r"(\d+) ms 99.9th"), g(r"([\d.]+) ms max"),
      round(float(broker) / gb, 3), round(float(client) / gb, 3), os.environ["BUSY"])
PY
    again "round $r $proto produce" "$try" || break
    "$spate" topic delete -b 127.0.0.1:$plain "$t" >/dev/null || say "could not delete $t"
  done
  cat "$dir/row" >>"$dir/runs"

  for try in $(seq "$tries"); do
    timed "round $r $proto consume" "$kafka" tool kafka-consumer-perf-test --bootstrap-server 127.0.0.1:$port \
      --topic "$t" --messages "$records" --timeout 60000 --consumer.config "$props"
    # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    line=$(grep -E '^[0-9]{4}-.*,.*,' "$dir/out" | tail -1)
    python3 - "$r" "$proto" "$line" "$(cat "$dir/broker")" "$(cat "$dir/client")" "$records" "$size" >"$dir/row" <<'PY'
import os, sys
r, proto, l, broker, client, n, size = sys.argv[1:]
f = [x.strip() for x in l.split(",")]
if int(f[4]) != int(n):
    print(f"tls.sh: round {r} {proto} consume read {f[4]} of {n} records", file=sys.stderr)
gb = int(f[4]) * int(size) / 1e9
print(proto, r, "consume", float(f[8]), float(f[9]), float(f[3]), float(f[6]), int(f[4]),
      round(float(broker) / gb, 3), round(float(client) / gb, 3), os.environ["BUSY"])
PY
    again "round $r $proto consume" "$try" || break
  done
  cat "$dir/row" >>"$dir/runs"
  "$spate" topic delete -b 127.0.0.1:$plain "$t" >/dev/null || say "could not delete $t"

  for try in $(seq "$tries"); do
    l=tl-$proto-$r-$try
    "$spate" topic create -b 127.0.0.1:$plain -p 6 "$l" >/dev/null
    timed "round $r $proto rate" "$kafka" tool kafka-producer-perf-test --topic "$l" --num-records $((rate * rate_s)) \
      --record-size "$size" --throughput "$rate" --producer-props bootstrap.servers=127.0.0.1:$port acks=all linger.ms=0 \
      batch.size=65536 --producer.config "$props"
    # The final line as for produce, after one line per 5 s window: "N records sent, X records/sec
    # (Y MB/sec), A ms avg latency, M ms max latency." The first window holds the client's start
    # (connection, handshake, JIT), which sets the whole run's p99 at this rate; the windows after
    # it give the steady figures.
    python3 - "$r" "$proto" "$dir/out" "$(cat "$dir/broker")" "$(cat "$dir/client")" $((rate * rate_s)) >"$dir/row" <<'PY'
import os, re, sys
r, proto, out, broker, client, n = sys.argv[1:]
lines = [l for l in open(out) if "records sent" in l]
l = lines[-1]
g = lambda p, l=l: float(re.search(p, l).group(1))
win = [(g(r"^(\d+) records sent", w), g(r"([\d.]+) ms avg", w), g(r"([\d.]+) ms max", w)) for w in lines[:-1]]
first, rest = win[:1] or [(0, 0, 0)], win[1:] or [(0, 0, 0)]
steady_avg = sum(c * a for c, a, _ in rest) / max(1, sum(c for c, _, _ in rest))
print(proto, r, "rate", g(r"([\d.]+) records/sec"), g(r"([\d.]+) ms avg"), g(r"(\d+) ms 50th"),
      g(r"(\d+) ms 99th"), g(r"(\d+) ms 99.9th"), g(r"([\d.]+) ms max"), first[0][1], first[0][2],
      round(steady_avg, 2), max(m for _, _, m in rest),
      round(float(broker) * 1e6 / int(n), 1), round(float(client) * 1e6 / int(n), 1), os.environ["BUSY"])
PY
    "$spate" topic delete -b 127.0.0.1:$plain "$l" >/dev/null || say "could not delete $l"
    again "round $r $proto rate" "$try" || break
  done
  cat "$dir/row" >>"$dir/runs"
  tail -3 "$dir/runs" | sed 's/^/tls.sh: /' >&2
}

# --- The run ------------------------------------------------------------------------------------
started=$(date -u '+%F %T UTC')
: >"$dir/runs"
for r in $(seq "$rounds"); do
  measure "$r" plain
  measure "$r" tls
done
ended=$(date -u '+%T UTC')

cat <<EOF
# TLS against plaintext on one Spate

Command: \`perf/tls.sh $*\` (that is: perf/tls.sh $spate $rounds $records $rate $rate_s $size; SPATE_TLS_TRIES=$tries); binary built $(date -u -r "$spate" '+%F %T UTC')
Run: $started - $ended; HEAD at run time $(git -C "$here" rev-parse --short HEAD); newest commit touching src/: $(TZ=UTC git -C "$here" log -1 --format='%h, %cd' --date=format-local:'%F %T UTC' -- "$here/../src")$(git -C "$here" diff --quiet HEAD -- "$here/../src" "$here/../Cargo.toml" "$here/../Cargo.lock" 2>/dev/null || echo '; the tree had uncommitted changes under src/ or Cargo.* at the end of the run (built into the binary only if it is newer than them)')
Machine: $(nproc) vCPU, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); kernel $(uname -r)
Java: $(java -version 2>&1 | head -1); client kafka-tools ${KAFKA_VERSION:-4.1.1}; $(openssl version | cut -d' ' -f1-2)
Broker: \`spate serve --cores 2\`, listeners PLAINTEXT and SSL on 127.0.0.1, RSA 2048 certificate; TLS negotiated for the Java client's suites (openssl s_client): ${negotiated:-unknown}
Workload: $records records of $size B per produce run (6 partitions, acks=all, linger.ms 5, batch.size 65536), read back by one consumer; fixed rate $rate records/s for $rate_s s (acks=all, linger.ms 0); $rounds rounds, plaintext then TLS in each
Waits for cargo/rustc before runs, and runs made again (column "cargo s": seconds of a run in which someone's cargo or rustc ran): $(if [ -s "$dir/waits" ]; then paste -sd';' "$dir/waits"; else echo none; fi)
Broker log, lines above INFO: $(grep -cvE ' (INFO|DEBUG|TRACE) ' "$dir/spate.log" || true)
EOF
grep -vE ' (INFO|DEBUG|TRACE) ' "$dir/spate.log" | head -10 | sed 's/^/    /' || true

python3 - "$dir/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    runs[(f[2], f[0])].append((int(f[1]), [float(x) for x in f[3:]]))
cols = {
    "produce": ["records/s", "MB/s", "avg ms", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "broker CPU s/GB", "client CPU s/GB", "cargo s"],
    "consume": ["fetch MB/s", "fetch records/s", "MB/s with join", "join ms", "records", "broker CPU s/GB", "client CPU s/GB", "cargo s"],
    "rate": ["records/s", "avg ms", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "first 5 s avg ms", "first 5 s max ms",
             "after 5 s avg ms", "after 5 s max ms", "broker CPU ms/1k rec", "client CPU ms/1k rec", "cargo s"],
}
# For each measure, whether more is better (throughput) or worse (latency, CPU).
better = {"records/s": 1, "MB/s": 1, "fetch MB/s": 1, "fetch records/s": 1, "MB/s with join": 1}
skip = {"records", "join ms", "cargo s"}
num = lambda x: f"{x:,.0f}" if abs(x) >= 1000 else (f"{x:.0f}" if x == int(x) and abs(x) >= 10 else f"{x:.3g}")
for m, names in cols.items():
    print(f"\n## {m}\n")
    print("| run | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for r in sorted({r for k, v in runs.items() if k[0] == m for r, _ in v}):
        for p in ("plain", "tls"):
            for rr, v in runs[(m, p)]:
                if rr == r:
                    print(f"| {r} {p} | " + " | ".join(num(x) for x in v) + " |")
    med = {p: [statistics.median(v[i] for _, v in runs[(m, p)]) for i in range(len(names))] for p in ("plain", "tls")}
    for p in ("plain", "tls"):
        print(f"| **median {p}** | " + " | ".join(num(x) for x in med[p]) + " |")
    cost = []
    for i, n in enumerate(names):
        a, b = med["plain"][i], med["tls"][i]
        cost.append("" if n in skip or a == 0 else f"{(b / a - 1) * 100:+.0f}%")
    print("| **TLS vs plain** | " + " | ".join(cost) + " |")
PY
