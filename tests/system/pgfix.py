"""Private PostgreSQL server fixture for circa system tests (stdlib only).

A PG is a throw-away cluster: initdb into a fresh mkdtemp dir, listening only
on 127.0.0.1 on a free port, unix socket in the temp dir, fsync=on,
max_connections=50, shared_buffers=128MB, server log <tmp>/postgres.log.
Binaries: newest /usr/lib/postgresql/*/bin (or $PGFIX_BINDIR).  start() after
stop()/kill() reuses the same data dir and port.  The socket (0700 temp dir)
trusts superuser "postgres"; TCP needs scram-sha-256.  Role `circa` (LOGIN,
random password) owns database `circa`; dsn() includes the password so tests
can check that the service never logs it.

initdb/pg_ctl/postgres refuse to run as root, so when euid==0 they (and
superuser psql) run as the `postgres` system user via `runuser`, with the temp
dir chowned to it.  Ordinary psql runs as the caller over TCP with PGPASSWORD
in the environment (never in argv).

psql() runs `psql -X -q -A -t -0 -F <US> -P null=<GS>`: fields separated by
\\x1f, every row (of every statement) terminated by a zero byte, which no
PostgreSQL text value can contain (so values may hold newlines); NULL prints
as \\x1d.  Rows come back as lists of str, with None for NULL.

Every PG is registered in INSTANCES; an atexit hook stops each one and
removes its temp dir unless KEEP is true.
"""

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

KEEP = False        # keep temp dirs (data + log) after cleanup()
INSTANCES = []      # every PG created and not yet cleaned up
US, NULL_MARK = "\x1f", "\x1d"   # psql field separator, NULL marker
PG_USER = "postgres"


class PGError(RuntimeError):
    """A PostgreSQL command failed; the message includes the server log tail."""


def bindir():
    """Newest /usr/lib/postgresql/<ver>/bin (or $PGFIX_BINDIR), or None."""
    ver = lambda d: [int(x) for x in d.split("/")[-2].split(".") if x.isdigit()]
    return os.environ.get("PGFIX_BINDIR") or max(
        glob.glob("/usr/lib/postgresql/*/bin"), key=ver, default=None)


def available():
    """(True, "") if a PostgreSQL server can be run here, else (False, reason)."""
    b = bindir()
    if not b:
        return False, "no /usr/lib/postgresql/*/bin (install postgresql)"
    for tool in ("initdb", "pg_ctl", "postgres", "pg_isready", "psql"):
        if not os.access(os.path.join(b, tool), os.X_OK):
            return False, "missing %s in %s" % (tool, b)
    if os.geteuid() == 0 and (not shutil.which("runuser") or PG_USER not in
                              [u.pw_name for u in pwd.getpwall()]):
        return False, "running as root needs runuser and a '%s' user" % PG_USER
    return True, ""


def _stat(pid):
    """(state, ppid) of a process from /proc, or ("X", 0) if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return "X", 0


def _alive(pid):   # zombies count as dead: PID 1 may never reap them
    return _stat(pid)[0] not in "ZXx"


class PG:
    def __init__(self):
        if not available()[0]:
            raise PGError("PostgreSQL unavailable: " + available()[1])
        self.bin = bindir()
        self.base = tempfile.mkdtemp(prefix="circa-pg-")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgres.log")
        with socket.socket() as s:   # free port; start() reuses it forever
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.password = secrets.token_hex(16)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            os.chown(self.base, *pwd.getpwnam(PG_USER)[2:4])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env.update(PGCLIENTENCODING="UTF8", LC_ALL="C")
        self._provisioned = False
        INSTANCES.append(self)

    def _run(self, tool, args, as_pg=True, input=None, env=None, check=True):
        cmd = [os.path.join(self.bin, tool)] + list(args)
        if as_pg and self.as_root:
            cmd = ["runuser", "-u", PG_USER, "--"] + cmd
        p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                           encoding="utf-8", cwd=self.base, env=env or self.env,
                           timeout=120)
        if check and p.returncode != 0:
            shown = " ".join([tool] + list(args)).encode("unicode_escape")
            raise PGError("%s failed (rc=%d): %s\n%s" % (shown.decode(),
                          p.returncode, p.stderr.strip(), self.log_tail()))
        return p

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                tail = "\n".join(f.read().splitlines()[-n:])
        except OSError:
            tail = "(none)"
        return "--- server log tail (%s) ---\n%s" % (self.log, tail)

    def _initdb(self):
        self._run("initdb", ["-D", self.data, "-U", PG_USER, "-E", "UTF8",
                             "--locale=C", "--auth-local=trust",
                             "--auth-host=scram-sha-256"])
        conf = dict(listen_addresses="'127.0.0.1'", port=self.port, fsync="on",
                    unix_socket_directories="'%s'" % self.base,
                    synchronous_commit="on", max_connections=50,
                    shared_buffers="128MB", password_encryption="scram-sha-256")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("".join("%s = %s\n" % kv for kv in conf.items()))
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all %s trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                    % PG_USER)

    def _pid(self, lock=None):
        try:
            with open(lock or os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def _remove_stale_locks(self):
        """After kill(), postgres would not remove the lock files itself while
        the dead postmaster is an unreaped zombie (kill(pid, 0) succeeds)."""
        for lock in (os.path.join(self.data, "postmaster.pid"),
                     os.path.join(self.base, ".s.PGSQL.%d.lock" % self.port)):
            pid = self._pid(lock)
            if pid is not None and not _alive(pid):
                os.unlink(lock)

    def running(self):
        pid = self._pid()
        return pid is not None and _alive(pid)

    def start(self):
        if self.running():
            return self
        self._remove_stale_locks()
        if not os.path.isdir(self.data):   # initdb removes it if it fails
            self._initdb()
        self._run("pg_ctl", ["-D", self.data, "-l", self.log, "-w", "-t", "60",
                             "start"])
        isready = ["-h", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        for _ in range(300):
            if not self._run("pg_isready", isready, False, check=False).returncode:
                break
            time.sleep(0.1)
        else:
            raise PGError("pg_isready never succeeded\n" + self.log_tail())
        if not self._provisioned:   # SQL via stdin: password not in argv/log
            self.psql("CREATE ROLE circa LOGIN PASSWORD '%s';\n"
                      "CREATE DATABASE circa OWNER circa;" % self.password,
                      dbname="postgres", superuser=True)
            self._provisioned = True
        return self

    def stop(self, mode="fast"):
        """Clean shutdown (mode: smart, fast or immediate)."""
        if self.running():
            self._run("pg_ctl", ["-D", self.data, "-m", mode, "-w", "-t", "60",
                                 "stop"])

    def kill(self):
        """SIGKILL the postmaster (a crash).  Its children exit on postmaster
        death; wait (force after 10 s) until they have, so that the shared
        memory segment is detached and start() can run crash recovery."""
        pid = self._pid()
        if pid is None or not self.running():
            return
        children = [int(c) for c in os.listdir("/proc")
                    if c.isdigit() and _stat(int(c))[1] == pid]
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while any(map(_alive, children + [pid])):
            for c in filter(_alive, children if time.time() > deadline else []):
                os.kill(c, signal.SIGKILL)
            time.sleep(0.05)

    def _procs(self):
        pid = self._pid()
        if pid is None or not self.running():
            return []
        return [pid] + [int(c) for c in os.listdir("/proc")
                        if c.isdigit() and _stat(int(c))[1] == pid]

    def _signal_all(self, sig):
        for p in self._procs():
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass  # a backend that exited after it was listed

    def pause(self):
        """SIGSTOP the postmaster and its children: a server that accepts
        TCP but never answers (resume() with SIGCONT)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self):
        self._signal_all(signal.SIGCONT)

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        self.resume()
        try:
            self.stop("fast" if KEEP else "immediate")
        except PGError:
            self.kill()
        if self in INSTANCES:
            INSTANCES.remove(self)
        if not KEEP:
            shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname="circa"):
        return "host=127.0.0.1 port=%d dbname=%s user=circa password=%s" % (
            self.port, dbname, self.password)

    def psql(self, sql, dbname="circa", superuser=False):
        """Run SQL (may be several statements); return result rows as lists of
        str, None for NULL.  superuser=True connects as postgres via socket."""
        fmt = ["-X", "-q", "-A", "-t", "-0", "-F", US, "-P", "null=" + NULL_MARK,
               "-v", "ON_ERROR_STOP=1", "-p", str(self.port), "-d", dbname]
        if superuser:   # as the postgres OS user over the trusted socket
            p = self._run("psql", fmt + ["-h", self.base, "-U", PG_USER], input=sql)
        else:
            p = self._run("psql", fmt + ["-h", "127.0.0.1", "-U", "circa"], False,
                          sql, dict(self.env, PGPASSWORD=self.password))
        return [[None if v == NULL_MARK else v for v in r.split(US)]
                for r in p.stdout.split("\0")[:-1]]

    def execute(self, sql, dbname="circa"):
        self.psql(sql, dbname=dbname)


@atexit.register
def _cleanup_all():
    for pg in list(INSTANCES):
        try:
            pg.cleanup()
        except Exception:
            pass
