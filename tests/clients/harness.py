"""Shared pieces of the client-compatibility suite: the check registry, the broker process
wrapper, and small helpers (unique topic names, bounded waits, raw Kafka frames).

Nothing here knows about a particular client library; the check modules do.
"""

import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
import uuid

# ---------------------------------------------------------------------------
# Check registry
# ---------------------------------------------------------------------------

CHECKS = []  # (name, function) in registration order


def check(name):
    """Registers `fn(ctx)` as a check called `name`. A check passes by returning (optionally a
    short note string) and fails by raising (AssertionError or anything else)."""

    def deco(fn):
        if any(n == name for n, _ in CHECKS):
            raise RuntimeError(f"duplicate check name {name}")
        CHECKS.append((name, fn))
        return fn

    return deco


class Skip(Exception):
    """Raised by a check that cannot run here (a missing client or codec library). The runner
    counts it as a failure, so a missing dependency is never mistaken for a pass."""


# ---------------------------------------------------------------------------
# Broker process
# ---------------------------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """`n` distinct free ports on 127.0.0.1 (held open together while they are picked)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


class Broker:
    """One `spate serve` process on a free port with its own temporary data directory.

    `start()` returns once the broker logged `spate ready` and a TCP connection to the port
    succeeds (bounded wait); `stop()` kills the process and removes the directory and is safe to
    call more than once; `kill()` and `restart()` stop it with SIGKILL and start it again on the
    same port and data directory. With `listeners` (security protocols, e.g. ["PLAINTEXT", "SSL",
    "SASL_PLAINTEXT", "SASL_SSL"]) each gets a free port of its own (`addr(name)`, `ports`),
    passed as `--listeners`; `bootstrap` stays the PLAINTEXT one, and the admin listener gets a
    known port (`admin_port`, `admin_get_text(path)`)."""

    def __init__(self, binary, extra_args=(), cores=2, ready_timeout=30.0, log_path=None, listeners=None):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.cores = cores
        self.ready_timeout = ready_timeout
        self.proc = None
        self.port = None
        self.tmp = None
        self.log_path = log_path  # where stderr goes; inside the temp dir unless given
        self._log_file = None
        # Security protocols (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) to listen with, each on a
        # free port of its own, passed as `--listeners` instead of `--listen`; the admin listener
        # then gets a known free port too (`admin_port`). None: one `--listen` port, as before.
        self.listeners = list(listeners) if listeners else None
        self.ports = {}  # {listener name: port}
        self.admin_port = None  # known only with `listeners`

    @property
    def bootstrap(self):
        """The PLAINTEXT listener (with `listeners`: the first one when there is no PLAINTEXT)."""
        return f"127.0.0.1:{self.port}"

    def addr(self, listener):
        """The address of one listener ("SASL_SSL" -> "127.0.0.1:port")."""
        return f"127.0.0.1:{self.ports[listener]}"

    def admin_get_text(self, path):
        """`GET path` on the admin listener (known with `listeners` only), as text."""
        assert self.admin_port, "the admin port is known only for a broker started with listeners"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            return r.read().decode("utf-8", "replace")

    def start(self):
        last_err = None
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.tmp = tempfile.mkdtemp(prefix="spate-clients-")
            if self.listeners:
                ports = free_ports(len(self.listeners) + 1)
                self.ports = dict(zip(self.listeners, ports))
                self.admin_port = ports[-1]
                self.port = self.ports.get("PLAINTEXT", ports[0])
                listen = ["--listeners", ",".join(f"{n}://{self.addr(n)}" for n in self.listeners)]
                admin = f"127.0.0.1:{self.admin_port}"
            else:
                self.port = free_port()
                self.ports = {"PLAINTEXT": self.port}
                listen = ["--listen", self.bootstrap]
                admin = "127.0.0.1:0"
            data = os.path.join(self.tmp, "data")
            log_path = self.log_path or os.path.join(self.tmp, "broker.log")
            self._log_file = open(log_path, "ab")
            self._log_name = log_path
            self._log_offset = os.path.getsize(log_path)
            self._cmd = [
                self.binary, "serve",
                *listen,
                "--data-dir", data,
                "--cores", str(self.cores),
                "--admin-listen", admin,
            ] + self.extra_args
            self.proc = subprocess.Popen(
                self._cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
                start_new_session=True,
            )
            try:
                self._wait_ready()
                return self
            except Exception as e:  # noqa: BLE001 - retried, then re-raised
                last_err = e
                tail = self.log_tail()
                self.stop()
                if "in use" not in tail.lower():
                    raise RuntimeError(f"{e}; broker log tail:\n{tail}") from None
        raise RuntimeError(f"broker did not start after 3 attempts: {last_err}")

    def _log_since_start(self):
        with open(self._log_name, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def _wait_ready(self):
        """Until the broker says `spate ready` on its stderr (after this start) and its port
        accepts. A connection alone is not enough: on a busy machine another process can take the
        port between `free_port()` and the broker's bind, and then the broker exits with "Address
        already in use" while the port still accepts (the other process's listener)."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {self.proc.returncode} before it was ready")
            if "spate ready" in self._log_since_start():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"broker not ready (no 'spate ready' on its stderr, or its port not accepting) "
                           f"within {self.ready_timeout:.0f}s")

    @property
    def data_dir(self):
        return os.path.join(self.tmp, "data")

    def kill(self):
        """SIGKILL (as `kill -9`: no shutdown of any kind); the data directory stays for `restart()`."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self):
        """Starts the broker again after `kill()` with the same command line: the same port and
        data directory (recovery included); returns once it accepts connections."""
        assert self.proc is not None and self.proc.poll() is not None, "restart() needs a killed broker"
        self._log_file.flush()
        self._log_offset = os.path.getsize(self._log_name)
        self.proc = subprocess.Popen(
            self._cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"restart: {e}; broker log tail:\n{self.log_tail()}") from None
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=30):
        try:
            self._log_file.flush()
            with open(self._log_name, "rb") as f:
                data = f.read()
            return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
        except Exception:  # noqa: BLE001
            return "(no broker log)"

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            self.proc = None
        if self._log_file is not None:
            try:
                self._log_file.close()
            except Exception:  # noqa: BLE001
                pass
            self._log_file = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def settled_image(digests):
    """The metadata-consistency check on `{node: its /v1/metadata}`: once no change is under way,
    every node serves an image equal to the metadata its controller thread applied ("installed"
    and "controller"), at the same index as every other node's. Returns that image when all are
    at one index (asserting they are equal), None while they are not (yet), or while a node did
    not answer (None)."""
    ds = list(digests.items())
    if any(d is None or d.get("installed") is None for _, d in ds):
        return None
    first_node, first = ds[0]
    index = first["controller"]["index"]
    if not all(d["controller"]["index"] == index and d["installed"]["index"] == index for _, d in ds):
        return None
    for n, d in ds:
        assert d["installed"] == d["controller"], \
            f"node {n} serves another image than its controller applied:\n{d['installed']}\nvs\n{d['controller']}"
        assert d["installed"] == first["installed"], \
            f"nodes {n} and {first_node} serve different images at index {index}:\n{d['installed']}\nvs\n{first['installed']}"
    return first["installed"]


class Cluster:
    """Three `spate serve` processes forming one cluster: node ids 1, 2, 3, the same
    `--controller-quorum-voters` (every port a free one on 127.0.0.1), one temporary directory
    holding each node's data directory and stderr log, `--cores 1`.

    `start()` starts the three together (the quorum needs a majority before any is ready), waits
    for `spate ready` on each one's stderr, then until every node's image (`/v1/metadata`'s
    "installed") lists the three brokers unfenced: a broker is fenced from ready until its first
    heartbeat, and placement uses unfenced brokers only. A node that exits with "Address already
    in use" (a free port taken between probe and bind) makes the whole cluster start again on new
    ports. `restart(node)` rolls one node: SIGTERM, then the same command line again. `stop()`
    kills the three (SIGKILL) and removes the directory, and is safe to call more than once."""

    NODES = 3

    def __init__(self, binary, extra_args=(), cores=1, ready_timeout=60.0):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.cores = cores
        self.ready_timeout = ready_timeout
        self.procs = []
        self.tmp = None
        self.ports = []
        self.admin_ports = []
        self._logs = []
        self._cmds = []

    def bootstrap(self, node):
        """Node `node`'s (1, 2 or 3) Kafka listener, as a bootstrap list of one."""
        return f"127.0.0.1:{self.ports[node - 1]}"

    def bootstrap_all(self):
        """The three Kafka listeners, as one bootstrap list."""
        return ",".join(self.bootstrap(n) for n in range(1, self.NODES + 1))

    def node_of_port(self, port):
        return self.ports.index(port) + 1 if port in self.ports else None

    def start(self):
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except _PortTaken as e:
                self.stop()
                last = e
        raise RuntimeError(f"cluster did not start after 3 attempts: {last}")

    def _start_once(self):
        self.tmp = tempfile.mkdtemp(prefix="spate-clients-cluster-")
        held = []
        try:
            for _ in range(3 * self.NODES):  # held together, so the nine are distinct
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.bind(("127.0.0.1", 0))
            ports = [s.getsockname()[1] for s in held]
        finally:
            for s in held:
                s.close()
        controller_ports = ports[:self.NODES]
        self.ports = ports[self.NODES:2 * self.NODES]
        self.admin_ports = ports[2 * self.NODES:]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(controller_ports))
        self.procs, self._logs, self._cmds = [], [], []
        for i in range(self.NODES):
            log_path = os.path.join(self.tmp, f"node{i + 1}.log")
            self._logs.append(log_path)
            cmd = [
                self.binary, "serve",
                "--node-id", str(i + 1),
                "--controller-quorum-voters", voters,
                "--listen", self.bootstrap(i + 1),
                "--admin-listen", f"127.0.0.1:{self.admin_ports[i]}",
                "--data-dir", os.path.join(self.tmp, f"data{i + 1}"),
                "--cores", str(self.cores),
                "--group-initial-rebalance-delay-ms", "0",
            ] + self.extra_args
            self._cmds.append(cmd)
            with open(log_path, "ab") as log:
                self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                   start_new_session=True))
        deadline = time.monotonic() + self.ready_timeout
        for i, proc in enumerate(self.procs):
            while True:
                log = self._read_log(i)
                if "spate ready" in log:
                    break
                if proc.poll() is not None:
                    msg = f"node {i + 1} exited with code {proc.returncode} before it was ready:\n{self.log_tail(15)}"
                    if "in use" in log.lower():
                        raise _PortTaken(msg)
                    raise RuntimeError(msg)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {i + 1} not ready within {self.ready_timeout:.0f}s:\n{self.log_tail(15)}")
                time.sleep(0.1)

        self._wait_all_unfenced()

    def _wait_all_unfenced(self):
        def all_unfenced():
            for node in range(1, self.NODES + 1):
                brokers = self.metadata(node)["installed"]["brokers"]
                if len(brokers) != self.NODES or any(b["fenced"] for b in brokers.values()):
                    return False
            return True

        self._wait(all_unfenced, "every node's image to list the three brokers unfenced")

    def restart(self, node, stop_timeout=30.0):
        """Restarts node `node` as a rolling restart does: SIGTERM (a controlled shutdown: the
        broker is fenced first, so the partitions it leads move to another in-sync replica before
        it stops), waits (`stop_timeout`) until it exited and fails unless it exited 0, starts it
        again with the same command line (the same ports and data directory; its output appended
        to its log after a `==== restart` line), waits for `spate ready` in what it logged since,
        then until every node's image lists the three brokers unfenced. Returns the seconds each
        step took: (until exit, until ready, until unfenced)."""
        i = node - 1
        proc = self.procs[i]
        assert proc.poll() is None, f"node {node} is not running (exit {proc.returncode})"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            tail = self.log_tail(30)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise AssertionError(f"node {node} did not exit within {stop_timeout:.0f}s of SIGTERM (killed):\n{tail}") from None
        assert proc.returncode == 0, f"node {node} exited with code {proc.returncode} after SIGTERM:\n{self.log_tail(30)}"
        t1 = time.monotonic()
        with open(self._logs[i], "ab") as log:
            log.write(f"\n==== restart of node {node} after SIGTERM (exit 0) at {time.strftime('%H:%M:%S')} ====\n".encode())
            log.flush()
            offset = log.tell()
            self.procs[i] = subprocess.Popen(self._cmds[i], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while "spate ready" not in self._read_log(i, offset):
            if self.procs[i].poll() is not None:
                raise AssertionError(f"node {node} exited with code {self.procs[i].returncode} before it was ready "
                                     f"again:\n{self.log_tail(30)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node} not ready again within {self.ready_timeout:.0f}s:\n{self.log_tail(30)}")
            time.sleep(0.05)
        t2 = time.monotonic()
        self._wait_all_unfenced()
        return (t1 - t0, t2 - t1, time.monotonic() - t2)

    def _read_log(self, i, offset=0):
        with open(self._logs[i], "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def _wait(self, pred, what, timeout=60.0):
        """`wait_until` that takes a node not answering its admin port (yet) as "not yet"."""
        def attempt():
            try:
                return pred()
            except OSError:
                return False
        try:
            return wait_until(attempt, timeout, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tail(10)}") from None

    def admin_get(self, node, path):
        """`GET path` on node `node`'s admin listener, parsed as JSON."""
        url = f"http://127.0.0.1:{self.admin_ports[node - 1]}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def metadata(self, node):
        return self.admin_get(node, "/v1/metadata")

    def assert_consistent(self, timeout=60.0):
        """The metadata-consistency check (`settled_image`) over the three nodes. Returns the
        index they settled at."""
        image = []

        def settled():
            image[:] = [settled_image({n: self.metadata(n) for n in range(1, self.NODES + 1)})]
            return image[0] is not None

        self._wait(settled, "every node's image and controller at one index", timeout)
        return image[0]["index"]

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def log_tail(self, lines=30):
        out = []
        for i in range(len(self._logs)):
            try:
                tail = "\n".join(self._read_log(i).splitlines()[-lines:])
            except OSError:
                tail = "(no log)"
            out.append(f"---- node {i + 1}\n{tail}")
        return "\n".join(out)

    def log_lines_with(self, words, lines=40):
        """Every node's log lines containing any of `words` (the last `lines` per node), for a
        failed check to say what one subsystem did (a group: "group", "coordinat", "member")."""
        out = []
        for i in range(len(self._logs)):
            try:
                hits = [l for l in self._read_log(i).splitlines() if any(w in l for w in words)]
                tail = "\n".join(hits[-lines:])
            except OSError:
                tail = "(no log)"
            out.append(f"---- node {i + 1}, lines with {'|'.join(words)}\n{tail}")
        return "\n".join(out)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class _PortTaken(Exception):
    pass


# ---------------------------------------------------------------------------
# Test PKI (openssl command line)
# ---------------------------------------------------------------------------


class TestPki:
    """Certificates for the TLS checks, made by `make_test_pki(directory)`: every attribute is the
    path of a PEM file in that directory.

    ca / ca_key               the CA the brokers trust for clients and the clients trust for brokers
    server / server_key       CN=localhost, SAN DNS:localhost and IP:127.0.0.1, signed by ca
    expired_server / _key     the same names, signed by ca, valid 2020-01-01 to 2021-01-01
    client / client_key       CN=alice,O=Team A, signed by ca (extendedKeyUsage clientAuth)
    other_ca                  another CA, trusted by nobody
    other_client / _key       CN=mallory, signed by other_ca
    expired_client / _key     CN=alice,O=Team A, signed by ca, valid 2020-01-01 to 2021-01-01"""

    __test__ = False  # not a pytest class


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')[-600:]}")


_CA_CONF = """[ ca ]
default_ca = test_ca
[ test_ca ]
database = {d}/index.txt
new_certs_dir = {d}
serial = {d}/serial
default_md = sha256
policy = any_name
unique_subject = no
email_in_dn = no
copy_extensions = none
[ any_name ]
commonName = supplied
organizationName = optional
"""

_SERVER_EXT = "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n" \
              "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1\n"
_CLIENT_EXT = "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n" \
              "extendedKeyUsage = clientAuth\n"


def make_test_pki(directory):
    """Makes a `TestPki` in `directory` with the `openssl` command line (OpenSSL 1.1 or 3.x):
    RSA 2048 keys (unencrypted, PKCS#8), two self-signed CAs, leaf certificates signed with `openssl
    ca` (whose -startdate/-enddate can backdate, which `openssl x509 -req -days` cannot). A second
    or so."""
    if not shutil.which("openssl"):
        raise Skip("the openssl command line is not installed")
    os.makedirs(directory, exist_ok=True)
    pki = TestPki()

    def path(name):
        return os.path.join(directory, name)

    for name, ext in (("server.ext", _SERVER_EXT), ("client.ext", _CLIENT_EXT)):
        with open(path(name), "w") as f:
            f.write(ext)

    def new_ca(name, cn):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", "3650", "-subj", f"/CN={cn}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=directory)
        db = path(f"{name}.db")
        os.makedirs(db, exist_ok=True)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write(uuid.uuid4().hex[:16].upper() + "\n")
        with open(path(f"{name}.cnf"), "w") as f:
            f.write(_CA_CONF.format(d=db))
        return path(f"{name}.pem")

    def leaf(name, ca, subject, ext, expired=False):
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)
        dates = ["-startdate", "20200101000000Z", "-enddate", "20210101000000Z"] if expired else ["-days", "3650"]
        _openssl("ca", "-batch", "-notext", "-config", f"{ca}.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key",
                 "-in", f"{name}.csr", "-out", f"{name}.pem", "-extfile", ext, *dates, cwd=directory)
        return path(f"{name}.pem"), path(f"{name}.key")

    pki.ca, pki.ca_key = new_ca("ca", "Spate Test CA"), path("ca.key")
    pki.other_ca = new_ca("other-ca", "Some Other CA")
    pki.server, pki.server_key = leaf("server", "ca", "/CN=localhost", "server.ext")
    pki.expired_server, pki.expired_server_key = leaf("expired-server", "ca", "/CN=localhost", "server.ext", expired=True)
    pki.client, pki.client_key = leaf("client", "ca", "/CN=alice/O=Team A", "client.ext")
    pki.other_client, pki.other_client_key = leaf("other-client", "other-ca", "/CN=mallory", "client.ext")
    pki.expired_client, pki.expired_client_key = leaf("expired-client", "ca", "/CN=alice/O=Team A", "client.ext",
                                                      expired=True)
    return pki


# ---------------------------------------------------------------------------
# Context handed to every check
# ---------------------------------------------------------------------------

_counter = itertools.count()


class Context:
    def __init__(self, broker, binary, verbose=False):
        self.broker = broker
        self.binary = binary
        self.verbose = verbose
        self.run_id = uuid.uuid4().hex[:8]
        self.extra_brokers = []

    @property
    def bootstrap(self):
        return self.broker.bootstrap

    @property
    def port(self):
        return self.broker.port

    def topic(self, label):
        """A topic name unique to this run and check."""
        return f"cc-{label}-{self.run_id}-{next(_counter)}"

    def start_broker(self, extra_args, listeners=None):
        """Starts another broker (own port and data dir; `listeners` as `Broker` takes them);
        stopped by the runner at the end, or earlier by the check calling `.stop()`."""
        b = Broker(self.binary, extra_args=extra_args, listeners=listeners)
        self.extra_brokers.append(b)
        return b.start()

    def log(self, msg):
        if self.verbose:
            print(f"    .. {msg}", flush=True)

    def start_cluster(self, extra_args=()):
        """Starts a three-node cluster (`Cluster`); stopped by the runner after the check."""
        c = Cluster(self.binary, extra_args=extra_args)
        self.extra_brokers.append(c)
        return c.start()

    def stop_extra_brokers(self):
        for b in self.extra_brokers:
            b.stop()
        self.extra_brokers.clear()


def wait_until(pred, timeout, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_cmd(args, input_bytes=None, timeout=60):
    """Runs a command; returns CompletedProcess (stdout/stderr bytes). Raises AssertionError on
    timeout so a hung client fails its check instead of hanging the suite."""
    try:
        return subprocess.run(args, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, stdin=None if input_bytes is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{args[0]} timed out after {timeout}s; stderr: {(e.stderr or b'')[-500:]!r}") from None


# ---------------------------------------------------------------------------
# Raw Kafka wire helpers
# ---------------------------------------------------------------------------


def kstring(s):
    """Kafka (non-compact) nullable STRING."""
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


def read_uvarint(buf, pos):
    shift = 0
    n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def request_frame(api_key, api_version, correlation_id, body, client_id="spate-client-tests", flexible_header=False):
    """A length-prefixed request: header v1 (key, version, correlation id, client id), plus an
    empty tagged-field section when `flexible_header` (header v2)."""
    hdr = struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)
    if flexible_header:
        hdr += uvarint(0)
    payload = hdr + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf.extend(chunk)
    return bytes(buf)


def recv_frame(sock):
    (n,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, n)


def wait_closed(sock, timeout=10.0):
    """True when the peer closes the connection (EOF or reset) within `timeout`, reading and
    discarding anything it sends first; False if it stays open."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def parse_api_versions_v0(frame):
    """Parses an ApiVersions response read at v0 (header v0). Returns
    (correlation_id, error_code, {api_key: (min, max)})."""
    corr, err, n = struct.unpack_from(">ihi", frame, 0)
    pos = 10
    apis = {}
    for _ in range(max(n, 0)):
        k, lo, hi = struct.unpack_from(">hhh", frame, pos)
        pos += 6
        apis[k] = (lo, hi)
    if pos != len(frame):
        raise AssertionError(f"ApiVersions v0 response has {len(frame) - pos} trailing bytes")
    return corr, err, apis


def parse_api_versions_v3(frame):
    """Parses an ApiVersions v3+ response (header v0, flexible body). Returns
    (correlation_id, error_code, {api_key: (min, max)}, throttle_ms)."""
    corr, err = struct.unpack_from(">ih", frame, 0)
    pos = 6
    n, pos = read_uvarint(frame, pos)
    apis = {}
    for _ in range(max(n - 1, 0)):
        k, lo, hi = struct.unpack_from(">hhh", frame, pos)
        pos += 6
        tags, pos = read_uvarint(frame, pos)
        for _ in range(tags):
            _tag, pos = read_uvarint(frame, pos)
            size, pos = read_uvarint(frame, pos)
            pos += size
        apis[k] = (lo, hi)
    (throttle,) = struct.unpack_from(">i", frame, pos)
    pos += 4
    tags, pos = read_uvarint(frame, pos)
    for _ in range(tags):
        _tag, pos = read_uvarint(frame, pos)
        size, pos = read_uvarint(frame, pos)
        pos += size
    if pos != len(frame):
        raise AssertionError(f"ApiVersions v3 response has {len(frame) - pos} trailing bytes")
    return corr, err, apis, throttle


def api_versions_v0_roundtrip(port, correlation_id=7, timeout=10.0):
    """Sends a plain ApiVersions v0 on a fresh connection and returns the parsed answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request_frame(18, 0, correlation_id, b""))
        return parse_api_versions_v0(recv_frame(s))


def _read_string(buf, pos):
    """A Kafka (non-compact) nullable STRING at pos: (str or None, next pos)."""
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    if n < 0:
        return None, pos
    return buf[pos:pos + n].decode(), pos + n


BROKER_RESOURCE = 4  # ConfigResource type BROKER
OP_SET, OP_DELETE = 0, 1  # IncrementalAlterConfigs operations


def incremental_alter_configs_v0(port, resources, validate_only=False, timeout=10.0):
    """IncrementalAlterConfigs v0 (key 44) on a fresh connection, for what the clients cannot
    send: librdkafka and kafka-python both refuse a BROKER resource named "" (every broker's
    default, Kafka's cluster-wide dynamic config) before sending anything. `resources` are
    (resource type, name, [(key, operation, value or None)]); returns [(resource type, name,
    error code, error message)] in the broker's order."""
    body = struct.pack(">i", len(resources))
    for rtype, name, configs in resources:
        body += struct.pack(">b", rtype) + kstring(name) + struct.pack(">i", len(configs))
        for key, op, value in configs:
            body += kstring(key) + struct.pack(">b", op) + kstring(value)
    body += struct.pack(">?", validate_only)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request_frame(44, 0, 44, body))
        frame = recv_frame(s)
    corr, _throttle, n = struct.unpack_from(">iii", frame, 0)
    assert corr == 44, f"IncrementalAlterConfigs answered with correlation id {corr}"
    pos, out = 12, []
    for _ in range(n):
        (code,) = struct.unpack_from(">h", frame, pos)
        message, pos = _read_string(frame, pos + 2)
        (rtype,) = struct.unpack_from(">b", frame, pos)
        name, pos = _read_string(frame, pos + 1)
        out.append((rtype, name, code, message))
    if pos != len(frame):
        raise AssertionError(f"IncrementalAlterConfigs v0 response has {len(frame) - pos} trailing bytes")
    return out


def restore_broker_configs(port, keys):
    """DELETE of `keys` from both dynamic broker layers (this broker's, "0", and every broker's,
    ""): checks that change broker configs on the shared broker call this in a `finally`, so that
    the checks after them see the defaults again. Raises if the broker refuses."""
    resources = [(BROKER_RESOURCE, name, [(k, OP_DELETE, None) for k in keys]) for name in ("0", "")]
    answers = incremental_alter_configs_v0(port, resources)
    bad = [a for a in answers if a[2] != 0]
    assert not bad, f"restoring the broker configs {keys}: {bad}"


# ---------------------------------------------------------------------------
# Record batches (magic v2), built by hand for raw Produce requests
# ---------------------------------------------------------------------------


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def zigzag_varint(n):
    return uvarint((n << 1) ^ (n >> 63))


def record_batch(records, base_ts):
    """An uncompressed magic-2 batch of (key, value) records, all at `base_ts`."""
    body = b""
    for i, (k, v) in enumerate(records):
        r = b"\x00" + zigzag_varint(0) + zigzag_varint(i)
        r += zigzag_varint(-1) if k is None else zigzag_varint(len(k)) + k
        r += zigzag_varint(-1) if v is None else zigzag_varint(len(v)) + v
        r += zigzag_varint(0)  # no headers
        body += zigzag_varint(len(r)) + r
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, base_ts, base_ts, -1, -1, -1, len(records)) + body
    crc = crc32c(after_crc)
    tail = struct.pack(">ibI", -1, 2, crc) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", 0, len(tail)) + tail


def produce_v3_body(topic, partition, records_bytes, acks=-1, timeout_ms=10000):
    tb = topic.encode()
    return (struct.pack(">hhi", -1, acks, timeout_ms) + struct.pack(">i", 1) + struct.pack(">h", len(tb)) + tb
            + struct.pack(">i", 1) + struct.pack(">ii", partition, len(records_bytes)) + records_bytes)


def parse_produce_v3(frame):
    """Returns (correlation_id, [(topic, partition, error, base_offset)])."""
    (corr, nt), pos = struct.unpack_from(">ii", frame, 0), 8
    out = []
    for _ in range(nt):
        (ln,) = struct.unpack_from(">h", frame, pos)
        name = frame[pos + 2:pos + 2 + ln].decode()
        pos += 2 + ln
        (np_,) = struct.unpack_from(">i", frame, pos)
        pos += 4
        for _ in range(np_):
            idx, err, base, _lat = struct.unpack_from(">ihqq", frame, pos)
            pos += 22
            out.append((name, idx, err, base))
    return corr, out
