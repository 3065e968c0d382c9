"""A 3-node Spate cluster with one node per network namespace, and links cut between them
(tests/nemesis/netns.py): issue 21's "a two-of-three loss makes metadata changes wait (and says
so), never diverge", and the first user of the fault harness issue 22's checker builds on.

Needs root and iproute2; without them the check raises Skip (counted as a failure by the suite,
with the reason). Every namespace, veth, bridge and process it makes is removed when it ends.
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time

from harness import Skip, check, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nemesis"))
import netns  # noqa: E402

KAFKA_PORT, CONTROLLER_PORT, ADMIN_PORT = 9092, 9093, 9644
# Short broker sessions so that fencing a silent broker takes seconds, not the default 9 s.
HEARTBEAT_MS, SESSION_MS = 500, 3000
# What REQUEST_TIMED_OUT without a majority must say (src/controller/mod.rs, ControllerError::Timeout).
NOT_COMMITTED = "did not commit"


class Cluster:
    """Three `spate serve` nodes, node K in namespace K of `net`, all of them voters."""

    def __init__(self, net, binary, tmp, log):
        self.net, self.binary, self.tmp, self.log = net, binary, tmp, log
        self.procs, self.logs = {}, {}
        self.voters = ",".join(f"{k}@{net.addr(k)}:{CONTROLLER_PORT}" for k in net.nodes())

    def bootstrap(self, k):
        return f"{self.net.addr(k)}:{KAFKA_PORT}"

    def start(self):
        for k in self.net.nodes():
            path = os.path.join(self.tmp, f"n{k}.log")
            self.logs[k] = path
            f = open(path, "ab")
            self.procs[k] = self.net.popen(k, [
                self.binary, "serve",
                "--node-id", str(k),
                "--listen", self.bootstrap(k),
                "--admin-listen", f"{self.net.addr(k)}:{ADMIN_PORT}",
                "--data-dir", os.path.join(self.tmp, f"n{k}"),
                "--controller-quorum-voters", self.voters,
                "--cores", "1",
                "--broker-heartbeat-interval-ms", str(HEARTBEAT_MS),
                "--broker-session-timeout-ms", str(SESSION_MS),
            ], stdout=f, stderr=f)
            f.close()

    def assert_alive(self):
        dead = {k: p.returncode for k, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"node(s) exited: {dead}; logs:\n{self.tails()}")

    def tails(self, lines=12):
        out = []
        for k, path in sorted(self.logs.items()):
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append(f"--- node {k} ---\n" + "\n".join(text))
        return "\n".join(out)

    def get(self, k, path):
        """A JSON admin endpoint of node k, asked from inside its namespace; None if unreachable."""
        self.assert_alive()
        try:
            status, body = self.net.http_get(k, self.net.addr(k), ADMIN_PORT, path, timeout=3.0)
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def status(self, k):
        return self.get(k, "/v1/status")

    def metadata(self, k):
        return self.get(k, "/v1/metadata")

    def topic_create(self, k, topic, timeout=60):
        """`spate topic create` run inside node k's namespace against node k: (rc, output)."""
        r = self.net.run(k, [self.binary, "topic", "create", "-b", self.bootstrap(k), "-p", "2", "--json", topic],
                         timeout=timeout)
        return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace").strip()


def _fenced(status):
    """{broker id: fenced} as a node's /v1/status tells it."""
    return {b["id"]: b["fenced"] for b in (status or {}).get("brokers", [])}


def _all_unfenced(cluster, k):
    s = cluster.status(k)
    return s is not None and _fenced(s) == {j: False for j in cluster.net.nodes()}


def _topics(digest):
    return set(((digest or {}).get("topics") or {}).keys())


def _consistent(cluster, nodes):
    """The metadata-consistency check (tests/cluster.rs `assert_consistent`): once idle, every
    node serves the image its controller applied, at one index on all nodes. Returns the digest
    when settled, None while not (yet)."""
    ds = [cluster.metadata(k) for k in nodes]
    if any(d is None or d.get("installed") is None for d in ds):
        return None
    index = ds[0]["controller"]["index"]
    if not all(d["controller"]["index"] == index and d["installed"]["index"] == index for d in ds):
        return None
    for k, d in zip(nodes, ds):
        assert d["installed"] == d["controller"], \
            f"node {k} serves another image than its controller applied:\n{d['installed']}\nvs\n{d['controller']}"
        assert d["installed"] == ds[0]["installed"], \
            f"nodes {k} and {nodes[0]} differ at index {index}:\n{d['installed']}\nvs\n{ds[0]['installed']}"
    return ds[0]["installed"]


@check("cluster_netns_leader_cut_off_waits_majority_moves_on_heals")
def cluster_netns_leader_cut_off(ctx):
    why = netns.unavailable_reason()
    if why is not None:
        raise Skip(f"network namespaces: {why}")
    tmp = tempfile.mkdtemp(prefix="spate-netns-")
    keep_logs = False
    try:
        try:
            net = netns.Net(3, log=ctx.log)
        except netns.Unsupported as e:
            raise Skip(f"network namespaces: {e}") from None
        # The runner's watchdog stops extra brokers before it exits: it tears the namespaces down too.
        ctx.extra_brokers.append(net)
        with net:
            if net.stale_removed:
                ctx.log(f"removed namespaces of earlier crashed runs: {net.stale_removed}")
            c = Cluster(net, ctx.binary, tmp, ctx.log)
            try:
                note = _scenario(ctx, net, c)
            except BaseException:
                keep_logs = True
                raise
            finally:
                if keep_logs:
                    ctx.log(f"node logs:\n{c.tails(40)}")
        return note
    except AssertionError as e:
        raise AssertionError(f"{e}\n(node logs kept in {tmp})") from None
    finally:
        if not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def _scenario(ctx, net, c):
    nodes = list(net.nodes())
    run = net.run_id.replace("-", "")
    c.start()

    # Up: a leader all three agree on, and all three brokers unfenced in everyone's view.
    def settled():
        ss = [c.status(k) for k in nodes]
        if any(s is None or "quorum" not in s for s in ss):
            return None
        leaders = {s["quorum"].get("leader") for s in ss}
        if len(leaders) != 1 or None in leaders:
            return None
        return ss if all(_fenced(s) == {j: False for j in nodes} for s in ss) else None

    ss = wait_until(settled, 60, 0.2, "3 nodes up, one leader, every broker unfenced")
    leader = ss[0]["quorum"]["leader"]
    term = ss[0]["quorum"]["term"]
    ctx.log(f"cluster up: leader {leader}, term {term}")
    rc, out = c.topic_create(nodes[0], f"nx-before-{run}")
    assert rc == 0, f"creating a topic before any fault: rc {rc}: {out}"

    # (a) The leader cut off from the other two, both ways.
    majority = [k for k in nodes if k != leader]
    t_cut = time.monotonic()
    net.isolate(leader)

    # A change through the cut-off node: it must wait, fail saying why, and never appear.
    cut_topic = f"nx-cut-{run}"
    result = {}

    def create_on_cut_node():
        t0 = time.monotonic()
        try:
            result["rc"], result["out"] = c.topic_create(leader, cut_topic, timeout=60)
        except Exception as e:  # noqa: BLE001
            result["rc"], result["out"] = None, repr(e)
        result["secs"] = time.monotonic() - t0

    waiter = threading.Thread(target=create_on_cut_node, daemon=True)
    waiter.start()

    def new_leader():
        ss = [c.status(k) for k in majority]
        if any(s is None for s in ss):
            return None
        ls = {s["quorum"].get("leader") for s in ss}
        if len(ls) != 1:
            return None
        (lead,) = ls
        if lead in majority and all(s["quorum"]["term"] > term for s in ss):
            return lead
        return None

    new = wait_until(new_leader, 30, 0.2, f"nodes {majority} to elect a leader among themselves after cutting off {leader}")
    t_elected = time.monotonic() - t_cut
    wait_until(lambda: _fenced(c.status(new)).get(leader) is True, 30, 0.2,
               f"the new leader {new} to fence the cut-off broker {leader}")
    t_fenced = time.monotonic() - t_cut
    ctx.log(f"leader {new} elected after {t_elected:.1f}s, broker {leader} fenced after {t_fenced:.1f}s")

    # A change through the majority goes through, asked of the majority node that is not the
    # leader (so it is forwarded over the controller network).
    via = next(k for k in majority if k != new)
    maj_topic = f"nx-majority-{run}"
    rc, out = c.topic_create(via, maj_topic, timeout=60)
    assert rc == 0, f"creating a topic through majority node {via}: rc {rc}: {out}"
    wait_until(lambda: all(maj_topic in _topics((c.metadata(k) or {}).get("installed")) for k in majority), 30, 0.2,
               f"{maj_topic} served by both majority nodes")

    waiter.join(75)
    assert not waiter.is_alive(), "topic creation through the cut-off node still running after 75 s"
    ctx.log(f"through the cut-off node: rc {result.get('rc')} after {result.get('secs', 0):.1f}s: {result.get('out')}")
    assert result["rc"] not in (0, None), \
        f"topic creation through the cut-off node {leader} did not fail: rc {result['rc']}: {result['out']}"
    assert NOT_COMMITTED in result["out"] and "REQUEST_TIMED_OUT" in result["out"].upper().replace(" ", "_"), \
        f"the cut-off node's refusal does not say the quorum did not commit (REQUEST_TIMED_OUT): {result['out']}"
    for k in nodes:
        d = c.metadata(k)
        for side in ("installed", "controller"):
            assert cut_topic not in _topics(d.get(side)), f"{cut_topic} appeared on node {k} ({side}) while cut off"

    # Heal: the old leader follows the new one, its broker is unfenced, everything converges.
    net.heal()
    t_heal = time.monotonic()
    wait_until(lambda: (c.status(leader) or {}).get("quorum", {}).get("leader") == new, 30, 0.2,
               f"node {leader} to follow leader {new} after healing")
    wait_until(lambda: all(_all_unfenced(c, k) for k in nodes), 30, 0.2, "every broker unfenced after healing")
    digest = wait_until(lambda: _consistent(c, nodes), 30, 0.2, "all nodes' images equal at one index after healing")
    t_conv = time.monotonic() - t_heal
    assert maj_topic in _topics(digest), f"{maj_topic} missing after healing: {sorted(_topics(digest))}"
    assert cut_topic not in _topics(digest), f"{cut_topic}, refused while cut off, appeared after healing"
    ctx.log(f"converged {t_conv:.1f}s after healing at index {digest['index']}")
    # It may not appear later either: one more change, then the same check.
    rc, out = c.topic_create(leader, f"nx-after-{run}")
    assert rc == 0, f"creating a topic through the healed node {leader}: rc {rc}: {out}"
    digest = wait_until(lambda: _consistent(c, nodes), 30, 0.2, "all nodes' images equal at one index")
    assert cut_topic not in _topics(digest), f"{cut_topic}, refused while cut off, appeared later"

    # (b) 200 ms each way on one link while topics are created through every node.
    if not net.netem_available():
        return (f"leader {leader} cut off: {new} elected in {t_elected:.1f}s, {leader} fenced in {t_fenced:.1f}s, "
                f"change via {leader} refused after {result['secs']:.1f}s, converged {t_conv:.1f}s after healing; "
                "delay part not run: this kernel has no netem")
    slow = majority[0]
    net.impair(slow, delay_ms=200)
    delayed = [f"nx-delay-{run}-{k}" for k in nodes]
    for k, t in zip(nodes, delayed):
        rc, out = c.topic_create(k, t, timeout=60)
        assert rc == 0, f"creating {t} through node {k} with node {slow}'s link delayed 200 ms: rc {rc}: {out}"
    net.clear_impairment(slow)
    digest = wait_until(lambda: _consistent(c, nodes), 30, 0.2, "all nodes' images equal after the delayed creations")
    missing = [t for t in delayed if t not in _topics(digest)]
    assert not missing, f"topics created under delay missing: {missing}"
    wait_until(lambda: all(_all_unfenced(c, k) for k in nodes), 30, 0.2, "every broker unfenced after the delay")
    return (f"leader {leader} cut off: {new} elected in {t_elected:.1f}s, {leader} fenced in {t_fenced:.1f}s, "
            f"change via {leader} refused after {result['secs']:.1f}s, converged {t_conv:.1f}s after healing; "
            f"3 creations with node {slow}'s link delayed 200 ms, consistent")
