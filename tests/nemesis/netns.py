"""Network namespaces for fault-injection tests (stdlib only; needs root, `ip`, optionally `tc`).

    from netns import Net, unavailable_reason
    if (why := unavailable_reason()) is not None: skip(why)
    with Net(3) as net:                      # spate-<pid>-<rand>-n1..n3 and spate-<pid>-<rand>-br
        p = net.popen(1, ["spate", "serve", "--listen", f"{net.addr(1)}:9092", ...])
        net.isolate(1)                       # node 1 cut off from every other node, both ways
        net.heal()                           # every cut undone
        net.impair(2, delay_ms=200)          # tc netem on node 2's link (raises Unsupported without netem)
        status, body = net.http_get(2, net.addr(2), 9644, "/v1/status")
    # everything it created is gone here (also at interpreter exit, and on the next run after a crash)

Topology: one namespace per node (`<run>-nK`, address 10.251.X.K/24 on `eth0`, loopback up) and
one namespace holding a Linux bridge (`<run>-br`, bridge `br0`, the nodes' veth peers `vK`).
Nothing is created in the root namespace: no interface, address, route or qdisc there changes,
so the harness cannot disturb the host's network, and the /24 is only chosen away from the root
namespace's routes so that no address is ever ambiguous to a reader.

Cutting links: a node's neighbour (ARP) entry for a peer is replaced by a permanent entry with a
MAC address no interface has (02:5e:ee:00:00:00). Its frames to that peer then reach the bridge,
are flooded as unknown unicast and dropped by every receiving interface: a silent loss (TCP
retransmits and times out, nothing answers with an error), for one direction of one pair.
`cut(a, b)` does both directions. This needs neither netem nor iptables (kernels and images
without them are common: the VM this was written on has neither `sch_netem` nor an `iptables`
binary) and it is exact per pair, which a qdisc on the shared link is not. Healing deletes the
entry, and ARP resolves the real address again.

Delay and loss (`impair`): `tc qdisc ... netem` at the root of both ends of a node's veth (its
`eth0` and the bridge's `vK`), so every packet to or from that node is delayed by the given
amount each way. Raises `Unsupported` when the kernel has no netem.

Cleanup: `close()` (also from `with`, and from an atexit hook) kills the processes started with
`popen` (by their process group), kills any process still inside the run's namespaces, and
deletes the namespaces, which destroys their veths, bridge and qdiscs. At creation, namespaces of
earlier runs (`spate-<pid>-<hex>-...`) whose creating process is gone are removed the same way.
"""

import atexit
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time

PREFIX = "spate"
CLONE_NEWNET = 0x40000000
BOGUS_MAC = "02:5e:ee:00:00:00"
_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]{{4}})-(n\d+|br)$")


class Unsupported(Exception):
    """The kernel or the tools here cannot do what was asked (no netem, no namespaces)."""


def _run(args, check=True, timeout=20):
    r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return r


def unavailable_reason():
    """None when this process can build namespaces, else why not (for a Skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (this runs as uid %d)" % os.geteuid()
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    try:
        _libc().setns
    except (OSError, AttributeError) as e:
        return f"libc setns() is not available: {e}"
    return None


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _netns_list():
    r = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.decode().splitlines() if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(ns):
    """SIGKILLs the processes still running inside namespace `ns` (ours: it has our prefix and
    run id), by pid, and waits a little for them to go."""
    r = _run(["ip", "netns", "pids", ns], check=False)
    pids = [int(p) for p in r.stdout.decode().split() if p.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p) and not _is_zombie(p)]
        time.sleep(0.05)


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def cleanup_stale():
    """Removes namespaces left by earlier runs whose creating process no longer exists (a
    crashed or SIGKILLed run). Namespaces of live runs (another test in parallel) are left alone.
    Returns the names removed."""
    removed = []
    for ns in _netns_list():
        m = _NAME_RE.match(ns)
        if not m or _pid_alive(int(m.group(1))):
            continue
        _kill_inside(ns)
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    return removed


def _pick_subnet(seed):
    """A 10.251.X.0/24 none of the root namespace's routes covers (the addresses live only in our
    namespaces, but an address the host also routes would confuse anyone reading the logs)."""
    routes = _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout.decode()
    used = set()
    for line in routes.splitlines():
        tok = line.split()
        if not tok:
            continue
        dst = tok[1] if tok[0] in ("local", "broadcast", "unicast", "blackhole", "unreachable") and len(tok) > 1 else tok[0]
        if dst == "default":
            continue
        used.add(dst)

    def clashes(x):
        import ipaddress
        net = ipaddress.ip_network(f"10.251.{x}.0/24")
        for d in used:
            try:
                if ipaddress.ip_network(d, strict=False).overlaps(net):
                    return True
            except ValueError:
                continue
        return False

    for i in range(256):
        x = (seed + i) % 254 + 1
        if not clashes(x):
            return f"10.251.{x}"
    raise Unsupported("every 10.251.X.0/24 is routed in the root namespace")


class Net:
    """N nodes, each in its own network namespace, joined by a bridge in another."""

    def __init__(self, n, log=None):
        why = unavailable_reason()
        if why is not None:
            raise Unsupported(why)
        assert 1 <= n <= 200
        self.n = n
        self.log = log or (lambda _msg: None)
        rand = secrets.token_hex(2)
        self.run_id = f"{os.getpid()}-{rand}"
        self.base = _pick_subnet(int(rand, 16))
        self.bridge_ns = f"{PREFIX}-{self.run_id}-br"
        self.procs = []
        self.cuts = set()  # (from, to) directions cut
        self.impaired = set()
        self.created = []  # namespaces made, in order
        self.macs = {}
        self._closed = False
        self._lock = threading.Lock()
        atexit.register(self.close)
        self.stale_removed = cleanup_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    # -- naming -------------------------------------------------------------------------------

    def ns(self, k):
        return f"{PREFIX}-{self.run_id}-n{k}"

    def addr(self, k):
        return f"{self.base}.{k}"

    def nodes(self):
        return range(1, self.n + 1)

    # -- building and tearing down ------------------------------------------------------------

    def _create(self):
        r = _run(["ip", "netns", "add", self.bridge_ns], check=False)
        if r.returncode != 0:  # root without CAP_SYS_ADMIN (a locked-down container), or no netns
            raise Unsupported(f"cannot create a network namespace: {r.stderr.decode(errors='replace').strip()}")
        self.created.append(self.bridge_ns)
        b = ["ip", "-n", self.bridge_ns]
        _run(b + ["link", "add", "br0", "type", "bridge"])
        _run(b + ["link", "set", "br0", "up"])
        _run(b + ["link", "set", "lo", "up"])
        for k in self.nodes():
            ns = self.ns(k)
            _run(["ip", "netns", "add", ns])
            self.created.append(ns)
            _run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"v{k}", "netns", self.bridge_ns])
            _run(b + ["link", "set", f"v{k}", "master", "br0"])
            _run(b + ["link", "set", f"v{k}", "up"])
            i = ["ip", "-n", ns]
            _run(i + ["addr", "add", f"{self.addr(k)}/24", "dev", "eth0"])
            _run(i + ["link", "set", "eth0", "up"])
            _run(i + ["link", "set", "lo", "up"])
            out = _run(i + ["-o", "link", "show", "eth0"]).stdout.decode()
            self.macs[k] = re.search(r"link/ether ([0-9a-f:]{17})", out).group(1)
        self.log(f"netns: {self.n} nodes in {self.base}.0/24, namespaces {self.ns(1)}..{self.ns(self.n)}, bridge {self.bridge_ns}")

    def close(self):
        """Kills what runs inside and deletes every namespace this Net created. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self.created):
            _kill_inside(ns)
            _run(["ip", "netns", "del", ns], check=False)
        left = [ns for ns in _netns_list() if ns in self.created]
        if left:
            raise RuntimeError(f"netns: could not delete {left}")
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    stop = close  # so that a runner that stops "brokers" at a deadline tears this down too

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- running things inside ----------------------------------------------------------------

    def _exec_prefix(self, k):
        return ["ip", "netns", "exec", self.ns(k)]

    def popen(self, k, args, **kw):
        """Starts `args` inside node k's namespace in its own process group (killed by close())."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self._exec_prefix(k) + list(args), **kw)
        self.procs.append(p)
        return p

    def run(self, k, args, timeout=60, input_bytes=None):
        """Runs `args` inside node k's namespace to completion (CompletedProcess, bytes)."""
        return subprocess.run(self._exec_prefix(k) + list(args), input=input_bytes,
                              stdin=None if input_bytes is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    def _enter(self, k):
        """Moves the calling thread (only it) into node k's network namespace."""
        fd = os.open(f"/run/netns/{self.ns(k)}", os.O_RDONLY)
        try:
            if _libc().setns(fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns into {self.ns(k)}: {os.strerror(e)}")
        finally:
            os.close(fd)

    def call_in(self, k, fn):
        """Calls fn() on a new thread that has entered node k's network namespace, and returns
        what it returns (or raises what it raises). Sockets made there stay in that namespace;
        the thread ends afterwards, so no other code ever runs in it."""
        out = {}

        def target():
            try:
                self._enter(k)
                out["v"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                out["e"] = e

        t = threading.Thread(target=target, name=f"netns-{k}", daemon=True)
        t.start()
        t.join()
        if "e" in out:
            raise out["e"]
        return out.get("v")

    def thread(self, k, fn, name=None):
        """Starts (and returns) a daemon thread that enters node k's network namespace and runs
        fn() there, for long-running clients. A thread's network namespace is inherited by the
        threads it creates (Linux clone), so a librdkafka client created on it (whose threads
        rd_kafka_new and its main thread start) and any Python thread it starts live in node k's
        namespace too. If fn raises, the exception is kept in the thread's `error` attribute."""
        t = threading.Thread(name=name or f"netns-{k}", daemon=True)
        t.error = None

        def target():
            try:
                self._enter(k)
                fn()
            except BaseException as e:  # noqa: BLE001 - kept for the caller
                t.error = e

        t.run = target
        t.start()
        return t

    def http_get(self, k, host, port, path, timeout=5.0):
        """GET http://host:port/path from inside node k's namespace: (status, body str)."""
        import http.client

        def get():
            c = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                c.request("GET", path)
                r = c.getresponse()
                return r.status, r.read().decode("utf-8", "replace")
            finally:
                c.close()

        return self.call_in(k, get)

    # -- faults -------------------------------------------------------------------------------

    def _neigh(self, k, peer, mac):
        _run(["ip", "-n", self.ns(k), "neigh", "replace", self.addr(peer), "lladdr", mac,
              "dev", "eth0", "nud", "permanent"])

    def cut_one_way(self, a, b):
        """Packets from a to b are dropped silently (b to a still flow)."""
        assert a != b
        self._neigh(a, b, BOGUS_MAC)
        self.cuts.add((a, b))

    def cut(self, a, b):
        """No packet passes between a and b, either way."""
        self.cut_one_way(a, b)
        self.cut_one_way(b, a)
        self.log(f"netns: cut {a} <-> {b}")

    def isolate(self, k):
        """Node k is cut off from every other node (both directions)."""
        for j in self.nodes():
            if j != k:
                self.cut(k, j)

    def partition(self, *groups):
        """Cuts every pair of nodes in different groups, e.g. partition([1], [2, 3])."""
        for gi, g in enumerate(groups):
            for h in groups[gi + 1:]:
                for a in g:
                    for b in h:
                        self.cut(a, b)

    def heal(self, a=None, b=None):
        """Undoes the cut between a and b (both ways), or every cut when no pair is given."""
        pairs = [(x, y) for (x, y) in self.cuts if a is None or {x, y} == {a, b}]
        for x, y in pairs:
            _run(["ip", "-n", self.ns(x), "neigh", "del", self.addr(y), "dev", "eth0"], check=False)
            self.cuts.discard((x, y))
        self.log(f"netns: healed {'every cut' if a is None else f'{a} <-> {b}'}")

    def impair(self, k, delay_ms=0, jitter_ms=0, loss_pct=0.0):
        """tc netem on both ends of node k's link: every packet to or from k is delayed
        `delay_ms` (± `jitter_ms`) and lost with `loss_pct` % each way. Unsupported without netem."""
        if shutil.which("tc") is None:
            raise Unsupported("the `tc` command (iproute2) is not installed")
        spec = ["netem", "delay", f"{delay_ms}ms"]
        if jitter_ms:
            spec += [f"{jitter_ms}ms"]
        if loss_pct:
            spec += ["loss", f"{loss_pct}%"]
        for ns, dev in ((self.ns(k), "eth0"), (self.bridge_ns, f"v{k}")):
            r = _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root"] + spec, check=False)
            if r.returncode != 0:
                err = r.stderr.decode(errors="replace").strip()
                self.clear_impairment(k)
                if "unknown" in err.lower() or "no such file" in err.lower():
                    raise Unsupported(f"this kernel has no netem qdisc (tc: {err})")
                raise RuntimeError(f"tc netem on {ns}/{dev}: {err}")
            self.impaired.add(k)
        self.log(f"netns: node {k}'s link {' '.join(spec)}")

    def clear_impairment(self, k):
        for ns, dev in ((self.ns(k), "eth0"), (self.bridge_ns, f"v{k}")):
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
        self.impaired.discard(k)

    def netem_available(self):
        """True when tc netem works here (probed on node 1's link, then removed)."""
        try:
            self.impair(1, delay_ms=0)
        except Unsupported:
            return False
        self.clear_impairment(1)
        return True
