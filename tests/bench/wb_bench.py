#!/usr/bin/env python3
"""Write-behind to PostgreSQL benchmark (driven by tests/bench/wb.sh).

Runs, on 127.0.0.1, against one private PostgreSQL (tests/system/pgfix.py,
fsync on) that shares the machine's cores with circa and wrk:

1. steady state: the checkout/return write benchmark of run.sh
   (checkout_return.lua, fsync on) once with write-behind off and once with
   it on (fresh data directory each, same load from setup.py).  With it on,
   /metrics is sampled every --sample seconds: flushed rows/s and
   commands/s from the counters' deltas over the wrk run, p50 / max of
   circa_wb_lag_entries and circa_wb_lag_seconds, and the time from wrk's
   end until circa_wb_lag_entries is 0;
2. backlog drain, once per pg.batch in --drain-batches: circa restarted
   with that batch size on the same data directory, PostgreSQL stopped, the
   write benchmark run until the backlog is at least --backlog commands,
   wrk stopped, PostgreSQL started; then the time until
   circa_wb_lag_entries is 0, measured from the first batch PostgreSQL
   commits (the flusher's reconnect backoff, up to 10 s, is reported
   apart).  Over the same span: CPU of circa's threads and PostgreSQL's
   processes (/proc), PostgreSQL's time per statement (its log, with
   log_min_duration_statement = 0 during the drains) and, with --perf,
   `perf record -g` of circa and the flusher's backend;
3. a check that PostgreSQL's cursor, its commands table and circa's
   flushed index agree.

Other people's processes on a shared machine distort the numbers: before
each measurement it waits (up to --quiet-wait s) for an idle machine, and
a steady-state run or drain during which they used more than
--foreign-limit cores is repeated (up to --tries), keeping the least
disturbed one.

Everything started here is stopped in a finally block; the pids and the
PostgreSQL data directory are also written to TMP/pids so that wb.sh's trap
can stop them if this process is killed.  The report (markdown) goes to
stdout, progress to stderr.  Only the standard library is used.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import pgfix  # noqa: E402

HOST = "127.0.0.1"
from procstat import proc_cpu, task_cpu  # noqa: E402  (tests/bench)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print("wb-bench: " + msg, file=sys.stderr, flush=True)


class Stop(Exception):
    pass


def on_signal(signum, frame):
    raise Stop("signal %d" % signum)


# ------------------------------------------------------------------ helpers
def free_port():
    import socket
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


METRIC = re.compile(r"^(circa_[a-z_]+) ([0-9.eE+-]+)$", re.M)


def metrics(url, timeout=2.0):
    with urllib.request.urlopen(url + "/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in METRIC.findall(text)}


def pg_procs(pg):
    """{pid: description} of the postmaster and its children."""
    master = pg._pid()
    if not master:
        return {}
    out = {master: "postmaster"}
    for c in os.listdir("/proc"):
        if not c.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % c) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != master:
                continue
            with open("/proc/%s/cmdline" % c, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        out[int(c)] = cmd
    return out


def pg_role(cmd):
    """'backend' for client connections, else the process' role."""
    m = re.match(r"postgres: (.*)", cmd)
    if not m:
        return cmd
    rest = m.group(1)
    for r in ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
              "autovacuum worker", "logical replication launcher"):
        if rest.startswith(r):
            return r
    if re.match(r"\S+ \S+ 127\.0\.0\.1", rest):
        return "backend"
    return rest.split()[0]


def system_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


class CpuMeter:
    """CPU seconds of circa (per thread), PostgreSQL (per process role) and
    the machine between start() and stop(); wrk's come from wait4()."""

    def __init__(self, circa_pid, pg):
        self.circa_pid, self.pg = circa_pid, pg

    def start(self):
        self.t0 = time.time()
        self.busy0 = system_busy()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.tasks0 = task_cpu(self.circa_pid)
        self.procs = pg_procs(self.pg) if self.pg and self.pg.running() else {}
        self.pg0 = {p: proc_cpu(p) for p in self.procs}
        return self

    def add_new_pg_procs(self):
        """PostgreSQL processes started after start() count from 0."""
        if self.pg and self.pg.running():
            for p, d in pg_procs(self.pg).items():
                if p not in self.procs:
                    self.procs[p] = d
                    self.pg0[p] = 0.0

    def stop(self):
        self.add_new_pg_procs()
        tasks1 = task_cpu(self.circa_pid)
        pg1 = {p: proc_cpu(p) for p in self.procs}
        busy1 = system_busy()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        threads = sorted(((tasks1.get(k, v) - v, k) for k, v in self.tasks0.items()),
                         reverse=True)
        roles = {}
        for p, d in self.procs.items():
            r = pg_role(d)
            roles[r] = roles.get(r, 0.0) + max(0.0, pg1.get(p, 0.0) - self.pg0[p])
        wall = time.time() - self.t0
        busy_s = (busy1[0] - self.busy0[0]) / CLK_TCK
        me = (self1.ru_utime + self1.ru_stime) - (self.self0.ru_utime + self.self0.ru_stime)
        return {
            # busy CPU seconds of the machine not spent by circa, PostgreSQL
            # or this script (wrk's are subtracted by the caller)
            "unaccounted": busy_s - sum(c for c, _ in threads) - sum(roles.values()) - me,
            "wall": wall,
            "circa": sum(c for c, _ in threads),
            "circa_top": threads[0][0] if threads else 0.0,
            "circa_rest": sum(c for c, _ in threads[1:]),
            "pg_backend": roles.get("backend", 0.0),
            "pg_other": sum(v for k, v in roles.items() if k != "backend"),
            "pg_roles": roles,
            "busy": (busy1[0] - self.busy0[0]) / max(1, busy1[1] - self.busy0[1]),
        }


def wait_quiet(max_wait, limit=0.15):
    """Waits (at most max_wait s) until the machine's busy share over 1 s is
    below limit: other people's processes distort the numbers. Returns the
    last busy share."""
    deadline = time.time() + max_wait
    said = 0.0
    while True:
        b0 = system_busy()
        time.sleep(1.0)
        b1 = system_busy()
        share = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if share < limit or time.time() >= deadline:
            if share >= limit:
                say("machine still %.0f %% busy after %d s; measuring anyway" % (
                    100 * share, max_wait))
            return share
        if time.time() - said >= 15:
            say("machine %.0f %% busy (other processes); waiting up to %.0f s for it to "
                "calm down" % (100 * share, deadline - time.time()))
            said = time.time()


def pct(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def parse_duration(d):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", d)
    if not m:
        raise SystemExit("bad duration %r" % d)
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# ------------------------------------------------------------------ the run
class Bench:
    def __init__(self, a):
        self.a = a
        self.tmp = a.tmp
        self.pg = None
        self.circa = None
        self.circa_log = None
        self.wrk = None
        self.url = None
        self.pidfile = os.path.join(self.tmp, "pids")

    # ---- bookkeeping for wb.sh's trap
    def write_pids(self):
        lines = []
        if self.circa and self.circa.poll() is None:
            lines.append("pid %d" % self.circa.pid)
        if self.wrk and self.wrk.poll() is None:
            lines.append("pid %d" % self.wrk.pid)
        if self.pg:
            lines.append("pgdata %s" % self.pg.data)
            lines.append("pgbin %s" % self.pg.bin)
        with open(self.pidfile + ".new", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(self.pidfile + ".new", self.pidfile)

    # ---- PostgreSQL
    def pg_start(self):
        if self.pg is None:
            self.pg = pgfix.PG()
        self.pg.start()
        self.write_pids()

    def pg_stop(self):
        self.pg.stop("fast")

    # ---- circa
    def circa_start(self, data, pg_batch=None, log_name="circa.log"):
        port = free_port()
        self.url = "http://%s:%d" % (HOST, port)
        conf = {
            "threads": self.a.nproc, "fsync": True, "password_iterations": 1000,
            "limits": {"rate_per_s": 0},
            "policy": {"max_loans": 100000, "max_loans_premium": 100000},
        }
        if pg_batch:
            conf["pg"] = {"dsn": self.pg.dsn(), "batch": pg_batch,
                          "high_water": self.a.high_water}
        cpath = os.path.join(self.tmp, "circa.json")
        fd = os.open(cpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(conf, f)
        os.makedirs(data, exist_ok=True)
        self.circa_log = open(os.path.join(self.tmp, log_name), "ab")
        self.circa = subprocess.Popen(
            [self.a.bin, "serve", "--listen", "%s:%d" % (HOST, port), "--data", data,
             "--config", cpath, "--threads", str(self.a.nproc)],
            stdout=self.circa_log, stderr=self.circa_log)
        self.write_pids()
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.circa.poll() is not None or time.time() > deadline:
                raise SystemExit("circa did not become ready; see %s" % self.circa_log.name)
            time.sleep(0.1)

    def circa_stop(self):
        if self.circa and self.circa.poll() is None:
            self.circa.send_signal(signal.SIGTERM)
            try:
                self.circa.wait(30)
            except subprocess.TimeoutExpired:
                self.circa.kill()
                self.circa.wait()
        self.circa = None
        if self.circa_log:
            self.circa_log.close()
            self.circa_log = None
        self.write_pids()

    # ---- load and wrk
    def setup(self, data, out):
        subprocess.run(
            [sys.executable, os.path.join(HERE, "setup.py"), "--url", self.url, "--bin",
             self.a.bin, "--data", data, "--out", out, "--users", str(self.a.users),
             "--loans", str(self.a.loans), "--write-resources", str(self.a.write_resources)],
            check=True)

    def wrk_start(self, load, duration, name):
        cmd = ["wrk", "-t", str(self.a.threads), "-c", str(self.a.connections), "-d", duration,
               "--latency", "-s", os.path.join(HERE, "checkout_return.lua"), self.url, "--",
               os.path.join(load, "users.txt"), os.path.join(load, "write_resources.txt")]
        say("wrk %s: %s" % (name, " ".join(cmd[:8] + ["checkout_return.lua", self.url])))
        out = open(os.path.join(self.tmp, "wrk-%s.txt" % name), "w")
        self.wrk = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.wrk.out = out
        self.write_pids()
        return self.wrk

    def wrk_wait(self):
        _, status, ru = os.wait4(self.wrk.pid, 0)
        self.wrk.returncode = os.waitstatus_to_exitcode(status)
        self.wrk.out.close()
        with open(self.wrk.out.name) as f:
            text = f.read()
        self.wrk = None
        self.write_pids()
        sys.stderr.write("".join("    " + l + "\n" for l in text.splitlines()))
        m = re.search(r"^BENCH (.*)$", text, re.M)
        if not m:
            raise SystemExit("wrk printed no BENCH line")
        r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        r["cpu"] = ru.ru_utime + ru.ru_stime
        return r

    def wait_caught_up(self, timeout):
        deadline = time.time() + timeout
        while True:
            m = metrics(self.url)
            if m.get("circa_wb_lag_entries", 1) == 0 and m.get("circa_wb_connected") == 1:
                return m
            if time.time() > deadline:
                raise SystemExit("write-behind did not catch up in %ds: %r" % (timeout, m))
            time.sleep(0.2)

    # ---- 1. steady state
    def steady(self, wb_on):
        """Setup, then the wrk run; repeated (up to --tries) while other
        processes took more than --foreign-limit cores, keeping the attempt
        they disturbed least."""
        name = "on" if wb_on else "off"
        data = os.path.join(self.tmp, "data-" + name)
        load = os.path.join(self.tmp, "load-" + name)
        say("steady state, write-behind %s: starting circa" % name)
        self.circa_start(data, self.a.batch if wb_on else None, "circa-%s.log" % name)
        self.setup(data, load)
        best = None
        for attempt in range(1, self.a.tries + 1):
            res = self.steady_once(wb_on, load, "steady-%s-%d" % (name, attempt))
            res.update(data=data, load=load, attempt=attempt)
            foreign = res["foreign"]
            if best is None or foreign < best["foreign"]:
                best = res
            if foreign <= self.a.foreign_limit:
                break
            say("other processes used %.2f cores during the run (limit %.2f): %s" % (
                foreign, self.a.foreign_limit,
                "measuring again" if attempt < self.a.tries else "keeping the least disturbed"))
        if not wb_on:
            self.circa_stop()
        return best

    def steady_once(self, wb_on, load, name):
        res = {}
        if wb_on:
            self.wait_caught_up(300)
        wait_quiet(self.a.quiet_wait)
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                t = time.time()
                try:
                    samples.append((t, metrics(self.url)))
                except OSError:
                    pass
                stop.wait(max(0.0, self.a.sample - (time.time() - t)))

        m0, t0 = metrics(self.url), time.time()
        th = threading.Thread(target=sampler, daemon=True)
        if wb_on:
            th.start()
        cpu = CpuMeter(self.circa.pid, self.pg).start()
        self.wrk_start(load, self.a.duration, name)
        res["wrk"] = self.wrk_wait()
        res["cpu"] = cpu.stop()
        t1, m1 = time.time(), metrics(self.url)
        stop.set()
        if wb_on:
            th.join()
        res["foreign"] = max(0.0, res["cpu"]["unaccounted"] - res["wrk"]["cpu"]) / \
            res["cpu"]["wall"]
        dt = t1 - t0
        res["applied_per_s"] = (m1["circa_applied_index"] - m0["circa_applied_index"]) / dt
        if not wb_on:
            return res
        # catch-up: poll quickly until PostgreSQL has everything
        lag_end = m1["circa_wb_lag_entries"]
        while True:
            m = metrics(self.url)
            if m["circa_wb_lag_entries"] == 0:
                t2 = time.time()
                break
            if time.time() - t1 > 300:
                raise SystemExit("no catch-up within 300 s after wrk: %r" % m)
            time.sleep(0.02)
        lag_e = [s[1]["circa_wb_lag_entries"] for s in samples]
        lag_s = [s[1]["circa_wb_lag_seconds"] for s in samples]
        res.update(
            seconds=dt,
            rows_per_s=(m1["circa_wb_rows_total"] - m0["circa_wb_rows_total"]) / dt,
            cmds_per_s=(m1["circa_wb_commands_total"] - m0["circa_wb_commands_total"]) / dt,
            batches=m1["circa_wb_batches_total"] - m0["circa_wb_batches_total"],
            errors=m1.get("circa_wb_errors_total", 0) - m0.get("circa_wb_errors_total", 0),
            lag_e_p50=pct(lag_e, 50), lag_e_max=max(lag_e or [0]),
            lag_s_p50=pct(lag_s, 50), lag_s_max=max(lag_s or [0]),
            nsamples=len(samples), lag_at_end=lag_end, catchup_s=t2 - t1,
        )
        res["cmds_per_batch"] = ((m1["circa_wb_commands_total"] - m0["circa_wb_commands_total"])
                                 / res["batches"]) if res["batches"] else 0
        with open(os.path.join(self.tmp, "samples-%s.tsv" % name), "w") as f:
            f.write("t\tapplied\tflushed\tlag_entries\tlag_seconds\n")
            for t, s in samples:
                f.write("%.2f\t%d\t%d\t%d\t%.3f\n" % (
                    t - t0, s["circa_applied_index"], s["circa_wb_flushed_index"],
                    s["circa_wb_lag_entries"], s["circa_wb_lag_seconds"]))
        return res

    # ---- 2. backlog drain
    def drain(self, data, load, batch, perf):
        """Repeated (up to --tries) while other processes took more than
        --foreign-limit cores, keeping the least disturbed drain."""
        say("drain, pg.batch %d: restarting circa" % batch)
        self.circa_stop()
        self.circa_start(data, batch, "circa-drain-%d.log" % batch)
        best = None
        for attempt in range(1, self.a.tries + 1):
            res = self.drain_once(load, batch, perf, attempt)
            res["attempt"] = attempt
            res["foreign"] = max(0.0, res["cpu"]["unaccounted"]) / res["cpu"]["wall"]
            if best is None or res["foreign"] < best["foreign"]:
                best = res
            if res["foreign"] <= self.a.foreign_limit:
                break
            say("other processes used %.2f cores during the drain (limit %.2f): %s" % (
                res["foreign"], self.a.foreign_limit,
                "measuring again" if attempt < self.a.tries else "keeping the least disturbed"))
        return best

    def drain_once(self, load, batch, perf, attempt):
        self.wait_caught_up(600)
        say("stopping PostgreSQL, building a backlog of >= %d commands" % self.a.backlog)
        self.pg_log_durations(True)
        self.pg_stop()
        m0 = metrics(self.url)
        t0 = time.time()
        self.wrk_start(load, "3600s", "backlog-%d-%d" % (batch, attempt))
        while True:
            time.sleep(0.5)
            m = metrics(self.url)
            if m["circa_wb_lag_entries"] >= self.a.backlog:
                break
            if self.wrk.poll() is not None:
                raise SystemExit("wrk stopped early")
            if time.time() - t0 > 900:
                raise SystemExit("no backlog of %d after 900 s: %r" % (self.a.backlog, m))
        self.wrk.send_signal(signal.SIGINT)  # wrk: stop and print results
        w = self.wrk_wait()
        t1 = time.time()
        mb = metrics(self.url)
        backlog = mb["circa_wb_lag_entries"]
        res = {"batch": batch, "backlog": backlog,
               "backlog_writes_per_s": (mb["circa_applied_index"] - m0["circa_applied_index"])
               / (t1 - t0), "wrk": w, "outbox": mb.get("circa_wb_outbox_entries", 0)}
        wait_quiet(self.a.quiet_wait)
        say("backlog %d commands; starting PostgreSQL" % backlog)

        self.pg_start()
        tp = time.time()
        flushed0 = mb["circa_wb_flushed_index"]
        rows0 = mb["circa_wb_rows_total"]
        batches0 = mb["circa_wb_batches_total"]
        first = None
        perf_proc = None
        samples = []
        while True:
            m = metrics(self.url)
            t = time.time()
            samples.append((t, m))
            if first is None and m["circa_wb_flushed_index"] > flushed0:
                # measured from here: the first batch is in, the backend runs
                first = (t, m)
                cpu = CpuMeter(self.circa.pid, self.pg).start()
                log_off = os.path.getsize(self.pg.log)
                if perf:
                    pf = os.path.join(self.tmp, "perf-drain-%d-%d.data" % (batch, attempt))
                    pids = [self.circa.pid] + [p for p, d in cpu.procs.items()
                                               if pg_role(d) == "backend"]
                    perf_proc = subprocess.Popen(
                        ["perf", "record", "-g", "-F", "499", "-o", pf, "-p",
                         ",".join(str(p) for p in pids), "--", "sleep",
                         str(self.a.perf_seconds)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    res["perf_data"] = pf
            if m["circa_wb_lag_entries"] == 0:
                break
            if t - tp > 900:
                raise SystemExit("drain did not finish in 900 s: %r" % m)
            time.sleep(0.1)
        t_end, m_end = samples[-1]
        c = cpu.stop()
        if perf_proc:
            perf_proc.wait()
        res["statements"] = self.pg_statement_times(log_off)
        self.pg_log_durations(False)
        t_first, m_first = first
        span = t_end - t_first
        cmds = m_end["circa_wb_flushed_index"] - m_first["circa_wb_flushed_index"]
        rows = m_end["circa_wb_rows_total"] - m_first["circa_wb_rows_total"]
        res.update(
            reconnect_s=t_first - tp, drain_s=span, total_s=t_end - tp,
            cmds=cmds, rows=rows,
            cmds_per_s=cmds / span if span > 0 else 0,
            rows_per_s=rows / span if span > 0 else 0,
            all_cmds=m_end["circa_wb_flushed_index"] - flushed0,
            batches_measured=m_end["circa_wb_batches_total"] - m_first["circa_wb_batches_total"],
            all_rows=m_end["circa_wb_rows_total"] - rows0,
            batches=m_end["circa_wb_batches_total"] - batches0,
            cpu=c, wall=t_end - t_first,
        )
        with open(os.path.join(self.tmp, "samples-drain-%d-%d.tsv" % (batch, attempt)),
                  "w") as f:
            f.write("t\tflushed\trows\tlag_entries\tlag_seconds\tconnected\n")
            for t, s_ in samples:
                f.write("%.2f\t%d\t%d\t%d\t%.3f\t%d\n" % (
                    t - tp, s_["circa_wb_flushed_index"], s_["circa_wb_rows_total"],
                    s_["circa_wb_lag_entries"], s_["circa_wb_lag_seconds"],
                    s_["circa_wb_connected"]))
        res["rows_per_cmd"] = res["all_rows"] / res["all_cmds"] if res["all_cmds"] else 0
        return res

    # ---- PostgreSQL's own time per statement, from its log
    def pg_log_durations(self, on):
        """log_min_duration_statement = 0 (parameters not logged) while on;
        ALTER SYSTEM, so it lasts across a restart."""
        if on:
            sql = ("ALTER SYSTEM SET log_min_duration_statement = 0;"
                   "ALTER SYSTEM SET log_parameter_max_length = 0;"
                   "ALTER SYSTEM SET log_parameter_max_length_on_error = 0;")
        else:
            sql = ("ALTER SYSTEM RESET log_min_duration_statement;"
                   "ALTER SYSTEM RESET log_parameter_max_length;"
                   "ALTER SYSTEM RESET log_parameter_max_length_on_error;")
        self.pg.psql(sql + "SELECT pg_reload_conf();", dbname="postgres", superuser=True)

    STMT = re.compile(r"duration: ([0-9.]+) ms  (parse|bind|execute|statement)(?: (\S+))?: "
                      r"(\w+(?: \w+){0,2})")
    STMT_NAMES = {"wb0": "upsert users", "wb1": "upsert api_keys", "wb2": "upsert resources",
                  "wb3": "tombstone resources", "wb4": "upsert loans", "wb5": "upsert holds",
                  "wb6": "insert commands"}

    def pg_statement_times(self, offset):
        """{"phase statement": (count, seconds)} from the server log after offset."""
        out = {}
        try:
            with open(self.pg.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return out
        for m in self.STMT.finditer(text):
            ms, phase, name, sql = m.groups()
            what = self.STMT_NAMES.get(name) or sql.split(" SET")[0]
            key = "%s %s" % (phase, what) if phase != "statement" else what
            n, t = out.get(key, (0, 0.0))
            out[key] = (n + 1, t + float(ms) / 1000)
        return out

    # ---- consistency: PostgreSQL has every command
    def check_pg(self):
        m = metrics(self.url)
        rows = self.pg.psql("SELECT flushed_index FROM flush_cursor;"
                            "SELECT count(*), coalesce(max(log_index), 0) FROM commands;"
                            "SELECT count(*) FROM loans;")
        cursor = int(rows[0][0])
        count, top = int(rows[1][0]), int(rows[1][1])
        ok = cursor == m["circa_wb_flushed_index"] == count == top
        return {"cursor": cursor, "commands": count, "loans": int(rows[2][0]),
                "applied": m["circa_applied_index"], "ok": ok}

    def perf_report(self, pf):
        """(by comm/dso, top symbols of circa, top symbols of postgres) as text."""
        def rep(*args):
            p = subprocess.run(["perf", "report", "-i", pf, "--stdio", "--no-children",
                                "--percent-limit", "1", "--percentage", "relative", "-g", "none"] + list(args),
                               capture_output=True, text=True)
            return "\n".join(l for l in p.stdout.splitlines()
                             if l.strip() and not l.startswith("#"))
        return (rep("--sort", "comm,dso"),
                rep("--comm", "circa", "--sort", "sym"),
                rep("--comm", "postgres", "--sort", "sym"))

    def run(self):
        a = self.a
        self.pg_start()
        off = self.steady(False)
        on = self.steady(True)
        drains = []
        for b in a.drain_batches:
            drains.append(self.drain(on["data"], on["load"], b,
                                     a.perf and b == a.batch and not any(
                                         d.get("perf_data") for d in drains)))
        check = self.check_pg()
        self.circa_stop()
        perf_txt = None
        for d in drains:
            if d.get("perf_data"):
                perf_txt = self.perf_report(d["perf_data"])
        self.report(off, on, drains, check, perf_txt)
        return 0 if check["ok"] else 1

    def report(self, off, on, drains, check, perf_txt):
        a = self.a
        f0 = lambda x: "{:,.0f}".format(x).replace(",", " ")
        woff, won = off["wrk"]["writes_per_s"], on["wrk"]["writes_per_s"]
        cpu = open("/proc/cpuinfo").read()
        model = re.search(r"model name\s*:\s*(.*)", cpu)
        pgver = subprocess.run([os.path.join(self.pg.bin, "postgres"), "--version"],
                               capture_output=True, text=True).stdout.strip()
        cver = subprocess.run([a.bin, "--version"], capture_output=True,
                              text=True).stdout.strip().splitlines()[:1]
        p = print
        p()
        p("### %s — %s, %d cores, Linux %s" % (time.strftime("%Y-%m-%d", time.gmtime()),
                                               model.group(1) if model else "?", a.nproc,
                                               os.uname().release))
        p()
        p("circa `%s` (release build), %s (fsync on, synchronous_commit on, "
          "shared_buffers 128MB); circa, PostgreSQL and wrk share the same %d cores, "
          "127.0.0.1. wrk `-t%d -c%d -d%s` checkout_return.lua; %d members x %d loans; "
          "circa fsync on." % (cver[0] if cver else "?", pgver, a.nproc, a.threads,
                              a.connections, a.duration, a.users, a.loans))
        p()
        p("**Steady state** (pg.batch %d, /metrics every %.1f s):" % (a.batch, a.sample))
        p()
        p("| write-behind | write commands/s (p50 / p99) | flushed rows/s | flushed commands/s "
          "| commands/batch | lag entries p50 / max | lag s p50 / max | lag 0 after wrk |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        p("| off | %s (%.2f ms / %.2f ms) | — | — | — | — | — | — |" % (
            f0(woff), off["wrk"]["p50_ms"], off["wrk"]["p99_ms"]))
        p("| on | %s (%.2f ms / %.2f ms) | %s | %s | %.0f | %s / %s | %.2f / %.2f | %.2f s |" % (
            f0(won), on["wrk"]["p50_ms"], on["wrk"]["p99_ms"], f0(on["rows_per_s"]),
            f0(on["cmds_per_s"]), on["cmds_per_batch"], f0(on["lag_e_p50"]),
            f0(on["lag_e_max"]), on["lag_s_p50"], on["lag_s_max"], on["catchup_s"]))
        p()
        p("on / off write commands/s: **%.2f**; applied commands/s with write-behind on "
          "(metrics, incl. 409s): %s; flush errors %d; measured on attempt %d (off) and %d (on) "
          "of up to %d (an attempt is repeated when other processes used more than %.2f "
          "cores)." % (won / woff if woff else 0, f0(on["applied_per_s"]), on["errors"],
                       off["attempt"], on["attempt"], a.tries, a.foreign_limit))
        p()
        p("CPU during the wrk run, in cores (CPU seconds / wall seconds):")
        p()
        p("| write-behind | circa | wrk | PostgreSQL backend | PostgreSQL other "
          "| other processes | machine busy |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, r in (("off", off), ("on", on)):
            c = r["cpu"]
            w = c["wall"]
            p("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f %% |" % (
                name, c["circa"] / w, r["wrk"]["cpu"] / w, c["pg_backend"] / w,
                c["pg_other"] / w, r["foreign"], 100 * c["busy"]))
        p()
        p("**Backlog drain** (PostgreSQL stopped, write benchmark until the backlog is "
          ">= %s commands, wrk stopped, PostgreSQL started; rates from the first committed "
          "batch to lag 0, CPU in cores and PostgreSQL's statement times over the same span):" % f0(a.backlog))
        p()
        p("| pg.batch | backlog commands | reconnect | drain | **rows/s** | commands/s "
          "| rows + audit rows/s "
          "| rows/command | flusher | PostgreSQL backend | PostgreSQL other | other processes "
          "| machine busy |")
        p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: |")
        for d in drains:
            c = d["cpu"]
            w = c["wall"]
            p("| %d | %s | %.1f s | %.1f s | **%s** | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f "
              "| %.0f %% |" % (
                  d["batch"], f0(d["backlog"]), d["reconnect_s"], d["drain_s"],
                  f0(d["rows_per_s"]), f0(d["cmds_per_s"]),
                  f0(d["rows_per_s"] + d["cmds_per_s"]), d["rows_per_cmd"],
                  c["circa_top"] / w, c["pg_backend"] / w, c["pg_other"] / w,
                  max(0.0, c["unaccounted"]) / w, 100 * c["busy"]))
        p()
        p("Drains measured on attempt %s (same rule as above)." % ", ".join(
            str(d["attempt"]) for d in drains))
        p()
        p("Target: >= 30 000 rows/s while draining. Writes while PostgreSQL was down: %s "
          "commands/s. PostgreSQL after the run: cursor %d, %d command rows, %d loans; "
          "circa applied index %d: %s." % (
              ", ".join(f0(d["backlog_writes_per_s"]) for d in drains), check["cursor"],
              check["commands"], check["loans"], check["applied"],
              "consistent" if check["ok"] else "**MISMATCH**"))
        p()
        p("PostgreSQL's time per statement during each drain (server log, "
          "log_min_duration_statement = 0; statements under 0.5 % left out), seconds and "
          "share of the drain's time:")
        p()
        keys = []
        for d in drains:
            for k, (n, t) in sorted(d["statements"].items(), key=lambda kv: -kv[1][1]):
                if k not in keys:
                    keys.append(k)
        p("| statement | " + " | ".join("pg.batch %d" % d["batch"] for d in drains) + " |")
        p("| --- | " + " | ".join("---:" for _ in drains) + " |")
        for k in keys:
            if all(d["statements"].get(k, (0, 0.0))[1] < 0.005 * d["wall"] for d in drains):
                continue
            cells = []
            for d in drains:
                n, t = d["statements"].get(k, (0, 0.0))
                cells.append("%.2f s (%.0f %%)" % (t, 100 * t / d["wall"]) if n else "—")
            p("| %s | %s |" % (k, " | ".join(cells)))
        cells = []
        for d in drains:
            t = sum(v for _, v in d["statements"].values())
            cells.append("**%.2f s (%.0f %%)** of %.1f s, %d batches" % (
                t, 100 * t / d["wall"], d["wall"], d["batches_measured"]))
        p("| all | %s |" % " | ".join(cells))
        p()
        p("Reproduce: `DURATION=%s CONNECTIONS=%d THREADS=%d USERS=%d BATCH=%d "
          "DRAIN_BATCHES='%s' BACKLOG=%d tests/bench/wb.sh`" % (
              a.duration, a.connections, a.threads, a.users, a.batch,
              " ".join(str(b) for b in a.drain_batches), a.backlog))
        if perf_txt:
            sys.stderr.write("\nperf (circa and the flusher's PostgreSQL backend, %d s of the "
                             "pg.batch %d drain), by comm/dso:"
                             "\n%s\n\ncirca symbols:\n%s\n\npostgres symbols:\n%s\n" % (
                                 a.perf_seconds, a.batch, *perf_txt))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--duration", default="15s")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--nproc", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--loans", type=int, default=3)
    ap.add_argument("--write-resources", type=int, default=50)
    ap.add_argument("--batch", type=int, default=2000, help="pg.batch of the steady state")
    ap.add_argument("--drain-batches", default="500 2000 10000")
    ap.add_argument("--backlog", type=int, default=200000)
    ap.add_argument("--high-water", type=int, default=1000000)
    ap.add_argument("--sample", type=float, default=0.5)
    ap.add_argument("--quiet-wait", type=int, default=120,
                    help="seconds to wait for other processes to go quiet before a measurement")
    ap.add_argument("--tries", type=int, default=3,
                    help="steady-state runs repeated while other processes disturbed them")
    ap.add_argument("--foreign-limit", type=float, default=0.15,
                    help="cores other processes may use during a steady-state run")
    ap.add_argument("--perf", type=int, default=0)
    ap.add_argument("--perf-seconds", type=int, default=5)
    a = ap.parse_args()
    a.drain_batches = [int(x) for x in a.drain_batches.split()]
    if a.backlog >= a.high_water:
        raise SystemExit("--backlog must be below --high-water")
    parse_duration(a.duration)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pgfix.KEEP = False  # its data directory is large; its log is copied into TMP
    b = Bench(a)
    try:
        return b.run()
    except Stop as e:
        say("stopped: %s" % e)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if b.wrk and b.wrk.poll() is None:
            b.wrk.kill()
            b.wrk.wait()
        b.circa_stop()
        if b.pg:
            try:
                shutil.copy(b.pg.log, os.path.join(a.tmp, "postgres.log"))
            except OSError:
                pass
            try:
                b.pg.cleanup()
            except Exception as e:  # noqa: BLE001
                say("PostgreSQL cleanup: %s" % e)
                b.pg.kill()
        try:
            os.unlink(b.pidfile)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
