#!/usr/bin/env python3
"""Opt-in soak: kill -9 the leader of a cluster under load, round after round, then check.

    python3 tests/system/soak_cluster.py --bin build/circa --rounds 20 [--nodes 3]
        [--clients 8] [--resources 3] [--copies 2] [--keep] [--seed N]

Each round: wait for progress, kill -9 the leader, time the first ok write that started after
the kill (the failover time), keep writing without the node for --settle seconds, restart it and
wait until it caught up.  At the end: stop the workload, wait for convergence and run the history
checker (history.py).  Prints every round, failover min/median/max and the checker's report;
exits 1 if a round or the check failed, or a node crashed or reported a sanitizer error.
Not discovered by run.py (the file name does not start with test_).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    ap.add_argument("--bin", required=True, help="path to the circa binary")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--resources", type=int, default=3)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds of writes without the killed node")
    ap.add_argument("--election-ms", type=int, default=500)
    ap.add_argument("--heartbeat-ms", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep temp data dirs and logs")
    args = ap.parse_args(argv)

    binpath = os.path.abspath(args.bin)
    if not (os.path.isfile(binpath) and os.access(binpath, os.X_OK)):
        print("soak: binary %s not found or not executable" % binpath)
        return 1
    os.environ["CIRCA_BIN"] = binpath
    import harness
    harness.BIN = binpath
    harness.KEEP = args.keep
    import history
    from cluster import Cluster, kill_leader_round

    # every member must stay under the loan list's 1000 entries (no cursor): give each client
    # enough members for the loans it may make (a generous 30 per second per client)
    members = max(2, int(args.rounds * (args.settle + 4.0) * 30 / 700) + 2)
    times, failed = [], None
    c = wl = None
    t_start = time.monotonic()
    try:
        c = Cluster(args.nodes, name="soak",
                    raft={"election_timeout_ms": args.election_ms, "heartbeat_ms": args.heartbeat_ms})
        wl = c.workload(clients=args.clients, resources=args.resources, copies=args.copies,
                        seed=args.seed, members_per_client=members, checkouts_per_member=700)
        print("soak: %d nodes, %d clients x %d members, %d resources x %d copies, seed %d"
              % (args.nodes, args.clients, members, args.resources, args.copies, wl.seed))
        wl.start()
        try:
            for i in range(args.rounds):
                dt = kill_leader_round(c, wl, settle_s=args.settle)
                times.append(dt)
                print("round %d/%d: failover %.2fs; %s" % (i + 1, args.rounds, dt, wl.summary()))
                sys.stdout.flush()
        except BaseException as e:  # noqa: BLE001
            failed = e
            print("round %d/%d FAILED: %s" % (len(times) + 1, args.rounds, e))
            print("cluster: %s" % c.describe())
        finally:
            try:
                wl.stop()
            except AssertionError as e:
                failed = failed or e
                print("workload: %s" % e)
        print("failover (kill -9 leader -> first ok write): %s" % history.describe_times(times))
        if failed is None or isinstance(failed, AssertionError):
            # check what happened so far in any case: a failed round must not hide lost writes
            for n in c.nodes:
                if not n.alive() and not n.draining:
                    try:
                        c.restart(n)
                    except AssertionError as e:
                        print("restart %s: %s" % (n.name, e))
            rep = c.verify(wl, timeout=60)
            print(wl.summary())
            print(rep)
            if not rep.ok:
                failed = failed or AssertionError("history check failed")
    except KeyboardInterrupt:
        print("soak: interrupted")
        failed = failed or KeyboardInterrupt()
    except BaseException as e:  # noqa: BLE001
        failed = failed or e
        print("soak: %s: %s" % (type(e).__name__, e))
    finally:
        if c is not None and failed is not None:
            for n in c.nodes:
                print("--- %s log (%s), last lines:" % (n.name, n.log_path))
                for line in n.log_tail(15).splitlines():
                    print("| " + line[:300])
        if c is not None:
            c.stop()
        problems = harness.stop_all()
        for p in problems:
            print("node problem: %s" % p)
        if problems:
            failed = failed or AssertionError(problems[0])
    print("soak: %s after %.0fs" % ("FAILED" if failed is not None else "passed", time.monotonic() - t_start))
    return 1 if failed is not None else 0


if __name__ == "__main__":
    sys.exit(main())
