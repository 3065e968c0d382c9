"""Security checks: TLS, mutual TLS and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) listeners,
through kcat, confluent-kafka, kafka-python, Kafka's kafka-configs and `spate user`, plus a few
hand-built frames.

Most checks share one broker with the four listeners (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
PLAIN and both SCRAM mechanisms enabled and one user (`USER`, both SCRAM mechanisms), started on
first use and stopped when the suite exits; the certificates are a test PKI made once with the
openssl command line (`harness.make_test_pki`). Checks that need other broker flags (mutual TLS
required, an expired server certificate, kill -9 and restart) start their own broker.

The `security_acl_*` checks share another broker, with the ACL authorizer (`--authorizer acl`,
`--super-users User:ANONYMOUS`: the PLAINTEXT listener does their admin work) and users alice and
bob on SASL_PLAINTEXT; each names its own topics, groups and prefixes."""

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
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       NewTopic, ResourcePatternType, ResourceType)
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
    acl_broker = None  # the ACL checks' broker (--authorizer acl), see `acl_broker`


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
    for attr in ("broker", "acl_broker"):
        b = getattr(_S, attr)
        if b is not None:
            b.stop()
            setattr(_S, attr, None)
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


def kafka_tool(ctx, b, name, *args, timeout=120, bootstrap=None):
    """A Kafka tool (perf/kafka/run tool) against b's PLAINTEXT listener (or `bootstrap`): (exit
    code, stdout, stderr)."""
    if not (shutil.which("java") and shutil.which("mvn")):
        raise Skip("java or mvn is not installed")
    cmd = [RUN, "tool", name, "--bootstrap-server", bootstrap or b.bootstrap, *args]
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


# ---------------------------------------------------------------------------
# ACLs (--authorizer acl): kafka-acls, confluent-kafka, kafka-python
# ---------------------------------------------------------------------------

ACL_MECHANISMS = ["PLAIN", "SCRAM-SHA-256"]
ACL_USERS = {"alice": "alice-secret", "bob": "bob-secret"}
# The broker flags of the ACL checks: the PLAINTEXT listener's principal (User:ANONYMOUS) is a
# super user, for the checks' own admin work; alice and bob come in by SASL_PLAINTEXT.
ACL_ARGS = ["--authorizer", "acl", "--super-users", "User:ANONYMOUS",
            "--sasl-enabled-mechanisms", ",".join(ACL_MECHANISMS)]


def _create_acl_users(ctx, b):
    """alice and bob (`ACL_USERS`, both SCRAM mechanisms) on `b`, with `spate user create`."""
    for user, password in ACL_USERS.items():
        spate_user(ctx, b, "create", user, "--password", password)
    return b


def acl_broker(ctx):
    """The ACL checks' shared broker (PLAINTEXT and SASL_PLAINTEXT, `ACL_ARGS`), started on first
    use with alice and bob created (both SCRAM mechanisms; PLAIN checks against them). Each check
    names its own topics, groups and prefixes (with its run id), so that the ACLs of one do not
    open or close anything another check looks at. A broker that died fails the check as
    `sec(ctx)` does."""
    b = _S.acl_broker
    if b is not None and not b.alive():
        code, tail = b.proc.returncode if b.proc else None, b.log_tail(20)
        b.stop()
        _S.acl_broker = None
        raise AssertionError(f"the ACL broker died (exit {code}) before this check; its log tail:\n{tail}")
    if b is None:
        b = Broker(ctx.binary, listeners=["PLAINTEXT", "SASL_PLAINTEXT"], extra_args=ACL_ARGS)
        b.start()
        _S.acl_broker = b
        ctx.log(f"ACL broker: {b.ports}, admin {b.admin_port}, data {b.tmp}")
        _create_acl_users(ctx, b)
    return b


def as_user(b, user, mechanism="PLAIN"):
    """librdkafka settings for `user` (alice or bob) on b's SASL_PLAINTEXT listener."""
    return ck_conf(b, "SASL_PLAINTEXT", mechanism, user, ACL_USERS[user])


def super_admin(b):
    """An AdminClient on b's PLAINTEXT listener, whose User:ANONYMOUS is a super user: one per
    broker, kept on it (a client dropped while its futures are pending fails them with _DESTROY)."""
    _need_ck()
    if getattr(b, "_acl_admin", None) is None:
        b._acl_admin = AdminClient({"bootstrap.servers": b.bootstrap, "log_level": 0})
    return b._acl_admin


def binding(principal, rtype, name, operation, pattern="LITERAL", permission="ALLOW", host="*"):
    return AclBinding(ResourceType[rtype], name, ResourcePatternType[pattern], principal, host,
                      AclOperation[operation], AclPermissionType[permission])


def acl_add(b, *bindings):
    """CreateAcls of `bindings` as the super user; fails the check if any is refused."""
    futs = super_admin(b).create_acls(list(bindings), request_timeout=TIMEOUT)
    for bnd, f in futs.items():
        try:
            f.result(timeout=TIMEOUT)
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"create_acls {bnd}: {e}") from None


def acl_describe(b, flt=None):
    """DescribeAcls as the super user: the bindings as sorted tuples (resource type, name, pattern
    type, principal, host, operation, permission)."""
    flt = flt or AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    got = super_admin(b).describe_acls(flt, request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    return sorted((x.restype.name, x.name, x.resource_pattern_type.name, x.principal, x.host, x.operation.name,
                   x.permission_type.name) for x in got)


def acl_topics(ctx, b, *labels, partitions=1):
    """Creates one topic per label as the super user; their names."""
    names = [ctx.topic(label) for label in labels]
    futs = super_admin(b).create_topics([NewTopic(n, partitions, 1) for n in names], request_timeout=TIMEOUT)
    for n, f in futs.items():
        f.result(timeout=TIMEOUT)
    return names


def ck_produce(conf, topic, n=1, idempotent=False):
    """n records to partition 0 of `topic` through `conf`: (the delivery reports, offsets or
    KafkaError, in order; the errors error_cb got)."""
    _need_ck()
    errors = []
    p = Producer(dict(conf, **{"acks": "all", "enable.idempotence": idempotent, "linger.ms": 5,
                               "message.timeout.ms": 10000, "error_cb": errors.append, "log_level": 0}))
    out = []
    for i in range(n):
        p.produce(topic, key=f"k{i}", value=f"v{i}", partition=0,
                  on_delivery=lambda err, msg: out.append(err if err else msg.offset()))
    p.flush(TIMEOUT)
    return out, errors


def ck_read(conf, topic, n, group, subscribe=True, commit=False, timeout=TIMEOUT):
    """A consumer through `conf` in `group` that subscribes to `topic` (or is assigned its
    partition 0 from the beginning) and reads until it has n values or the consumer reports an
    error (a consume() error or error_cb). Returns (values, the first error or None, with commit:
    the offset committed synchronously then read back with committed(), else None)."""
    _need_ck()
    errors = []
    c = Consumer(dict(conf, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                               "error_cb": errors.append, "log_level": 0}))
    got, err, committed = [], None, None
    try:
        if subscribe:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while len(got) < n and err is None and time.monotonic() < deadline:
            for m in c.consume(num_messages=n, timeout=0.5):
                if m.error():
                    err = m.error()
                    break
                got.append(m.value().decode())
            if err is None and errors:
                err = errors[0]
        if commit and err is None and len(got) == n:
            parts = c.commit(asynchronous=False)
            bad = [(p.topic, p.partition, str(p.error)) for p in parts if p.error]
            assert not bad, f"commit: {bad}"
            committed = [p.offset for p in c.committed([TopicPartition(topic, 0)], timeout=TIMEOUT)][0]
    finally:
        c.close()
    return got, err, committed


def _denials(b):
    """{(resource_type, operation): count} of spate_authorization_denials_total."""
    out = {}
    for line in b.admin_get_text("/metrics").splitlines():
        m = re.match(r'^spate_authorization_denials_total\{resource_type="(\w+)",operation="(\w+)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def _code(err):
    return err.name() if err is not None else None


def _codes(reports):
    """Delivery reports with the errors by name (offsets stay)."""
    return [r if isinstance(r, int) else _code(r) for r in reports]


@check("security_acl_tools_kafka_acls")
def security_acl_tools_kafka_acls(ctx):
    """Kafka's kafka-acls (AclCommand, Admin's CreateAcls/DescribeAcls/DeleteAcls) as the super
    user: --add a LITERAL topic READ for alice, a PREFIXED topic WRITE+DESCRIBE and a group READ;
    --list shows the three resources with their ACLs, --list --principal User:alice the same,
    --list --topic T only T's, --list with --resource-pattern-type match the PREFIXED one for a
    name under the prefix; alice's rights follow (she produces under the prefix); --remove
    --force of the prefix's ACLs removes them (--list no longer shows them and alice's produce
    is refused) and keeps the others. kafka-acls as alice (over SASL_PLAINTEXT, --command-config)
    is refused: the ACL APIs need the cluster's ALTER (or DESCRIBE)."""
    b = acl_broker(ctx)
    t, = acl_topics(ctx, b, "acl-tool")
    prefix, group = f"acl-tool-pfx-{ctx.run_id}-", f"acl-tool-g-{ctx.run_id}"
    under = prefix + "x"  # a topic under the prefix
    super_admin(b).create_topics([NewTopic(under, 1, 1)], request_timeout=TIMEOUT)[under].result(timeout=TIMEOUT)

    def tool(*args):
        rc, out, err = kafka_tool(ctx, b, "kafka-acls", *args)
        assert rc == 0, f"kafka-acls {' '.join(args)} exited {rc}: {_tool_error(out + err)}"
        return out

    out = tool("--add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", t)
    assert f"resourceType=TOPIC, name={t}, patternType=LITERAL" in out, out
    out = tool("--add", "--allow-principal", "User:alice", "--operation", "Write", "--operation", "Describe",
               "--topic", prefix, "--resource-pattern-type", "prefixed")
    assert f"name={prefix}, patternType=PREFIXED" in out, out
    tool("--add", "--allow-principal", "User:alice", "--operation", "Read", "--group", group)

    def blocks(text):
        """{resource line: sorted ACL lines} of kafka-acls' listing."""
        got, current = {}, None
        for line in text.splitlines():
            m = re.search(r"ResourcePattern\(resourceType=(\w+), name=(.*), patternType=(\w+)\)", line)
            if m:
                current = m.groups()
                got[current] = []
            elif current and line.strip().startswith("(principal="):
                got[current].append(line.strip())
                got[current].sort()
        return got

    def acl_line(op):
        return f"(principal=User:alice, host=*, operation={op}, permissionType=ALLOW)"

    want = {("TOPIC", t, "LITERAL"): [acl_line("READ")],
            ("TOPIC", prefix, "PREFIXED"): sorted([acl_line("WRITE"), acl_line("DESCRIBE")]),
            ("GROUP", group, "LITERAL"): [acl_line("READ")]}
    listed = blocks(tool("--list"))
    assert {k: listed.get(k) for k in want} == want, f"kafka-acls --list: {listed}"
    by_principal = blocks(tool("--list", "--principal", "User:alice"))
    assert {k: by_principal.get(k) for k in want} == want, f"kafka-acls --list --principal User:alice: {by_principal}"
    assert blocks(tool("--list", "--topic", t)) == {("TOPIC", t, "LITERAL"): [acl_line("READ")]}
    matched = blocks(tool("--list", "--topic", under, "--resource-pattern-type", "match"))
    assert matched == {("TOPIC", prefix, "PREFIXED"): want[("TOPIC", prefix, "PREFIXED")]}, \
        f"kafka-acls --list --topic {under} --resource-pattern-type match: {matched}"

    got, _ = ck_produce(as_user(b, "alice"), under)
    assert got == [0], f"alice's produce to {under} (WRITE on the prefix {prefix}): {got}"

    tool("--remove", "--force", "--topic", prefix, "--resource-pattern-type", "prefixed")
    listed = blocks(tool("--list"))
    assert ("TOPIC", prefix, "PREFIXED") not in listed, f"after --remove: {listed}"
    assert listed.get(("TOPIC", t, "LITERAL")) == [acl_line("READ")] and ("GROUP", group, "LITERAL") in listed, listed
    got, _ = ck_produce(as_user(b, "alice"), under)
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], \
        f"alice's produce to {under} after the prefix's ACLs were removed: {got}"
    tool("--remove", "--force", "--allow-principal", "User:alice", "--operation", "Read", "--topic", t)
    assert ("TOPIC", t, "LITERAL") not in blocks(tool("--list")), "the topic's READ was not removed"

    cfg = os.path.join(b.tmp, "alice.properties")
    with open(cfg, "w") as f:
        f.write("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="alice" password="{ACL_USERS["alice"]}";\n')
    rc, out, err = kafka_tool(ctx, b, "kafka-acls", "--command-config", cfg, "--list",
                              bootstrap=b.addr("SASL_PLAINTEXT"))
    assert rc != 0 and "ClusterAuthorizationException" in out + err, \
        f"kafka-acls --list as alice exited {rc}: {_tool_error(out + err)}"
    return "add (literal, prefixed, group), list (all, --principal, --topic, match), remove --force; as alice: ClusterAuthorizationException"


@check("security_acl_ck_produce")
def security_acl_ck_produce(ctx):
    """confluent-kafka as alice (SASL PLAIN): a produce to a topic she has no ACL for fails with
    TOPIC_AUTHORIZATION_FAILED in its delivery report (Metadata: she may not describe it); with
    an ALLOW for WRITE (which implies DESCRIBE) the records are written, by a plain and by an
    idempotent producer (InitProducerId: WRITE on some topic stands for IDEMPOTENT_WRITE); the
    super user reads them back over PLAINTEXT."""
    b = acl_broker(ctx)
    t, = acl_topics(ctx, b, "acl-produce")
    alice = as_user(b, "alice")
    got, errors = ck_produce(alice, t)
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], \
        f"alice's produce without WRITE: {got}, errors {_errs(errors)}"
    acl_add(b, binding("User:alice", "TOPIC", t, "WRITE"))
    got, errors = ck_produce(alice, t, n=3)
    assert got == [0, 1, 2], f"alice's produce with WRITE: {got}, errors {_errs(errors)}"
    got, errors = ck_produce(alice, t, n=2, idempotent=True)
    assert got == [3, 4], f"alice's idempotent produce with WRITE on the topic: {got}, errors {_errs(errors)}"
    values, err, _ = ck_read({"bootstrap.servers": b.bootstrap}, t, 5, f"acl-super-{ctx.run_id}", subscribe=False)
    assert err is None and values == ["v0", "v1", "v2", "v0", "v1"], f"the super user read {values}, {_code(err)}"
    return "TOPIC_AUTHORIZATION_FAILED without WRITE; 3 + 2 (idempotent) records with it"


@check("security_acl_ck_group_consume")
def security_acl_ck_group_consume(ctx):
    """confluent-kafka group consumer as alice: with READ on the topic but no ACL for the group
    it gets GROUP_AUTHORIZATION_FAILED (FindCoordinator: DESCRIBE on the group); with READ on the
    group too it joins, reads the 4 records and commits, and committed() reads the offset back
    (OffsetFetch)."""
    b = acl_broker(ctx)
    t, = acl_topics(ctx, b, "acl-group")
    group = f"acl-group-{ctx.run_id}"
    got, errors = ck_produce({"bootstrap.servers": b.bootstrap}, t, n=4)
    assert got == [0, 1, 2, 3], f"the super user's produce: {got} {_errs(errors)}"
    alice = as_user(b, "alice")
    acl_add(b, binding("User:alice", "TOPIC", t, "READ"))
    values, err, _ = ck_read(alice, t, 4, group)
    assert _code(err) == "GROUP_AUTHORIZATION_FAILED" and not values, \
        f"alice's group consumer without READ on the group: {values}, error {_code(err)} {err and err.str()}"
    acl_add(b, binding("User:alice", "GROUP", group, "READ"))
    values, err, committed = ck_read(alice, t, 4, group, commit=True)
    assert err is None and values == ["v0", "v1", "v2", "v3"], f"alice with READ on group and topic: {values}, {_code(err)}"
    assert committed == 4, f"alice's committed offset: {committed}"
    return f"GROUP_AUTHORIZATION_FAILED, then 4 records read and offset {committed} committed"


@check("security_acl_ck_fetch_without_read")
def security_acl_ck_fetch_without_read(ctx):
    """confluent-kafka as alice with only DESCRIBE on a topic: an assigned consumer's Fetch is
    refused with TOPIC_AUTHORIZATION_FAILED (its metadata and ListOffsets are allowed); with
    READ it reads the record; the refusal counts as a Topic/Read denial. (librdkafka looks the group's coordinator up even for an assigned consumer, and
    reports GROUP_AUTHORIZATION_FAILED first when it may not describe the group: alice gets READ
    on the group here, so that the topic's ACLs are what is tested.)"""
    b = acl_broker(ctx)
    t, = acl_topics(ctx, b, "acl-fetch")
    ck_produce({"bootstrap.servers": b.bootstrap}, t)
    alice, group = as_user(b, "alice"), f"acl-fetch-{ctx.run_id}"
    acl_add(b, binding("User:alice", "TOPIC", t, "DESCRIBE"), binding("User:alice", "GROUP", group, "READ"))
    before = _denials(b).get(("Topic", "Read"), 0)
    values, err, _ = ck_read(alice, t, 1, group, subscribe=False)
    assert _code(err) == "TOPIC_AUTHORIZATION_FAILED" and not values, f"Fetch with DESCRIBE only: {values}, {_code(err)}"
    after = _denials(b).get(("Topic", "Read"), 0)
    assert after > before, f"Topic/Read denials {before} -> {after}"
    acl_add(b, binding("User:alice", "TOPIC", t, "READ"))
    values, err, _ = ck_read(alice, t, 1, group, subscribe=False)
    assert err is None and values == ["v0"], f"with READ: {values}, {_code(err)}"
    return f"TOPIC_AUTHORIZATION_FAILED with DESCRIBE only (Topic/Read denials +{after - before:.0f}); READ reads"


@check("security_acl_ck_create_topics_and_prefixed")
def security_acl_ck_create_topics_and_prefixed(ctx):
    """confluent-kafka's AdminClient as alice: create_topics without CREATE fails with
    TOPIC_AUTHORIZATION_FAILED; a PREFIXED ALLOW (CREATE, WRITE) on `acl-pfx-<run>-` lets her
    create `acl-pfx-<run>-a` and produce to it, while a topic whose name only nearly matches
    (`acl-pfx-<run>` without the dash) stays refused for both."""
    _need_ck()
    b = acl_broker(ctx)
    prefix = f"acl-pfx-{ctx.run_id}-"
    inside, outside = prefix + "a", prefix[:-1]
    alice = as_user(b, "alice")
    admin = AdminClient(dict(alice, log_level=0))

    def create(name):
        try:
            admin.create_topics([NewTopic(name, 1, 1)], request_timeout=TIMEOUT)[name].result(timeout=TIMEOUT)
            return None
        except Exception as e:  # noqa: BLE001
            return e.args[0] if e.args and isinstance(e.args[0], KafkaError) else e

    err = create(inside)
    assert isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        f"create_topics {inside} without CREATE: {err!r}"
    acl_add(b, binding("User:alice", "TOPIC", prefix, "CREATE", pattern="PREFIXED"),
            binding("User:alice", "TOPIC", prefix, "WRITE", pattern="PREFIXED"))
    err = create(inside)
    assert err is None, f"create_topics {inside} with CREATE on the prefix {prefix}: {err!r}"
    err = create(outside)
    assert isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        f"create_topics {outside} (not under the prefix {prefix}): {err!r}"
    got, errors = ck_produce(alice, inside, n=2)
    assert got == [0, 1], f"produce to {inside} under the prefix: {got} {_errs(errors)}"
    super_admin(b).create_topics([NewTopic(outside, 1, 1)], request_timeout=TIMEOUT)[outside].result(timeout=TIMEOUT)
    got, errors = ck_produce(alice, outside)
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], \
        f"produce to {outside} (not under the prefix): {got}"
    return f"TOPIC_AUTHORIZATION_FAILED, then prefix {prefix}: created and wrote {inside}; {outside} refused"


@check("security_acl_ck_auto_create_needs_create")
def security_acl_ck_auto_create_needs_create(ctx):
    """Auto-creation by a producer's Metadata needs CREATE (on the cluster or the topic): alice,
    with WRITE (so DESCRIBE) on a prefix but no CREATE, produces to a topic under it that does not
    exist; Kafka answers that topic's Metadata TOPIC_AUTHORIZATION_FAILED (KafkaApis: a topic the
    principal may describe but not create is "unauthorizedForCreateTopics"), so the delivery
    report says so at once. With CREATE on the prefix too the topic is created and written."""
    b = acl_broker(ctx)
    prefix = f"acl-auto-{ctx.run_id}-"
    acl_add(b, binding("User:alice", "TOPIC", prefix, "WRITE", pattern="PREFIXED"))
    t0 = time.monotonic()
    got, _ = ck_produce(as_user(b, "alice"), prefix + "a")
    took = time.monotonic() - t0
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], \
        f"alice's produce to the missing {prefix}a (WRITE, no CREATE): {_codes(got)} after {took:.1f}s; Kafka answers " \
        f"its Metadata TOPIC_AUTHORIZATION_FAILED (Spate: {_metadata_error(b, 'alice', prefix + 'a')})"
    acl_add(b, binding("User:alice", "TOPIC", prefix, "CREATE", pattern="PREFIXED"))
    got, errors = ck_produce(as_user(b, "alice"), prefix + "b")
    assert got == [0], f"alice's produce to the missing {prefix}b with CREATE: {got} {_errs(errors)}"
    return f"TOPIC_AUTHORIZATION_FAILED after {took:.1f}s without CREATE; auto-created with it"


def _metadata_error(b, user, topic):
    """What `user` gets for `topic` from list_topics (Metadata without auto-creation), for the
    failure message: Spate turns auto-creation off for the whole request when the principal may
    not create a missing topic, and the topic is then UNKNOWN_TOPIC_OR_PART, which librdkafka
    waits out until message.timeout.ms."""
    md = AdminClient(dict(as_user(b, user), log_level=0)).list_topics(topic=topic, timeout=TIMEOUT)
    err = md.topics[topic].error
    return f"list_topics({topic}) without auto-creation: {err.name() if err else 'no error'}"


@check("security_acl_ck_list_topics_filtered")
def security_acl_ck_list_topics_filtered(ctx):
    """list_topics (Metadata for all topics) as alice lists the topics she may describe (READ
    implies DESCRIBE, and DESCRIBE itself) and leaves out one she has no ACL for; asked for that
    one by name she gets TOPIC_AUTHORIZATION_FAILED. The super user (PLAINTEXT, User:ANONYMOUS)
    sees all three, and bob, with no ACL, none of them."""
    b = acl_broker(ctx)
    t_read, t_desc, t_none = acl_topics(ctx, b, "acl-list-read", "acl-list-describe", "acl-list-none")
    acl_add(b, binding("User:alice", "TOPIC", t_read, "READ"), binding("User:alice", "TOPIC", t_desc, "DESCRIBE"))
    mine = {t_read, t_desc, t_none}
    seen = {who: set(ck_metadata(conf).topics) & mine
            for who, conf in (("alice", as_user(b, "alice")), ("bob", as_user(b, "bob", "SCRAM-SHA-256")),
                              ("super", {"bootstrap.servers": b.bootstrap}))}
    assert seen == {"alice": {t_read, t_desc}, "bob": set(), "super": mine}, f"topics listed: {seen}"
    _need_ck()
    md = AdminClient(dict(as_user(b, "alice"), log_level=0)).list_topics(topic=t_none, timeout=TIMEOUT)
    err = md.topics[t_none].error
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, f"Metadata for {t_none}: {err}"
    return "alice sees her 2 of 3, bob 0, the super user 3; the third by name: TOPIC_AUTHORIZATION_FAILED"


@check("security_acl_ck_deny_beats_allow")
def security_acl_ck_deny_beats_allow(ctx):
    """A DENY wins over any ALLOW: with ALLOW WRITE for User:* on two topics, a LITERAL DENY
    WRITE for alice on the first and a PREFIXED DENY WRITE for alice on a prefix of the second,
    alice's produce to either fails with TOPIC_AUTHORIZATION_FAILED (the Produce itself: WRITE
    still implies DESCRIBE for her) while bob (through User:*) writes to both."""
    b = acl_broker(ctx)
    t1, t2 = acl_topics(ctx, b, "acl-deny-literal", "acl-deny-prefixed")
    acl_add(b, binding("User:*", "TOPIC", t1, "WRITE"), binding("User:*", "TOPIC", t2, "WRITE"),
            binding("User:alice", "TOPIC", t1, "WRITE", permission="DENY"),
            binding("User:alice", "TOPIC", t2[:-3], "WRITE", pattern="PREFIXED", permission="DENY"))
    before = _denials(b).get(("Topic", "Write"), 0)
    for t in (t1, t2):
        got, _ = ck_produce(as_user(b, "alice"), t)
        assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], \
            f"alice (DENY) to {t}: {got}"
        got, errors = ck_produce(as_user(b, "bob", "SCRAM-SHA-256"), t)
        assert got == [0], f"bob (ALLOW User:*) to {t}: {got} {_errs(errors)}"
    after = _denials(b).get(("Topic", "Write"), 0)
    assert after >= before + 2, f"Topic/Write denials {before} -> {after}"
    return "alice refused on both (literal and prefixed DENY), bob wrote both"


@check("security_acl_kp_refusals")
def security_acl_kp_refusals(ctx):
    """kafka-python 3.0 as bob (SCRAM-SHA-256) without ACLs: KafkaProducer.send() to a topic
    raises TopicAuthorizationFailedError (its Metadata is refused), and a KafkaConsumer in a group
    raises GroupAuthorizationFailedError from poll() (FindCoordinator) even with READ on the
    topic; with READ on the group it reads the record."""
    _need_kp()
    b = acl_broker(ctx)
    t, = acl_topics(ctx, b, "acl-kp")
    ck_produce({"bootstrap.servers": b.bootstrap}, t)
    group = f"acl-kp-{ctx.run_id}"
    conf = kp_conf(b, "SASL_PLAINTEXT", "SCRAM-SHA-256", "bob", ACL_USERS["bob"])
    p = KafkaProducer(max_block_ms=10000, request_timeout_ms=10000, **conf)
    try:
        try:
            p.send(t, b"refused").get(timeout=TIMEOUT)
            raise AssertionError("bob's send without WRITE succeeded")
        except kerrors.TopicAuthorizationFailedError as e:
            produce_err = e
    finally:
        p.close(timeout=5)
    acl_add(b, binding("User:bob", "TOPIC", t, "READ"))

    def consume():
        c = KafkaConsumer(t, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                          request_timeout_ms=int(TIMEOUT * 1000) + 5000, **conf)
        got = []
        try:
            deadline = time.monotonic() + TIMEOUT
            while not got and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=500).values():
                    got.extend(r.value.decode() for r in recs)
        finally:
            c.close()
        return got

    try:
        consume()
        raise AssertionError("bob's group consumer without READ on the group read")
    except kerrors.GroupAuthorizationFailedError as e:
        group_err = e
    acl_add(b, binding("User:bob", "GROUP", group, "READ"))
    got = consume()
    assert got == ["v0"], f"bob with READ on the group: {got}"
    return f"{type(produce_err).__name__}, {type(group_err).__name__}; then read {got}"


@check("security_acl_metrics_denials")
def security_acl_metrics_denials(ctx):
    """/metrics spate_authorization_denials_total{resource_type,operation} grows for the refusals:
    a Metadata for a topic bob may not describe (Topic/Describe), a group join without the group
    (Group/Describe at FindCoordinator), a Produce alice may describe but not write
    (Topic/Write)."""
    b = acl_broker(ctx)
    t, t2 = acl_topics(ctx, b, "acl-metrics", "acl-metrics-w")
    acl_add(b, binding("User:alice", "TOPIC", t2, "DESCRIBE"), binding("User:bob", "TOPIC", t, "READ"))
    before = _denials(b)
    got, _ = ck_produce(as_user(b, "bob", "SCRAM-SHA-256"), t2)
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], got
    _, err, _ = ck_read(as_user(b, "bob", "SCRAM-SHA-256"), t, 1, f"acl-metrics-{ctx.run_id}")
    assert _code(err) == "GROUP_AUTHORIZATION_FAILED", _code(err)
    got, _ = ck_produce(as_user(b, "alice"), t2)
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], got
    after = _denials(b)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) > before.get(k, 0)}
    for k in (("Topic", "Describe"), ("Group", "Describe"), ("Topic", "Write")):
        assert grew.get(k, 0) >= 1, f"spate_authorization_denials_total{k} did not grow: grew {grew}; now {after}"
    return "grew: " + ", ".join(f"{r}/{o} +{v:.0f}" for (r, o), v in sorted(grew.items()))


@check("security_acl_survive_kill")
def security_acl_survive_kill(ctx):
    """ACLs are durable: on a broker of its own, ACLs created (a literal topic WRITE, a prefixed
    topic READ, a group READ) and one created then deleted (DeleteAcls); after kill -9 and a
    restart on the same data directory DescribeAcls gives the same bindings, alice still writes
    to the topic and the deleted ACL's WRITE stays refused."""
    b = ctx.start_broker(ACL_ARGS, listeners=["PLAINTEXT", "SASL_PLAINTEXT"])
    _create_acl_users(ctx, b)
    t, gone = acl_topics(ctx, b, "acl-kill", "acl-kill-gone")
    acl_add(b, binding("User:alice", "TOPIC", t, "WRITE"),
            binding("User:alice", "TOPIC", "acl-kill-", "READ", pattern="PREFIXED"),
            binding("User:alice", "GROUP", f"acl-kill-{ctx.run_id}", "READ"),
            binding("User:alice", "TOPIC", gone, "WRITE"))
    flt = AclBindingFilter(ResourceType.TOPIC, gone, ResourcePatternType.LITERAL, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    deleted = super_admin(b).delete_acls([flt], request_timeout=TIMEOUT)[flt].result(timeout=TIMEOUT)
    assert [(x.name, x.operation.name) for x in deleted] == [(gone, "WRITE")], f"delete_acls answered {deleted}"
    before = acl_describe(b)
    assert len(before) == 3, before
    b.kill()
    b.restart()
    after = acl_describe(b)
    assert after == before, f"ACLs before kill -9: {before}; after the restart: {after}"
    got, errors = ck_produce(as_user(b, "alice"), t)
    assert got == [0], f"alice's produce after the restart: {got} {_errs(errors)}"
    got, _ = ck_produce(as_user(b, "alice"), gone)
    assert _codes(got) == ["TOPIC_AUTHORIZATION_FAILED"], \
        f"alice's produce to {gone} (its ACL deleted before the kill): {got}"
    return f"{len(after)} ACLs the same after kill -9 and restart; the deleted one stays deleted"
