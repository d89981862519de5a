"""Black-box system-test harness for circa (standard library only).

A Node is one `circa serve` process on a free loopback port with its own
temporary data directory and config file.  Helpers wrap the HTTP API and the
`circa token` / `circa user add` commands.  Every node ever started is
registered in NODES and is killed at exit (atexit) or by stop_all().
"""

import atexit
import base64
import copy
import datetime
import hashlib
import hmac
import http.client
import json
import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

BIN = os.environ.get("CIRCA_BIN", "build/circa")
KEEP = False          # keep temp dirs (run.py --keep)
NODES = []            # every Node started and not yet cleaned up

TYPES = ["FICTION", "FANTASY", "NONFICTION", "HISTORY", "POETRY",
         "SCHOLARLY_JOURNAL", "VIDEO", "AUDIO"]

BASE_CONFIG = {
    "threads": 4,
    "fsync": True,
    "log_level": "info",
    "password_iterations": 1000,
    "grant_ttl_s": 300,
    "jwt": {"alg": "HS256", "issuer": "circa", "audience": "circa",
            "leeway_s": 30, "ttl_s": 3600},
    "policy": {"loan_days": 21, "max_renewals": 2, "max_loans": 10,
               "max_loans_premium": 25, "pickup_days": 3},
    "limits": {"max_body_bytes": 1048576, "max_header_bytes": 16384,
               "max_json_depth": 16, "rate_per_s": 100000, "rate_burst": 100000},
}

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ---------------------------------------------------------------- utilities

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_ports_lock = threading.Lock()
_ports_taken = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(count=1):
    """The first of `count` consecutive free loopback ports, reserved for this process."""
    lo, hi = _ephemeral_range()
    ranges = []
    if lo - 10000 >= 2000:
        ranges.append((10000, lo - count))
    if 65000 - hi >= 2000:
        ranges.append((hi + 1, 65000 - count))
    rng = random.Random()
    with _ports_lock:
        for _ in range(2000):
            if ranges:
                a, b = rng.choice(ranges)
                p = rng.randrange(a, b)
            else:
                p = free_port()
                if p + count > 65535:
                    continue
            ports = range(p, p + count)
            if any(x in _ports_taken for x in ports):
                continue
            if all(_bindable(x) for x in ports):
                _ports_taken.update(ports)
                return p
    raise AssertionError("found no %d consecutive free loopback ports" % count)


def free_port_pair():
    """A port P with P and P+1 free, outside the ephemeral range when there is room: a node's
    peer address uses both and keeps them across restarts."""
    return pick_ports(2)


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_time(s):
    assert isinstance(s, str) and RFC3339.match(s), "not an RFC 3339 UTC seconds time: %r" % (s,)
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def is_uuid(s):
    return isinstance(s, str) and bool(UUID_RE.match(s))


def uid():
    return str(uuid.uuid4())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def jwt_sign(header, payload, key):
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(payload, separators=(",", ":")).encode())
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def poll(fn, timeout=10.0, interval=0.05, what="condition"):
    """Bounded polling: return fn()'s first truthy value or raise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last=%r)" % (timeout, what, last))


class Resp(tuple):
    """(status, headers, body) with .raw bytes and .ctype; unpacks as a 3-tuple."""

    def __new__(cls, status, headers, body, raw, desc):
        r = tuple.__new__(cls, (status, headers, body))
        r.raw = raw
        r.desc = desc
        return r

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])

    @property
    def ctype(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def __repr__(self):
        b = self.raw[:600].decode("utf-8", "replace") if self.raw is not None else ""
        return "%s -> %s %s" % (self.desc, self.status, b)


def decode_body(headers, raw):
    ct = (headers.get("Content-Type") or "").lower()
    if raw and "json" in ct:
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def expect(resp, status, problem=None, field=None):
    """Assert status (int or tuple); for problems check problem+json shape, kind and field."""
    ok = resp.status in status if isinstance(status, tuple) else resp.status == status
    assert ok, "expected %s, got %r" % (status, resp)
    if problem is not None:
        check_problem(resp, problem, field)
    return resp.body


def check_problem(resp, kind, field=None):
    assert resp.ctype == "application/problem+json", \
        "expected application/problem+json, got %r: %r" % (resp.ctype, resp)
    b = resp.body
    assert isinstance(b, dict), "problem body not an object: %r" % (resp,)
    for k in ("type", "title", "status", "detail"):
        assert k in b, "problem lacks %r: %r" % (k, resp)
    assert b["status"] == resp.status, "problem status %r != HTTP %r" % (b["status"], resp.status)
    assert isinstance(b["type"], str) and b["type"].endswith("/problems/" + kind), \
        "expected problem kind %r, got type %r: %r" % (kind, b["type"], resp)
    if field is not None:
        assert b.get("field") == field, "expected field %r, got %r: %r" % (field, b.get("field"), resp)


# ---------------------------------------------------------------- node

class Node:
    def __init__(self, config=None, name="node", data=None):
        self.name = name
        self.overrides = config or {}
        self.tmp = tempfile.mkdtemp(prefix="circa-sys-%s-" % name)
        self.data = data or os.path.join(self.tmp, "data")
        os.makedirs(self.data, exist_ok=True)
        self.cfg_path = os.path.join(self.tmp, "config.json")
        self.log_path = os.path.join(self.tmp, "stderr.log")
        self.proc = None
        self.port = None
        # the peer address is part of the raft configuration: it stays the
        # same across restarts of this node
        self.peer_port = free_port_pair()
        self.starts = 0
        self.cleaned = False
        self.problems = []     # crashes, bad exit codes, sanitizer reports
        self.killed = set()    # pids we stopped or killed on purpose
        self.noted = set()
        NODES.append(self)
        self.start()

    # -- process control
    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=20.0):
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        self.port = free_port()
        cfg = deep_merge(BASE_CONFIG, {"content_base_url": self.base,
                                       "raft": {"peer": "127.0.0.1:%d" % self.peer_port}})
        cfg = deep_merge(cfg, self.overrides)
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(("\n===== start #%d port %d =====\n" % (self.starts, self.port)).encode())
        log.flush()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data", self.data,
             "--config", self.cfg_path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout=30.0):
        """Until GET /readyz answers 200 (for a cluster node: caught up); fail at once if the
        process exits."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("%s exited with %d before it was ready (log: %s)"
                                     % (self.name, rc, self.log_path))
            try:
                r = self.request("GET", "/readyz", timeout=2)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError("%s not ready after %.0fs (last: %r; log: %s)"
                                     % (self.name, timeout, last, self.log_path))
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM, wait (SIGKILL after timeout). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.killed.add(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.problems.append("%s did not exit within %.0fs of SIGTERM" % (self.name, timeout))
                return "killed-after-timeout"
            if self.proc.returncode != 0:
                self.problems.append("%s exited with %r after SIGTERM" % (self.name, self.proc.returncode))
        else:
            self.note_unexpected_exit()
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.killed.add(self.proc.pid)
        else:
            self.note_unexpected_exit()

    def note_unexpected_exit(self):
        """A process that exited although nobody stopped it (crash)."""
        p = self.proc
        if p is not None and p.poll() is not None and p.pid not in self.killed and p.pid not in self.noted:
            self.noted.add(p.pid)
            self.problems.append("%s died on its own with exit code %r" % (self.name, p.returncode))

    SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                         "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer")

    def sanitizer_reports(self):
        """Lines of the log that start a sanitizer report."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = getattr(self, "saved_full", "") or ""
        return [l for l in text.splitlines() if any(m in l for m in self.SANITIZER_MARKERS)]

    def restart(self, timeout=20.0):
        if self.alive():
            self.stop()
        self.start(timeout)

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        try:
            if self.alive():
                self.stop(10.0)
            else:
                self.note_unexpected_exit()
        except OSError:
            pass
        for line in self.sanitizer_reports():
            msg = "%s: %s" % (self.name, line.strip())
            if msg not in self.problems:
                self.problems.append(msg)
        if not KEEP:
            try:
                with open(self.log_path, "rb") as f:
                    self.saved_full = f.read().decode("utf-8", "replace")
            except OSError:
                self.saved_full = ""
            self.saved_tail = self.saved_full
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, n=40):
        """Last n lines of the log; a sanitizer report's first lines are always included."""
        if getattr(self, "saved_tail", None) is not None:
            lines = self.saved_tail.splitlines()
        else:
            try:
                with open(self.log_path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError as e:
                return "(no log: %s)" % e
        for i, l in enumerate(lines):
            if any(m in l for m in self.SANITIZER_MARKERS) and i < len(lines) - n:
                return "\n".join(lines[i:i + 25] + ["..."] + lines[-n:])
        return "\n".join(lines[-n:])

    # -- HTTP
    def request(self, method, path, body=None, token=None, api_key=None, headers=None,
                timeout=30):
        h = {}
        raw = None
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                raw = bytes(body)
            elif isinstance(body, str):
                raw = body.encode()
            else:
                raw = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = "Bearer " + token
        if api_key:
            h["X-API-Key"] = api_key
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=raw, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Resp(r.status, r.headers, decode_body(r.headers, data), data,
                        "%s %s" % (method, path))
        finally:
            conn.close()

    # -- CLI helpers
    def cli(self, *args, stdin=None, check=True):
        p = subprocess.run([BIN] + list(args), input=stdin, capture_output=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError("circa %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                              p.stderr.decode(errors="replace")))
        return p

    def token(self, sub, role, plan=None, ttl=None):
        args = ["token", "--data", self.data, "--sub", sub, "--role", role]
        if plan:
            args += ["--plan", plan]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        out = self.cli(*args).stdout.decode().strip()
        assert out.count(".") == 2, "circa token printed no JWT: %r" % out
        return out

    def user_add(self, email, role, name=None, plan=None, password=None):
        args = ["user", "add", "--data", self.data, "--email", email, "--role", role]
        if name:
            args += ["--name", name]
        if plan:
            args += ["--plan", plan]
        stdin = None
        if password is not None:
            args.append("--password-stdin")
            stdin = (password + "\n").encode()
        p = self.cli(*args, stdin=stdin)
        user = json.loads(p.stdout)
        if password is None:
            m = re.search(r"password: (\S+)", p.stderr.decode(errors="replace"))
            assert m, "circa user add printed no password on stderr"
            password = m.group(1)
        return user, password

    def librarian(self):
        return self.token(uid(), "librarian")

    def admin(self):
        return self.token(uid(), "admin")

    def register(self, email=None, password="correct horse 1", name="Test User"):
        email = email or "u-%s@example.org" % uuid.uuid4().hex[:12]
        r = self.request("POST", "/v1/auth/register",
                         {"email": email, "password": password, "name": name})
        expect(r, 201)
        return r.body

    def login(self, email, password="correct horse 1"):
        r = self.request("POST", "/v1/auth/login", {"email": email, "password": password})
        expect(r, 200)
        return r.body["access_token"]

    def member(self, name="Member"):
        """Register + login a new member. Returns (user, token)."""
        u = self.register(name=name)
        return u, self.login(u["email"])

    def create_resource(self, token, **fields):
        body = {"title": "Title " + uuid.uuid4().hex[:8], "type": "FICTION"}
        body.update(fields)
        r = self.request("POST", "/v1/resources", body, token=token)
        expect(r, 201)
        return r.body

    def get_resource(self, rid, token):
        r = self.request("GET", "/v1/resources/" + rid, token=token)
        expect(r, 200)
        return r.body

    def list_all_resources(self, token, rtype=None, limit=200):
        items, cursor = [], None
        for _ in range(100000):
            q = {"limit": str(limit)}
            if rtype:
                q["type"] = rtype
            if cursor:
                q["cursor"] = cursor
            r = self.request("GET", "/v1/resources?" + urllib.parse.urlencode(q), token=token)
            expect(r, 200)
            items += r.body["items"]
            cursor = r.body["next_cursor"]
            if not cursor:
                return items
        raise AssertionError("pagination did not terminate")

    def metrics(self):
        r = self.request("GET", "/metrics")
        expect(r, 200)
        return r.body if isinstance(r.body, str) else r.raw.decode()


def run_on_pty(args, timeout=20.0):
    """Runs args with stdout on a pseudo-terminal (stderr piped) until it exits or closes the
    terminal; returns (exit status, what it wrote on the terminal with CRLF as LF, stderr)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            elif p.poll() is not None:
                break
        rc = p.wait(10)
    finally:
        os.close(master)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    return rc, raw.decode(errors="replace").replace("\r\n", "\n"), err


def stop_all():
    """Stop and clean every node; return the problems found (crashes, exit codes, sanitizers)."""
    problems = []
    while NODES:
        n = NODES.pop()
        n.cleanup()
        problems += n.problems
    return problems


atexit.register(stop_all)


class Lazy:
    """Module-level shared node, started on first use, stopped by stop_all()."""

    def __init__(self, **kw):
        self.kw = kw
        self.node = None
        self.failed = None

    def __call__(self):
        if self.failed and self.node is not None and not self.node.cleaned:
            raise AssertionError("shared node failed to start earlier: " + self.failed.splitlines()[0])
        self.failed = None
        try:
            if self.node is None or self.node.cleaned:
                self.node = None
                self.node = Node(**self.kw)
            elif not self.node.alive():
                self.node.start()
        except AssertionError as e:
            self.failed = str(e)
            if self.node is None:
                self.node = NODES[-1]
            raise
        return self.node
