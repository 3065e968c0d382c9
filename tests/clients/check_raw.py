"""Checks that talk to the broker over raw sockets: bad input and hand-built ApiVersions frames."""

import os
import socket
import struct
import time

from harness import (api_versions_v0_roundtrip, check, compact_string, kstring, parse_api_versions_v0,
                     parse_api_versions_v3, recv_frame, request_frame, uvarint, wait_closed)

UNSUPPORTED_VERSION = 35
API_VERSIONS = 18
CORE_APIS = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
             10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
             15: "DescribeGroups", 16: "ListGroups", 17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics",
             20: "DeleteTopics", 21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
             24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
             28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
             32: "DescribeConfigs", 33: "AlterConfigs", 35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
             42: "DeleteGroups", 43: "ElectLeaders", 44: "IncrementalAlterConfigs",
             45: "AlterPartitionReassignments", 46: "ListPartitionReassignments", 47: "OffsetDelete",
             48: "DescribeClientQuotas", 49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
             51: "AlterUserScramCredentials", 55: "DescribeQuorum", 60: "DescribeCluster",
             61: "DescribeProducers", 65: "DescribeTransactions", 66: "ListTransactions",
             68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe"}


def connect(ctx, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", ctx.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def api_versions_v3_body():
    return compact_string("spate-client-tests") + compact_string("1.0") + uvarint(0)


def assert_healthy(ctx):
    """The broker still answers a fresh raw client and a real client after the abuse."""
    assert ctx.broker.alive(), "broker process exited"
    corr, err, apis = api_versions_v0_roundtrip(ctx.port, correlation_id=4242)
    assert (corr, err) == (4242, 0), f"ApiVersions v0 after bad input: correlation {corr}, error {err}"
    assert API_VERSIONS in apis, "ApiVersions missing from the ApiVersions answer"
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return
    md = AdminClient({"bootstrap.servers": ctx.bootstrap}).list_topics(timeout=15)
    assert [b.id for b in md.brokers.values()] == [0], f"metadata after bad input lists brokers {md.brokers}"


def _expect_closed(ctx, payload, what, half_close=False):
    s = connect(ctx)
    try:
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return  # already closed by the broker: fine
        assert wait_closed(s, 10.0), f"{what}: connection still open 10s later"
    finally:
        s.close()


@check("raw_garbage_bytes")
def raw_garbage_bytes(ctx):
    # An HTTP request: its first 4 bytes read as a ~1.2 GB frame length.
    _expect_closed(ctx, b"GET / HTTP/1.1\r\nHost: spate\r\n\r\n", "HTTP request")
    # Random bytes with a plausible small length and an API key Kafka does not define.
    body = struct.pack(">hhi", 0x7ABC, 0, 1) + os.urandom(40)
    _expect_closed(ctx, struct.pack(">i", len(body)) + body, "unknown API key 0x7abc")
    # A known API and version whose header is fine but whose body is cut short (Metadata v12:
    # two topics announced, none present).
    bad = request_frame(3, 12, 5, uvarint(3), flexible_header=True)
    _expect_closed(ctx, bad, "Metadata v12 with a truncated body")
    # A flexible header whose client id length runs past the end of the frame.
    hdr = struct.pack(">hhi", API_VERSIONS, 3, 6) + struct.pack(">h", 3000)
    _expect_closed(ctx, struct.pack(">i", len(hdr)) + hdr, "header with overlong client id")
    assert_healthy(ctx)
    return "HTTP, unknown key, bad body, bad header all closed; broker healthy"


def _huge_count_requests():
    """(label, frame) pairs: one small, well-framed request per implemented API whose first
    array announces ~2^31 (or ~2^32 compact) elements while only a few bytes follow."""
    big = struct.pack(">i", 0x7FFFFFFF)
    big_compact = b"\xff\xff\xff\xff\x0f"
    return [
        ("Metadata v1", request_frame(3, 1, 1, big + b"\x00\x01a")),
        ("Metadata v12 (compact)", request_frame(3, 12, 1, big_compact + b"\x01\x02", flexible_header=True)),
        ("Produce v3", request_frame(0, 3, 1, struct.pack(">hhi", -1, -1, 1000) + big + b"\x00\x01t")),
        ("Fetch v4", request_frame(1, 4, 1, struct.pack(">iiiib", -1, 100, 1, 1000, 0) + big)),
        ("ListOffsets v1", request_frame(2, 1, 1, struct.pack(">i", -1) + big)),
        ("CreateTopics v2", request_frame(19, 2, 1, big)),
        ("DeleteTopics v1", request_frame(20, 1, 1, big)),
        ("OffsetForLeaderEpoch v2", request_frame(23, 2, 1, big)),
        ("DescribeConfigs v1", request_frame(32, 1, 1, big)),
    ]


@check("raw_huge_array_count")
def raw_huge_array_count(ctx):
    """A tiny request whose array count claims billions of elements must be refused (connection
    closed), not trusted: the count says nothing about the bytes actually present. Each API is
    tried on its own fresh broker so one crash does not hide the others."""
    crashed, stayed_open = [], []
    for label, frame in _huge_count_requests():
        b = ctx.start_broker([])
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        try:
            s.sendall(frame)
            closed = wait_closed(s, 10.0)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        finally:
            s.close()
        # Give an aborting process a moment to finish dying before looking.
        for _ in range(20):
            if not b.alive():
                break
            time.sleep(0.025)
        if not b.alive():
            tail = [ln for ln in b.log_tail(1000).splitlines() if "memory allocation" in ln or "panicked" in ln]
            crashed.append((label, tail[0].strip() if tail else f"exit {b.proc.returncode}"))
        elif not closed:
            stayed_open.append(label)
        b.stop()
    assert not crashed, (f"broker process died on {len(crashed)} of {len(_huge_count_requests())} "
                         f"({', '.join(lbl for lbl, _ in crashed)}); first: {crashed[0][1]!r}")
    assert not stayed_open, f"connection left open after: {stayed_open}"
    return f"{len(_huge_count_requests())} APIs refused the request, broker survived"


@check("raw_huge_and_negative_length_prefix")
def raw_huge_and_negative_length_prefix(ctx):
    _expect_closed(ctx, struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 64, "length 2^31-1")
    _expect_closed(ctx, struct.pack(">i", 200 * 1024 * 1024) + b"\x00" * 64, "length 200 MiB")
    _expect_closed(ctx, struct.pack(">i", -1) + b"\x00" * 64, "length -1")
    _expect_closed(ctx, struct.pack(">i", 3) + b"abc", "length 3 (shorter than a header)")
    assert_healthy(ctx)


@check("raw_truncated_frames")
def raw_truncated_frames(ctx):
    full = request_frame(API_VERSIONS, 3, 9, api_versions_v3_body(), flexible_header=True)
    # Body cut short, then the client half-closes: EOF inside a frame.
    _expect_closed(ctx, full[:-5], "frame missing its last 5 bytes", half_close=True)
    # Only part of the length prefix.
    _expect_closed(ctx, full[:2], "2 bytes of a length prefix", half_close=True)
    # A frame that is internally short: the length covers the bytes, but the ApiVersions v3 body
    # inside is cut (its compact strings run past the end).
    hdr = struct.pack(">hhi", API_VERSIONS, 3, 10) + struct.pack(">h", 1) + b"c" + uvarint(0)
    body = uvarint(50) + b"short"
    payload = hdr + body
    s = connect(ctx)
    try:
        s.sendall(struct.pack(">i", len(payload)) + payload)
        # Either refused (closed) or answered: answering ApiVersions despite a bad body is what
        # Kafka does (it only needs the header); a hang is the failure.
        try:
            frame = recv_frame(s)
            corr, err = struct.unpack_from(">ih", frame, 0)
            assert corr == 10, f"answer to the cut ApiVersions body has correlation id {corr}"
        except ConnectionError:
            pass
    finally:
        s.close()
    assert_healthy(ctx)


@check("raw_unimplemented_api_closes")
def raw_unimplemented_api_closes(ctx):
    """DescribeDelegationToken (key 41: Spate has no delegation tokens) is not advertised; a
    client that sends it anyway is disconnected (as Kafka does for APIs it does not know), and
    other connections are unaffected."""
    bystander = connect(ctx)
    try:
        _, _, apis = api_versions_v0_roundtrip(ctx.port)
        assert 41 not in apis, f"DescribeDelegationToken is advertised now ({apis[41]}): pick another unimplemented API here"
        # DescribeDelegationToken v0: owners null (every owner).
        body = struct.pack(">i", -1)
        _expect_closed(ctx, request_frame(41, 0, 77, body), "DescribeDelegationToken v0")
        # Also an implemented API at a version outside the advertised range (Produce v0).
        _expect_closed(ctx, request_frame(0, 0, 78, struct.pack(">hii", 1, 1000, 0)), "Produce v0")
        bystander.sendall(request_frame(API_VERSIONS, 0, 79, b""))
        corr, err, _ = parse_api_versions_v0(recv_frame(bystander))
        assert (corr, err) == (79, 0), f"bystander connection answer: correlation {corr}, error {err}"
    finally:
        bystander.close()
    assert_healthy(ctx)


@check("raw_api_versions_unsupported_version")
def raw_api_versions_unsupported_version(ctx):
    s = connect(ctx)
    try:
        # ApiVersions v99 as a newer client would send it: header v2, v3-style body.
        s.sendall(request_frame(API_VERSIONS, 99, 31337, api_versions_v3_body(), flexible_header=True))
        frame = recv_frame(s)
        corr, err, apis = parse_api_versions_v0(frame)  # asserts the whole frame is a v0 body
        assert corr == 31337, f"correlation id {corr}, want 31337"
        assert err == UNSUPPORTED_VERSION, f"error code {err}, want {UNSUPPORTED_VERSION} (UNSUPPORTED_VERSION)"
        assert API_VERSIONS in apis, "the UNSUPPORTED_VERSION answer does not list ApiVersions' own range"
        lo, hi = apis[API_VERSIONS]
        assert lo == 0 and hi >= 3, f"ApiVersions range {lo}..{hi}"
        # KIP-511: the client retries on the same connection with a version from that range.
        s.sendall(request_frame(API_VERSIONS, hi, 31338, api_versions_v3_body(), flexible_header=hi >= 3))
        frame = recv_frame(s)
        if hi >= 3:
            corr, err, apis2, _ = parse_api_versions_v3(frame)
        else:
            corr, err, apis2 = parse_api_versions_v0(frame)
        assert (corr, err) == (31338, 0), f"retry at v{hi}: correlation {corr}, error {err}"
        assert apis2 == apis, "the retried ApiVersions lists different APIs"
    finally:
        s.close()
    return f"error 35 at v0 with {len(apis)} APIs, retry at v{hi} OK"


@check("raw_api_versions_v0_and_v3")
def raw_api_versions_v0_and_v3(ctx):
    s = connect(ctx)
    try:
        s.sendall(request_frame(API_VERSIONS, 0, 1, b""))
        corr, err, v0 = parse_api_versions_v0(recv_frame(s))
        assert (corr, err) == (1, 0), f"v0: correlation {corr}, error {err}"
        s.sendall(request_frame(API_VERSIONS, 3, 2, api_versions_v3_body(), flexible_header=True))
        corr, err, v3, throttle = parse_api_versions_v3(recv_frame(s))
        assert (corr, err, throttle) == (2, 0, 0), f"v3: correlation {corr}, error {err}, throttle {throttle}"
    finally:
        s.close()
    assert v0 == v3, f"v0 and v3 answers differ: {v0} vs {v3}"
    missing = [n for k, n in CORE_APIS.items() if k not in v3]
    assert not missing, f"APIs Spate implements but does not advertise: {missing}"
    for k, (lo, hi) in v3.items():
        assert 0 <= lo <= hi, f"API {k}: bad range {lo}..{hi}"
    unexpected = sorted(set(v3) - set(CORE_APIS))
    assert not unexpected, f"advertises APIs outside the implemented set: {unexpected}"
    return ", ".join(f"{CORE_APIS[k]} {lo}-{hi}" for k, (lo, hi) in sorted(v3.items()))


@check("raw_pipelined_requests_answered_in_order")
def raw_pipelined_requests_answered_in_order(ctx):
    """Kafka clients pipeline and match responses by order: 60 mixed requests (ApiVersions v0/v3,
    Metadata v1 for all topics) in one write come back in request order."""
    reqs, kinds = [], []
    for i in range(60):
        corr = 1000 + i
        if i % 3 == 0:
            reqs.append(request_frame(API_VERSIONS, 0, corr, b""))
        elif i % 3 == 1:
            reqs.append(request_frame(API_VERSIONS, 3, corr, api_versions_v3_body(), flexible_header=True))
        else:
            reqs.append(request_frame(3, 1, corr, struct.pack(">i", -1)))  # Metadata v1, all topics
        kinds.append(i % 3)
    s = connect(ctx)
    try:
        s.sendall(b"".join(reqs))
        corrs = []
        for i in range(60):
            f = recv_frame(s)
            (corr,) = struct.unpack_from(">i", f, 0)
            corrs.append(corr)
            if corr == 1000 + i and kinds[i] == 0:
                assert parse_api_versions_v0(f)[1] == 0, f"response {i}: ApiVersions error"
            elif corr == 1000 + i and kinds[i] == 1:
                assert parse_api_versions_v3(f)[1] == 0, f"response {i}: ApiVersions error"
    finally:
        s.close()
    assert corrs == [1000 + i for i in range(60)], f"correlation ids out of order: {corrs}"


@check("raw_produce_bad_batches")
def raw_produce_bad_batches(ctx):
    """Hand-built Produce v3 requests: a good batch lands; a bad CRC, a batch whose length runs
    past the bytes sent, an unknown partition and acks=2 get their Kafka error codes; none of the
    refused ones advance the log; the connection stays usable throughout."""
    import time as _t

    from harness import parse_produce_v3, produce_v3_body, record_batch

    topic = ctx.topic("raw-produce")
    s = connect(ctx)
    try:
        # Metadata v4 naming the topic with allow_auto_topic_creation=true creates it.
        tb = topic.encode()
        s.sendall(request_frame(3, 4, 1, struct.pack(">ih", 1, len(tb)) + tb + b"\x01"))
        recv_frame(s)
        ts = int(_t.time() * 1000)
        good = record_batch([(b"k0", b"v0"), (None, b"v1"), (b"k2", None)], ts)
        bad_crc = bytearray(good)
        bad_crc[-1] ^= 0xFF  # last value byte: CRC no longer matches
        truncated = good[:-4]  # batch_length says 4 more bytes than are present
        cases = [
            ("good batch", produce_v3_body(topic, 0, good), 0, 0),
            ("bad CRC", produce_v3_body(topic, 0, bytes(bad_crc)), 2, -1),  # CORRUPT_MESSAGE
            ("truncated batch", produce_v3_body(topic, 0, truncated), 2, -1),
            ("partition 99", produce_v3_body(topic, 99, good), 3, -1),  # UNKNOWN_TOPIC_OR_PARTITION
            ("acks=2", produce_v3_body(topic, 0, good, acks=2), 21, -1),  # INVALID_REQUIRED_ACKS
            ("second good batch", produce_v3_body(topic, 0, good), 0, 3),
        ]
        for i, (what, body, want_err, want_base) in enumerate(cases):
            corr = 100 + i
            s.sendall(request_frame(0, 3, corr, body))
            got_corr, parts = parse_produce_v3(recv_frame(s))
            assert got_corr == corr, f"{what}: correlation id {got_corr}, want {corr}"
            assert len(parts) == 1, f"{what}: {len(parts)} partition results"
            _name, _idx, err, base = parts[0]
            assert (err, base) == (want_err, want_base), f"{what}: error {err} base_offset {base}, want error {want_err} base_offset {want_base}"
    finally:
        s.close()
    # The two accepted batches read back through a real client, byte for byte.
    import json

    from check_kcat import kcat
    r = kcat(ctx, "-C", "-t", topic, "-e", "-q", "-J")
    assert r.returncode == 0, f"kcat -C: {r.stderr.decode()[-300:]}"
    got = [(m["offset"], m["key"], m["payload"], m["ts"]) for m in map(json.loads, r.stdout.decode().splitlines())]
    want = [(o, k, v, ts) for o, (k, v) in enumerate([("k0", "v0"), (None, "v1"), ("k2", None)] * 2)]
    assert got == want, f"log holds {got}, want {want}"
    return "good, bad CRC, truncated, unknown partition, acks=2, good again at offset 3; read back"


@check("raw_offset_for_leader_epoch")
def raw_offset_for_leader_epoch(ctx):
    """OffsetForLeaderEpoch v2 by hand: epoch 0 ends at the log end; a current epoch newer than
    the leader's is UNKNOWN_LEADER_EPOCH (75); an unknown partition is error 3."""
    from harness import produce_v3_body, record_batch

    topic = ctx.topic("raw-ofle")
    tb = topic.encode()
    s = connect(ctx)
    try:
        s.sendall(request_frame(3, 4, 1, struct.pack(">ih", 1, len(tb)) + tb + b"\x01"))
        recv_frame(s)
        s.sendall(request_frame(0, 3, 2, produce_v3_body(topic, 0, record_batch([(None, b"a")] * 7, 1_700_000_000_000))))
        recv_frame(s)
        # v2: topics [name, partitions [partition, current_leader_epoch, leader_epoch]]
        parts = [(0, -1, 0), (0, 0, 0), (0, 1, 0), (7, -1, 0)]
        body = struct.pack(">ih", 1, len(tb)) + tb + struct.pack(">i", len(parts))
        body += b"".join(struct.pack(">iii", *p) for p in parts)
        s.sendall(request_frame(23, 2, 3, body))
        f = recv_frame(s)
    finally:
        s.close()
    corr, _throttle, nt = struct.unpack_from(">iii", f, 0)
    assert (corr, nt) == (3, 1), f"correlation {corr}, {nt} topics"
    (ln,) = struct.unpack_from(">h", f, 12)
    pos = 14 + ln
    (np_,) = struct.unpack_from(">i", f, pos)
    pos += 4
    got = []
    for _ in range(np_):
        err, part, epoch, end = struct.unpack_from(">hiiq", f, pos)
        pos += 18
        got.append((err, part, epoch, end))
    assert pos == len(f), f"{len(f) - pos} trailing bytes"
    assert got[0] == (0, 0, 0, 7), f"epoch 0, no current epoch: {got[0]}, want (0, 0, 0, 7)"
    assert got[1] == (0, 0, 0, 7), f"epoch 0, current epoch 0: {got[1]}, want (0, 0, 0, 7)"
    assert got[2][0] == 75, f"current epoch 1 (newer than the leader's): error {got[2][0]}, want 75 UNKNOWN_LEADER_EPOCH"
    assert got[3][:2] == (3, 7), f"partition 7: {got[3]}, want error 3"
