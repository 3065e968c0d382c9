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

from harness import Skip, check, kstring, recv_frame, request_frame, settled_image, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nemesis"))
import netns  # noqa: E402

KAFKA_PORT, CONTROLLER_PORT, ADMIN_PORT = 9092, 9093, 9644
# Short broker sessions so that fencing a silent broker takes seconds, not the default 9 s.
HEARTBEAT_MS, SESSION_MS = 500, 3000
# What REQUEST_TIMED_OUT without a majority must say (src/controller/mod.rs, ControllerError::Timeout).
NOT_COMMITTED = "did not commit"
REQUEST_TIMED_OUT = 7


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


    def raw_create_topic(self, k, topic, timeout=60):
        """CreateTopics v4 (one topic, 1 partition, factor 1) sent to node k itself from inside
        its namespace: (error code, error message). Not through a Kafka client: clients send
        CreateTopics to the broker Metadata names as controller, which a cut-off follower cannot
        reach; every Spate broker takes the request and proposes it to the quorum itself."""
        import socket
        import struct

        body = (struct.pack(">i", 1) + kstring(topic) + struct.pack(">ihii", 1, 1, 0, 0)
                + struct.pack(">i?", 60_000, False))

        def call():
            with socket.create_connection((self.net.addr(k), KAFKA_PORT), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(request_frame(19, 4, 19, body))
                return recv_frame(s)

        frame = self.net.call_in(k, call)
        corr, _throttle, n = struct.unpack_from(">iii", frame, 0)
        assert corr == 19 and n == 1, f"CreateTopics answer: correlation {corr}, {n} topics"
        (ln,) = struct.unpack_from(">h", frame, 12)
        name = frame[14:14 + ln].decode()
        pos = 14 + ln
        (code, mlen) = struct.unpack_from(">hh", frame, pos)
        msg = frame[pos + 4:pos + 4 + mlen].decode("utf-8", "replace") if mlen >= 0 else None
        assert name == topic, f"CreateTopics answered for {name!r}, not {topic!r}"
        return code, msg


def _fenced(status):
    """{broker id: fenced} as a node's /v1/status tells it."""
    return {b["id"]: b["fenced"] for b in (status or {}).get("brokers", [])}


def _all_unfenced(cluster, k):
    s = cluster.status(k)
    return s is not None and _fenced(s) == {j: False for j in cluster.net.nodes()}


def _topics(digest):
    return set(((digest or {}).get("topics") or {}).keys())


def _consistent(cluster, nodes):
    """The metadata-consistency check (harness `settled_image`) over `nodes`, through their
    namespaces: the settled image, or None while not (yet)."""
    return settled_image({k: cluster.metadata(k) for k in nodes})


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
        else:  # keep the nodes' logs for whoever reads the failure, not their data
            for k in (1, 2, 3):
                shutil.rmtree(os.path.join(tmp, f"n{k}"), ignore_errors=True)


def _agreed_leader(c, nodes):
    """The quorum leader every node in `nodes` names (and its term), or None."""
    ss = [c.status(k) for k in nodes]
    if any(s is None or "quorum" not in s for s in ss):
        return None
    leaders = {s["quorum"].get("leader") for s in ss}
    if len(leaders) != 1 or None in leaders:
        return None
    return ss[0]["quorum"]["leader"], max(s["quorum"]["term"] for s in ss)


def _scenario(ctx, net, c):
    nodes = list(net.nodes())
    c.start()

    # Up: a leader all three agree on, and all three brokers unfenced in everyone's view.
    wait_until(lambda: _agreed_leader(c, nodes) and all(_all_unfenced(c, k) for k in nodes), 60, 0.2,
               "3 nodes up, one leader, every broker unfenced")
    leader, term = _agreed_leader(c, nodes)
    ctx.log(f"cluster up: leader {leader}, term {term}")
    rc, out = c.topic_create(nodes[0], f"nx-before-{net.run_id}")
    assert rc == 0, f"creating a topic before any fault: rc {rc}: {out}"

    # (a) The leader cut off from the other two, both ways: they elect another and go on.
    notes = [_cut_off(ctx, net, c, leader, "leader")]
    # (a') Then a follower cut off: the leader keeps its majority.
    leader, _ = wait_until(lambda: _agreed_leader(c, nodes), 30, 0.2, "one leader after healing")
    follower = next(k for k in nodes if k != leader)
    notes.append(_cut_off(ctx, net, c, follower, "follower"))

    # (b) 200 ms each way on one link while topics are created through every node.
    if not net.netem_available():
        notes.append("delay part not run: this kernel has no netem")
        return "; ".join(notes)
    slow = nodes[-1]
    net.impair(slow, delay_ms=200)
    delayed = [f"nx-delay-{net.run_id}-{k}" for k in nodes]
    for k, t in zip(nodes, delayed):
        rc, out = c.topic_create(k, t, timeout=60)
        assert rc == 0, f"creating {t} through node {k} with node {slow}'s link delayed 200 ms: rc {rc}: {out}"
    net.clear_impairment(slow)
    digest = wait_until(lambda: _consistent(c, nodes), 30, 0.2, "all nodes' images equal after the delayed creations")
    missing = [t for t in delayed if t not in _topics(digest)]
    assert not missing, f"topics created under delay missing: {missing}"
    wait_until(lambda: all(_all_unfenced(c, k) for k in nodes), 30, 0.2, "every broker unfenced after the delay")
    notes.append(f"3 creations with node {slow}'s link delayed 200 ms, consistent")
    return "; ".join(notes)


def _cut_off(ctx, net, c, victim, what):
    """Cuts `victim` off from the other two nodes (both ways) and checks: the other two have (or
    elect) a leader among themselves and fence `victim`'s broker; a topic created through one of
    them is created; one created through `victim` waits, is refused with REQUEST_TIMED_OUT saying
    the quorum did not commit, and never appears; after healing, `victim` follows the majority's
    leader, every broker is unfenced, and every node serves the same metadata at one index."""
    nodes = list(net.nodes())
    _, term = _agreed_leader(c, nodes)
    majority = [k for k in nodes if k != victim]
    tag = f"{what}-{net.run_id}"
    t_cut = time.monotonic()
    net.isolate(victim)

    # A change through the cut-off node, in the background: it must wait, fail saying why, and
    # never appear. Meanwhile the majority goes on.
    cut_topic = f"nx-cut-{tag}"
    result = {}

    def create_on_cut_node():
        t0 = time.monotonic()
        try:
            result["code"], result["msg"] = c.raw_create_topic(victim, cut_topic, timeout=60)
        except Exception as e:  # noqa: BLE001
            result["code"], result["msg"] = None, repr(e)
        result["secs"] = time.monotonic() - t0

    waiter = threading.Thread(target=create_on_cut_node, daemon=True)
    waiter.start()

    def majority_leader():
        got = _agreed_leader(c, majority)
        if got is None or got[0] not in majority:
            return None
        if what == "leader" and got[1] <= term:
            return None
        return got[0]

    new = wait_until(majority_leader, 30, 0.2, f"nodes {majority} to have a leader among themselves after cutting off {victim}")
    t_elected = time.monotonic() - t_cut
    wait_until(lambda: _fenced(c.status(new)).get(victim) is True, 30, 0.2,
               f"the leader {new} to fence the cut-off broker {victim}")
    t_fenced = time.monotonic() - t_cut
    ctx.log(f"{what} {victim} cut off: leader {new} after {t_elected:.1f}s, broker {victim} fenced after {t_fenced:.1f}s")

    # A change through the majority goes through, asked of the majority node that is not the
    # leader (so it is forwarded over the controller network).
    via = next(k for k in majority if k != new)
    maj_topic = f"nx-majority-{tag}"
    rc, out = c.topic_create(via, maj_topic, timeout=60)
    assert rc == 0, f"creating a topic through majority node {via} ({what} {victim} cut off): rc {rc}: {out}"
    wait_until(lambda: all(maj_topic in _topics((c.metadata(k) or {}).get("installed")) for k in majority), 30, 0.2,
               f"{maj_topic} served by both majority nodes")

    waiter.join(75)
    assert not waiter.is_alive(), f"topic creation through the cut-off {what} {victim} still running after 75 s"
    ctx.log(f"CreateTopics to the cut-off {what}: error {result.get('code')} after {result.get('secs', 0):.1f}s: {result.get('msg')}")
    # A cut-off leader waits for a commit that cannot come ("did not commit"); a cut-off follower
    # cannot reach the leader to forward the proposal ("the connection to the leader ... failed").
    said = result["msg"] or ""
    assert result["code"] == REQUEST_TIMED_OUT and "metadata quorum" in said \
        and (NOT_COMMITTED in said or "connection to the leader" in said), \
        (f"CreateTopics to the cut-off {what} {victim}: expected REQUEST_TIMED_OUT ({REQUEST_TIMED_OUT}) saying the "
         f"quorum {NOT_COMMITTED} or the leader was unreachable, got error {result['code']}: {said}")
    for k in nodes:
        d = c.metadata(k)
        for side in ("installed", "controller"):
            assert cut_topic not in _topics(d.get(side)), f"{cut_topic} appeared on node {k} ({side}) while cut off"

    # Heal: the cut-off node follows the majority's leader, its broker is unfenced, all converge.
    net.heal()
    t_heal = time.monotonic()
    wait_until(lambda: _agreed_leader(c, nodes), 30, 0.2, f"all three nodes to agree on a leader after healing {victim}")
    wait_until(lambda: all(_all_unfenced(c, k) for k in nodes), 30, 0.2, "every broker unfenced after healing")
    digest = wait_until(lambda: _consistent(c, nodes), 30, 0.2, "all nodes' images equal at one index after healing")
    t_conv = time.monotonic() - t_heal
    assert maj_topic in _topics(digest), f"{maj_topic} missing after healing: {sorted(_topics(digest))}"
    assert cut_topic not in _topics(digest), f"{cut_topic}, refused while cut off, appeared after healing"
    ctx.log(f"converged {t_conv:.1f}s after healing, at index {digest['index']}")
    # Nor later: one more change through the healed node, then the same check.
    rc, out = c.topic_create(victim, f"nx-after-{tag}")
    assert rc == 0, f"creating a topic through the healed node {victim}: rc {rc}: {out}"
    digest = wait_until(lambda: _consistent(c, nodes), 30, 0.2, "all nodes' images equal at one index")
    assert cut_topic not in _topics(digest), f"{cut_topic}, refused while cut off, appeared later"
    return (f"{what} {victim} cut off: leader {new} in {t_elected:.1f}s, {victim} fenced in {t_fenced:.1f}s, "
            f"a change via {victim} refused after {result['secs']:.1f}s ({result['msg'][:60]}...), "
            f"converged {t_conv:.1f}s after healing")
