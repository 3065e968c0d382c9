#!/usr/bin/env python3
"""Client-compatibility suite for Spate.

    python3 tests/clients/run.py --spate target/debug/spate [-k SUBSTRING ...] [-v] [--broker-log FILE]

Starts one broker (free port on 127.0.0.1, temporary data dir, --cores 2), runs every registered
check against it (kcat, confluent-kafka, kafka-python, raw sockets), prints one PASS/FAIL line per
check and finally `N passed, M failed`. The broker is killed and its directory removed in all
cases. Exit code 0 only when nothing failed.
"""

import argparse
import gc
import os
import signal
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import CHECKS, Broker, Context, Skip  # noqa: E402

# Importing the modules registers their checks, in this order.
import check_kcat  # noqa: E402,F401
import check_confluent  # noqa: E402,F401
import check_kafka_python  # noqa: E402,F401
import check_raw  # noqa: E402,F401
import check_kafka_tools  # noqa: E402,F401
import check_security  # noqa: E402,F401
import check_quotas  # noqa: E402,F401
import check_spate_cli_kafka  # noqa: E402,F401
import check_cluster  # noqa: E402,F401
import check_cluster_netns  # noqa: E402,F401
import check_replication_nemesis  # noqa: E402,F401


def short(e):
    msg = str(e).strip() or type(e).__name__
    if not isinstance(e, AssertionError):
        msg = f"{type(e).__name__}: {msg}"
    msg = " ".join(msg.split())
    return msg if len(msg) <= 400 else msg[:397] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spate", default=os.path.join(HERE, "..", "..", "target", "debug", "spate"),
                    help="path to the spate binary (default: target/debug/spate)")
    ap.add_argument("-k", dest="only", action="append", default=[],
                    help="run only checks whose name contains this (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print progress notes and tracebacks")
    ap.add_argument("--broker-log", help="append the broker's stderr to this file (kept after the run)")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    ap.add_argument("--watchdog", type=float, default=540.0,
                    help="hard limit for the whole run, seconds (default 540)")
    args = ap.parse_args()

    checks = [(n, f) for n, f in CHECKS if not args.only or any(s in n for s in args.only)]
    if args.list:
        for n, _ in checks:
            print(n)
        return 0

    binary = os.path.abspath(args.spate)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"FAIL setup: no executable spate binary at {binary}")
        print("0 passed, 1 failed")
        return 1

    # SIGTERM / SIGHUP behave like Ctrl-C so the finally blocks below run.
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)

    passed, failed = 0, 0
    state = {"broker": None, "ctx": None, "done": 0}
    lock = threading.Lock()

    def cleanup():
        ctx, broker = state["ctx"], state["broker"]
        if ctx is not None:
            ctx.stop_extra_brokers()
        if broker is not None:
            broker.stop()

    def watchdog():
        with lock:
            remaining = len(checks) - state["done"]
            print(f"FAIL watchdog: suite exceeded {args.watchdog:.0f}s; {remaining} check(s) not finished", flush=True)
            cleanup()
            print(f"{passed} passed, {failed + max(remaining, 1)} failed", flush=True)
            os._exit(1)

    timer = threading.Timer(args.watchdog, watchdog)
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    try:
        try:
            broker = Broker(binary, log_path=args.broker_log)
            state["broker"] = broker
            broker.start()
        except Exception as e:  # noqa: BLE001
            print(f"FAIL setup: {short(e)}")
            failed += 1
            print(f"{passed} passed, {failed} failed")
            return 1
        ctx = Context(broker, binary, verbose=args.verbose)
        state["ctx"] = ctx
        if args.verbose:
            print(f"broker at {broker.bootstrap} (data {broker.tmp})", flush=True)

        for name, fn in checks:
            t0 = time.monotonic()
            ok, note = False, ""
            try:
                r = fn(ctx)
                ok, note = True, (r or "")
            except Skip as e:
                note = f"cannot run here: {short(e)}"
            except Exception as e:  # noqa: BLE001
                note = short(e)
                if args.verbose:
                    traceback.print_exc()
                # A cluster check's failure: what the nodes' coordinators and controllers did.
                for c in ctx.extra_brokers:
                    if hasattr(c, "log_lines_with"):
                        print(c.log_lines_with(("group", "coordinat", "member", "fenced", "elect", "WARN", "ERROR")), flush=True)
            finally:
                # Destroy client objects the check left behind (AdminClients live in reference
                # cycles) while their broker still runs, so they do not log connection errors later.
                gc.collect()
                ctx.stop_extra_brokers()
            if not broker.alive():
                ok = False
                note = (note + "; " if note else "") + f"BROKER DIED (exit {broker.proc.returncode})"
                tail = broker.log_tail(15)
                print(f"  broker log tail:\n{tail}")
                broker.stop()
                broker = Broker(binary, log_path=args.broker_log)
                state["broker"] = broker
                broker.start()
                ctx.broker = broker
            dt = time.monotonic() - t0
            with lock:
                state["done"] += 1
                if ok:
                    passed += 1
                else:
                    failed += 1
            line = f"{'PASS' if ok else 'FAIL'} {name}"
            if note:
                line += f" - {note}"
            if args.verbose:
                line += f" ({dt:.1f}s)"
            print(line, flush=True)
    except KeyboardInterrupt as e:
        print(f"FAIL interrupted: {e}")
        failed += 1
    finally:
        timer.cancel()
        with lock:
            cleanup()
    if args.verbose:
        print(f"total {time.monotonic() - started:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
