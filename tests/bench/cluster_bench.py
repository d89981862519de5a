#!/usr/bin/env python3
"""Helpers for tests/bench/cluster.sh, the 3-node loopback cluster benchmark.

cluster.sh starts, restarts and stops every circa node itself (they are its
children, so its trap stops them); this script only talks HTTP to them and,
for a failover round, sends SIGKILL to the leader's pid.  Subcommands:

  ports N                 N lines "HTTP PEER" of free loopback ports; PEER and PEER+1 are both
                          free (raft messages, node-to-node requests); all below the
                          ephemeral range when there is room (harness.pick_ports)
  form                    --urls U1,U2,U3: promote nodes 2.. to voters through node 1 and wait
                          until the leader lists all of them as voters
  leader                  print the 1-based index of the node that leads now (a majority of
                          the live nodes agree on it in its term)
  status                  one line per node: state, term, commit/applied index, leader
  caught-up --node I      wait until node I applied the leader's commit index (sampled once)
  failover --round K      one failover round: open-loop writes (POST /v1/resources with an
                          Idempotency-Key, librarian token) spread over the followers, kill -9
                          the leader (pid from --pids), measure the time from the kill to the
                          end of the first 201 of a request that started after it; prints one
                          JSON line; exits 1 (after printing what it saw) if no write succeeds
                          within --timeout
  summary FILE            min / median / max of the failover rounds (JSON lines) in FILE
  cpu PID...              "BUSY OWN KERNEL STEAL T": the machine's busy jiffies, those of
                          PIDs (all threads) and their direct children, those of kernel
                          threads, steal jiffies, time.monotonic()
  cpu-window --from S --to S PID...
                          two `cpu` samples, S seconds after the first PID (wrk) started, on
                          one line; exits 1 if that process ended before the second
  quiet PID...            wait up to --max-wait s until other processes (neither PIDs nor kernel
                          threads) and steal take less than --limit cores (1 s samples);
                          prints the last sample, "OTHER STEAL" (cores)
  fsync DIR               disk reference: 4 KiB appends + fdatasync for --seconds; prints
                          "PER_S P50_MS P99_MS"

Only the standard library is used (and tests/system/harness.py for the port picker).
"""
import argparse
import collections
import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))


def say(msg):
    print("cluster-bench: " + msg, file=sys.stderr, flush=True)


def request(url, method, path, body=None, token=None, headers=None, timeout=5.0):
    """(status, parsed JSON or raw bytes, headers); raises OSError / HTTPException."""
    u = urllib.parse.urlsplit(url)
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return r.status, parsed, r.headers
    finally:
        c.close()


def status(url, token, timeout=2.0):
    """GET /v1/cluster as a dict, or None."""
    try:
        st, body, _ = request(url, "GET", "/v1/cluster", token=token, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None
    return body if st == 200 and isinstance(body, dict) else None


def find_leader(urls, token, exclude=()):
    """(index, status) of the leader a majority agrees on in its term, or (None, None)."""
    sts = {i: status(u, token) for i, u in enumerate(urls) if i not in exclude}
    sts = {i: s for i, s in sts.items() if s}
    cands = sorted(((s.get("term", 0), i) for i, s in sts.items() if s.get("state") == "leader"),
                   reverse=True)
    for term, i in cands:
        s = sts[i]
        voters = [x for x in s.get("nodes", []) if x.get("role") == "voter"]
        need = len(voters) // 2 + 1 if voters else 1
        agree = sum(1 for j, o in sts.items() if o.get("term") == term and
                    (j == i or (o.get("leader") or {}).get("id") == s.get("id")))
        if agree >= need:
            return i, s
    return None, None


def wait_leader(urls, token, timeout, exclude=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        i, s = find_leader(urls, token, exclude)
        if i is not None:
            return i, s
        time.sleep(0.05)
    sys.exit("cluster-bench: no leader within %.0fs: %s" % (timeout, describe(urls, token)))


def describe(urls, token):
    out = []
    for i, u in enumerate(urls):
        s = status(u, token, timeout=1.0)
        if not s:
            out.append("n%d (%s): no status" % (i + 1, u))
            continue
        out.append("n%d %s %s/%s term %s commit %s applied %s leader %s" % (
            i + 1, s.get("id"), s.get("state"), s.get("role"), s.get("term"),
            s.get("commit_index"), s.get("applied_index"), (s.get("leader") or {}).get("id")))
    return "; ".join(out)


# ------------------------------------------------------------------ subcommands
def cmd_ports(a):
    import harness  # noqa: E402  (tests/system)
    for _ in range(a.n):
        print(harness.pick_ports(1), harness.pick_ports(2))


def cmd_form(a):
    urls = a.urls.split(",")
    ids = []
    for i, u in enumerate(urls):
        s = status(u, a.admin)
        if not s or not s.get("id"):
            sys.exit("cluster-bench: GET /v1/cluster on n%d (%s) failed" % (i + 1, u))
        ids.append(s["id"])
    deadline = time.monotonic() + a.timeout
    for i in range(1, len(urls)):
        while True:
            try:
                st, body, _ = request(urls[0], "POST", "/v1/cluster/nodes/%s/promote" % ids[i],
                                      token=a.admin, timeout=a.timeout)
            except (OSError, http.client.HTTPException) as e:
                st, body = None, repr(e)
            if st == 200:
                break
            if st not in (None, 503, 504) or time.monotonic() > deadline:
                sys.exit("cluster-bench: promote n%d (%s): HTTP %s %r" % (i + 1, ids[i], st, body))
            time.sleep(0.2)
    while True:
        li, s = find_leader(urls, a.admin)
        roles = {x.get("id"): x.get("role") for x in (s or {}).get("nodes", [])}
        if s and all(roles.get(x) == "voter" for x in ids):
            say("cluster formed: leader n%d, term %s, voters %s" % (li + 1, s.get("term"),
                                                                    ", ".join(ids)))
            return
        if time.monotonic() > deadline:
            sys.exit("cluster-bench: not all nodes are voters after %.0fs: %s"
                     % (a.timeout, describe(urls, a.admin)))
        time.sleep(0.1)


def cmd_leader(a):
    i, s = wait_leader(a.urls.split(","), a.admin, a.timeout)
    print(i + 1, s.get("term"))


def cmd_status(a):
    print(describe(a.urls.split(","), a.admin).replace("; ", "\n"))


def cmd_caught_up(a):
    urls = a.urls.split(",")
    me = a.node - 1
    _, ls = wait_leader(urls, a.admin, a.timeout)
    target = ls.get("commit_index")
    deadline = time.monotonic() + a.timeout
    t0 = time.monotonic()
    while True:
        s = status(urls[me], a.admin)
        if s and s.get("applied_index", -1) >= target:
            say("n%d caught up: applied %s >= leader commit %s (%.2fs)"
                % (a.node, s.get("applied_index"), target, time.monotonic() - t0))
            return
        if time.monotonic() > deadline:
            sys.exit("cluster-bench: n%d did not apply index %s within %.0fs: %s"
                     % (a.node, target, a.timeout, describe(urls, a.admin)))
        time.sleep(0.05)


class Load:
    """Open-loop writes: one POST /v1/resources every `interval` s, each in its own thread
    (so a request that hangs never delays the next one), round-robin over `targets`."""

    def __init__(self, urls, targets, token, interval, timeout, max_inflight=256):
        self.urls, self.targets, self.token = urls, list(targets), token
        self.interval, self.timeout, self.max_inflight = interval, timeout, max_inflight
        self.lock = threading.Lock()
        self.attempts = []          # (t0, t1, node index, outcome) ; outcome "ok" or a reason
        self.inflight = 0
        self.skipped = 0
        self.stopping = threading.Event()
        self.threads = []
        self.seq = 0

    def start(self):
        self.launcher = threading.Thread(target=self._launch, daemon=True)
        self.launcher.start()

    def _launch(self):
        nxt = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                busy = self.inflight >= self.max_inflight
                if not busy:
                    self.inflight += 1
            if busy:
                self.skipped += 1
            else:
                node = self.targets[self.seq % len(self.targets)]
                self.seq += 1
                t = threading.Thread(target=self._one, args=(node,), daemon=True)
                t.start()
                self.threads.append(t)
            nxt += self.interval
            d = nxt - time.monotonic()
            if d > 0:
                self.stopping.wait(d)
            else:
                nxt = time.monotonic()

    def _one(self, node):
        key = "bench-" + uuid.uuid4().hex
        body = {"title": "Failover " + key[6:18], "type": "FICTION", "copies": 1}
        t0 = time.monotonic()
        try:
            st, b, _ = request(self.urls[node], "POST", "/v1/resources", body, self.token,
                               {"Idempotency-Key": key}, timeout=self.timeout)
            if st == 201:
                out = "ok"
            else:
                kind = ""
                if isinstance(b, dict) and isinstance(b.get("type"), str):
                    kind = " " + b["type"].rsplit("/", 1)[-1]
                out = "%d%s" % (st, kind)
        except Exception as e:  # noqa: BLE001 -- every failure is an outcome to report
            out = type(e).__name__
        t1 = time.monotonic()
        with self.lock:
            self.attempts.append((t0, t1, node, out))
            self.inflight -= 1

    def first_ok_after(self, t):
        with self.lock:
            ends = [(t1, n) for t0, t1, n, out in self.attempts if out == "ok" and t0 >= t]
        return min(ends) if ends else None

    def oks_after(self, t):
        with self.lock:
            return sum(1 for t0, _, _, out in self.attempts if out == "ok" and t0 >= t)

    def outcomes(self, since=None):
        with self.lock:
            return collections.Counter(out for t0, _, _, out in self.attempts
                                       if since is None or t0 >= since)

    def stop(self):
        self.stopping.set()
        self.launcher.join()
        for t in self.threads:
            t.join(self.timeout + 5)


def pid_of(pidfile):
    with open(pidfile) as f:
        return int(f.read().split()[0])


def wait_dead(pid, timeout=10.0):
    """Until the process is gone or a zombie (its sockets are closed then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.005)
    return False


def cmd_failover(a):
    urls = a.urls.split(",")
    pidfiles = a.pids.split(",")
    li, ls = wait_leader(urls, a.admin, 30.0)
    old_term = ls.get("term")
    followers = [i for i in range(len(urls)) if i != li]
    load = Load(urls, followers, a.token, a.interval, a.request_timeout)
    load.start()
    res = {"round": a.round, "killed": li + 1, "old_term": old_term,
           "targets": [i + 1 for i in followers]}
    try:
        # the workload makes progress before the kill
        t = time.monotonic()
        while load.oks_after(t) < 5:
            if time.monotonic() - t > 30:
                raise SystemExit("cluster-bench: round %d: the writes make no progress before "
                                 "the kill: %s; %s" % (a.round, dict(load.outcomes()),
                                                       describe(urls, a.admin)))
            time.sleep(0.02)
        time.sleep(a.warmup)
        pid = pid_of(pidfiles[li])
        # the survivors and this process (the killed node's CPU time leaves /proc with it)
        ours = [str(pid_of(pidfiles[i])) for i in followers] + [str(os.getpid())]
        c0 = cpu_sample(ours)
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        res["dead_after_s"] = round(time.monotonic() - t_kill, 4)
        # a new leader among the survivors (GET /v1/cluster polled by this thread)
        new = None
        while time.monotonic() - t_kill < a.timeout:
            ni, ns = find_leader(urls, a.admin, exclude=(li,))
            if ni is not None and ns.get("term", 0) > (old_term or 0):
                new = (ni, ns, time.monotonic() - t_kill)
                break
            time.sleep(0.02)
        while load.oks_after(t_kill) < 3 and time.monotonic() - t_kill < a.timeout:
            time.sleep(0.02)
        first = load.first_ok_after(t_kill)
        if new:
            res.update(new_leader=new[0] + 1, new_term=new[1].get("term"),
                       leader_seen_s=round(new[2], 3))
        if first is None:
            res.update(failover_s=None, outcomes_after_kill=dict(load.outcomes(t_kill)),
                       cluster=describe(urls, a.admin))
            print(json.dumps(res), flush=True)
            return 1
        c1 = cpu_sample(ours)
        res["other_cores"] = round(other_cores(c0, c1), 2)
        res["steal_cores"] = round(steal_cores(c0, c1), 2)
        res["failover_s"] = round(first[0] - t_kill, 3)
        res["first_ok_via"] = first[1] + 1
        time.sleep(a.settle)
    finally:
        load.stop()
    after = load.outcomes(t_kill)
    res["writes_after_kill"] = dict(after)
    res["writes_total"] = sum(load.outcomes().values())
    res["launch_skipped"] = load.skipped
    print(json.dumps(res), flush=True)
    return 0


def cmd_summary(a):
    rounds = [json.loads(l) for l in open(a.file) if l.strip()]
    xs = [r["failover_s"] for r in rounds if r.get("failover_s") is not None]
    el = [r["leader_seen_s"] for r in rounds if r.get("leader_seen_s") is not None]
    if not xs:
        print("n/a n/a n/a 0 n/a n/a")
        return
    print("%.2f %.2f %.2f %d %.2f %.2f" % (min(xs), statistics.median(xs), max(xs), len(xs),
                                           statistics.median(el) if el else float("nan"),
                                           max(el) if el else float("nan")))


def cpu_sample(pids):
    """(busy, own, kernel, steal, t): jiffies the machine spent in user + nice + system + irq +
    softirq (not idle, iowait or steal; the kernel charges softirq time, e.g. loopback traffic,
    to the task it interrupted, so it is in the processes' stime too), jiffies of the pids (all
    threads) and their direct children (nginx workers), jiffies of kernel threads (kworkers,
    ksoftirqd, jbd2), steal jiffies (CPU time the hypervisor gave to other guests while this
    machine wanted it), and time.monotonic()."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6]      # user, nice, system, irq, softirq
    want = {int(p) for p in pids if str(p).isdigit()}
    own = kern = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        j = int(st[11]) + int(st[12])                 # utime + stime
        if int(d) in want or int(st[1]) in want:
            own += j
        elif int(d) == 2 or int(st[1]) == 2:
            kern += j
    return busy, own, kern, v[7], time.monotonic()


CPU_FMT = "%d %d %d %d %.3f"


def other_cores(c0, c1):
    """Cores used by processes that are neither the sampled ones nor kernel threads."""
    hz = os.sysconf("SC_CLK_TCK")
    dt = c1[4] - c0[4]
    if dt <= 0:
        return float("nan")
    return max(0.0, ((c1[0] - c0[0]) - (c1[1] - c0[1]) - (c1[2] - c0[2])) / hz / dt)


def steal_cores(c0, c1):
    """Cores' worth of steal time (the hypervisor ran other guests)."""
    dt = c1[4] - c0[4]
    return (c1[3] - c0[3]) / os.sysconf("SC_CLK_TCK") / dt if dt > 0 else float("nan")


def cmd_cpu(a):
    print(CPU_FMT % cpu_sample(a.pids))


def cmd_cpu_window(a):
    """cpu_sample() at --from and at --to seconds after the start of the first pid (wrk),
    printed on one line; exits 1 if that process is gone at the second sample (its CPU time
    would be missing)."""
    anchor = a.pids[0]
    hz = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/%s/stat" % anchor) as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19]) / hz    # since boot
    except (OSError, IndexError, ValueError):
        return 1
    out = []
    for at in (a.t_from, a.t_to):
        d = start + at - time.clock_gettime(time.CLOCK_BOOTTIME)
        if d > 0:
            time.sleep(d)
        out.append(CPU_FMT % cpu_sample(a.pids))
    if not os.path.exists("/proc/%s" % anchor):
        return 1
    print(" ".join(out))
    return 0


def cmd_quiet(a):
    """Wait (up to --max-wait s) until processes other than PIDS (and this one) plus the
    hypervisor's steal took less than --limit cores over one second; prints the last sample as
    "OTHER STEAL" (cores)."""
    deadline = time.monotonic() + a.max_wait
    pids = list(a.pids) + [str(os.getpid())]
    while True:
        c0 = cpu_sample(pids)
        time.sleep(1.0)
        c1 = cpu_sample(pids)
        other, steal = other_cores(c0, c1), steal_cores(c0, c1)
        if other + steal < a.limit or time.monotonic() > deadline:
            print("%.2f %.2f" % (other, steal))
            return


def cmd_fsync(a):
    """4 KiB appends, each followed by fdatasync, for --seconds: prints "PER_S P50_MS P99_MS"."""
    path = os.path.join(a.dir, "fsync-probe.%d" % os.getpid())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"x" * 4096
    lat = []
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.seconds:
            t = time.monotonic()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(time.monotonic() - t)
        el = time.monotonic() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    print("%.0f %.2f %.2f" % (len(lat) / el, 1000 * lat[len(lat) // 2],
                              1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def with_cluster(p):
        p.add_argument("--urls", required=True, help="comma-separated base URLs, node 1 first")
        p.add_argument("--admin", required=True, help="admin token")
        p.add_argument("--timeout", type=float, default=60.0)
        return p

    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.set_defaults(fn=cmd_ports)
    with_cluster(sub.add_parser("form")).set_defaults(fn=cmd_form)
    with_cluster(sub.add_parser("leader")).set_defaults(fn=cmd_leader)
    with_cluster(sub.add_parser("status")).set_defaults(fn=cmd_status)
    p = with_cluster(sub.add_parser("caught-up"))
    p.add_argument("--node", type=int, required=True)
    p.set_defaults(fn=cmd_caught_up)
    p = with_cluster(sub.add_parser("failover"))
    p.add_argument("--pids", required=True, help="comma-separated pid files, node 1 first")
    p.add_argument("--token", required=True, help="librarian token for POST /v1/resources")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between writes")
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of writes before the kill")
    p.add_argument("--settle", type=float, default=0.5, help="seconds of writes after failover")
    p.set_defaults(fn=cmd_failover, timeout=30.0)
    p = sub.add_parser("summary")
    p.add_argument("file")
    p.set_defaults(fn=cmd_summary)
    p = sub.add_parser("cpu")
    p.add_argument("pids", nargs="*")
    p.set_defaults(fn=cmd_cpu)
    p = sub.add_parser("cpu-window")
    p.add_argument("--from", dest="t_from", type=float, required=True)
    p.add_argument("--to", dest="t_to", type=float, required=True)
    p.add_argument("pids", nargs="+")
    p.set_defaults(fn=cmd_cpu_window)
    p = sub.add_parser("fsync")
    p.add_argument("dir")
    p.add_argument("--seconds", type=float, default=3.0)
    p.set_defaults(fn=cmd_fsync)
    p = sub.add_parser("quiet")
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--limit", type=float, default=0.15)
    p.add_argument("pids", nargs="*")
    p.set_defaults(fn=cmd_quiet)
    a = ap.parse_args()
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
