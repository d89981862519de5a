#!/usr/bin/env python3
"""Tiny system-test runner.

    tests/system/run.py --bin build/circa [-k substring] [--keep]

Discovers functions test_* in tests/system/test_*.py (definition order),
runs each, prints `PASS name (1.2s)` / `FAIL name: reason`, then
`system: N passed, N failed`; exit 1 if any failed.
"""

import argparse
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the circa binary")
    ap.add_argument("-k", dest="k", default=None, help="only tests whose module.name contains this")
    ap.add_argument("--keep", action="store_true", help="keep temp data dirs and logs")
    ap.add_argument("-v", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args()

    binpath = os.path.abspath(args.bin)
    os.environ["CIRCA_BIN"] = binpath
    import harness
    harness.BIN = binpath
    harness.KEEP = args.keep
    import pgfix
    pgfix.KEEP = args.keep

    passed = failed = 0
    sanitizer_seen, problems_seen = {}, {}
    if not (os.path.isfile(binpath) and os.access(binpath, os.X_OK)):
        print("FAIL setup: binary %s not found or not executable" % binpath)
        print("system: 0 passed, 1 failed")
        return 1

    mods = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    for modname in mods:
        tests = []
        try:
            mod = importlib.import_module(modname)
            tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
        except Exception as e:  # noqa: BLE001
            if args.k is None or args.k in modname:
                print("FAIL %s: import error: %s: %s" % (modname, type(e).__name__, e))
                failed += 1
            continue
        tests = [(n, f) for n, f in tests if args.k is None or args.k in "%s.%s" % (modname, n)]
        for name, fn in tests:
            full = "%s.%s" % (modname, name)
            t0 = time.monotonic()
            nodes_before = len(harness.NODES)
            try:
                fn()
            except BaseException as e:  # noqa: BLE001
                if isinstance(e, KeyboardInterrupt):
                    harness.stop_all()
                    raise
                dt = time.monotonic() - t0
                reason = str(e) if isinstance(e, AssertionError) else "%s: %s" % (type(e).__name__, e)
                if not reason:
                    tb = traceback.extract_tb(e.__traceback__)
                    reason = "assertion at %s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno)
                lines = reason.splitlines() or [""]
                print("FAIL %s: %s (%.1fs)" % (full, lines[0][:2000], dt))
                for line in lines[1:40]:
                    print("    " + line[:2000])
                if args.v:
                    traceback.print_exc()
                else:
                    tb = traceback.extract_tb(e.__traceback__)
                    here = [fr for fr in tb if os.path.basename(fr.filename).startswith("test_")] or \
                        [fr for fr in tb if fr.filename.startswith(HERE)]
                    if here:
                        fr = here[-1]
                        print("    at %s:%d: %s" % (os.path.basename(fr.filename), fr.lineno, fr.line))
                for node in harness.NODES:  # don't report these again at teardown
                    node.note_unexpected_exit()
                    problems_seen[id(node)] = len(node.problems)
                    sanitizer_seen[id(node)] = len(node.sanitizer_reports())
                for i, node in enumerate(harness.NODES):
                    if i < nodes_before and not node.alive():
                        continue
                    print("    --- %s log (%s), last lines:" % (node.name, node.log_path))
                    for line in node.log_tail(15).splitlines():
                        print("    | " + line[:300])
                failed += 1
            else:
                # a sanitizer report or crash in any node during this test fails it too
                bad = []
                for node in harness.NODES:
                    node.note_unexpected_exit()
                    reps = node.sanitizer_reports()
                    seen = sanitizer_seen.get(id(node), 0)
                    if len(reps) > seen:
                        bad.append("%s: %s" % (node.name, reps[seen].strip()))
                        sanitizer_seen[id(node)] = len(reps)
                    while node.problems[problems_seen.get(id(node), 0):]:
                        bad.append(node.problems[problems_seen.get(id(node), 0)])
                        problems_seen[id(node)] = problems_seen.get(id(node), 0) + 1
                if bad:
                    failed += 1
                    print("FAIL %s: %s (%.1fs)" % (full, bad[0][:500], time.monotonic() - t0))
                    for b in bad[1:5]:
                        print("    " + b[:500])
                    for node in harness.NODES:
                        print("    --- %s log (%s), last lines:" % (node.name, node.log_path))
                        for line in node.log_tail(15).splitlines():
                            print("    | " + line[:300])
                else:
                    passed += 1
                    print("PASS %s (%.1fs)" % (full, time.monotonic() - t0))
            sys.stdout.flush()
        mod_nodes = list(harness.NODES)
        problems = harness.stop_all()
        new = []
        for node in mod_nodes:
            for i, p in enumerate(node.problems):
                if i >= problems_seen.get(id(node), 0):
                    new.append(p)
        if new and tests:
            failed += 1
            print("FAIL %s.teardown: %s" % (modname, new[0][:500]))
            for p in new[1:5]:
                print("    " + p[:500])
            for node in mod_nodes:
                if node.problems:
                    print("    --- %s log, last lines:" % node.name)
                    for line in node.log_tail(15).splitlines():
                        print("    | " + line[:300])
        sys.stdout.flush()
    harness.stop_all()
    print("system: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
