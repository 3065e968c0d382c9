#!/usr/bin/env bash
# What the ACL authorizer costs on produce and consume: one Spate data directory holding 10,000
# ACLs, restarted every round with the authorizer off (`--authorizer none`) or on (`--authorizer
# acl`, no super user the client could be), rounds alternating off, on, off, on, ...:
#   perf/authz.sh [SPATE_BINARY] [rounds] [seconds] [record bytes] [partitions] [acls] [rate]
#   (defaults: target/release/spate 3 20 1024 6 10000 20000; ~6 min on the 2-vCPU VM, ~9 with 5 rounds)
# Setup: Spate (`--cores 2`, its own data directory) is started once with `--authorizer acl
# --super-users User:ANONYMOUS`, and confluent-kafka's AdminClient (.venv/bin/python, or
# SPATE_PYTHON) creates, in CreateAcls requests of 1,000 bindings:
#   - the client's own ACLs: User:ANONYMOUS (every PLAINTEXT client) ALLOW WRITE, READ, CREATE and
#     DELETE on topics PREFIXED `bench-` (CREATE and DELETE only for the rounds' topic creation and
#     deletion, outside the measured runs), READ on the group `spate-bench` (the bench consumer's
#     group.id; it assigns partitions, so no group request is made);
#   - `acls` other bindings for User:u0..u999: 50 on the same `bench-` prefix and 50 on the same
#     group (so each check walks other principals' bindings before the client's), the rest on
#     topics t<i>, half LITERAL half PREFIXED (t<i>-, and every 50th a longer team<k>.orders.v<i>-
#     prefix), READ/WRITE/DESCRIBE/ALL/CREATE in turn, every 10th a DENY.
# Then it is stopped (SIGTERM; ACLs are durable in <data_dir>/acls.json) and each round starts it
# again on that directory with `--authorizer none` (off) or `--authorizer acl --super-users
# User:admin` (on; ANONYMOUS is not a super user, so every request is looked up), creates fresh
# topics, and runs the repo's librdkafka client (`spate bench`):
#   produce  as fast as it goes for `seconds`, `partitions` partitions, acks=all, linger.ms 5,
#            batch.size 1 MB: MB/s, msg/s, send-to-delivery p50/p99 (queueing, at saturation);
#   consume  everything that produce wrote, from the start (from disk), one consumer: MB/s;
#   rate     `rate` records/s for SPATE_AUTHZ_RATE_S (15) s, linger.ms 0, acks=all, on a second
#            topic: p50/p99/p99.9 (about one small Produce request per record or two: the run
#            where a per-request cost shows most).
# Around each run it reads the broker's CPU (utime + stime, /proc/<pid>/stat), the client's
# (/usr/bin/time) and the whole machine's busy time (/proc/stat); "other CPU s" is the machine's
# minus the broker's and the client's: anything else that ran (someone's build, another bench).
# `spate_authorization_denials_total` (/metrics) is read before the first and after the last
# measured run of a round (column "denials": must be 0), and after the runs a topic the client
# has no ACL for is created as a probe (on: refused; off: created), so the round shows the
# authorizer was really on or off.
# Before each run it waits while anyone's cargo, rustc or perf/tls.sh runs, and says how long.
# Prints the machine, every run, the medians and the authorizer's cost in %, as markdown.
# SPATE_PERF_DIR: where the scratch directory goes (default: the current directory). The data of a
# round (seconds x the produce rate: ~1 GB/s here) is deleted at its end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spate=$(realpath "${1:-$here/../target/release/spate}")
rounds=${2:-3} secs=${3:-20} size=${4:-1024} parts=${5:-6} nacls=${6:-10000} rate=${7:-20000}
rate_s=${SPATE_AUTHZ_RATE_S:-15}
python=${SPATE_PYTHON:-$here/../.venv/bin/python}
dir=$(mktemp -d -p "${SPATE_PERF_DIR:-$PWD}" spate-authz-XXXX)
tick=$(getconf CLK_TCK)
pid= sampler=
cleanup() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
say() { echo "authz.sh: $*" >&2; }

read -r port admin < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
boot=127.0.0.1:$port

# --- The broker ---------------------------------------------------------------------------------
# start setup|off|on
start() {
  local args
  case $1 in
    setup) args=(--authorizer acl --super-users User:ANONYMOUS) ;;
    off) args=(--authorizer none) ;;
    on) args=(--authorizer acl --super-users User:admin) ;;
  esac
  echo "=== $1 $(date -u +%T)" >>"$dir/spate.log"
  "$spate" serve --cores 2 --data-dir "$dir/data" --listen "$boot" --admin-listen 127.0.0.1:$admin "${args[@]}" >>"$dir/spate.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$admin/v1/ready" >/dev/null 2>&1 && return; sleep 0.1; done
  say "spate did not start ($1): $(tail -3 "$dir/spate.log")"
  exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # user nice system irq softirq
denials() { curl -sf "http://127.0.0.1:$admin/metrics" | awk '/^spate_authorization_denials_total/ {s += $NF} END {print s + 0}'; }
# Someone else's work on the machine: cargo, rustc, a TLS measurement (perf/tls.sh and its
# variants), a JVM (Kafka or its tools), or a Spate broker other than this script's.
others() {
  local p
  pgrep -x cargo || pgrep -x rustc || pgrep -f 'tls[a-z]*\.sh' || pgrep -x java || {
    for p in $(pgrep -f 'spate serve'); do [ "$p" = "${pid:-}" ] || { echo "$p"; return 0; }; done
    return 1
  }
}

# Waits while others() finds anything; appends what it waited to $dir/waits.
quiet() {
  local t0=$SECONDS
  while others >/dev/null; do sleep 30; done
  [ $((SECONDS - t0)) -eq 0 ] || echo "$1: waited $((SECONDS - t0)) s for cargo/rustc/tls/java/another spate" >>"$dir/waits"
}

# timed LABEL CMD...: runs CMD with its stdout in $dir/out; writes "broker client other busy"
# (CPU seconds, and the seconds in which others() found something) to $dir/cpu.
timed() {
  local label=$1 b0 b1 m0 m1
  shift
  quiet "$label"
  : >"$dir/busy"
  (while :; do others >/dev/null && echo >>"$dir/busy"; sleep 1; done) &
  sampler=$!
  b0=$(cpu_ticks) m0=$(machine_ticks)
  if ! /usr/bin/time -f '%U %S' -o "$dir/time" "$@" >"$dir/out" 2>"$dir/err"; then
    say "$label failed: $(tail -5 "$dir/err")"
    exit 1
  fi
  b1=$(cpu_ticks) m1=$(machine_ticks)
  kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=
  awk -v b0="$b0" -v b1="$b1" -v m0="$m0" -v m1="$m1" -v t="$tick" -v busy="$(wc -l <"$dir/busy")" \
    '{ c = $1 + $2; b = (b1 - b0) / t; printf "%.2f %.2f %.2f %d\n", b, c, (m1 - m0) / t - b - c, busy }' "$dir/time" >"$dir/cpu"
}

# --- Setup: the ACLs ----------------------------------------------------------------------------
quiet setup
start setup
t0=$SECONDS
"$python" - "$boot" "$nacls" >"$dir/acls.out" <<'PY'
import sys
from confluent_kafka.admin import (AdminClient, AclBinding, AclBindingFilter, AclOperation as Op,
                                   AclPermissionType as Perm, ResourcePatternType as PT, ResourceType as RT)
boot, n = sys.argv[1], int(sys.argv[2])
admin = AdminClient({"bootstrap.servers": boot})
def b(rt, name, pt, principal, op, allow=True):
    return AclBinding(rt, name, pt, principal, "*", op, Perm.ALLOW if allow else Perm.DENY)
me = "User:ANONYMOUS"
acls = [b(RT.TOPIC, "bench-", PT.PREFIXED, me, op) for op in (Op.WRITE, Op.READ, Op.CREATE, Op.DELETE)]
acls.append(b(RT.GROUP, "spate-bench", PT.LITERAL, me, Op.READ))
ops = [Op.READ, Op.WRITE, Op.DESCRIBE, Op.ALL, Op.CREATE]
for i in range(n):
    p, op, allow = f"User:u{i % 1000}", ops[i % len(ops)], i % 10 != 9
    if i < 50:
        acls.append(b(RT.TOPIC, "bench-", PT.PREFIXED, p, op, allow))
    elif i < 100:
        acls.append(b(RT.GROUP, "spate-bench", PT.LITERAL, p, Op.READ, allow))
    elif i % 2 == 0:
        acls.append(b(RT.TOPIC, f"t{i}", PT.LITERAL, p, op, allow))
    else:
        acls.append(b(RT.TOPIC, f"team{i % 7}.orders.v{i}-" if i % 100 == 1 else f"t{i}-", PT.PREFIXED, p, op, allow))
for at in range(0, len(acls), 1000):
    for f in admin.create_acls(acls[at:at + 1000], request_timeout=60).values():
        f.result()
everything = AclBindingFilter(RT.ANY, None, PT.ANY, None, None, Op.ANY, Perm.ANY)
found = admin.describe_acls(everything, request_timeout=60).result()
print(len(acls), len(found))
PY
read -r asked stored <"$dir/acls.out"
acl_s=$((SECONDS - t0))
[ "$asked" = "$stored" ] || { say "created $asked ACLs, the broker lists $stored"; exit 1; }
say "$stored ACLs created in $acl_s s"
stop
acl_file_bytes=$(stat -c %s "$dir/data/acls.json")

# --- Rounds -------------------------------------------------------------------------------------
# measure ROUND MODE: one round on a broker started with the authorizer MODE; appends rows to
# $dir/runs: "mode round run figures... broker_s client_s other_s busy_s".
measure() {
  local r=$1 mode=$2 t=bench-$2-$1 d0 d1 probe produced free
  # A round writes about `seconds` x 1 GB/s here, deleted at its end; the disk is shared.
  free=$(df -P --block-size=1G "$dir" | awk 'NR == 2 {print $4}')
  [ "$free" -ge $((secs * 11 / 10 + 4)) ] || { say "only $free GB free on $dir for round $r $mode"; exit 1; }
  start "$mode"
  "$spate" topic create -b "$boot" -p "$parts" "$t" "$t-rate" >"$dir/create.out" 2>&1 || true
  grep -q "$t-rate" "$dir/create.out" || { say "could not create $t: $(cat "$dir/create.out")"; exit 1; }
  d0=$(denials)

  timed "round $r $mode produce" "$spate" bench produce -b "$boot" --topic "$t" --partitions "$parts" --acks all \
    --message-size "$size" --duration "$secs" --json
  produced=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["produced"]["messages"])' "$dir/out")
  python3 - "$mode" "$r" produce "$dir/out" $(cat "$dir/cpu") >>"$dir/runs" <<'PY'
import json, sys
mode, r, run, f, broker, client, other, busy = sys.argv[1:]
p = json.load(open(f))["produced"]; l = p["latency"]; gb = p["bytes"] / 1e9
print(mode, r, run, round(p["mb_per_s"], 1), round(p["msg_per_s"]), l["p50_ms"], l["p99_ms"],
      round(float(broker) / gb, 3), round(float(client) / gb, 3), broker, other, busy)
PY

  timed "round $r $mode consume" "$spate" bench consume -b "$boot" --topic "$t" --json
  python3 - "$mode" "$r" consume "$dir/out" "$produced" $(cat "$dir/cpu") >>"$dir/runs" <<'PY'
import json, sys
mode, r, run, f, produced, broker, client, other, busy = sys.argv[1:]
c = json.load(open(f))["consumed"]; gb = c["bytes"] / 1e9
if c["messages"] != int(produced):
    print(f"authz.sh: round {r} {mode}: consumed {c['messages']} of {produced}", file=sys.stderr)
print(mode, r, run, round(c["mb_per_s"], 1), round(c["msg_per_s"]), c["messages"],
      round(float(broker) / gb, 3), round(float(client) / gb, 3), broker, other, busy)
PY

  timed "round $r $mode rate" "$spate" bench produce -b "$boot" --topic "$t-rate" --partitions "$parts" --acks all \
    --message-size "$size" --rate "$rate" --linger-ms 0 --duration "$rate_s" --json
  python3 - "$mode" "$r" rate "$dir/out" $(cat "$dir/cpu") >>"$dir/runs" <<'PY'
import json, sys
mode, r, run, f, broker, client, other, busy = sys.argv[1:]
p = json.load(open(f))["produced"]; l = p["latency"]; k = p["messages"] / 1000
print(mode, r, run, round(p["msg_per_s"]), l["p50_ms"], l["p99_ms"], l["p999_ms"],
      round(float(broker) * 1000 / k, 2), round(float(client) * 1000 / k, 2), broker, other, busy)
PY

  d1=$(denials)
  # The probe: a topic no ACL covers. On: refused (and counted); off: created.
  probe=$("$spate" topic create -b "$boot" -p 1 "probe-$mode-$r" 2>&1 | tr -s ' \n' ' ' || true)
  case $probe in
    *AUTHORIZATION*|*uthoriz*) probe=refused ;;
    *) probe=created ;;
  esac
  echo "$mode $r check $((d1 - d0)) $probe $(denials)" >>"$dir/runs"
  "$spate" topic delete -b "$boot" "$t" "$t-rate" >/dev/null 2>&1 || say "could not delete $t"
  [ "$probe" = created ] && { "$spate" topic delete -b "$boot" "probe-$mode-$r" >/dev/null 2>&1 || true; }
  stop
  grep " $r " "$dir/runs" | grep "^$mode " | sed 's/^/authz.sh: /' >&2
}

started=$(date -u '+%F %T UTC')
: >"$dir/runs"
for r in $(seq "$rounds"); do
  measure "$r" off
  measure "$r" on
done
ended=$(date -u '+%T UTC')

cat <<EOF
# The ACL authorizer on and off, on one Spate

Command: \`perf/authz.sh $*\` (that is: perf/authz.sh $spate $rounds $secs $size $parts $nacls $rate; SPATE_AUTHZ_RATE_S=$rate_s); binary built $(date -u -r "$spate" '+%F %T UTC')
Run: $started - $ended; HEAD at run time $(git -C "$here" rev-parse --short HEAD); newest commit touching src/: $(TZ=UTC git -C "$here" log -1 --format='%h, %cd' --date=format-local:'%F %T UTC' -- "$here/../src")$(git -C "$here" diff --quiet HEAD -- "$here/../src" "$here/../Cargo.toml" "$here/../Cargo.lock" 2>/dev/null || echo '; the tree had uncommitted changes under src/ or Cargo.* at the end of the run (built into the binary only if it is newer than them)')
Machine: $(nproc) vCPU, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); kernel $(uname -r)
Client: \`spate bench\` ($(grep -o '"librdkafka": *"[^"]*"' "$dir/out" | cut -d'"' -f4 | sed 's/^/librdkafka /')), one producer, one consumer, on the same two CPUs as the broker (not pinned)
Broker: \`spate serve --cores 2\` on one data directory for every round, restarted each round: off \`--authorizer none\`, on \`--authorizer acl --super-users User:admin\`; $stored ACL bindings ($asked asked; acls.json $acl_file_bytes bytes), created through CreateAcls in batches of 1,000 in $acl_s s
Workload: produce ${secs} s as fast as it goes ($parts partitions, $size B records, acks=all, linger.ms 5, batch.size 1 MB), then all of it consumed from the start by one consumer, then $rate records/s for $rate_s s (acks=all, linger.ms 0) to a second topic; fresh topics each round; $rounds rounds, off then on in each
Waits for other work (cargo, rustc, tls*.sh, java, another spate serve) before runs: $(if [ -s "$dir/waits" ]; then paste -sd';' "$dir/waits"; else echo none; fi)
Broker log, lines above INFO (not counting the probes' denials): $(grep -vE ' (INFO|DEBUG|TRACE) |^=== ' "$dir/spate.log" | grep -vc 'authorization denied' || true)
EOF
grep -vE ' (INFO|DEBUG|TRACE) |^=== ' "$dir/spate.log" | grep -v 'authorization denied' | head -10 | sed 's/^/    /' || true

python3 - "$dir/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
checks = []
for line in open(sys.argv[1]):
    f = line.split()
    if f[2] == "check":
        checks.append(f)
    else:
        runs[(f[2], f[0])].append((int(f[1]), [float(x) for x in f[3:]]))
cols = {
    "produce": ["MB/s", "msg/s", "p50 ms", "p99 ms", "broker CPU s/GB", "client CPU s/GB", "broker CPU s", "other CPU s", "busy s"],
    "consume": ["MB/s", "msg/s", "records", "broker CPU s/GB", "client CPU s/GB", "broker CPU s", "other CPU s", "busy s"],
    "rate": ["msg/s", "p50 ms", "p99 ms", "p99.9 ms", "broker CPU ms/1k rec", "client CPU ms/1k rec", "broker CPU s", "other CPU s", "busy s"],
}
skip = {"records", "broker CPU s", "other CPU s", "busy s"}
num = lambda x: f"{x:,.0f}" if abs(x) >= 1000 else (f"{x:.0f}" if x == int(x) and abs(x) >= 10 else f"{x:.3g}")
for m, names in cols.items():
    print(f"\n## {m}\n")
    print("| run | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for r in sorted({r for k, v in runs.items() if k[0] == m for r, _ in v}):
        for p in ("off", "on"):
            for rr, v in runs[(m, p)]:
                if rr == r:
                    print(f"| {r} {p} | " + " | ".join(num(x) for x in v) + " |")
    med = {p: [statistics.median(v[i] for _, v in runs[(m, p)]) for i in range(len(names))] for p in ("off", "on")}
    for p in ("off", "on"):
        print(f"| **median {p}** | " + " | ".join(num(x) for x in med[p]) + " |")
    cost = []
    for i, n in enumerate(names):
        a, b = med["off"][i], med["on"][i]
        cost.append("" if n in skip or a == 0 else f"{(b / a - 1) * 100:+.1f}%")
    print("| **on vs off** | " + " | ".join(cost) + " |")
print("\n## checks\n")
print("| round | denials during the runs | probe topic without ACLs | denials at the end of the round (probe included) |\n|---|---|---|---|")
for f in checks:
    print(f"| {f[1]} {f[0]} | {f[3]} | {f[4]} | {f[5]} |")
PY
