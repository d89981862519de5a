"""A concurrent checkout/return workload and a history checker (standard library only).

Workload
    K client threads, each a member with its own token, check out and return copies of a few
    resources with few copies (contention) against random live nodes.  Every operation gets its
    own Idempotency-Key and is recorded as an Op: invoke time, then one Attempt per request
    (node, monotonic start/end, status, problem kind or transport error, class), then its
    outcome ok / fail / unknown and completion time.  An attempt whose outcome is unknown, or
    that was refused without being applied (503 no-leader / unavailable / write-behind-backlog,
    429, connection refused), is retried with the same key against another node, a bounded
    number of times; a later definite answer resolves the operation.

Classification of one answer (classify()):
    2xx -> ok; 4xx -> fail (definite); 503 with problem kind no-leader, unavailable or
    write-behind-backlog -> fail (definite: not applied); 503 outcome-unknown (or any other 503),
    500, other statuses, timeouts and errors after the request was sent -> unknown.  A
    connection that could not even be opened (NotSent: refused, connect timeout) sent nothing,
    so it is a definite fail too.

Resolution of an operation from its attempts (resolve()):
    the first 2xx -> ok.  A 403/404/409 (an answer decided by apply(), stored under the key)
    -> fail.  Otherwise unknown if any attempt was unknown, else fail.  4xx answers decided by
    the HTTP layer (400 401 405 413 422 429) and the not-applied 503s say nothing about an
    earlier attempt whose outcome is unknown, so they do not resolve it.

Checker (check()) over the history, the final state of every live node (all loans of every
workload member, read with a librarian token) and every node's /v1/cluster/digest:
    1 ok-write-lost     every ok checkout's loan exists on every node, with the answer's id,
                        user, resource, copy and times; every ok return's loan is returned there
    1 ok-write-time     an ok write's timestamp lies within its operation's real-time window
    2 failed-write      no loan exists that no ok or unknown checkout could have created (per
                        user and resource: the loans that are not ok answers are at most the
                        unknown checkouts invoked before them); no loan is returned unless an ok
                        or unknown return of it exists
    3 double-lend       per (resource, copy): at most one open loan at the end; copy numbers
                        within 1..copies; no two loans were surely out at once by the clients'
                        clocks (both checkouts answered ok before either return was invoked);
                        the intervals [checked_out_at, returned_at or +inf) do not overlap by
                        more than TS_TOLERANCE_S (times are whole seconds: touching is allowed)
    4 divergence        every node answers the same digest at the same applied index; nodes
                        agree loan by loan
    read-error          a node's final state could not be read (completely)
check() returns a Report; str(report) is readable, report.ok says whether it passed and
report.assert_ok() raises an AssertionError carrying the report.

The network is a pluggable transport(node, method, path, body, token, key, timeout) ->
(status, headers, body) that raises NotSent when nothing was sent; http_transport() talks to
node.port on 127.0.0.1.  The self-tests (test_history_checker.py) use an in-process fake.
"""

import collections
import datetime
import http.client
import json
import random
import statistics
import threading
import time
import uuid

from harness import decode_body

NOT_APPLIED_503 = ("no-leader", "unavailable", "write-behind-backlog")
HTTP_LAYER_4XX = (400, 401, 405, 413, 422, 429)   # never reach the log: resolve nothing
SLACK_S = 2            # seconds of slack between proposer timestamps and client clocks
# Loan times are the proposer's wall clock in whole seconds, stamped when the HTTP layer builds
# the command (net/http.c), not in log order: a command stamped on a follower may be appended
# after one stamped later elsewhere.  The timestamp overlap check therefore tolerates overlaps of
# up to this many seconds; the exact check of concurrent lending uses the clients' clocks.
TS_TOLERANCE_S = 1
LIST_LIMIT = 1000      # GET /v1/users/{id}/loans?limit= maximum (no cursor)
MAX_LISTED = 40        # failures listed per check in a report


class NotSent(Exception):
    """The request never left the client: the connection could not be opened."""


# ---------------------------------------------------------------- transport

def http_transport(node, method, path, body=None, token=None, key=None, timeout=5.0,
                   headers=None):
    """One HTTP request to node (node.port on 127.0.0.1) on a fresh connection.
    Returns (status, headers, body); raises NotSent when the connection could not be made,
    OSError / http.client.HTTPException for anything that failed after that."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as e:
            raise NotSent("%s: %s" % (type(e).__name__, e)) from None
        h = {}
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = "Bearer " + token
        if key:
            h["Idempotency-Key"] = key
        h.update(headers or {})
        conn.request(method, path, body=raw, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, r.headers, decode_body(r.headers, data)
    finally:
        conn.close()


def problem_kind(body):
    """'no-leader' for a problem document of type .../problems/no-leader, else None."""
    if isinstance(body, dict) and isinstance(body.get("type"), str) and "/problems/" in body["type"]:
        return body["type"].rsplit("/problems/", 1)[1]
    return None


def classify(status=None, body=None, error=None):
    """'ok', 'fail' (definite: the request had no effect) or 'unknown' for one answer."""
    if error is not None:
        return "fail" if isinstance(error, NotSent) else "unknown"
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500:
        return "fail"
    if status == 503 and problem_kind(body) in NOT_APPLIED_503:
        return "fail"
    return "unknown"


def retry_after(headers):
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------- records

class Attempt:
    """One request of an operation."""
    __slots__ = ("node", "t0", "t1", "status", "problem", "error", "cls", "retry_after", "body")

    def __init__(self, node, t0, t1=None, status=None, problem=None, error=None, cls=None,
                 retry_after=None, body=None):
        self.node, self.t0, self.t1 = node, t0, t1
        self.status, self.problem, self.error = status, problem, error
        self.cls = cls if cls is not None else classify(status, body, error)
        self.retry_after, self.body = retry_after, body

    def resolves(self):
        """True if this answer is the key's definite answer (applied, or refused by apply)."""
        return self.cls == "ok" or (self.cls == "fail" and self.status is not None and
                                    400 <= self.status < 500 and self.status not in HTTP_LAYER_4XX)

    def __str__(self):
        what = ("%s %s" % (self.status, self.problem or "")).strip() if self.status is not None \
            else "error %s" % (self.error,)
        dt = "" if self.t1 is None else " %.3fs" % (self.t1 - self.t0)
        return "%s %s -> %s%s" % (self.node, what, self.cls, dt)


def resolve(attempts):
    """(outcome, deciding attempt or None) of an operation from its attempts, in order."""
    maybe = False
    for a in attempts:
        if a.cls == "ok":
            return "ok", a
        if a.resolves():
            return "fail", a
        if a.cls == "unknown":
            maybe = True
    return ("unknown" if maybe else "fail"), (attempts[-1] if attempts else None)


class Op:
    """One client operation: a checkout (resource_id) or a return (loan_id)."""

    def __init__(self, idx, client, kind, user_id, resource_id=None, loan_id=None, key=None,
                 invoke=None, invoke_wall=None):
        assert kind in ("checkout", "return"), kind
        self.idx, self.client, self.kind = idx, client, kind
        self.user_id, self.resource_id, self.loan_id = user_id, resource_id, loan_id
        self.key = key or "h-" + uuid.uuid4().hex
        self.invoke = time.monotonic() if invoke is None else invoke
        self.invoke_wall = time.time() if invoke_wall is None else invoke_wall
        self.attempts = []
        self.outcome = None          # ok | fail | unknown (None while running)
        self.complete = None
        self.complete_wall = None
        self.status = None           # status of the deciding attempt (None: transport error)
        self.answer = None           # body of the deciding attempt

    def finish(self, complete=None, complete_wall=None):
        self.outcome, deciding = resolve(self.attempts)
        if deciding is not None:
            self.status, self.answer = deciding.status, deciding.body
        self.complete = time.monotonic() if complete is None else complete
        self.complete_wall = time.time() if complete_wall is None else complete_wall
        return self

    @property
    def loan(self):
        """The loan in an ok answer (checkout or return), else None."""
        return self.answer if self.outcome == "ok" and isinstance(self.answer, dict) else None

    def __str__(self):
        tgt = "res=%s" % _short(self.resource_id) if self.kind == "checkout" else \
            "loan=%s" % _short(self.loan_id)
        out = self.outcome or "running"
        if self.outcome == "ok" and self.kind == "checkout" and self.loan:
            out += " loan=%s copy=%s at %s" % (_short(self.loan.get("id")), self.loan.get("copy"),
                                               self.loan.get("checked_out_at"))
        elif self.outcome == "ok" and self.kind == "return" and self.loan:
            out += " returned_at %s" % self.loan.get("returned_at")
        return "op#%d c%s %s user=%s %s key=%s -> %s [%s]" % (
            self.idx, self.client, self.kind, _short(self.user_id), tgt, self.key, out,
            "; ".join(str(a) for a in self.attempts))


def _short(s):
    return (s or "-")[:8]


def _iso(wall):
    return datetime.datetime.fromtimestamp(int(wall), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _ts(s):
    """Seconds since the epoch of an RFC 3339 UTC seconds time, or None."""
    if not isinstance(s, str):
        return None
    try:
        return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


# ---------------------------------------------------------------- workload

class Member:
    def __init__(self, user_id, token):
        self.user_id, self.token = user_id, token
        self.checkouts = 0


class Workload:
    """K client threads doing random checkouts and returns against targets().

    targets: callable returning the nodes a client may talk to now (e.g. Cluster.targets).
    lib_token: a librarian (or admin) token valid on every node, for setup and final reads.
    Each client owns members_per_client members; after checkouts_per_member checkouts that may
    have made a loan (ok or unknown: the loan list has no cursor, so a member must stay under
    LIST_LIMIT loans) it returns what it holds and moves on to its next member; a client with no
    members left stops (see exhausted).
    """

    def __init__(self, targets, lib_token, clients=6, resources=3, copies=2, seed=None,
                 timeout=4.0, max_attempts=8, max_backoff=0.5, think=(0.0, 0.02),
                 members_per_client=2, checkouts_per_member=700, transport=None, name="wl"):
        self.targets = targets
        self.lib_token = lib_token
        self.nclients, self.nresources, self.copies = clients, resources, copies
        self.seed = random.randrange(1 << 30) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.timeout, self.max_attempts, self.max_backoff = timeout, max_attempts, max_backoff
        self.think = think
        self.members_per_client = members_per_client
        self.checkouts_per_member = checkouts_per_member
        self.transport = transport or http_transport
        self.name = name
        self.resources = {}            # resource id -> copies
        self.clients = []              # per client: list of Member
        self.ops = []                  # every Op, in invoke order
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []
        self.errors = []               # exceptions that escaped a client thread (bugs)
        self.exhausted = []            # clients that used up their members and stopped
        self.reads = collections.Counter()

    # -- plumbing
    def pick(self, rng, avoid=None, wait=1.0):
        """A random target (not avoid if there is another), waiting up to `wait` for one."""
        deadline = time.monotonic() + wait
        while True:
            nodes = list(self.targets())
            if nodes:
                others = [n for n in nodes if n is not avoid]
                return rng.choice(others or nodes)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def call(self, node, method, path, body=None, token=None, key=None, timeout=None):
        return self.transport(node, method, path, body=body, token=token, key=key,
                              timeout=self.timeout if timeout is None else timeout)

    def setup_call(self, method, path, body=None, token=None, ok=(200, 201), timeout=30.0):
        """A setup request on a healthy cluster: retried while it was surely not applied."""
        deadline = time.monotonic() + timeout
        key = "setup-" + uuid.uuid4().hex
        last = None
        rng = random.Random()
        while time.monotonic() < deadline:
            node = self.pick(rng)
            if node is None:
                last = "no target node"
                time.sleep(0.1)
                continue
            try:
                st, _, b = self.call(node, method, path, body, token, key, timeout=10.0)
            except NotSent as e:
                last = "%s: %s" % (getattr(node, "name", node), e)
                time.sleep(0.1)
                continue
            if st in ok:
                return b
            last = "%s %s on %s -> %s %s" % (method, path, getattr(node, "name", node), st, b)
            if classify(st, b) == "fail" and (st == 503 or st == 429):
                time.sleep(0.1)
                continue
            break
        raise AssertionError("workload setup failed: %s" % last)

    def setup(self):
        """Create the resources and register + log in the members (on a healthy cluster)."""
        for i in range(self.nresources):
            b = self.setup_call("POST", "/v1/resources",
                                {"title": "%s hot item %d %s" % (self.name, i, uuid.uuid4().hex[:6]),
                                 "type": "FICTION", "copies": self.copies}, token=self.lib_token)
            self.resources[b["id"]] = self.copies
        for c in range(self.nclients):
            ms = []
            for j in range(self.members_per_client):
                email = "%s-%d-%d-%s@example.org" % (self.name, c, j, uuid.uuid4().hex[:10])
                u = self.setup_call("POST", "/v1/auth/register",
                                    {"email": email, "password": "correct horse 1",
                                     "name": "client %d.%d" % (c, j)}, ok=(201,))
                t = self.setup_call("POST", "/v1/auth/login",
                                    {"email": email, "password": "correct horse 1"}, ok=(200,))
                ms.append(Member(u["id"], t["access_token"]))
            self.clients.append(ms)
        return self

    @property
    def user_ids(self):
        return [m.user_id for ms in self.clients for m in ms]

    # -- running
    def start(self):
        assert self.clients, "setup() first"
        self.stop_ev.clear()
        for c in range(self.nclients):
            t = threading.Thread(target=self._client, args=(c,), name="%s-c%d" % (self.name, c),
                                 daemon=True)
            self.threads.append(t)
            t.start()
        return self

    def stop(self, timeout=90.0):
        """Stop after each client's current operation; raise if a client thread failed."""
        self.stop_ev.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        self.threads = [t for t in self.threads if t.is_alive()]
        assert not stuck, "workload clients did not stop within %.0fs: %s" % (timeout, stuck)
        if self.errors:
            raise AssertionError("a workload client failed: %r" % (self.errors[0],))
        return self

    def run_for(self, seconds):
        self.start()
        time.sleep(seconds)
        return self.stop()

    def _client(self, c):
        rng = random.Random("%d-%d" % (self.seed, c))
        try:
            for m in self.clients[c]:
                held = {}                       # loan id -> resource id, as the client believes
                while not self.stop_ev.is_set() and m.checkouts < self.checkouts_per_member:
                    self._step(c, m, held, rng)
                    if self.think and self.think[1] > 0:
                        time.sleep(rng.uniform(*self.think))
                # retire this member: give its copies back (best effort) so they stay in play
                for lid in list(held):
                    if self.stop_ev.is_set():
                        break
                    self._op(c, m, "return", held, rng, loan_id=lid)
                if self.stop_ev.is_set():
                    return
            self.exhausted.append(c)
        except BaseException as e:  # noqa: BLE001
            self.errors.append(e)

    def _step(self, c, m, held, rng):
        free = [r for r in self.resources if r not in held.values()]
        if held and (not free or rng.random() < 0.5):
            self._op(c, m, "return", held, rng, loan_id=rng.choice(sorted(held)))
        else:
            self._op(c, m, "checkout", held, rng, resource_id=rng.choice(free or list(self.resources)))

    def _op(self, c, m, kind, held, rng, resource_id=None, loan_id=None):
        with self.lock:
            op = Op(len(self.ops), c, kind, m.user_id, resource_id=resource_id, loan_id=loan_id)
            self.ops.append(op)
        if kind == "checkout":
            method, path, body = "POST", "/v1/loans", {"resource_id": resource_id}
        else:
            method, path, body = "POST", "/v1/loans/%s/return" % loan_id, None
        last = None
        for i in range(self.max_attempts):
            node = self.pick(rng, avoid=last)
            t0 = time.monotonic()
            if node is None:
                op.attempts.append(Attempt("-", t0, time.monotonic(), error=NotSent("no live node")))
                a = op.attempts[-1]
            else:
                last = node
                try:
                    st, h, b = self.call(node, method, path, body, m.token, op.key)
                    a = Attempt(node.name, t0, time.monotonic(), status=st, problem=problem_kind(b),
                                retry_after=retry_after(h), body=b)
                except Exception as e:  # noqa: BLE001 -- transport errors are data here
                    a = Attempt(node.name, t0, time.monotonic(), error=e)
                op.attempts.append(a)
            if a.resolves():
                break
            if a.cls == "fail" and a.status is not None and a.status not in (429, 503):
                break                           # an HTTP-layer 4xx: retrying will not help
            if i + 1 < self.max_attempts:     # (also while stopping: resolve what we can)
                delay = min(0.05 * (2 ** i), self.max_backoff)
                if a.retry_after is not None:
                    delay = min(max(delay, a.retry_after), self.max_backoff)
                time.sleep(delay)
        op.finish()
        if kind == "checkout" and op.outcome in ("ok", "unknown"):
            m.checkouts += 1
        # update the client's belief
        if op.outcome == "ok":
            if kind == "checkout" and isinstance(op.answer, dict) and "id" in op.answer:
                held[op.answer["id"]] = resource_id
            else:
                held.pop(loan_id, None)
        elif op.outcome == "fail":
            if kind == "return" and op.status in (404, 409):
                held.pop(loan_id, None)
            elif kind == "checkout" and op.status == 409 and \
                    op.attempts[-1].problem == "conflict":
                self._refresh(m, held, rng)
        else:
            self._refresh(m, held, rng)
        return op

    def _refresh(self, m, held, rng):
        """Re-learn the member's active loans (best effort; only steers the workload)."""
        node = self.pick(rng, wait=0.2)
        if node is None:
            return
        try:
            st, _, b = self.call(node, "GET", "/v1/me/loans?status=active&limit=%d" % LIST_LIMIT,
                                 token=m.token, timeout=min(self.timeout, 2.0))
        except Exception:  # noqa: BLE001
            self.reads["refresh-error"] += 1
            return
        self.reads["refresh-%d" % st] += 1
        if st == 200 and isinstance(b, dict):
            held.clear()
            for l in b.get("items", []):
                if l.get("status") == "active" and l.get("resource_id") in self.resources:
                    held[l["id"]] = l["resource_id"]

    # -- observations
    def snapshot(self):
        with self.lock:
            return list(self.ops)

    def counts(self, since=None):
        c = collections.Counter()
        for op in self.snapshot():
            if op.outcome and (since is None or op.invoke >= since):
                c[op.outcome] += 1
        return c

    def first_ok_after(self, t):
        """Seconds from t to the end of the first ok attempt that started at or after t."""
        best = None
        for op in self.snapshot():
            for a in list(op.attempts):
                if a.cls == "ok" and a.t0 >= t and a.t1 is not None:
                    if best is None or a.t1 < best:
                        best = a.t1
        return None if best is None else best - t

    def wait_ok_after(self, t, timeout=20.0, count=1):
        """Wait until `count` ok attempts started at or after t; return the first one's delay."""
        deadline = time.monotonic() + timeout
        while True:
            n = sum(1 for op in self.snapshot() for a in list(op.attempts)
                    if a.cls == "ok" and a.t0 >= t and a.t1 is not None)
            if n >= count:
                return self.first_ok_after(t)
            if time.monotonic() > deadline:
                raise AssertionError("no ok write within %.0fs (%d of %d; %d of %d clients used up "
                                     "their members); recent ops:\n  %s" % (
                                         timeout, n, count, len(self.exhausted), self.nclients,
                                         "\n  ".join(str(o) for o in self.snapshot()[-8:])))
            if self.errors:
                raise AssertionError("a workload client failed: %r" % (self.errors[0],))
            time.sleep(0.02)

    def summary(self):
        ops = self.snapshot()
        c = collections.Counter((o.kind, o.outcome or "running") for o in ops)
        fails = collections.Counter(
            ("%s %s" % (o.status, o.attempts[-1].problem or "")).strip() if o.status is not None
            else "not sent" for o in ops if o.outcome == "fail")
        return "%d ops: %s; fail answers: %s; retried ops: %d" % (
            len(ops), ", ".join("%s %s %d" % (k, o, n) for (k, o), n in sorted(c.items(), key=str)),
            dict(fails), sum(1 for o in ops if len(o.attempts) > 1))


# ---------------------------------------------------------------- final state

def fetch_states(nodes, token, user_ids, transport=None, timeout=10.0):
    """{node name: [loan, ...]} of every listed user's loans as each node has them, and a list
    of read errors ('n2: GET ... -> 503')."""
    transport = transport or http_transport
    states, errors = {}, []
    for n in nodes:
        loans = {}
        for u in user_ids:
            path = "/v1/users/%s/loans?status=all&limit=%d" % (u, LIST_LIMIT)
            try:
                st, _, b = transport(n, "GET", path, token=token, timeout=timeout)
            except Exception as e:  # noqa: BLE001
                errors.append("%s: GET %s -> %s: %s" % (n.name, path, type(e).__name__, e))
                continue
            if st != 200 or not isinstance(b, dict) or not isinstance(b.get("items"), list):
                errors.append("%s: GET %s -> %s %r" % (n.name, path, st, b))
                continue
            if len(b["items"]) >= LIST_LIMIT:
                errors.append("%s: user %s has %d+ loans: the list is truncated" % (n.name, u, LIST_LIMIT))
            for l in b["items"]:
                loans[l.get("id")] = l
        states[n.name] = list(loans.values())
    return states, errors


def fetch_digests(nodes, token, transport=None, timeout=20.0):
    """{node name: {"applied_index", "digest"}} sampled until all nodes report the same applied
    index (a periodic tick may move it), or the last sample after timeout.  A node that does not
    answer maps to {"error": ...}."""
    transport = transport or http_transport
    deadline = time.monotonic() + timeout
    while True:
        out = {}
        for n in nodes:
            try:
                st, _, b = transport(n, "GET", "/v1/cluster/digest", token=token, timeout=5.0)
                out[n.name] = b if st == 200 and isinstance(b, dict) else {"error": "%s %r" % (st, b)}
            except Exception as e:  # noqa: BLE001
                out[n.name] = {"error": "%s: %s" % (type(e).__name__, e)}
        idx = {d.get("applied_index") for d in out.values()}
        if (len(idx) == 1 and None not in idx) or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


# ---------------------------------------------------------------- checker

class Report:
    CHECKS = ("ok-write-lost", "ok-write-time", "failed-write", "double-lend", "divergence",
              "read-error")

    def __init__(self):
        self.failures = []        # (check, message, [ops])
        self.stats = collections.OrderedDict()

    def fail(self, check, msg, ops=()):
        assert check in self.CHECKS, check
        self.failures.append((check, msg, list(ops)))

    @property
    def ok(self):
        return not self.failures

    def by_check(self):
        c = collections.Counter(ch for ch, _, _ in self.failures)
        return dict(c)

    def __str__(self):
        head = "history check %s: %s" % (
            "PASSED" if self.ok else "FAILED (%d problem%s: %s)" % (
                len(self.failures), "" if len(self.failures) == 1 else "s",
                ", ".join("%s x%d" % kv for kv in sorted(self.by_check().items()))),
            "; ".join("%s %s" % kv for kv in self.stats.items()))
        lines = [head]
        shown = collections.Counter()
        for check, msg, ops in self.failures:
            shown[check] += 1
            if shown[check] > MAX_LISTED:
                continue
            lines.append("[%s] %s" % (check, msg))
            for op in ops[:6]:
                lines.append("      " + str(op))
            if len(ops) > 6:
                lines.append("      ... %d more operations" % (len(ops) - 6))
        for check, n in shown.items():
            if n > MAX_LISTED:
                lines.append("[%s] ... %d more not shown" % (check, n - MAX_LISTED))
        return "\n".join(lines)

    def assert_ok(self):
        if not self.ok:
            raise AssertionError(str(self))
        return self


def _same(a, b, fields):
    return [f for f in fields if a.get(f) != b.get(f)]


def check(ops, states, digests=None, resources=None, read_errors=()):
    """Check a finished history against the final states (see the module docstring).

    ops: Ops (finished); states: {node name: [loan dicts]}; digests: {node name: {"applied_index",
    "digest"} or {"error"}} (None skips check 4's digest part); resources: {resource id: copies}
    (None skips the copy range check); read_errors: strings from fetch_states."""
    rep = Report()
    ops = list(ops)
    unfinished = [o for o in ops if o.outcome is None]
    for o in unfinished:   # a still-running op counts as unknown: it may or may not land
        o.outcome = "unknown"
    cnt = collections.Counter(o.outcome for o in ops)
    rep.stats["ops"] = len(ops)
    for k in ("ok", "fail", "unknown"):
        rep.stats[k] = cnt.get(k, 0)
    rep.stats["nodes"] = ",".join(sorted(states)) or "none"
    loans_total = {name: len(ls) for name, ls in states.items()}
    rep.stats["loans"] = max(loans_total.values()) if loans_total else 0

    for e in read_errors:
        rep.fail("read-error", e)
    if not states:
        rep.fail("read-error", "no node's final state to check")

    by_node = {name: {l.get("id"): l for l in ls} for name, ls in states.items()}
    found = collections.OrderedDict()    # (check, msg) -> ([node names], ops)

    def emit(check_, node, msg, ops_=()):
        """One finding; the same finding on several nodes becomes one line naming them all."""
        nodes_, _ = found.setdefault((check_, msg), ([], list(ops_)))
        if node is not None and node not in nodes_:
            nodes_.append(node)

    checkouts = [o for o in ops if o.kind == "checkout"]
    returns = [o for o in ops if o.kind == "return"]

    # ---- 1: every ok write is visible on every node
    for o in checkouts:
        if o.outcome != "ok":
            continue
        ans = o.loan
        if not ans or "id" not in ans:
            emit("ok-write-lost", None, "ok checkout answered no loan: %r" % (o.answer,), [o])
            continue
        t = _ts(ans.get("checked_out_at"))
        if t is None or not (o.invoke_wall - SLACK_S <= t <= o.complete_wall + SLACK_S):
            emit("ok-write-time", None, "ok checkout's checked_out_at %s is outside its real-time "
                 "window [%s, %s]" % (ans.get("checked_out_at"), _iso(o.invoke_wall),
                                      _iso(o.complete_wall)), [o])
        if ans.get("user_id") != o.user_id or ans.get("resource_id") != o.resource_id:
            emit("ok-write-lost", None, "ok checkout answered a loan of another user/resource: %r"
                 % (ans,), [o])
        for name, loans in sorted(by_node.items()):
            l = loans.get(ans["id"])
            if l is None:
                emit("ok-write-lost", name, "the loan %s of an ok checkout is missing" % ans["id"], [o])
                continue
            diff = _same(l, ans, ("user_id", "resource_id", "copy", "checked_out_at", "due_at"))
            if diff:
                emit("ok-write-lost", name, "loan %s differs from the ok answer in %s: %r vs %r"
                     % (ans["id"], diff, l, ans), [o])
    for o in returns:
        if o.outcome != "ok":
            continue
        ans = o.loan or {}
        t = _ts(ans.get("returned_at"))
        if t is None or not (o.invoke_wall - SLACK_S <= t <= o.complete_wall + SLACK_S):
            emit("ok-write-time", None, "ok return's returned_at %s is outside its real-time "
                 "window [%s, %s]" % (ans.get("returned_at"), _iso(o.invoke_wall),
                                      _iso(o.complete_wall)), [o])
        for name, loans in sorted(by_node.items()):
            l = loans.get(o.loan_id)
            if l is None:
                emit("ok-write-lost", name, "the loan %s of an ok return is missing" % o.loan_id, [o])
            elif l.get("status") != "returned" or l.get("returned_at") is None:
                emit("ok-write-lost", name, "loan %s was returned ok but is %s (returned_at %r)"
                     % (o.loan_id, l.get("status"), l.get("returned_at")), [o])
            elif ans.get("returned_at") and l.get("returned_at") != ans.get("returned_at"):
                emit("ok-write-lost", name, "loan %s has returned_at %s, the ok answer said %s"
                     % (o.loan_id, l.get("returned_at"), ans.get("returned_at")), [o])

    # ---- 2: no failed write took effect
    ok_ids = {o.loan["id"] for o in checkouts if o.outcome == "ok" and o.loan and "id" in o.loan}
    co_by_pair = collections.defaultdict(list)
    for o in checkouts:
        co_by_pair[(o.user_id, o.resource_id)].append(o)
    ret_by_loan = collections.defaultdict(list)
    for o in returns:
        ret_by_loan[o.loan_id].append(o)
    for name, loans in sorted(by_node.items()):
        extra = collections.defaultdict(list)
        for l in loans.values():
            if l.get("id") not in ok_ids:
                extra[(l.get("user_id"), l.get("resource_id"))].append(l)
        for pair, ls in sorted(extra.items(), key=str):
            cands = [o for o in co_by_pair.get(pair, []) if o.outcome == "unknown"]
            ls.sort(key=lambda l: _ts(l.get("checked_out_at")) or 0)
            # Hall's condition for "each such loan has its own unknown checkout invoked before it"
            bad = None
            for i, l in enumerate(ls):
                t = _ts(l.get("checked_out_at"))
                avail = sum(1 for o in cands if t is None or o.invoke_wall - SLACK_S <= t)
                if avail < i + 1:
                    bad = l
                    break
            if bad is not None:
                emit("failed-write", name, "%d loan(s) of user %s on resource %s that no ok checkout "
                     "answered, but only %d unknown checkout(s) could have made them (first "
                     "unexplained: %s copy %s at %s); the checkouts of that pair:"
                     % (len(ls), pair[0], pair[1], len(cands), bad.get("id"), bad.get("copy"),
                        bad.get("checked_out_at")), co_by_pair.get(pair, []))
        for l in loans.values():
            if l.get("status") != "returned" and l.get("returned_at") is None:
                continue
            rs = ret_by_loan.get(l.get("id"), [])
            if not any(o.outcome in ("ok", "unknown") for o in rs):
                emit("failed-write", name, "loan %s is returned (at %s) but no ok or unknown return "
                     "of it exists (%d failed)" % (l.get("id"), l.get("returned_at"), len(rs)), rs)

    # ---- 3: no copy ever had two open loans
    for name, loans in sorted(by_node.items()):
        per_copy = collections.defaultdict(list)
        for l in loans.values():
            per_copy[(l.get("resource_id"), l.get("copy"))].append(l)
            if resources is not None and l.get("resource_id") in resources:
                c = l.get("copy")
                if not isinstance(c, int) or not 1 <= c <= resources[l["resource_id"]]:
                    emit("double-lend", name, "loan %s has copy %r, resource %s has copies 1..%d" % (
                        l.get("id"), c, l.get("resource_id"), resources[l["resource_id"]]))
        for (rid, copy), ls in sorted(per_copy.items(), key=str):
            open_ = sorted(l.get("id") for l in ls if l.get("returned_at") is None)
            if len(open_) > 1:
                emit("double-lend", name, "resource %s copy %s has %d open loans at the end: %s" % (
                    rid, copy, len(open_), ", ".join(open_)))
            iv = []
            for l in ls:
                a = _ts(l.get("checked_out_at"))
                b = _ts(l.get("returned_at")) if l.get("returned_at") is not None else float("inf")
                if a is None or b is None or b < a:
                    emit("double-lend", name, "loan %s has bad times %r .. %r" % (
                        l.get("id"), l.get("checked_out_at"), l.get("returned_at")))
                    continue
                iv.append((a, b, l))
            iv.sort(key=lambda x: (x[0], x[1]))
            reach, reach_l = float("-inf"), None
            for a, b, l in iv:
                if a < reach - TS_TOLERANCE_S:   # starts inside an earlier loan of the same copy
                    ids = (l.get("id"), reach_l.get("id"))
                    involved = [o for o in ops if (o.loan and o.loan.get("id") in ids) or
                                o.loan_id in ids]
                    emit("double-lend", name, "resource %s copy %s was lent twice at once: loan %s "
                         "[%s, %s) and loan %s [%s, %s)" % (
                             rid, copy, reach_l.get("id"), reach_l.get("checked_out_at"),
                             reach_l.get("returned_at") or "open", l.get("id"),
                             l.get("checked_out_at"), l.get("returned_at") or "open"), involved)
                if b > reach:
                    reach, reach_l = b, l

    # ---- 3 (real time): two loans of one copy whose checkouts were both surely applied before
    # either return could have been.  Linearizability: an ok op was applied before it completed;
    # any op is applied after it was invoked (client monotonic clock, one machine).
    ok_co = {o.loan["id"]: o for o in checkouts if o.outcome == "ok" and o.loan and "id" in o.loan}
    for name, loans in sorted(by_node.items()):
        per_copy = collections.defaultdict(list)
        for l in loans.values():
            co = ok_co.get(l.get("id"))
            if co is None:
                continue                        # made by an unknown checkout: no upper bound
            if l.get("returned_at") is None:
                r_lo, rops = float("inf"), []
            else:
                rops = [o for o in ret_by_loan.get(l.get("id"), []) if o.outcome in ("ok", "unknown")]
                if not rops:
                    continue                    # reported by check 2 already
                r_lo = min(o.invoke for o in rops)
            if co.complete < r_lo:
                per_copy[(l.get("resource_id"), l.get("copy"))].append((co.complete, r_lo, l, [co] + rops))
        for (rid, copy), iv in sorted(per_copy.items(), key=str):
            iv.sort(key=lambda x: (x[0], x[1]))
            reach, prev = float("-inf"), None
            for a, b, l, lops in iv:
                if a < reach:
                    emit("double-lend", name, "resource %s copy %s was lent twice at once (client clocks): "
                         "loan %s was surely out from %.3f until at least %s and loan %s surely out "
                         "from %.3f (times of op completions and invocations)" % (
                             rid, copy, prev[2].get("id"), prev[0],
                             "the end" if prev[1] == float("inf") else "%.3f" % prev[1],
                             l.get("id"), a), prev[3] + lops)
                if b > reach:
                    reach, prev = b, (a, b, l, lops)

    all_nodes = sorted(by_node)
    for (check_, msg), (nodes_, ops_) in found.items():
        if nodes_:
            where = "all nodes" if len(all_nodes) > 1 and sorted(nodes_) == all_nodes else ",".join(nodes_)
            msg = "%s: %s" % (where, msg)
        rep.fail(check_, msg, ops_)

    # ---- 4: byte-identical states
    if digests is not None:
        missing = sorted(set(states) - set(digests))
        if missing:
            rep.fail("divergence", "no digest from %s" % ", ".join(missing))
        errs = {n: d["error"] for n, d in digests.items() if "error" in d or "digest" not in d}
        for n, e in sorted(errs.items()):
            rep.fail("divergence", "%s: no digest: %s" % (n, e if e else digests[n]))
        good = {n: d for n, d in digests.items() if n not in errs}
        idx = {d.get("applied_index") for d in good.values()}
        if len(idx) > 1:
            rep.fail("divergence", "nodes did not settle on one applied index: %s" % ", ".join(
                "%s@%s" % (n, d.get("applied_index")) for n, d in sorted(good.items())))
        elif good:
            ds = collections.defaultdict(list)
            for n, d in good.items():
                ds[d.get("digest")].append(n)
            if len(ds) > 1:
                rep.fail("divergence", "state digests differ at applied index %s: %s" % (
                    idx.pop(), "; ".join("%s: %s" % (",".join(sorted(ns)), dg)
                                         for dg, ns in sorted(ds.items(), key=str))))
            rep.stats["applied_index"] = next(iter(good.values())).get("applied_index")
    names = sorted(by_node)
    for other in names[1:]:
        a, b = by_node[names[0]], by_node[other]
        diff = [i for i in set(a) | set(b) if a.get(i) != b.get(i)]
        for i in sorted(diff, key=str)[:MAX_LISTED]:
            rep.fail("divergence", "loan %s: %s has %r, %s has %r" % (i, names[0], a.get(i), other, b.get(i)))
    for o in unfinished:
        o.outcome = None
    return rep


def verify(workload, nodes, admin_token, lib_token=None, transport=None, digest_timeout=20.0):
    """Fetch the final state of every node in `nodes` (call once the workload stopped and the
    nodes converged) and check the workload's history against it.  Returns a Report."""
    transport = transport or workload.transport
    states, errors = fetch_states(nodes, lib_token or workload.lib_token, workload.user_ids,
                                  transport=transport)
    digests = fetch_digests(nodes, admin_token, transport=transport, timeout=digest_timeout)
    rep = check(workload.snapshot(), states, digests, workload.resources, errors)
    rep.stats["seed"] = workload.seed
    return rep


def describe_times(xs):
    """'min 0.61s median 0.83s max 1.42s (n=3)'."""
    if not xs:
        return "no samples"
    return "min %.2fs median %.2fs max %.2fs (n=%d)" % (min(xs), statistics.median(xs), max(xs), len(xs))
