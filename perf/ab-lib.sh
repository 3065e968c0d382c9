# Sourced by perf/ab-*.sh: a scratch directory under $SPATE_PERF_DIR (or the current one), a free-ish
# port, and starting and stopping one broker binary at a time on them (--cores 1, or
# $SPATE_AB_CORES, to measure cross-core paths). Sets `dir`,
# `port`, `pid` and `tick`; removes the directory and stops the broker on exit.
dir=$(mktemp -d -p "${SPATE_PERF_DIR:-$PWD}" spate-ab-XXXX)
port=$((20000 + RANDOM % 20000))
tick=$(getconf CLK_TCK)
pid=
# By pid: the binaries need not be called spate.
stop() { [ -n "$pid" ] || return 0; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; }
# The runs loop is usually piped into tee, a subshell whose `pid` this shell never sees: on exit,
# also stop anything still serving this directory (matched by it, whatever the binary's name).
trap 'stop; pkill -f -- "--data-dir $dir/data" || true; rm -rf "$dir"' EXIT
# serve BINARY: starts it on $dir/data and waits until it answers.
serve() {
  "$1" serve --cores "${SPATE_AB_CORES:-1}" --data-dir "$dir/data" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) >"$dir/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do "$1" cluster info -b 127.0.0.1:$port >/dev/null 2>&1 && return; sleep 0.1; done
  echo "broker $1 did not start: $(tail -3 "$dir/broker.log")" >&2
  exit 1
}
# alternate ROUNDS FUNC [fresh]: ROUNDS times, the old binary then the new ($old, $new): starts it
# (on an emptied data directory with `fresh`), runs FUNC with `old` or `new` as its argument while
# it serves, and stops it. Pipe it into tee "$dir/runs" for `medians`.
alternate() {
  local r which
  for r in $(seq "$1"); do
    for which in old new; do
      [ "${3:-}" = fresh ] && rm -rf "$dir/data"
      if [ $which = new ]; then serve "$new"; else serve "$old"; fi
      "$2" $which
      stop
    done
  done
}
# The broker's CPU time so far (utime + stime of all its threads), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
# medians NKEYS "HEADER": reads $dir/runs (one line per run: NKEYS key fields, then numbers) and
# prints, for each key, the median of each number (named by HEADER's fields) and the runs.
medians() {
  python3 - "$1" "$2" "$dir/runs" <<'PY'
import statistics, sys, collections
nkeys, names, path = int(sys.argv[1]), sys.argv[2].split()[int(sys.argv[1]):], sys.argv[3]
runs = collections.defaultdict(list)
for line in open(path):
    f = line.split()
    if f:
        runs[tuple(f[:nkeys])].append([float(x) for x in f[nkeys:]])
num = lambda x: f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
for key, v in sorted(runs.items()):
    meds = ", ".join(f"{n} {num(statistics.median(r[i] for r in v))}" for i, n in enumerate(names))
    print(f"median {' '.join(key)}: {meds} over {len(v)} runs: {'; '.join(' '.join(num(x) for x in r) for r in v)}")
PY
}
