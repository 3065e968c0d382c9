"""Issue 22's fault-injection checker, quick version (tests/nemesis/replication_checker.py):
three nodes in network namespaces, an RF-3 topic with min.insync.replicas=2, an idempotent
acks=all producer per partition and two readers, and about 45 s of faults (kill -9 + restart,
SIGSTOP + SIGCONT, the leader of a partition cut off from the other brokers and the quorum;
netem delay and loss where the kernel has netem). It first checks that its checks catch planted
faults (self-test), then runs, heals, settles and checks that every acknowledged record is on
every replica once, in order, at its offset, that the replicas agree byte for byte below the
high watermark and that the readers never saw a record later lost. About 60 s.

The seed is random and printed in the note (and in the failure); rerun one with
`tests/nemesis/run_checker.sh --seconds 45 --hold 2,6 --quiet 3,5 --seed N`. Needs root and iproute2, else Skip.
"""

import os
import shutil
import sys

from harness import Skip, check

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nemesis"))
import netns  # noqa: E402
import replication_checker as rc  # noqa: E402

QUICK_SECONDS = 45.0


@check("replication_nemesis_quick")
def replication_nemesis_quick(ctx):
    why = netns.unavailable_reason()
    if why is not None:
        raise Skip(f"network namespaces: {why}")
    failures = rc.selftest(log=ctx.log)
    assert not failures, f"the checker's self-test failed (its checks would not catch these): {failures}"
    seed = int(os.environ["SPATE_NEMESIS_SEED"]) if os.environ.get("SPATE_NEMESIS_SEED") else None
    cfg = rc.Config(binary=ctx.binary, seed=seed, duration=QUICK_SECONDS, consumers=2,
                    hold=(2.0, 6.0), quiet=(3.0, 5.0), settle_timeout=60.0,
                    log=ctx.log, on_net=ctx.extra_brokers.append)  # the watchdog tears the namespaces down
    try:
        res = rc.run(cfg)
    except netns.Unsupported as e:
        raise Skip(f"network namespaces: {e}") from None
    summary = res.summary()
    with open(os.path.join(res.workdir, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    if not res.ok:
        print(f"  replication nemesis summary (seed {cfg.seed}):\n" + "\n".join("    " + x for x in summary.splitlines()),
              flush=True)
        first = res.violations[0]
        raise AssertionError(f"seed {cfg.seed}: {len(res.violations)} violation(s), first [{first[0]}] {first[1][:200]}; "
                             f"summary, node logs and data kept in {res.workdir}")
    ctx.log(summary)
    shutil.rmtree(res.workdir, ignore_errors=True)
    return res.note
