"""Security checks: TLS, mutual TLS and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) listeners,
through kcat, confluent-kafka, kafka-python, Kafka's kafka-configs and `spate user`, plus a few
hand-built frames.

Most checks share one broker with the four listeners (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
PLAIN and both SCRAM mechanisms enabled and one user (`USER`, both SCRAM mechanisms), started on
first use and stopped when the suite exits; the certificates are a test PKI made once with the
openssl command line (`harness.make_test_pki`). Checks that need other broker flags (mutual TLS
required, an expired server certificate, kill -9 and restart) start their own broker."""

import atexit
import json
import logging
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import time

from harness import (Broker, Skip, check, kstring, make_test_pki, recv_frame, request_frame, run_cmd,
                     wait_closed)

try:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
except ImportError as _e:  # pragma: no cover - reported per check
    _CK_IMPORT_ERROR = _e
else:
    _CK_IMPORT_ERROR = None

try:
    import kafka.errors as kerrors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KpTopicPartition
except ImportError as _e:  # pragma: no cover
    _KP_IMPORT_ERROR = _e
else:
    _KP_IMPORT_ERROR = None

LISTENERS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
USER, PASSWORD = "sec-client", "sec-client-secret"  # the shared broker's user, both SCRAM mechanisms
TIMEOUT = 20.0  # seconds for any single produce / consume / metadata operation
REFUSAL_WAIT = 10.0  # seconds a refused client has to report its error
PLAIN_FAILED = "Authentication failed: Invalid username or password"  # Kafka's PlainServerCallbackHandler
SCRAM_FAILED = "Authentication failed: Invalid user credentials"  # Kafka's ScramSaslServer
RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "perf", "kafka", "run")


# ---------------------------------------------------------------------------
# The shared security broker and the test PKI (module-level, lazily started)
# ---------------------------------------------------------------------------


class _Shared:
    pki_dir = None
    pki = None
    broker = None


_S = _Shared()


def pki():
    if _S.pki is None:
        _S.pki_dir = tempfile.mkdtemp(prefix="spate-clients-pki-")
        _S.pki = make_test_pki(_S.pki_dir)
    return _S.pki


def tls_args(cert=None, key=None):
    p = pki()
    return ["--ssl-cert-file", cert or p.server, "--ssl-key-file", key or p.server_key]


def sec(ctx):
    """The shared broker with the four listeners, started on first use with `USER` created. A
    broker that died since the last check fails this one (with its log tail) and is replaced for
    the next ones."""
    b = _S.broker
    if b is not None and not b.alive():
        code, tail = b.proc.returncode if b.proc else None, b.log_tail(20)
        b.stop()
        _S.broker = None
        raise AssertionError(f"the shared security broker died (exit {code}) before this check; "
                             f"a new one is started for the next checks; its log tail:\n{tail}")
    if b is None:
        b = Broker(ctx.binary, listeners=LISTENERS,
                   extra_args=tls_args() + ["--sasl-enabled-mechanisms", ",".join(MECHANISMS)])
        b.start()
        _S.broker = b
        ctx.log(f"security broker: {b.ports}, admin {b.admin_port}, data {b.tmp}")
        spate_user(ctx, b, "create", USER, "--password", PASSWORD)
    return b


@atexit.register
def _stop_shared():
    if _S.broker is not None:
        _S.broker.stop()
        _S.broker = None
    if _S.pki_dir is not None:
        shutil.rmtree(_S.pki_dir, ignore_errors=True)
        _S.pki_dir = None


def auth_log(b, lines=8):
    """The broker's last log lines about TLS handshakes and SASL, for failure messages."""
    hits = [line for line in b.log_tail(400).splitlines() if "TLS" in line or "SASL" in line or "SCRAM" in line]
    return "\n".join(hits[-lines:]) or "(no TLS/SASL lines in the broker log)"


def spate_user(ctx, b, *args, check_rc=True):
    """`spate user ARGS -b <b's PLAINTEXT listener>`; returns (exit code, stdout, stderr)."""
    cmd = [ctx.binary, "user", *args, "-b", b.bootstrap]
    ctx.log(" ".join(cmd))
    r = run_cmd(cmd, timeout=30)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    if check_rc:
        assert r.returncode == 0, f"spate user {' '.join(args)} exited {r.returncode}: {(err or out).strip()[-400:]}"
    return r.returncode, out, err


def user_list(ctx, b):
    """{user: {mechanism: iterations}} from `spate user list --json`."""
    _, out, _ = spate_user(ctx, b, "list", "--json")
    return {u["user"]: {m: it for m, it in u["mechanisms"]} for u in json.loads(out)}


# ---------------------------------------------------------------------------
# confluent-kafka helpers
# ---------------------------------------------------------------------------


def _need_ck():
    if _CK_IMPORT_ERROR is not None:
        raise Skip(f"confluent-kafka not importable: {_CK_IMPORT_ERROR}")


def ck_conf(b, listener, mechanism=None, user=USER, password=PASSWORD, cert=None, key=None):
    """librdkafka settings for `listener` of broker `b`: the test CA for SSL listeners (host name
    checked: the server certificate names 127.0.0.1), the SASL mechanism and credentials for SASL
    ones, a client certificate when given."""
    c = {"bootstrap.servers": b.addr(listener), "security.protocol": listener}
    if listener in ("SSL", "SASL_SSL"):
        c["ssl.ca.location"] = pki().ca
    if listener.startswith("SASL_"):
        c.update({"sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password})
    if cert:
        c.update({"ssl.certificate.location": cert, "ssl.key.location": key})
    return c


def ck_roundtrip(ctx, conf, label, n=5):
    """Produces n keyed records (acks=all) to a new topic (auto-created) through `conf`, then
    reads them back with an assigned consumer through `conf`: every record once, in order. Any
    error a client reports (error_cb) fails the check. Returns the topic."""
    _need_ck()
    topic = ctx.topic(label)
    errors = []
    p = Producer(dict(conf, **{"acks": "all", "enable.idempotence": False, "linger.ms": 5,
                               "message.timeout.ms": int(TIMEOUT * 1000), "error_cb": errors.append,
                               "log_level": 3}))
    delivered = []
    for i in range(n):
        p.produce(topic, key=f"k{i}", value=f"v{i}", partition=0,
                  on_delivery=lambda err, msg: delivered.append(err if err else msg.offset()))
    left = p.flush(TIMEOUT)
    assert left == 0 and delivered == list(range(n)), \
        f"produce over {conf['security.protocol']}: {left} undelivered, delivery reports {delivered}, errors {_errs(errors)}"
    c = Consumer(dict(conf, **{"group.id": f"sec-unused-{ctx.run_id}", "enable.auto.commit": False,
                               "auto.offset.reset": "error", "error_cb": errors.append, "log_level": 3}))
    got = []
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + TIMEOUT
        while len(got) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=n, timeout=0.5):
                assert not m.error(), f"consumer error: {m.error().name()} {m.error().str()}"
                got.append((m.offset(), m.key().decode(), m.value().decode()))
    finally:
        c.close()
    assert got == [(i, f"k{i}", f"v{i}") for i in range(n)], \
        f"consumed over {conf['security.protocol']}: {got}, errors {_errs(errors)}"
    assert not errors, f"the clients reported errors: {_errs(errors)}"
    return topic


def _slug(mechanism):
    """SCRAM-SHA-256 -> scram_sha256, PLAIN -> plain (for check names)."""
    return mechanism.lower().replace("-sha-", "_sha")


def _errs(errors):
    return [f"{e.name()}: {e.str()}" for e in errors]


def ck_first_error(conf, timeout=REFUSAL_WAIT):
    """The first error librdkafka reports (error_cb) for a producer that cannot get in: a
    KafkaError, or an AssertionError when it reports none within `timeout`."""
    _need_ck()
    errors = []
    p = Producer(dict(conf, **{"error_cb": errors.append, "log_level": 0}))
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        p.poll(0.1)
    p.purge()
    del p
    assert errors, f"no error reported within {timeout:.0f}s over {conf['security.protocol']} (the connection was accepted?)"
    return errors[0]


def ck_metadata(conf):
    """list_topics through `conf` (raises AssertionError on failure): the metadata."""
    _need_ck()
    a = AdminClient(dict(conf, **{"log_level": 0, "socket.timeout.ms": 10000}))
    try:
        return a.list_topics(timeout=TIMEOUT)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"list_topics over {conf['security.protocol']} "
                             f"({conf.get('sasl.mechanisms', 'no SASL')}, user {conf.get('sasl.username')}): {e}") from None


def ck_auth_refused(conf, message):
    """The client reports _AUTHENTICATION with `message` (the broker's error text)."""
    err = ck_first_error(conf)
    assert err.code() == KafkaError._AUTHENTICATION and message in err.str(), \
        f"{conf['sasl.mechanisms']} as {conf['sasl.username']!r}: got {err.name()} {err.str()!r}, want _AUTHENTICATION with {message!r}"
    return err


# ---------------------------------------------------------------------------
# kcat helpers
# ---------------------------------------------------------------------------


def kcat_bin():
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if not path:
        raise Skip("kcat is not installed")
    return path


def kcat_args(b, listener, mechanism=None, user=USER, password=PASSWORD):
    a = ["-b", b.addr(listener), "-X", f"security.protocol={listener}"]
    if listener in ("SSL", "SASL_SSL"):
        a += ["-X", f"ssl.ca.location={pki().ca}"]
    if listener.startswith("SASL_"):
        a += ["-X", f"sasl.mechanisms={mechanism}", "-X", f"sasl.username={user}", "-X", f"sasl.password={password}"]
    return a


def kcat(ctx, *args, input_bytes=None):
    cmd = [kcat_bin(), "-X", "enable.idempotence=false", *args]
    ctx.log(" ".join(cmd))
    r = run_cmd(cmd, input_bytes=input_bytes, timeout=60)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def kcat_roundtrip(ctx, b, listener, mechanism=None, n=5):
    """kcat -P of n keyed lines (acks=-1) to a new topic, then kcat -C -e reads them back, both
    over `listener`."""
    topic = ctx.topic(f"sec-kcat-{listener.lower()}-{(mechanism or 'tls').lower()}")
    sec_args = kcat_args(b, listener, mechanism)
    data = "".join(f"k{i}:v{i}\n" for i in range(n)).encode()
    rc, _, err = kcat(ctx, *sec_args, "-P", "-t", topic, "-K:", "-X", "acks=-1", input_bytes=data)
    assert rc == 0 and "ERROR" not in err, f"kcat -P over {listener} {mechanism or ''} exited {rc}: {err.strip()[-500:]}"
    rc, out, err = kcat(ctx, *sec_args, "-C", "-t", topic, "-e", "-q", "-o", "beginning", "-f", "%o %k %s\\n")
    assert rc == 0, f"kcat -C over {listener} {mechanism or ''} exited {rc}: {err.strip()[-500:]}"
    want = [f"{i} k{i} v{i}" for i in range(n)]
    assert out.splitlines() == want, f"kcat -C over {listener} read {out.splitlines()}, want {want}"
    return f"{n} records produced and consumed over {listener}{' ' + mechanism if mechanism else ''}"


# ---------------------------------------------------------------------------
# kcat
# ---------------------------------------------------------------------------


@check("security_kcat_ssl")
def security_kcat_ssl(ctx):
    return kcat_roundtrip(ctx, sec(ctx), "SSL")


def _kcat_sasl_check(listener, mechanism):
    def run(ctx):
        return kcat_roundtrip(ctx, sec(ctx), listener, mechanism)

    run.__doc__ = f"kcat (librdkafka 2.0.2) produces and consumes over {listener} with {mechanism}."
    return run


for _listener, _mech in [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
                         ("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_SSL", "SCRAM-SHA-512")]:
    check(f"security_kcat_{_listener.lower()}_{_slug(_mech)}")(_kcat_sasl_check(_listener, _mech))


@check("security_kcat_wrong_password")
def security_kcat_wrong_password(ctx):
    """kcat -P with PLAIN and a wrong password (SASL_PLAINTEXT) exits non-zero, and its stderr
    carries the broker's SASL_AUTHENTICATION_FAILED message."""
    b = sec(ctx)
    topic = ctx.topic("sec-kcat-wrong")
    rc, _, err = kcat(ctx, *kcat_args(b, "SASL_PLAINTEXT", "PLAIN", password="not-the-password"),
                      "-P", "-t", topic, input_bytes=b"v\n")
    assert rc != 0, f"kcat -P with a wrong password exited 0: {err.strip()[-400:]}"
    assert "SASL authentication error" in err and PLAIN_FAILED in err, f"kcat's stderr: {err.strip()[-600:]}"
    return "kcat: 'SASL authentication error: Authentication failed: Invalid username or password'"


# ---------------------------------------------------------------------------
# confluent-kafka
# ---------------------------------------------------------------------------


@check("security_ck_ssl")
def security_ck_ssl(ctx):
    b = sec(ctx)
    ck_roundtrip(ctx, ck_conf(b, "SSL"), "sec-ck-ssl")
    return "Producer and Consumer over SSL (server certificate checked against the test CA, host 127.0.0.1)"


def _ck_sasl_ssl_check(mechanism):
    def run(ctx):
        b = sec(ctx)
        ck_roundtrip(ctx, ck_conf(b, "SASL_SSL", mechanism), f"sec-ck-{mechanism.lower()}")
        return f"Producer and Consumer over SASL_SSL with {mechanism}"

    return run


for _mech in MECHANISMS:
    check(f"security_ck_sasl_ssl_{_slug(_mech)}")(_ck_sasl_ssl_check(_mech))


@check("security_ck_wrong_password")
def security_ck_wrong_password(ctx):
    """confluent-kafka reports _AUTHENTICATION (error_cb) with the broker's message for a wrong
    password with each mechanism over SASL_SSL and PLAIN over SASL_PLAINTEXT, and for a user that
    does not exist: PLAIN says "Invalid username or password", SCRAM "Invalid user credentials"
    (Kafka's texts; neither tells an unknown user from a wrong password)."""
    b = sec(ctx)
    seen = []
    for listener, mechanism in [("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512"),
                                ("SASL_PLAINTEXT", "PLAIN")]:
        want = PLAIN_FAILED if mechanism == "PLAIN" else SCRAM_FAILED
        ck_auth_refused(ck_conf(b, listener, mechanism, password="not-the-password"), want)
        seen.append(f"{listener}/{mechanism}")
    for mechanism in ("PLAIN", "SCRAM-SHA-256"):
        want = PLAIN_FAILED if mechanism == "PLAIN" else SCRAM_FAILED
        ck_auth_refused(ck_conf(b, "SASL_SSL", mechanism, user=f"nobody-{ctx.run_id}"), want)
    return f"_AUTHENTICATION for a wrong password ({', '.join(seen)}) and an unknown user"


def _mtls_broker(ctx):
    """A broker whose SSL listener requires a client certificate signed by the test CA."""
    return ctx.start_broker(tls_args() + ["--ssl-ca-file", pki().ca, "--ssl-client-auth", "required"],
                            listeners=["PLAINTEXT", "SSL"])


def _assert_tls_refused(b, conf, want, what):
    err = ck_first_error(conf)
    assert err.code() in (KafkaError._TRANSPORT, KafkaError._SSL) and want in err.str(), \
        f"{what}: got {err.name()} {err.str()!r}, want _TRANSPORT or _SSL with {want!r}; broker:\n{auth_log(b)}"
    return err


@check("security_ck_mtls_required_no_cert_refused")
def security_ck_mtls_required_no_cert_refused(ctx):
    """--ssl-client-auth required: a client without a certificate fails the handshake (the
    broker's TLS 1.3 alert "certificate required")."""
    b = _mtls_broker(ctx)
    _assert_tls_refused(b, ck_conf(b, "SSL"), "certificate required", "no client certificate")
    return "refused: alert certificate required"


@check("security_ck_mtls_required_ca_signed_cert_works")
def security_ck_mtls_required_ca_signed_cert_works(ctx):
    """--ssl-client-auth required: a client with a certificate signed by --ssl-ca-file
    (CN=alice,O=Team A) produces and consumes."""
    b = _mtls_broker(ctx)
    p = pki()
    ck_roundtrip(ctx, ck_conf(b, "SSL", cert=p.client, key=p.client_key), "sec-ck-mtls")
    return "Producer and Consumer with the CA-signed client certificate"


@check("security_ck_mtls_required_other_ca_refused")
def security_ck_mtls_required_other_ca_refused(ctx):
    """--ssl-client-auth required: a client whose certificate another CA signed is refused.
    librdkafka 2.16 does not even send it (the broker names the CA it accepts; the handshake then
    ends with "certificate required"), so a plain Python TLS client presents it too: the broker
    answers the alert "unknown ca"."""
    b = _mtls_broker(ctx)
    p = pki()
    err = ck_first_error(ck_conf(b, "SSL", cert=p.other_client, key=p.other_client_key))
    assert err.code() in (KafkaError._TRANSPORT, KafkaError._SSL) and \
        ("certificate required" in err.str() or "unknown ca" in err.str()), \
        f"confluent-kafka with another CA's certificate: got {err.name()} {err.str()!r}; broker:\n{auth_log(b)}"
    tls = ssl.create_default_context(cafile=p.ca)
    tls.load_cert_chain(p.other_client, p.other_client_key)
    try:
        with socket.create_connection(("127.0.0.1", b.ports["SSL"]), timeout=10) as s:
            with tls.wrap_socket(s, server_hostname="127.0.0.1") as t:
                t.sendall(request_frame(18, 0, 1, b""))
                answer = t.recv(64)
        raise AssertionError(f"a TLS client with another CA's certificate got an ApiVersions answer ({answer!r})")
    except ssl.SSLError as e:
        assert "UNKNOWN_CA" in str(e), f"Python ssl with another CA's certificate: {e}; broker:\n{auth_log(b)}"
    return f"confluent-kafka refused ({err.str().split(': ', 1)[-1][:80]}...); Python ssl: alert unknown ca"


@check("security_ck_mtls_required_expired_cert_refused")
def security_ck_mtls_required_expired_cert_refused(ctx):
    """--ssl-client-auth required: a CA-signed client certificate that expired (2021-01-01) is
    refused (alert "certificate expired")."""
    b = _mtls_broker(ctx)
    p = pki()
    _assert_tls_refused(b, ck_conf(b, "SSL", cert=p.expired_client, key=p.expired_client_key),
                        "certificate expired", "expired client certificate")
    return "refused: alert certificate expired"


@check("security_ck_expired_server_cert_refused")
def security_ck_expired_server_cert_refused(ctx):
    """A broker serving an expired certificate (signed by the trusted CA, valid in 2020 only):
    the client refuses it ("certificate verify failed"; librdkafka reports it as _SSL or
    _TRANSPORT depending on where the handshake was when it noticed)."""
    p = pki()
    b = ctx.start_broker(tls_args(p.expired_server, p.expired_server_key), listeners=["PLAINTEXT", "SSL"])
    err = _assert_tls_refused(b, ck_conf(b, "SSL"), "certificate verify failed", "expired server certificate")
    return f"{err.name()}: certificate verify failed"


@check("security_metadata_names_the_listener_connected_to")
def security_metadata_names_the_listener_connected_to(ctx):
    """Metadata through each listener names the broker at that listener's address (confluent-kafka
    list_topics().brokers): the SASL_SSL port for a SASL_SSL client, and so on."""
    b = sec(ctx)
    seen = {}
    for listener in LISTENERS:
        md = ck_metadata(ck_conf(b, listener, "SCRAM-SHA-512"))
        seen[listener] = [(x.id, f"{x.host}:{x.port}") for x in md.brokers.values()]
        assert seen[listener] == [(0, b.addr(listener))], \
            f"Metadata over {listener} names {seen[listener]}, want [(0, {b.addr(listener)!r})]"
    return ", ".join(f"{k} -> {v[0][1]}" for k, v in seen.items())


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------


def _need_kp():
    if _KP_IMPORT_ERROR is not None:
        raise Skip(f"kafka-python not importable: {_KP_IMPORT_ERROR}")


def kp_conf(b, listener, mechanism, user=USER, password=PASSWORD):
    c = dict(bootstrap_servers=b.addr(listener), security_protocol=listener,
             sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password)
    if listener == "SASL_SSL":
        c["ssl_cafile"] = pki().ca
    return c


def kp_roundtrip(ctx, conf, label, n=5):
    _need_kp()
    topic = ctx.topic(label)
    p = KafkaProducer(acks="all", linger_ms=5, request_timeout_ms=int(TIMEOUT * 1000),
                      max_block_ms=int(TIMEOUT * 1000), bootstrap_timeout_ms=int(TIMEOUT * 1000), **conf)
    try:
        futs = [p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0) for i in range(n)]
        p.flush(timeout=TIMEOUT)
        offsets = [f.get(timeout=TIMEOUT).offset for f in futs]
    finally:
        p.close(timeout=5)
    assert offsets == list(range(n)), f"kafka-python producer offsets {offsets}"
    c = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                      request_timeout_ms=int(TIMEOUT * 1000) + 5000, fetch_max_wait_ms=500,
                      bootstrap_timeout_ms=int(TIMEOUT * 1000), **conf)
    got = []
    try:
        tp = KpTopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        deadline = time.monotonic() + TIMEOUT
        while len(got) < n and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500, max_records=100).values():
                got.extend((r.offset, r.key.decode(), r.value.decode()) for r in recs)
    finally:
        c.close()
    assert got == [(i, f"k{i}", f"v{i}") for i in range(n)], f"kafka-python consumer read {got}"


@check("security_kp_sasl_ssl_scram_sha256")
def security_kp_sasl_ssl_scram_sha256(ctx):
    kp_roundtrip(ctx, kp_conf(sec(ctx), "SASL_SSL", "SCRAM-SHA-256"), "sec-kp-scram")
    return "KafkaProducer and KafkaConsumer over SASL_SSL with SCRAM-SHA-256"


@check("security_kp_sasl_plaintext_plain")
def security_kp_sasl_plaintext_plain(ctx):
    kp_roundtrip(ctx, kp_conf(sec(ctx), "SASL_PLAINTEXT", "PLAIN"), "sec-kp-plain")
    return "KafkaProducer and KafkaConsumer over SASL_PLAINTEXT with PLAIN"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@check("security_kp_wrong_password")
def security_kp_wrong_password(ctx):
    """kafka-python 3.0 with a wrong password (SCRAM-SHA-256 over SASL_SSL): its connection fails
    with SaslAuthenticationFailedError carrying the broker's message. kafka-python retries a
    bootstrap connection whatever failed, so KafkaAdminClient raises KafkaTimeoutError ("Unable
    to bootstrap") once bootstrap_timeout_ms (3 s here) is over; the authentication error is what
    it logs for each attempt, read here from its logger."""
    _need_kp()
    b = sec(ctx)
    logger = logging.getLogger("kafka")
    handler, level, propagate = _Records(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        t0 = time.monotonic()
        try:
            a = KafkaAdminClient(bootstrap_timeout_ms=3000, request_timeout_ms=5000,
                                 **kp_conf(b, "SASL_SSL", "SCRAM-SHA-256", password="not-the-password"))
            a.close()
            raise AssertionError("KafkaAdminClient with a wrong password bootstrapped")
        except kerrors.KafkaTimeoutError as e:
            raised = str(e)
        took = time.monotonic() - t0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    auth = [r for r in handler.records
            if any(isinstance(a, kerrors.SaslAuthenticationFailedError) for a in (r.args or ()))]
    assert auth, f"no SaslAuthenticationFailedError logged; kafka-python logged: {[r.getMessage() for r in handler.records][:5]}"
    text = str(auth[0].args[-1])
    assert SCRAM_FAILED in text, f"SaslAuthenticationFailedError says {text!r}, want {SCRAM_FAILED!r}"
    return f"{raised} after {took:.1f}s; {len(auth)} attempt(s) failed with {text!r}"


# ---------------------------------------------------------------------------
# Users: spate user, kafka-configs
# ---------------------------------------------------------------------------


@check("security_users_create_list_delete")
def security_users_create_list_delete(ctx):
    """`spate user` end to end on the shared broker: create a user with SCRAM-SHA-512 only (8192
    iterations) and one with both mechanisms; `list --json` shows each with its mechanisms and
    iterations; the first authenticates with SCRAM-SHA-512 and PLAIN (checked against its SCRAM
    credential) but not SCRAM-SHA-256; `create` again sets a new password (the old one is then
    refused); after `delete` the user is gone from the list and can no longer authenticate."""
    b = sec(ctx)
    only512, both = f"only512-{ctx.run_id}", f"both-{ctx.run_id}"
    _, out, _ = spate_user(ctx, b, "create", only512, "--password", "pw-512", "--mechanism", "SCRAM-SHA-512",
                           "--iterations", "8192")
    assert only512 in out, out
    spate_user(ctx, b, "create", both, "--password", "pw-old")
    users = user_list(ctx, b)
    assert users.get(only512) == {"SCRAM-SHA-512": 8192}, f"{only512}: {users.get(only512)}"
    assert users.get(both) == {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 4096}, f"{both}: {users.get(both)}"
    assert users.get(USER) == {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 4096}, f"{USER}: {users.get(USER)}"

    ck_metadata(ck_conf(b, "SASL_SSL", "SCRAM-SHA-512", only512, "pw-512"))
    ck_metadata(ck_conf(b, "SASL_SSL", "PLAIN", only512, "pw-512"))
    ck_auth_refused(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", only512, "pw-512"), SCRAM_FAILED)

    ck_metadata(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", both, "pw-old"))
    spate_user(ctx, b, "create", both, "--password", "pw-new")
    ck_auth_refused(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", both, "pw-old"), SCRAM_FAILED)
    ck_metadata(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", both, "pw-new"))

    spate_user(ctx, b, "delete", both)
    users = user_list(ctx, b)
    assert both not in users and only512 in users, f"after delete: {sorted(users)}"
    ck_auth_refused(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", both, "pw-new"), SCRAM_FAILED)
    ck_auth_refused(ck_conf(b, "SASL_SSL", "PLAIN", both, "pw-new"), PLAIN_FAILED)
    spate_user(ctx, b, "delete", only512)
    assert only512 not in user_list(ctx, b)
    return "create (one mechanism, both), list --json, new password, delete: each seen by SASL clients"


@check("security_users_survive_kill")
def security_users_survive_kill(ctx):
    """Users are durable: on a broker of its own (PLAINTEXT and SASL_PLAINTEXT), a user created
    and one created then deleted; after kill -9 and a restart on the same data directory the list
    is the same, the first still authenticates (SCRAM-SHA-256) and the deleted one does not."""
    b = ctx.start_broker(["--sasl-enabled-mechanisms", ",".join(MECHANISMS)], listeners=["PLAINTEXT", "SASL_PLAINTEXT"])
    keep, gone = f"keep-{ctx.run_id}", f"gone-{ctx.run_id}"
    spate_user(ctx, b, "create", keep, "--password", "pw-keep")
    spate_user(ctx, b, "create", gone, "--password", "pw-gone", "--mechanism", "SCRAM-SHA-256")
    spate_user(ctx, b, "delete", gone)
    before = user_list(ctx, b)
    assert set(before) == {keep}, before
    b.kill()
    b.restart()
    after = user_list(ctx, b)
    assert after == before, f"users before kill -9: {before}; after the restart: {after}"
    ck_metadata(ck_conf(b, "SASL_PLAINTEXT", "SCRAM-SHA-256", keep, "pw-keep"))
    ck_auth_refused(ck_conf(b, "SASL_PLAINTEXT", "SCRAM-SHA-256", gone, "pw-gone"), SCRAM_FAILED)
    return f"after kill -9 and restart: {after}"


def kafka_tool(ctx, b, name, *args, timeout=120):
    """A Kafka tool (perf/kafka/run tool) against b's PLAINTEXT listener: (exit code, stdout, stderr)."""
    if not (shutil.which("java") and shutil.which("mvn")):
        raise Skip("java or mvn is not installed")
    cmd = [RUN, "tool", name, "--bootstrap-server", b.bootstrap, *args]
    ctx.log(" ".join(cmd))
    r = run_cmd(cmd, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def _tool_error(text):
    """What a Kafka tool's failure says: its "Error while executing" line and the exceptions'
    own lines (not the stack frames), else its last lines."""
    lines = [line.strip() for line in text.splitlines()
             if "Error while executing" in line or (("Exception" in line or "Error:" in line) and not line.strip().startswith("at "))]
    return " | ".join(lines[:4]) if lines else text.strip()[-600:]


@check("security_tools_kafka_configs_scram_user")
def security_tools_kafka_configs_scram_user(ctx):
    """kafka-configs (AlterUserScramCredentials) creates a SCRAM-SHA-256 user that
    confluent-kafka then authenticates as over SASL_SSL (and not with another password);
    confluent-kafka's describe_user_scram_credentials (DescribeUserScramCredentials) and `spate
    user list` show it with its mechanism and iterations. (`kafka-configs --describe
    --entity-type users` asks for the users' client quotas first, DescribeClientQuotas, which
    comes with quotas: until then the tool says the broker does not support it.)"""
    b = sec(ctx)
    name = f"tool-user-{ctx.run_id}"
    rc, out, err = kafka_tool(ctx, b, "kafka-configs", "--alter", "--add-config",
                              "SCRAM-SHA-256=[iterations=4096,password=tool-pw]", "--entity-type", "users",
                              "--entity-name", name)
    assert rc == 0 and f"Completed updating config for user {name}." in out, \
        f"kafka-configs --alter exited {rc}: {_tool_error(out + err)}"
    ck_metadata(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", name, "tool-pw"))
    ck_auth_refused(ck_conf(b, "SASL_SSL", "SCRAM-SHA-256", name, "other-pw"), SCRAM_FAILED)
    assert user_list(ctx, b).get(name) == {"SCRAM-SHA-256": 4096}, user_list(ctx, b)
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    described = admin.describe_user_scram_credentials([name])[name].result(timeout=20)
    infos = [(str(i.mechanism), i.iterations) for i in described.scram_credential_infos]
    assert len(infos) == 1 and "SCRAM_SHA_256" in infos[0][0] and infos[0][1] == 4096, infos
    return f"kafka-configs created {name}; SCRAM-SHA-256 authenticates; described as {infos}"


# ---------------------------------------------------------------------------
# Raw frames: what the broker does before and after a failed authentication; metrics
# ---------------------------------------------------------------------------


def sasl_handshake_v1(sock, mechanism, corr=1):
    """SaslHandshake v1 (key 17): (error code, [mechanisms])."""
    sock.sendall(request_frame(17, 1, corr, kstring(mechanism)))
    frame = recv_frame(sock)
    got_corr, code, n = struct.unpack_from(">ihi", frame, 0)
    assert got_corr == corr, f"SaslHandshake answered with correlation id {got_corr}"
    pos, mechs = 10, []
    for _ in range(n):
        (ln,) = struct.unpack_from(">h", frame, pos)
        mechs.append(frame[pos + 2:pos + 2 + ln].decode())
        pos += 2 + ln
    return code, mechs


def sasl_authenticate_v1(sock, token, corr=2):
    """SaslAuthenticate v1 (key 36): (error code, error message)."""
    sock.sendall(request_frame(36, 1, corr, struct.pack(">i", len(token)) + token))
    frame = recv_frame(sock)
    got_corr, code, ln = struct.unpack_from(">ihh", frame, 0)
    assert got_corr == corr, f"SaslAuthenticate answered with correlation id {got_corr}"
    message = None if ln < 0 else frame[8:8 + ln].decode()
    return code, message


SASL_AUTHENTICATION_FAILED = 58


def metric_value(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`, in Prometheus text (0
    when there is none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


@check("security_raw_wrong_password_closes_and_counts")
def security_raw_wrong_password_closes_and_counts(ctx):
    """Hand-built frames on SASL_PLAINTEXT: SaslHandshake v1 PLAIN lists the enabled mechanisms;
    SaslAuthenticate v1 with a wrong password is answered SASL_AUTHENTICATION_FAILED (58) with
    "Authentication failed: Invalid username or password", then the broker closes the connection.
    The admin listener's /metrics counts it: spate_authentications_total{listener="SASL_PLAINTEXT",
    mechanism="PLAIN",outcome="failed"} grows by one, and a TLS handshake counts as
    mechanism="TLS",outcome="ok"."""
    b = sec(ctx)
    labels = dict(listener="SASL_PLAINTEXT", mechanism="PLAIN", outcome="failed")
    before = metric_value(b.admin_get_text("/metrics"), "spate_authentications_total", **labels)
    with socket.create_connection(("127.0.0.1", b.ports["SASL_PLAINTEXT"]), timeout=10) as s:
        s.settimeout(10)
        code, mechs = sasl_handshake_v1(s, "PLAIN")
        assert code == 0 and sorted(mechs) == sorted(MECHANISMS), f"SaslHandshake: error {code}, mechanisms {mechs}"
        code, message = sasl_authenticate_v1(s, f"\0{USER}\0not-the-password".encode())
        assert (code, message) == (SASL_AUTHENTICATION_FAILED, PLAIN_FAILED), f"SaslAuthenticate: {code} {message!r}"
        assert wait_closed(s, 10), "the connection stayed open after a failed authentication"
    with socket.create_connection(("127.0.0.1", b.ports["SSL"]), timeout=10) as s:
        with ssl.create_default_context(cafile=pki().ca).wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(request_frame(18, 0, 1, b""))
            recv_frame(t)
    text = b.admin_get_text("/metrics")
    after = metric_value(text, "spate_authentications_total", **labels)
    assert after == before + 1, f"spate_authentications_total{labels} went from {before} to {after}"
    tls_ok = metric_value(text, "spate_authentications_total", listener="SSL", mechanism="TLS", outcome="ok")
    assert tls_ok >= 1, [line for line in text.splitlines() if "spate_authentications" in line]
    failed = sum(metric_value(text, "spate_authentications_total", listener=lst, mechanism=m, outcome="failed")
                 for lst in ("SASL_PLAINTEXT", "SASL_SSL") for m in MECHANISMS)
    return f"58 and closed; spate_authentications_total failed {before:.0f} -> {after:.0f} (all SASL failures so far: {failed:.0f}), TLS ok {tls_ok:.0f}"


@check("security_raw_request_before_authentication_closes")
def security_raw_request_before_authentication_closes(ctx):
    """On SASL_PLAINTEXT, ApiVersions is answered before authenticating, and a Metadata request
    then closes the connection (no answer)."""
    b = sec(ctx)
    with socket.create_connection(("127.0.0.1", b.ports["SASL_PLAINTEXT"]), timeout=10) as s:
        s.settimeout(10)
        s.sendall(request_frame(18, 0, 1, b""))
        corr, code = struct.unpack_from(">ih", recv_frame(s), 0)
        assert (corr, code) == (1, 0), f"ApiVersions before authenticating: correlation {corr}, error {code}"
        s.sendall(request_frame(3, 1, 2, struct.pack(">i", -1)))  # Metadata v1, all topics
        assert wait_closed(s, 10), "a Metadata request before authenticating did not close the connection"
    return "ApiVersions answered, Metadata closed the connection"


@check("security_raw_unfinished_handshakes_time_out")
def security_raw_unfinished_handshakes_time_out(ctx):
    """A TLS handshake never started (SSL listener, TCP connection that sends nothing) and a SASL
    authentication left after SaslHandshake (SASL_PLAINTEXT) are both closed by the broker after
    its 10 s limit (between 9 and 14 s here), and counted as outcome="timeout"."""
    b = sec(ctx)
    before = b.admin_get_text("/metrics")
    t0 = time.monotonic()
    tls = socket.create_connection(("127.0.0.1", b.ports["SSL"]), timeout=10)
    sasl = socket.create_connection(("127.0.0.1", b.ports["SASL_PLAINTEXT"]), timeout=10)
    try:
        sasl.settimeout(10)
        code, _ = sasl_handshake_v1(sasl, "SCRAM-SHA-256")
        assert code == 0, f"SaslHandshake: error {code}"
        took = {}
        for what, s in (("TLS", tls), ("SASL", sasl)):
            closed = wait_closed(s, max(0.1, 15 - (time.monotonic() - t0)))
            took[what] = time.monotonic() - t0
            assert closed, f"{what}: the connection was still open after {took[what]:.1f}s"
            assert 9 <= took[what] <= 14, f"{what}: closed after {took[what]:.1f}s, want about 10"
    finally:
        tls.close()
        sasl.close()
    after = b.admin_get_text("/metrics")
    timeouts = {lst: metric_value(after, "spate_authentications_total", listener=lst, outcome="timeout")
                - metric_value(before, "spate_authentications_total", listener=lst, outcome="timeout")
                for lst in ("SSL", "SASL_PLAINTEXT")}
    assert all(v >= 1 for v in timeouts.values()), \
        f"outcome=\"timeout\" counted {timeouts}; /metrics: {[l for l in after.splitlines() if 'authentications' in l]}"
    return f"closed after {took['TLS']:.1f}s (TLS) and {took['SASL']:.1f}s (SASL); timeouts counted {timeouts}"
