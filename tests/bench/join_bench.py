#!/usr/bin/env python3
"""Join time of a new node into a circa cluster holding many loans (driven by
tests/bench/join.sh; standard library only).

One run ("default" raft settings unless --threshold/--trailing say otherwise):
1. node 1 (`circa serve --peer 127.0.0.1:P`, a fresh data directory, fsync on,
   password_iterations 1000, rate limits off, policy.max_loans raised) is
   loaded: RESOURCES resources (POST /v1/resources, copies = the most loans
   any resource gets), MEMBERS members (POST /v1/auth/register), then LOANS
   checkouts (POST /v1/loans {"resource_id","user_id"} as a librarian), each
   of a distinct (member, resource) pair, by wrk with join_loans.lua; the
   loans are counted on the server (GET /v1/reports/loans-per-day, and the
   copies lent per resource from GET /v1/resources) and must be exactly
   LOANS. Recorded: the load rate, node 1's data directory size (du), its
   raft commit index and command count;
2. node 2 starts with --join 127.0.0.1:P on a fresh data directory: the time
   from its process start to GET /readyz 200, and to applied_index >= node
   1's commit_index (GET /v1/cluster on both), whether it installed a
   snapshot (its log: "snapshot install: fetching the state", "snapshot
   installed" with rows, bytes, seconds) or replayed the log, CPU seconds of
   both nodes, of other processes and stolen by the hypervisor over the
   join, /v1/cluster samples (TMP/<run>/<node>-join-samples.jsonl); with
   --perf 1 a `perf record -g` of both nodes over the join;
3. GET /v1/cluster/digest on both nodes until they report the same
   applied_index: the digests must be equal. The joiner is then stopped;
   with --repeat N steps 2 and 3 run N times, each with a fresh node
   (node2, node3, ...) joining the same node 1 state.

If the first run's join replayed the log (no install), a second run does it
all again with raft.snapshot_threshold / snapshot_trailing = --small on node
1 from the start, so its join must install a snapshot (--second always|never
overrides). Prints a markdown section for docs/BENCHMARKS.md on stdout,
progress on stderr. Exit status 1 when a join did not finish within
--join-timeout, a digest differed, the loan count was wrong, or a node did
not stop cleanly (also when a join took longer than --target); node logs
are in TMP/<run>/.

Everything started here is stopped in a finally block; pids are also kept in
TMP/pids for join.sh's trap.
"""
import argparse
import concurrent.futures as cf
import datetime
import http.client
import json
import os
import platform
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
from procstat import proc_cpu, task_cpu  # noqa: E402  (tests/bench)

CLK_TCK = os.sysconf("SC_CLK_TCK")
LIB_SUB = "00000000-0000-4000-8000-00000000b001"
ADMIN_SUB = "00000000-0000-4000-8000-00000000a001"
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def say(msg):
    print("join-bench: " + msg, file=sys.stderr, flush=True)


class Stop(Exception):
    pass


class Failed(Exception):
    pass


def on_signal(signum, frame):
    raise Stop("signal %d" % signum)


# ------------------------------------------------------------------ helpers
_used_ports = set()


def _bindable(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(n):
    """n consecutive free loopback ports, below the kernel's ephemeral range
    when there is room (no outgoing connection takes them meanwhile)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    top = lo - n if lo > 12000 else 65535 - n
    for _ in range(2000):
        p = random.randint(10000, top)
        ports = range(p, p + n)
        if any(x in _used_ports for x in ports) or not all(_bindable(x) for x in ports):
            continue
        _used_ports.update(ports)
        return p
    raise Failed("no %d free consecutive loopback ports" % n)


def system_busy():
    """(busy, total, steal) jiffies of all CPUs from /proc/stat (guest time is
    also in user: only the first 8 fields are summed)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    v += [0] * (8 - len(v))
    idle = v[3] + v[4]
    return sum(v) - idle - v[7], sum(v), v[7]


def self_cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def wait_quiet(max_wait, limit):
    """Waits (at most max_wait s) until the machine's busy share over 1 s is
    below limit (in cores); returns the last value."""
    deadline = time.time() + max_wait
    said = 0.0
    ncpu = os.cpu_count() or 1
    while True:
        b0 = system_busy()
        time.sleep(1.0)
        b1 = system_busy()
        cores = ncpu * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if cores < limit or time.time() >= deadline:
            if cores >= limit:
                say("other processes still use %.2f cores after %d s; measuring anyway"
                    % (cores, max_wait))
            return cores
        if time.time() - said >= 15:
            say("other processes use %.2f cores; waiting up to %.0f s for the machine to be "
                "idle" % (cores, deadline - time.time()))
            said = time.time()


def du(path):
    """(apparent bytes, allocated bytes) of a directory tree."""
    app = alloc = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dp, f))
            except OSError:
                continue
            app += st.st_size
            alloc += st.st_blocks * 512
    return app, alloc


def mb(n):
    return n / 1e6


def fmt_s(x):
    return "—" if x is None else "%.1f s" % x


_local = threading.local()


def http_call(port, method, path, body=None, token=None, timeout=30.0, keep=False):
    """(status, parsed JSON body or raw bytes). keep=True reuses a thread-local
    connection to port (the loaders); else one connection per call."""
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    for attempt in range(3):
        c = None
        if keep:
            conns = getattr(_local, "conns", None)
            if conns is None:
                conns = _local.conns = {}
            c = conns.get(port)
        if c is None:
            c = http.client.HTTPConnection(HOST, port, timeout=timeout)
            if keep:
                _local.conns[port] = c
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
            if not keep:
                c.close()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return r.status, parsed
        except (http.client.HTTPException, OSError):
            c.close()
            if keep:
                _local.conns.pop(port, None)
            if attempt == 2 or not keep:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def pair(i, m_count, r_count):
    """Pair i -> (member index, resource index), as join_loans.lua computes it."""
    m = i % m_count
    k = i // m_count
    return m, (m + k) % r_count


LOG_TS = "%Y-%m-%dT%H:%M:%S.%fZ"


def read_log(path):
    """JSON log lines of a node: list of dicts (t = UNIX seconds)."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                try:
                    d["t"] = datetime.datetime.strptime(d.get("ts", ""), LOG_TS).replace(
                        tzinfo=datetime.timezone.utc).timestamp()
                except ValueError:
                    d["t"] = None
                out.append(d)
    except OSError:
        pass
    return out


# ------------------------------------------------------------------ nodes
class Node:
    def __init__(self, bench, name, dirpath, cfg, join=None):
        self.bench, self.name, self.dir = bench, name, dirpath
        self.data = os.path.join(dirpath, name + "-data")
        self.log_path = os.path.join(dirpath, name + ".log")
        self.cfg_path = os.path.join(dirpath, name + ".json")
        self.port = pick_ports(1)
        self.peer_port = pick_ports(2)
        self.peer = "%s:%d" % (HOST, self.peer_port)
        self.join = join
        self.proc = None
        self.started_wall = self.started_mono = None
        cfg = json.loads(json.dumps(cfg))
        cfg.setdefault("raft", {})["peer"] = self.peer
        cfg["content_base_url"] = "http://%s:%d" % (HOST, self.port)
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)

    def start(self):
        args = [self.bench.bin, "serve", "--listen", "%s:%d" % (HOST, self.port), "--data",
                self.data, "--config", self.cfg_path, "--peer", self.peer,
                "--threads", str(self.bench.a.nproc)]
        if self.join:
            args += ["--join", self.join]
        self.log = open(self.log_path, "ab")
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)
        self.bench.pids.add(self.proc.pid)
        self.bench.write_pids()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def call(self, method, path, body=None, token=None, timeout=10.0):
        return http_call(self.port, method, path, body, token, timeout)

    def status(self, timeout=5.0):
        try:
            st, b = self.call("GET", "/v1/cluster", token=self.bench.admin, timeout=timeout)
        except OSError:
            return None
        return b if st == 200 and isinstance(b, dict) else None

    def ready(self):
        try:
            st, _ = self.call("GET", "/readyz", timeout=1.0)
        except OSError:
            return False
        return st == 200

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise Failed("%s exited with %s before it was ready (log %s)"
                             % (self.name, self.proc.returncode, self.log_path))
            if self.ready():
                return time.monotonic() - self.started_mono
            time.sleep(0.02)
        raise Failed("%s not ready after %.0f s (log %s)" % (self.name, timeout, self.log_path))

    def stop(self, timeout=60.0):
        """SIGTERM, then SIGKILL after timeout; returns the exit code (None if
        it never ran), -9 when it had to be killed."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = -9
        self.log.close()
        self.bench.pids.discard(self.proc.pid)
        self.bench.write_pids()
        return rc

    def tail(self, n=25):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# ------------------------------------------------------------------ bench
class Bench:
    def __init__(self, a):
        self.a = a
        self.bin = a.bin
        self.tmp = a.tmp
        self.pids = set()
        self.pidfile = os.path.join(self.tmp, "pids")
        self.nodes = []
        self.wrk = None
        self.admin = self.lib = None
        self.problems = []

    def write_pids(self):
        with open(self.pidfile + ".new", "w") as f:
            for p in sorted(self.pids):
                f.write("pid %d\n" % p)
        os.replace(self.pidfile + ".new", self.pidfile)

    def token(self, data, sub, role):
        out = subprocess.run([self.bin, "token", "--data", data, "--sub", sub, "--role", role,
                              "--ttl", "86400"], check=True, capture_output=True, text=True)
        tok = out.stdout.strip()
        if not tok:
            raise Failed("`circa token` printed nothing: %s" % out.stderr)
        return tok

    # -------------------------------------------------------------- load
    def plan(self):
        """Pair indices: wrk uses [0, limit), a top-up after it [limit, limit+slack)."""
        a = self.a
        slack = max(100, a.loans // 100)
        limit = a.loans + slack
        total = limit + slack
        per_member = -(-total // a.members)
        if per_member > a.resources:
            raise Failed("%d loans over %d members need more than %d resources (a member borrows "
                         "a resource once)" % (a.loans, a.members, a.resources))
        per_res = [0] * a.resources
        for i in range(total):
            per_res[pair(i, a.members, a.resources)[1]] += 1
        copies = max(per_res)
        if copies > 100000:
            raise Failed("%d copies per resource needed (at most 100000): raise RESOURCES"
                         % copies)
        return limit, total, per_member, copies

    def config(self, raft):
        a = self.a
        cfg = {
            "threads": a.nproc,
            "fsync": True,
            "password_iterations": 1000,
            "map_size_mb": a.map_mb,
            "limits": {"rate_per_s": 0},
            "policy": {"max_loans": self.max_loans, "max_loans_premium": self.max_loans},
            "raft": dict(raft),
        }
        return cfg

    def loans_on(self, node):
        """(checkouts - returns) from GET /v1/reports/loans-per-day."""
        st, b = node.call("GET", "/v1/reports/loans-per-day", token=self.lib, timeout=30)
        if st != 200 or not isinstance(b, dict):
            raise Failed("GET /v1/reports/loans-per-day: %s %r" % (st, b))
        items = b.get("items", [])
        return sum(x["checkouts"] for x in items) - sum(x["returns"] for x in items)

    def lent_copies(self, node):
        """sum(copies - available) over all resources (GET /v1/resources, paged)."""
        total, n, cursor = 0, 0, None
        while True:
            path = "/v1/resources?limit=200" + ("&cursor=" + cursor if cursor else "")
            st, b = node.call("GET", path, token=self.lib, timeout=30)
            if st != 200 or not isinstance(b, dict):
                raise Failed("GET %s: %s %r" % (path, st, b))
            items = b.get("items", [])
            for r in items:
                total += r["copies"] - r["available"]
                n += 1
            cursor = b.get("next_cursor") or b.get("cursor") or b.get("next")
            if not items or not cursor:
                return total, n

    def load(self, node, rundir):
        a = self.a
        res = {}
        t0 = time.monotonic()
        pool = cf.ThreadPoolExecutor(max_workers=16)
        port = node.port

        def make_resource(i):
            st, b = http_call(port, "POST", "/v1/resources", {
                "title": "Join bench resource %d" % i, "type": "FICTION",
                "copies": self.copies, "authors": ["Bench Author"], "tags": ["bench"]},
                self.lib, keep=True)
            if st != 201:
                raise Failed("POST /v1/resources: %s %r" % (st, b))
            return b["id"]

        def register(i):
            st, b = http_call(port, "POST", "/v1/auth/register", {
                "email": "join-%d@bench.example" % i, "password": "bench-password-%d" % i,
                "name": "Bench Member %d" % i}, keep=True)
            if st != 201:
                raise Failed("POST /v1/auth/register: %s %r" % (st, b))
            return b["id"]

        rids = list(pool.map(make_resource, range(a.resources)))
        uids = list(pool.map(register, range(a.members)))
        pool.shutdown()
        res["setup_s"] = time.monotonic() - t0
        say("%d resources x %d copies, %d members in %.1f s" % (
            a.resources, self.copies, a.members, res["setup_s"]))
        files = {k: os.path.join(rundir, k + ".txt") for k in ("token", "users", "resources")}
        with open(files["token"], "w") as f:
            f.write(self.lib + "\n")
        with open(files["users"], "w") as f:
            f.writelines(u + "\n" for u in uids)
        with open(files["resources"], "w") as f:
            f.writelines(r + "\n" for r in rids)

        # ---- the loans: wrk, stopped (SIGINT) once the server counts LOANS
        out_path = os.path.join(rundir, "wrk-loans.txt")
        cmd = ["wrk", "-t%d" % a.threads, "-c%d" % a.connections, "-d3600s", "--timeout", "30s",
               "--latency", "-s", os.path.join(BENCH_DIR, "join_loans.lua"),
               "http://%s:%d" % (HOST, port), "--", files["token"], files["users"],
               files["resources"], str(a.loans), str(self.limit), str(a.threads)]
        say("loading %d loans: %s" % (a.loans, " ".join(cmd[:9])))
        out = open(out_path, "w")
        t1 = time.monotonic()
        busy0 = system_busy()
        self0 = self_cpu()
        tasks0 = task_cpu(node.pid)
        self.wrk = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.pids.add(self.wrk.pid)
        self.write_pids()
        last_n, last_move, last_say = -1, time.monotonic(), time.monotonic()
        t_done = None
        samples = []
        while True:
            time.sleep(0.5)
            n = self.loans_on(node)
            now = time.monotonic()
            samples.append((now - t1, n))
            if n >= a.loans:
                t_done = now
                break
            if n != last_n:
                last_n, last_move = n, now
            if self.wrk.poll() is not None:
                say("wrk exited on its own (status %s) at %d loans" % (self.wrk.returncode, n))
                break
            if now - last_move > a.stall:
                say("no new loan for %.0f s at %d: stopping wrk" % (a.stall, n))
                break
            if not node.alive():
                raise Failed("node 1 exited during the load (log %s)" % node.log_path)
            if now - last_say >= 10:
                say("  %d loans, %.0f loans/s" % (n, n / (now - t1)))
                last_say = now
        # CPU over the load: node 1 (its busiest thread apart: the raft
        # actor applies every command), wrk, other processes
        wall = time.monotonic() - t1
        tasks1 = task_cpu(node.pid)
        wrk_cpu = proc_cpu(self.wrk.pid)
        busy1 = system_busy()
        per_thread = sorted((tasks1.get(k, v) - v for k, v in tasks0.items()), reverse=True)
        n1_cpu = sum(tasks1.values()) - sum(tasks0.values())
        res["cpu"] = {
            "node1": n1_cpu / wall, "node1_top_thread": (per_thread[0] if per_thread else 0) / wall,
            "wrk": wrk_cpu / wall,
            "other": max(0.0, (busy1[0] - busy0[0]) / CLK_TCK - n1_cpu - wrk_cpu -
                         (self_cpu() - self0)) / wall,
        }
        say("load CPU (cores): node 1 %.2f (busiest thread %.2f), wrk %.2f, other processes "
            "%.2f" % (res["cpu"]["node1"], res["cpu"]["node1_top_thread"], res["cpu"]["wrk"],
                      res["cpu"]["other"]))
        if self.wrk.poll() is None:
            self.wrk.send_signal(signal.SIGINT)
            try:
                self.wrk.wait(30)
            except subprocess.TimeoutExpired:
                self.wrk.kill()
                self.wrk.wait()
        self.pids.discard(self.wrk.pid)
        self.write_pids()
        self.wrk = None
        out.close()
        with open(out_path) as f:
            wrk_out = f.read()
        m = re.search(r"^BENCH (.*)$", wrk_out, re.M)
        bench = dict(kv.split("=", 1) for kv in m.group(1).split()) if m else {}
        fails = re.search(r"^FAIL (.*)$", wrk_out, re.M)
        sample = re.search(r"^FAIL_SAMPLE (.*)$", wrk_out, re.M)
        res["wrk"] = bench
        res["wrk_fail"] = fails.group(1).strip() if fails else "?"
        res["wrk_fail_sample"] = sample.group(1).strip() if sample else ""
        if not bench:
            say("wrk printed no BENCH line:\n" + wrk_out[-2000:])
        # ---- top-up: checkouts wrk could not complete (timeouts, errors)
        n = self.loans_on(node)
        topped = 0
        i = self.limit
        while n < a.loans and i < self.total:
            m_i, r_i = pair(i, a.members, a.resources)
            i += 1
            st, b = http_call(port, "POST", "/v1/loans", {"resource_id": rids[r_i],
                                                          "user_id": uids[m_i]}, self.lib,
                              keep=True)
            if st == 201:
                n += 1
                topped += 1
            else:
                say("top-up checkout: %s %r" % (st, b))
        if t_done is None:
            t_done = time.monotonic()
        res["topped_up"] = topped
        res["load_s"] = t_done - t1
        res["loans_per_s"] = a.loans / res["load_s"] if res["load_s"] > 0 else 0
        res["failed"] = int(bench.get("failed", 0) or 0)
        res["p50_ms"] = bench.get("p50_ms")
        res["p99_ms"] = bench.get("p99_ms")
        res["samples"] = samples
        if topped:
            say("topped up %d loans after wrk" % topped)
        return res

    # -------------------------------------------------------------- join
    def join(self, n1, rundir, label, name="node2"):
        a = self.a
        st1 = n1.status()
        if not st1:
            raise Failed("node 1 answers no GET /v1/cluster")
        target0 = st1["commit_index"]
        foreign = wait_quiet(a.quiet_wait, a.foreign_limit)
        cpu1_0 = proc_cpu(n1.pid)
        busy0 = system_busy()
        self0 = self_cpu()
        n2 = Node(self, name, rundir, self.cfg, join=n1.peer)
        self.nodes.append(n2)
        say("%s: %s joins (http %d, peer %s) node 1 at commit index %d" % (
            label, name, n2.port, n2.peer, target0))
        n2.start()
        t0 = n2.started_mono
        perf = self.perf_start(rundir, name, [n1.pid, n2.pid]) if a.perf else None
        t_ready = t_caught = None
        samples = []
        last_sample = 0.0
        cpu2_at_ready = 0.0
        last_say = t0
        deadline = t0 + a.join_timeout
        sample_path = os.path.join(rundir, name + "-join-samples.jsonl")
        sf = open(sample_path, "w")
        try:
            while True:
                now = time.monotonic()
                if now > deadline:
                    st2 = n2.status(timeout=2)
                    st1 = n1.status(timeout=2)
                    raise Failed(
                        "%s: node 2 did not %s within %.0f s\nnode 2 /v1/cluster: %s\n"
                        "node 1 /v1/cluster: %s\nnode 2 log tail:\n%s" % (
                            label, "become ready" if t_ready is None else "catch up",
                            a.join_timeout, json.dumps(st2), json.dumps(st1), n2.tail(40)))
                if not n2.alive():
                    raise Failed("%s: node 2 exited with %s during the join; log tail:\n%s" % (
                        label, n2.proc.returncode, n2.tail(40)))
                if t_ready is None and n2.ready():
                    t_ready = time.monotonic()
                    cpu2_at_ready = proc_cpu(n2.pid)
                    say("%s: %s ready after %.2f s" % (label, name, t_ready - t0))
                if now - last_sample >= a.sample or t_ready is not None:
                    last_sample = now
                    s2 = n2.status(timeout=2)
                    s1 = n1.status(timeout=2)
                    rec = {"t": round(now - t0, 3), "node2": s2, "node1": s1,
                           "cpu1": proc_cpu(n1.pid) - cpu1_0, "cpu2": proc_cpu(n2.pid)}
                    sf.write(json.dumps(rec) + "\n")
                    samples.append(rec)
                    if (t_ready is not None and s1 and s2 and
                            s2.get("applied_index", -1) >= s1.get("commit_index", 1 << 62)):
                        t_caught = time.monotonic()
                        break
                if now - last_say >= 10:
                    last_say = now
                    s2 = samples[-1]["node2"] if samples else None
                    say("  %.0f s: node 2 %s" % (now - t0, json.dumps(
                        {k: s2.get(k) for k in ("applied_index", "commit_index", "ready",
                                                "install") if k in s2}) if s2 else
                        "no /v1/cluster answer yet"))
                time.sleep(0.02)
        finally:
            sf.close()
            if perf:
                self.perf_stop(perf, rundir, name)
        cpu1 = proc_cpu(n1.pid) - cpu1_0
        cpu2 = proc_cpu(n2.pid)
        busy1 = system_busy()
        me = self_cpu() - self0
        busy_s = (busy1[0] - busy0[0]) / CLK_TCK
        r = {
            "target0": target0,
            "ready_s": t_ready - t0,
            "caught_s": t_caught - t0,
            "caught_index": samples[-1]["node2"]["applied_index"],
            "cpu1": cpu1, "cpu2": cpu2, "cpu2_to_ready": cpu2_at_ready,
            "other_cores": max(0.0, busy_s - cpu1 - cpu2 - me) / max(1e-9, t_caught - t0),
            # a VM's stolen time: the hypervisor ran something else on our cores
            "steal_cores": (os.cpu_count() or 1) * (busy1[2] - busy0[2]) / max(1, busy1[1] - busy0[1]),
            "foreign_before": foreign,
        }
        r.update(self.parse_install(n2))
        r["name"] = name
        say("%s: %s applied node 1's commit index after %.2f s (%s)" % (
            label, name, r["caught_s"], "snapshot install" if r["installed"] else "log replay"))
        return n2, r

    def perf_start(self, rundir, name, pids):
        path = os.path.join(rundir, name + "-perf.data")
        p = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", path, "-p",
                              ",".join(str(x) for x in pids)],
                             stdout=subprocess.DEVNULL, stderr=open(path + ".log", "w"))
        self.pids.add(p.pid)
        self.write_pids()
        return p

    def perf_stop(self, p, rundir, name):
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.pids.discard(p.pid)
        self.write_pids()
        path = os.path.join(rundir, name + "-perf.data")
        out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--stdio", "-g",
                              "none", "--sort", "pid,dso,symbol", "--percent-limit", "0.7"],
                             capture_output=True, text=True)
        with open(path + ".txt", "w") as f:
            f.write(out.stdout)
        lines = [x for x in out.stdout.splitlines() if x.strip() and not x.startswith("#")]
        say("perf over the join (%s, both nodes; full report in %s.txt):\n%s" % (
            name, path, "\n".join(lines[:40])))

    def parse_install(self, n2):
        log = read_log(n2.log_path)
        r = {"installed": False, "retries": 0, "warnings": []}
        for d in log:
            msg = d.get("msg", "")
            if msg == "snapshot install: fetching the state":
                r["fetch_at_s"] = d["t"] - n2.started_wall if d["t"] else None
                r["install_index"] = d.get("index")
            elif msg == "snapshot installed":
                r["installed"] = True
                r["install_rows"] = d.get("rows")
                r["install_bytes"] = d.get("bytes")
                r["install_s"] = d.get("seconds")
                r["install_state_at"] = d.get("state_at")
                r["installed_at_s"] = d["t"] - n2.started_wall if d["t"] else None
            elif msg == "snapshot install: retrying":
                r["retries"] += 1
            if d.get("level") in ("warn", "warning", "error", "fatal"):
                r["warnings"].append({k: v for k, v in d.items() if k != "t"})
        return r

    def digests(self, nodes, timeout):
        """Polls GET /v1/cluster/digest until every node reports the same applied_index."""
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        while True:
            out = {}
            for n in nodes:
                try:
                    st, b = n.call("GET", "/v1/cluster/digest", token=self.admin, timeout=120)
                    out[n.name] = b if st == 200 and isinstance(b, dict) else {"error": "%s %r"
                                                                                % (st, b)}
                except OSError as e:
                    out[n.name] = {"error": str(e)}
            idx = {d.get("applied_index") for d in out.values()}
            if (len(idx) == 1 and None not in idx) or time.monotonic() > deadline:
                return out, time.monotonic() - t0
            time.sleep(0.2)

    # -------------------------------------------------------------- a run
    def run_one(self, label, raft):
        a = self.a
        rundir = os.path.join(self.tmp, label)
        os.makedirs(rundir, exist_ok=True)
        self.cfg = self.config(raft)
        res = {"label": label, "raft": raft}
        n1 = Node(self, "node1", rundir, self.cfg)
        self.nodes.append(n1)
        say("%s: node 1 (http %d, peer %s), raft %s" % (label, n1.port, n1.peer,
                                                        json.dumps(raft) if raft else "defaults"))
        n1.start()
        n1.wait_ready(60)
        self.admin = self.token(n1.data, ADMIN_SUB, "admin")
        self.lib = self.token(n1.data, LIB_SUB, "librarian")
        res["load"] = self.load(n1, rundir)
        n = self.loans_on(n1)
        lent, nres = self.lent_copies(n1)
        res["loans_counted"] = n
        res["lent_copies"] = lent
        if n != a.loans or lent != a.loans:
            raise Failed("%s: node 1 counts %d loans (loans-per-day) and %d copies lent over %d "
                         "resources; want %d" % (label, n, lent, nres, a.loans))
        st1 = n1.status()
        res["node1"] = {k: st1.get(k) for k in ("commit_index", "last_index", "applied_index",
                                                 "command_seq")}
        res["data_apparent"], res["data_alloc"] = du(n1.data)
        say("%s: %d loans in %.1f s (%.0f loans/s); node 1: commit index %s, %s commands, data "
            "%.0f MB (du)" % (label, a.loans, res["load"]["load_s"], res["load"]["loans_per_s"],
                              st1.get("commit_index"), st1.get("command_seq"),
                              mb(res["data_alloc"])))
        res["joins"] = []
        for k in range(a.repeat):
            name = "node%d" % (k + 2)
            n2, j = self.join(n1, rundir, label, name)
            d, dig_s = self.digests([n1, n2], timeout=a.digest_timeout)
            j["digests"] = d
            j["digest_s"] = dig_s
            vals = list(d.values())
            j["digest_ok"] = (all("digest" in v for v in vals) and
                              len({v["digest"] for v in vals}) == 1 and
                              len({v["applied_index"] for v in vals}) == 1)
            say("%s: digests (%.1f s) %s" % (label, dig_s, json.dumps(d)))
            j["node_apparent"], j["node_alloc"] = du(n2.data)
            rc2 = n2.stop()
            j["exit"] = rc2
            if rc2 != 0:
                self.problems.append("%s: %s exit status on SIGTERM: %s" % (label, name, rc2))
            if not j["digest_ok"]:
                self.problems.append("%s: digests differ: %s" % (label, json.dumps(d)))
            if j["caught_s"] > a.target:
                self.problems.append("%s: %s took %.1f s to join (target %d s)" % (
                    label, name, j["caught_s"], a.target))
            if not a.keep_data:
                subprocess.run(["rm", "-rf", n2.data])
            res["joins"].append(j)
        res["join"] = res["joins"][0]
        res["node1_warnings"] = [x for x in read_log(n1.log_path)
                                 if x.get("level") in ("warn", "warning", "error", "fatal")]
        for x in res["node1_warnings"]:
            x.pop("t", None)
        rc1 = n1.stop()
        if rc1 != 0:
            self.problems.append("%s: node 1 exit status on SIGTERM: %s" % (label, rc1))
        if not a.keep_data:
            subprocess.run(["rm", "-rf", n1.data])
        return res

    def run(self):
        a = self.a
        self.limit, self.total, per_member, self.copies = self.plan()
        self.max_loans = max(per_member, 1)
        say("plan: %d loans = %d members x <=%d, %d resources x %d copies; pairs [0,%d) for "
            "wrk, [%d,%d) for a top-up" % (a.loans, a.members, per_member, a.resources,
                                          self.copies, self.limit, self.limit, self.total))
        t_start = time.monotonic()
        runs = []
        first_raft = {}
        if a.threshold:
            first_raft["snapshot_threshold"] = a.threshold
        if a.trailing:
            first_raft["snapshot_trailing"] = a.trailing
        if a.chunk_kib:
            first_raft["snapshot_chunk_kib"] = a.chunk_kib
        runs.append(self.run_one("default" if not first_raft else "run1", first_raft))
        second = a.second == "always" or (a.second == "auto" and
                                          not runs[0]["join"]["installed"])
        if second:
            raft = {"snapshot_threshold": a.small, "snapshot_trailing": a.small}
            if a.chunk_kib:
                raft["snapshot_chunk_kib"] = a.chunk_kib
            if runs[0]["node1"]["commit_index"] <= 2 * a.small + 8:
                self.problems.append("the log is too short (%d entries) for --small %d to force "
                                     "a snapshot install" % (runs[0]["node1"]["commit_index"],
                                                              a.small))
            runs.append(self.run_one("small-log", raft))
            if not runs[-1]["join"]["installed"]:
                self.problems.append("small-log: the join did not install a snapshot")
        self.report(runs, time.monotonic() - t_start)
        for p in self.problems:
            say("PROBLEM: " + p)
        return 1 if self.problems else 0

    # -------------------------------------------------------------- report
    def report(self, runs, total_s):
        a = self.a
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        try:
            ver = subprocess.run([self.bin, "--version"], capture_output=True,
                                 text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            ver = "unknown"
        p = print
        p()
        p("### %s — join time, %s loans — %s, %d cores, Linux %s" % (
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "{:,}".format(a.loans), cpu, os.cpu_count() or 0, platform.release()))
        p()
        p("circa `%s` (release build), all on 127.0.0.1 of the same machine; both nodes "
          "`threads %d`, fsync on, password_iterations 1000, rate limits off, `map_size_mb %d`, "
          "`policy.max_loans %d`%s." % (ver, a.nproc, a.map_mb, self.max_loans,
                                        ", `raft.snapshot_chunk_kib %d`" % a.chunk_kib
                                        if a.chunk_kib else ""))
        p("State on node 1: %s active loans = %d members × ≤%d loans, each on a distinct "
          "(member, resource) pair, over %d resources × %d copies; loaded with wrk "
          "`-t%d -c%d` (`POST /v1/loans` as a librarian, `join_loans.lua`), counted on the "
          "server afterwards." % ("{:,}".format(a.loans), a.members, self.max_loans,
                                   a.resources, self.copies, a.threads, a.connections))
        p("Join = a node started with `--join` on an empty data directory, no writes meanwhile; "
          "times from its process start. Target: ≤ %d s." % a.target)
        p()
        p("| run | raft snapshot threshold / trailing | load | node 1 data (du) | node 1 raft "
          "index / commands | join: `/readyz` 200 | join: applied ≥ node 1 commit | how | "
          "install: rows / bytes / s | install MB/s | digests |")
        p("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |")
        for r in runs:
            raft = r["raft"]
            thr = raft.get("snapshot_threshold", 4096)
            trl = raft.get("snapshot_trailing", 8192)
            for k, j in enumerate(r["joins"]):
                how = "snapshot install" if j["installed"] else "log replay"
                if j["installed"]:
                    inst = "%s / %.0f MB / %.1f" % ("{:,}".format(j["install_rows"]),
                                                   mb(j["install_bytes"]), j["install_s"])
                    rate = ("%.0f" % (mb(j["install_bytes"]) / j["install_s"])
                            if j["install_s"] else "—")
                else:
                    inst, rate = "—", "—"
                d = j["digests"]
                dv = [v.get("digest", "?") for v in d.values()]
                dig = ("equal at applied index %s (`%s…`)" % (
                    list(d.values())[0].get("applied_index"), dv[0][:12]) if j["digest_ok"]
                    else "**DIFFER**: " + json.dumps(d))
                if k == 0:
                    head = ("%s | %d / %d%s | %.0f loans/s (%.0f s) | %.0f MB | %s / %s" % (
                        r["label"], thr, trl, "" if raft else " (defaults)",
                        r["load"]["loans_per_s"], r["load"]["load_s"], mb(r["data_alloc"]),
                        "{:,}".format(r["node1"]["commit_index"]),
                        "{:,}".format(r["node1"]["command_seq"])))
                else:
                    head = "%s, join %d | 〃 | 〃 | 〃 | 〃" % (r["label"], k + 1)
                p("| %s | %.1f s | **%.1f s** | %s | %s | %s | %s |" % (
                    head, j["ready_s"], j["caught_s"], how, inst, rate, dig))
        p()
        for r in runs:
            ld = r["load"]
            c = ld["cpu"]
            p("- %s, load: %d failed checkouts%s, %d topped up, p50 %s ms, p99 %s ms; CPU "
              "(cores): node 1 %.2f (busiest thread %.2f), wrk %.2f, other processes %.2f; "
              "node 1 data %.0f MB apparent; %d warning/error lines in node 1's log." % (
                  r["label"], ld["failed"], " (%s)" % ld["wrk_fail"] if ld["failed"] else "",
                  ld["topped_up"], ld["p50_ms"], ld["p99_ms"], c["node1"],
                  c["node1_top_thread"], c["wrk"], c["other"], mb(r["data_apparent"]),
                  len(r["node1_warnings"])))
            for j in r["joins"]:
                parts = []
                if j["installed"]:
                    parts.append("install from %.1f s to %.1f s after the process start "
                                 "(snapshot index %s, state at %s), %d retries" % (
                                     j.get("fetch_at_s") or 0, j.get("installed_at_s") or 0,
                                     j.get("install_index"), j.get("install_state_at"),
                                     j["retries"]))
                parts.append("CPU over the join: node 1 %.1f s, joiner %.1f s (%.1f s until "
                             "ready); other processes %.2f cores, steal %.2f cores" % (
                                 j["cpu1"], j["cpu2"], j["cpu2_to_ready"], j["other_cores"],
                                 j["steal_cores"]))
                parts.append("joiner data %.0f MB (du)" % mb(j["node_alloc"]))
                parts.append("digests compared in %.1f s" % j["digest_s"])
                parts.append("%d warning/error lines in its log" % len(j["warnings"]))
                p("- %s, %s: %s." % (r["label"], j["name"], "; ".join(parts)))
        p()
        extra = ""
        if a.repeat != 1:
            extra += "REPEAT=%d " % a.repeat
        if a.chunk_kib:
            extra += "CHUNK_KIB=%d " % a.chunk_kib
        if a.second != "auto":
            extra += "SECOND=%s " % a.second
        if a.small != 256:
            extra += "SMALL=%d " % a.small
        p("Script run time %.0f s. Reproduce: `%sLOANS=%d MEMBERS=%d RESOURCES=%d CONNECTIONS=%d "
          "tests/bench/join.sh`" % (total_s, extra, a.loans, a.members, a.resources,
                                    a.connections))
        for r in runs:
            ws = list(r["node1_warnings"])
            for j in r["joins"]:
                ws += j["warnings"]
            if ws:
                print("\n%s: warning/error log lines (first 10):" % r["label"], file=sys.stderr)
                for w in ws[:10]:
                    print("  " + json.dumps(w), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--loans", type=int, default=1000000)
    ap.add_argument("--members", type=int, default=0, help="0: loans / 500")
    ap.add_argument("--resources", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="wrk threads")
    ap.add_argument("--nproc", type=int, default=os.cpu_count() or 2, help="circa threads")
    ap.add_argument("--map-mb", type=int, default=8192)
    ap.add_argument("--threshold", type=int, default=0,
                    help="raft.snapshot_threshold of the first run (0: circa's default)")
    ap.add_argument("--trailing", type=int, default=0,
                    help="raft.snapshot_trailing of the first run (0: circa's default)")
    ap.add_argument("--chunk-kib", type=int, default=0,
                    help="raft.snapshot_chunk_kib (0: circa's default)")
    ap.add_argument("--small", type=int, default=256,
                    help="snapshot_threshold and _trailing of the forced-install run")
    ap.add_argument("--second", choices=("auto", "always", "never"), default="auto")
    ap.add_argument("--join-timeout", type=float, default=900)
    ap.add_argument("--digest-timeout", type=float, default=300)
    ap.add_argument("--target", type=float, default=60)
    ap.add_argument("--sample", type=float, default=0.5)
    ap.add_argument("--stall", type=float, default=30,
                    help="seconds without a new loan before wrk is stopped and a top-up runs")
    ap.add_argument("--quiet-wait", type=float, default=60)
    ap.add_argument("--foreign-limit", type=float, default=0.15)
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="joins of a fresh node into the same node 1 state (one after the other)")
    ap.add_argument("--perf", type=int, default=0, help="1: perf record both nodes during joins")
    a = ap.parse_args()
    if a.members <= 0:
        a.members = max(1, a.loans // 500)
    if a.loans < 1 or a.resources < 1:
        raise SystemExit("--loans and --resources must be positive")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    b = Bench(a)
    try:
        return b.run()
    except Stop as e:
        say("stopped: %s" % e)
        return 130
    except Failed as e:
        say("FAILED: %s" % e)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if b.wrk and b.wrk.poll() is None:
            b.wrk.kill()
            b.wrk.wait()
        for n in reversed(b.nodes):
            try:
                n.stop(timeout=30)
            except Exception as e:  # noqa: BLE001
                say("stopping %s: %s" % (n.name, e))
        try:
            os.unlink(b.pidfile)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
