"""Checks driven through kcat (librdkafka 2.0.x, as Debian ships it)."""

import json
import shutil

from harness import Skip, check, run_cmd

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
SEP = "|"


def kcat_bin():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        raise Skip("kcat is not installed")
    return path


def kcat(ctx, *args, input_bytes=None, timeout=60):
    cmd = [kcat_bin(), "-b", ctx.bootstrap, "-X", "enable.idempotence=false"] + list(args)
    ctx.log(" ".join(cmd))
    return run_cmd(cmd, input_bytes=input_bytes, timeout=timeout)


def produce(ctx, topic, lines, *extra):
    """Produces `key:value` lines with acks=-1; asserts kcat reports success."""
    data = ("\n".join(lines) + "\n").encode()
    r = kcat(ctx, "-P", "-t", topic, "-K:", "-X", "acks=-1", *extra, input_bytes=data)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, f"kcat -P exited {r.returncode}: {err.strip()[-400:]}"
    assert "ERROR" not in err, f"kcat -P reported: {err.strip()[-400:]}"


def consume(ctx, topic, *extra, fmt=f"%p{SEP}%o{SEP}%k{SEP}%s{SEP}%h\\n"):
    r = kcat(ctx, "-C", "-t", topic, "-e", "-q", "-f", fmt, *extra)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, f"kcat -C exited {r.returncode}: {err.strip()[-400:]}"
    return r.stdout.decode()


def parse(out):
    rows = []
    for line in out.splitlines():
        p, o, k, v, h = line.split(SEP)
        rows.append((int(p), int(o), k, v, h))
    return rows


@check("kcat_metadata")
def kcat_metadata(ctx):
    topic = ctx.topic("kcat-md")
    produce(ctx, topic, ["k:v"])  # auto-creates the topic
    r = kcat(ctx, "-L", "-J")
    assert r.returncode == 0, f"kcat -L exited {r.returncode}: {r.stderr.decode()[-300:]}"
    md = json.loads(r.stdout)
    brokers = [(b["id"], b["name"]) for b in md["brokers"]]
    assert brokers == [(0, ctx.bootstrap)], f"brokers {brokers}, expected [(0, {ctx.bootstrap!r})]"
    assert md["controllerid"] == 0, f"controller id {md['controllerid']}"
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, f"{topic} missing from kcat -L ({sorted(topics)})"
    parts = topics[topic]["partitions"]
    assert [(p["partition"], p["leader"]) for p in parts] == [(0, 0)], f"partitions {parts}"
    assert "error" not in topics[topic], topics[topic]
    # Also the plain text form names the broker.
    r = kcat(ctx, "-L")
    out = r.stdout.decode()
    assert f"broker 0 at {ctx.bootstrap}" in out, f"kcat -L text output lacks the broker: {out[:300]!r}"


def _codec_check(codec):
    def run(ctx):
        topic = ctx.topic(f"kcat-{codec}")
        n = 300
        # Compressible, varied values; keys unique so order is checked exactly.
        lines = [f"key-{i:04d}:value-{i}-" + ("abcdefgh" * (i % 40)) for i in range(n)]
        headers = [("h1", "x"), ("trace", "id-42"), ("h1", "dup"), ("empty", "")]
        hargs = []
        for k, v in headers:
            hargs += ["-H", f"{k}={v}"]
        produce(ctx, topic, lines, "-z", codec, *hargs)
        rows = parse(consume(ctx, topic))
        assert len(rows) == n, f"consumed {len(rows)} records, produced {n}"
        want_h = ",".join(f"{k}={v}" for k, v in headers)
        for i, (p, o, k, v, h) in enumerate(rows):
            ek, ev = lines[i].split(":", 1)
            assert (p, o) == (0, i), f"record {i} at partition {p} offset {o}"
            assert (k, v) == (ek, ev), f"record {i}: got {k!r}:{v[:40]!r}..., want {ek!r}:{ev[:40]!r}..."
            assert h == want_h, f"record {i} headers {h!r}, want {want_h!r}"
        return f"{n} records, codec {codec}"

    return run


for _c in CODECS:
    check(f"kcat_produce_consume_{_c}")(_codec_check(_c))


@check("kcat_consume_from_offset")
def kcat_consume_from_offset(ctx):
    topic = ctx.topic("kcat-offset")
    lines = [f"k{i}:v{i}" for i in range(10)]
    produce(ctx, topic, lines)
    rows = parse(consume(ctx, topic, "-o", "5"))
    got = [(o, k, v) for _p, o, k, v, _h in rows]
    want = [(i, f"k{i}", f"v{i}") for i in range(5, 10)]
    assert got == want, f"-o 5 gave {got}, want {want}"
    # Relative from the end (needs ListOffsets latest): -o -3 gives the last 3.
    rows = parse(consume(ctx, topic, "-o", "-3"))
    got = [o for _p, o, *_ in rows]
    assert got == [7, 8, 9], f"-o -3 gave offsets {got}, want [7, 8, 9]"
    # A count limit from the beginning.
    rows = parse(consume(ctx, topic, "-o", "beginning", "-c", "4"))
    got = [o for _p, o, *_ in rows]
    assert got == [0, 1, 2, 3], f"-o beginning -c 4 gave offsets {got}"
    return "offsets 5.., -3, beginning -c 4"


@check("kcat_json_timestamps_and_null_key")
def kcat_json_timestamps_and_null_key(ctx):
    """Records without a key (no -K) and with an explicit create time come back as produced."""
    topic = ctx.topic("kcat-json")
    data = b"no-key-1\nno-key-2\n"
    r = kcat(ctx, "-P", "-t", topic, "-X", "acks=-1", input_bytes=data)
    assert r.returncode == 0, r.stderr.decode()[-300:]
    r = kcat(ctx, "-C", "-t", topic, "-e", "-q", "-J")
    assert r.returncode == 0, r.stderr.decode()[-300:]
    recs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [(m["offset"], m["key"], m["payload"]) for m in recs] == [(0, None, "no-key-1"), (1, None, "no-key-2")], recs
    for m in recs:
        assert m["tstype"] == "create" and m["ts"] > 1_500_000_000_000, f"timestamp {m['tstype']} {m['ts']}"


@check("kcat_broker_flags_num_partitions_and_auto_create")
def kcat_broker_flags(ctx):
    """--num-partitions sets the partition count of auto-created topics; with
    --auto-create-topics false, Metadata for an unknown topic is UNKNOWN_TOPIC_OR_PARTITION and
    nothing is created."""
    import socket
    import struct

    from harness import recv_frame, request_frame

    b = ctx.start_broker(["--num-partitions", "3"])
    topic = ctx.topic("kcat-np")
    r = run_cmd([kcat_bin(), "-b", b.bootstrap, "-P", "-t", topic, "-K:", "-X", "enable.idempotence=false"],
                input_bytes=b"a:1\nb:2\nc:3\nd:4\n")
    assert r.returncode == 0, f"kcat -P: {r.stderr.decode()[-300:]}"
    r = run_cmd([kcat_bin(), "-b", b.bootstrap, "-L", "-J", "-t", topic])
    md = json.loads(r.stdout)
    [t] = md["topics"]
    assert len(t["partitions"]) == 3, f"auto-created topic has {len(t['partitions'])} partitions, want 3"
    r = run_cmd([kcat_bin(), "-b", b.bootstrap, "-C", "-t", topic, "-e", "-q", "-f", "%k:%s\\n"])
    assert sorted(r.stdout.decode().split()) == ["a:1", "b:2", "c:3", "d:4"], f"read back {r.stdout!r}"
    b.stop()

    b = ctx.start_broker(["--auto-create-topics", "false"])
    name = ctx.topic("kcat-noauto").encode()
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.settimeout(10)
        # Metadata v4 for one topic, allow_auto_topic_creation=true (the broker flag must win).
        s.sendall(request_frame(3, 4, 1, struct.pack(">ih", 1, len(name)) + name + b"\x01"))
        f = recv_frame(s)
    # v4 response: corr, throttle, brokers[...], cluster_id, controller_id, topics[...]
    pos = 8
    (nb,) = struct.unpack_from(">i", f, pos)
    pos += 4
    for _ in range(nb):
        pos += 4
        (hl,) = struct.unpack_from(">h", f, pos)
        pos += 2 + hl + 4
        (rl,) = struct.unpack_from(">h", f, pos)
        pos += 2 + max(rl, 0)
    (cl,) = struct.unpack_from(">h", f, pos)
    pos += 2 + max(cl, 0) + 4
    (nt,) = struct.unpack_from(">i", f, pos)
    pos += 4
    assert nt == 1, f"{nt} topics in the answer"
    (err, tl) = struct.unpack_from(">hh", f, pos)
    got_name = f[pos + 4:pos + 4 + tl]
    assert got_name == name, f"answer names {got_name!r}"
    assert err == 3, f"Metadata for an unknown topic with auto-create off: error {err}, want 3"
    r = run_cmd([kcat_bin(), "-b", b.bootstrap, "-L", "-J"])
    assert json.loads(r.stdout)["topics"] == [], "a topic was created with --auto-create-topics false"
    return "num.partitions=3 honoured; auto-create off refused"


# ---------------------------------------------------------------------------
# Consumer groups: kcat -G (librdkafka 2.0 balanced consumer, classic protocol, range assignor)
# ---------------------------------------------------------------------------

GROUP_FMT = "%p %o %s\\n"


def create_topic_raw(ctx, name, partitions):
    """CreateTopics v2 over a raw socket (kcat cannot create a topic with several partitions)."""
    import socket
    import struct

    from harness import kstring, recv_frame, request_frame

    body = (struct.pack(">i", 1) + kstring(name) + struct.pack(">ihii", partitions, 1, 0, 0)
            + struct.pack(">i", 10000) + b"\x00")  # timeout_ms, validate_only=false
    with socket.create_connection(("127.0.0.1", ctx.port), timeout=15) as s:
        s.settimeout(15)
        s.sendall(request_frame(19, 2, 1, body))
        f = recv_frame(s)
    # corr id, throttle_time_ms, [name, error_code, error_message]
    (n,) = struct.unpack_from(">i", f, 8)
    (ln,) = struct.unpack_from(">h", f, 12)
    got = f[14:14 + ln].decode()
    (err,) = struct.unpack_from(">h", f, 14 + ln)
    assert n == 1 and got == name, f"CreateTopics answer names {got!r}"
    assert err == 0, f"CreateTopics({name}, {partitions} partitions): error {err}"


def produce_per_partition(ctx, topic, partitions, per_partition, prefix):
    """`per_partition` records `<prefix><p>-<i>` into each partition (kcat -p)."""
    for q in range(partitions):
        lines = [f"k:{prefix}{q}-{i}" for i in range(per_partition)]
        produce(ctx, topic, lines, "-p", str(q))


def parse_group_output(out):
    """[(partition, offset, value)] from `-f '%p %o %s\\n'` output."""
    rows = []
    for line in out.splitlines():
        p, o, v = line.split(" ", 2)
        rows.append((int(p), int(o), v))
    return rows


def group_consumers(ctx, group, topic, count, timeout=45.0, expect_records=None):
    """Runs `count` `kcat -G group topic -e` processes at once (auto.offset.reset=earliest,
    auto commit on). kcat 1.7 exits by itself once every assigned partition is at its end; a
    process still running `timeout` seconds after the start (or 10 s after `expect_records`
    records were read by all of them together) gets SIGTERM, on which kcat also closes the
    consumer cleanly (final commit, LeaveGroup). Returns [(rows, stderr, exited_by_itself)]."""
    import os
    import signal
    import subprocess
    import tempfile
    import time

    tmp = tempfile.mkdtemp(prefix="spate-kcat-g-")
    procs = []
    try:
        for i in range(count):
            out = open(os.path.join(tmp, f"out{i}"), "wb")
            err = open(os.path.join(tmp, f"err{i}"), "wb")
            cmd = [kcat_bin(), "-b", ctx.bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
                   "-X", "session.timeout.ms=10000", "-e", "-f", GROUP_FMT, topic]
            ctx.log(" ".join(cmd))
            procs.append((subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err), out, err, i))
        start = time.monotonic()
        deadline = start + timeout
        seen_all_at = None

        def lines_read():
            n = 0
            for i in range(count):
                with open(os.path.join(tmp, f"out{i}"), "rb") as f:
                    n += f.read().count(b"\n")
            return n

        while time.monotonic() < deadline and any(p.poll() is None for p, *_ in procs):
            if expect_records is not None and seen_all_at is None and lines_read() >= expect_records:
                seen_all_at = time.monotonic()
            if seen_all_at is not None and time.monotonic() > seen_all_at + 10:
                break
            time.sleep(0.1)
        results = []
        for p, out, err, i in procs:
            by_itself = p.poll() is not None
            if not by_itself:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
            out.close()
            err.close()
            with open(os.path.join(tmp, f"out{i}"), "rb") as f:
                rows = parse_group_output(f.read().decode("utf-8", "replace"))
            with open(os.path.join(tmp, f"err{i}"), "rb") as f:
                stderr = f.read().decode("utf-8", "replace")
            if by_itself:
                assert p.returncode == 0, f"kcat -G #{i} exited {p.returncode}: {stderr.strip()[-400:]}"
            assert "ERROR" not in stderr, f"kcat -G #{i} reported: {stderr.strip()[-400:]}"
            results.append((rows, stderr, by_itself))
        ctx.log(f"kcat -G x{count} took {time.monotonic() - start:.1f}s")
        return results
    finally:
        for p, out, err, _i in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
            out.close()
            err.close()
        shutil.rmtree(tmp, ignore_errors=True)


def assigned_lines(stderr):
    return [ln.strip() for ln in stderr.splitlines() if "rebalanced" in ln]


@check("kcat_group_consume_and_resume")
def kcat_group_consume_and_resume(ctx):
    """kcat -G (JoinGroup/SyncGroup/OffsetFetch, auto commit) reads every record of a
    4-partition topic produced beforehand; the offsets it commits when it exits make the next
    run in the same group read only what was produced since, and a third run read nothing."""
    topic = ctx.topic("kcat-grp")
    group = f"{topic}-g"
    parts, per = 4, 25
    create_topic_raw(ctx, topic, parts)
    produce_per_partition(ctx, topic, parts, per, "old-")

    [(rows, err, by_itself)] = group_consumers(ctx, group, topic, 1, expect_records=parts * per)
    want = {(q, i, f"old-{q}-{i}") for q in range(parts) for i in range(per)}
    assert len(rows) == len(set(rows)), f"first run read {len(rows) - len(set(rows))} record(s) twice"
    assert set(rows) == want, (f"first run read {len(rows)} records, want {len(want)}; missing e.g. "
                               f"{sorted(want - set(rows))[:3]}, unexpected {sorted(set(rows) - want)[:3]}; "
                               f"{assigned_lines(err)}")
    exited = [by_itself]

    produce_per_partition(ctx, topic, parts, 1, "new-")
    [(rows, err, by_itself)] = group_consumers(ctx, group, topic, 1, expect_records=parts)
    want = {(q, per, f"new-{q}-0") for q in range(parts)}
    assert sorted(rows) == sorted(want), (f"second run in the same group read {sorted(rows)[:8]}, want only the "
                                          f"{parts} new records at offset {per} (committed offsets not resumed); "
                                          f"{assigned_lines(err)}")
    exited.append(by_itself)

    [(rows, err, by_itself)] = group_consumers(ctx, group, topic, 1, timeout=30)
    assert rows == [], f"third run read {len(rows)} record(s), want none: first {rows[:3]}"
    exited.append(by_itself)
    how = "exited at EOF (-e)" if all(exited) else f"exited by itself: {exited}, else SIGTERM"
    return f"{parts * per} records, then {parts} new, then 0; kcat {how}"


@check("kcat_group_two_members_split")
def kcat_group_two_members_split(ctx):
    """Two kcat -G processes started together in one group split a 4-partition topic (range
    assignor, one generation thanks to the initial rebalance delay): each reads a disjoint,
    non-empty set of partitions, together every record exactly once."""
    topic = ctx.topic("kcat-grp2")
    group = f"{topic}-g"
    parts, per = 4, 25
    create_topic_raw(ctx, topic, parts)
    produce_per_partition(ctx, topic, parts, per, "v-")
    res = group_consumers(ctx, group, topic, 2, expect_records=parts * per)
    sets = [{p for p, _o, _v in rows} for rows, _e, _b in res]
    diag = "; ".join(f"#{i}: {assigned_lines(e)}" for i, (_r, e, _b) in enumerate(res))
    assert all(sets), f"a member read nothing: partitions read {sets}; {diag}"
    assert not sets[0] & sets[1], f"both members read partitions {sorted(sets[0] & sets[1])}; {diag}"
    rows = res[0][0] + res[1][0]
    want = {(q, i, f"v-{q}-{i}") for q in range(parts) for i in range(per)}
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} record(s) read twice; {diag}"
    assert set(rows) == want, f"read {len(set(rows))} distinct records, want {len(want)}; {diag}"
    how = "both exited at EOF" if all(b for *_x, b in res) else "stopped with SIGTERM"
    return f"partitions {sorted(sets[0])} / {sorted(sets[1])}, {len(rows)} records; {how}"


@check("kcat_idempotent_produce")
def kcat_idempotent_produce(ctx):
    """kcat (librdkafka 2.0.2) with enable.idempotence=true: InitProducerId and sequenced batches."""
    topic = ctx.topic("kcat-idem")
    lines = [f"k{i}:v{i}" for i in range(200)]
    produce(ctx, topic, lines, "-X", "enable.idempotence=true")
    got = parse(consume(ctx, topic))
    assert len(got) == 200, f"read {len(got)} of 200 records"
    assert sorted(r[3] for r in got) == sorted(f"v{i}" for i in range(200)), "records differ"
    return "200 records"
