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
