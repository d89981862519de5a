"""Write-behind to PostgreSQL, against a real PostgreSQL (tests/system/pgfix.py).

Every test gets its own throw-away PostgreSQL cluster (127.0.0.1, a free port) and stops every
node and cluster it started.  The central check is `check_equal`: once the node reports
circa_wb_lag_entries 0 and flushed == applied, PostgreSQL's tables equal what the node serves,
row for row and byte for byte, with no extra rows, and `commands` holds exactly log indexes
1..applied whose (type, status, actor) multiset equals the write answers the test recorded
(refused commands included, answers that never reach the log -- validation, 503 -- excluded).
"""

import collections
import contextlib
import hashlib
import http.client
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import uuid

import harness
import pgfix
from harness import Node, TYPES, expect, uid

HERE = os.path.dirname(os.path.abspath(__file__))
SQL_DIR = os.path.join(HERE, "..", "..", "schema", "sql")
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)

# answers decided by the HTTP layer: they never become a command
HTTP_ONLY = (400, 401, 405, 413, 422, 429, 503)
# commands that no client request makes
SYSTEM_CMDS = ("bootstrap", "policy", "tick")

ROUTES = [
    ("POST", r"/v1/auth/register$", "user_create"),
    ("POST", r"/v1/resources$", "res_put"),
    ("PUT", r"/v1/resources/[^/]+$", "res_put"),
    ("DELETE", r"/v1/resources/[^/]+$", "res_delete"),
    ("POST", r"/v1/loans$", "loan_checkout"),
    ("POST", r"/v1/loans/[^/]+/return$", "loan_return"),
    ("POST", r"/v1/loans/[^/]+/renew$", "loan_renew"),
    ("POST", r"/v1/holds$", "hold_place"),
    ("DELETE", r"/v1/holds/[^/]+$", "hold_cancel"),
    ("PATCH", r"/v1/users/[^/]+$", "user_update"),
    ("POST", r"/v1/api-keys$", "apikey_create"),
]

# strings that exercise JSON escaping and UTF-8 on the way to PostgreSQL's json column
ODD = "Ünïcødé “q” \"dq\" back\\slash tab\t/ 日本 🦉"


def command_type(method, path):
    path = path.split("?")[0]
    for m, pat, t in ROUTES:
        if m == method and re.match(pat, path):
            return t
    raise AssertionError("no command type for %s %s" % (method, path))


# ---------------------------------------------------------------- fixtures

def new_pg():
    ok, why = pgfix.available()
    assert ok, "write-behind tests need a PostgreSQL server: " + why
    return pgfix.PG().start()


def pg_config(pg, **extra):
    c = {"dsn": pg.dsn()}
    c.update(extra)
    return {"pg": c}


@contextlib.contextmanager
def env(name, **pgcfg):
    """A PostgreSQL cluster and a node writing behind to it; both stopped at the end.
    Yields (pg, node, nodes) where nodes is a list further nodes may be appended to."""
    pg = new_pg()
    nodes = []
    try:
        nodes.append(Node(name=name, config=pg_config(pg, **pgcfg)))
        yield pg, nodes[0], nodes
        assert_no_password(nodes, pg.password)
    except BaseException:
        print("    --- PostgreSQL log (%s), last lines:" % pg.log)
        for line in pg.log_tail(12).splitlines()[1:]:
            print("    | " + line[:300])
        raise
    finally:
        for n in reversed(nodes):
            n.cleanup()
        pg.cleanup()


def node_log(n):
    try:
        with open(n.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return getattr(n, "saved_full", "") or ""


def assert_no_password(nodes, *secrets):
    for n in nodes:
        text = node_log(n)
        for s in secrets:
            assert s not in text, "%s's log contains the PostgreSQL password %r" % (n.name, s)


def metrics(n):
    out = {}
    for line in n.metrics().splitlines():
        if line and not line.startswith("#"):
            name, _, val = line.rpartition(" ")
            try:
                out[name] = float(val)
            except ValueError:
                pass
    for k in ("circa_applied_index", "circa_wb_enabled", "circa_wb_connected",
              "circa_wb_flushed_index", "circa_wb_lag_entries", "circa_wb_lag_seconds",
              "circa_wb_outbox_entries", "circa_wb_errors_total",
              "circa_wb_refused_writes_total", "circa_wb_rows_total"):
        assert k in out, "/metrics lacks %s" % k
    return out


def wbm(m):
    """The write-behind part of a metrics snapshot, for messages."""
    return {k.replace("circa_", ""): v for k, v in m.items()
            if k.startswith("circa_wb_") or k == "circa_applied_index"}


def wait_until(fn, timeout, what, snapshot=None, interval=0.05):
    """Poll fn() until truthy; on timeout say what the last state was."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s; last state: %s"
                                 % (timeout, what, snapshot() if snapshot else v))
        time.sleep(interval)


def wait_synced(n, pg, timeout=30.0):
    """Until PostgreSQL has every applied command: connected, lag 0, flushed == applied ==
    PostgreSQL's flush cursor (the same applied value before and after reading the cursor,
    so a periodic tick in between cannot fool it).  Returns the applied index."""
    last = {}

    def synced():
        m1 = metrics(n)
        last["m"] = wbm(m1)
        if not (m1["circa_wb_connected"] == 1 and m1["circa_wb_lag_entries"] == 0 and
                m1["circa_wb_flushed_index"] == m1["circa_applied_index"]):
            return None
        cur = int(pg.psql("SELECT flushed_index FROM flush_cursor WHERE id = 1")[0][0])
        m2 = metrics(n)
        last["pg_cursor"] = cur
        if cur == m1["circa_applied_index"] == m2["circa_applied_index"] == \
                m2["circa_wb_flushed_index"]:
            return int(cur)
        return None

    return wait_until(synced, timeout, "write-behind to catch up", lambda: last)


# ---------------------------------------------------------------- the recorded world

class Actor:
    def __init__(self, id, role, token=None, api_key=None, email=None, name=None):
        self.id, self.role, self.token, self.api_key = id, role, token, api_key
        self.email, self.name = email, name

    def auth(self):
        return {"token": self.token} if self.token else {"api_key": self.api_key}


class World:
    """What the test did: users, resources, keys, and every write answer as the
    (type, status, actor) of the command it must have left in the log."""

    def __init__(self, n):
        self.lock = threading.Lock()
        self.cmds = collections.Counter()    # acknowledged answers that are commands
        self.maybe = collections.Counter()   # (type, actor) sent but never answered
        self.users = {}                      # id -> Actor (members, with login tokens)
        self.blocked = set()
        self.resources = set()               # every resource id created (deleted too)
        self.maybe_resources = set()         # ids of creations that were never answered
        self.deleted = set()
        self.apikeys = {}                    # id -> (key, creation answer body)
        asub, lsub = uid(), uid()
        self.admin = Actor(asub, "admin", token=n.token(asub, "admin"))
        self.lib = Actor(lsub, "librarian", token=n.token(lsub, "librarian"))

    def note(self, method, path, actor, status, body, cmd=True):
        t = command_type(method, path)
        with self.lock:
            if cmd and status not in HTTP_ONLY:
                self.cmds[(t, status, actor.id if actor else None)] += 1
            if status == 201 and t == "res_put":
                self.resources.add(body["id"])
            elif status == 204 and t == "res_delete":
                self.deleted.add(path.rstrip("/").split("/")[-1])
            elif status == 201 and t == "apikey_create":
                self.apikeys[body["id"]] = (body["key"], body)
            elif status == 200 and t == "user_update":
                if body["status"] == "blocked":
                    self.blocked.add(body["id"])
                else:
                    self.blocked.discard(body["id"])

    def note_inflight(self, method, path, actor, rid=None):
        with self.lock:
            self.maybe[(command_type(method, path), actor.id if actor else None)] += 1
            if rid:
                self.maybe_resources.add(rid)

    def write(self, n, actor, method, path, body=None, status=None, problem=None, cmd=True,
              headers=None):
        kw = actor.auth() if actor else {}
        r = n.request(method, path, body, headers=headers, **kw)
        if status is not None:
            expect(r, status, problem)
        self.note(method, path, actor, r.status, r.body, cmd=cmd)
        return r

    def register(self, n, name):
        email = "wb-%s@example.org" % uuid.uuid4().hex[:12]
        r = self.write(n, None, "POST", "/v1/auth/register",
                       {"email": email, "password": "correct horse 1", "name": name}, 201)
        tok = n.login(email)
        a = Actor(r.body["id"], "member", token=tok, email=email, name=name)
        self.users[a.id] = a
        return a

    def resource(self, n, actor=None, **fields):
        body = {"title": "wb " + uuid.uuid4().hex[:8], "type": "FICTION"}
        body.update(fields)
        return self.write(n, actor or self.lib, "POST", "/v1/resources", body, 201).body


# ---------------------------------------------------------------- workloads

def mixed_workload(n, w, label):
    """Every kind of write, accepted and refused; holds placed, cancelled, becoming ready
    (by a return and by more copies), fulfilled and cancelled by a deletion; a member
    blocked; an API key created and used; an idempotent replay (no second command)."""
    lib, adm = w.lib, w.admin
    m = [w.register(n, "%s member %d %s" % (label, i, ODD)) for i in range(5)]
    # the same email again: a refused command
    w.write(n, None, "POST", "/v1/auth/register",
            {"email": m[0].email, "password": "correct horse 1", "name": "dup"}, 409, "conflict")

    r_one = w.resource(n, title="%s one copy %s" % (label, ODD), type="FANTASY", copies=1,
                       authors=["J. R. R. Tolkien", "Ünï Author"], tags=["ring", ODD])
    r_two = w.resource(n, title="%s two copies" % label, type="HISTORY", copies=2,
                       authors=["Herodotus"], tags=["greek", "ancient"])
    r_zero = w.resource(n, title="%s no copy yet" % label, type="POETRY", copies=0)
    r_plain = w.resource(n, title="%s to delete" % label, type="AUDIO", copies=3)
    r_ready = w.resource(n, title="%s deleted with a ready hold" % label, type="VIDEO", copies=1)
    r_prem = w.resource(n, title="%s premium" % label, type="SCHOLARLY_JOURNAL", premium=True,
                        copies=2)
    # create and replace through PUT; an id that exists is refused on POST
    pid = uid()
    w.write(n, lib, "PUT", "/v1/resources/" + pid,
            {"title": "%s put" % label, "type": "NONFICTION", "copies": 1, "authors": ["A"]}, 201)
    w.write(n, lib, "PUT", "/v1/resources/" + pid,
            {"title": "%s put, replaced %s" % (label, ODD), "type": "NONFICTION", "copies": 4,
             "authors": ["A", "B"], "tags": ["new"]}, 200)
    w.write(n, lib, "POST", "/v1/resources", {"id": pid, "title": "again", "type": "FICTION"},
            409, "conflict")
    # an idempotent create and its replay: one command only
    h = {"Idempotency-Key": "wb-" + uuid.uuid4().hex}
    body = {"title": "%s once" % label, "type": "FICTION"}
    a = w.write(n, lib, "POST", "/v1/resources", body, 201, headers=h)
    b = w.write(n, lib, "POST", "/v1/resources", body, 201, headers=h, cmd=False)
    assert b.raw == a.raw, (a, b)

    one = r_one["id"]
    l0 = w.write(n, m[0], "POST", "/v1/loans", {"resource_id": one}, 201).body
    w.write(n, m[1], "POST", "/v1/loans", {"resource_id": one}, 409, "no-copy-available")
    w.write(n, m[1], "POST", "/v1/loans", {"resource_id": uid()}, 404, "not-found")
    h1 = w.write(n, m[1], "POST", "/v1/holds", {"resource_id": one}, 201).body
    h2 = w.write(n, m[2], "POST", "/v1/holds", {"resource_id": one}, 201).body
    assert h2["position"] == 2, h2
    w.write(n, m[0], "POST", "/v1/loans/%s/renew" % l0["id"], None, 409)  # a hold waits
    l1 = w.write(n, m[0], "POST", "/v1/loans", {"resource_id": r_two["id"]}, 201).body
    w.write(n, m[0], "POST", "/v1/loans/%s/renew" % l1["id"], None, 200)
    w.write(n, m[0], "POST", "/v1/loans/%s/renew" % l1["id"], None, 200)
    w.write(n, m[0], "POST", "/v1/loans/%s/renew" % l1["id"], None, 409)  # max renewals
    w.write(n, m[0], "POST", "/v1/loans/%s/return" % l0["id"], None, 200)  # h1 becomes ready
    w.write(n, m[0], "POST", "/v1/loans/%s/return" % l0["id"], None, 409, "conflict")
    w.write(n, m[0], "POST", "/v1/loans/%s/return" % uid(), None, 404, "not-found")
    w.write(n, m[1], "POST", "/v1/loans", {"resource_id": one}, 201)  # h1 fulfilled
    w.write(n, m[2], "DELETE", "/v1/holds/" + h2["id"], None, 200)
    w.write(n, m[2], "DELETE", "/v1/holds/" + h2["id"], None, 409, "conflict")
    w.write(n, m[3], "POST", "/v1/holds", {"resource_id": r_two["id"]}, 409, "conflict")
    # a hold on a resource without copies becomes ready when copies are added
    w.write(n, m[3], "POST", "/v1/holds", {"resource_id": r_zero["id"]}, 201)
    w.write(n, lib, "PUT", "/v1/resources/" + r_zero["id"],
            {"title": r_zero["title"], "type": "POETRY", "copies": 1}, 200)
    # a resource deleted while a hold is ready for it: the hold is cancelled with it
    w.write(n, m[2], "POST", "/v1/loans", {"resource_id": r_ready["id"]}, 201)
    w.write(n, m[3], "POST", "/v1/holds", {"resource_id": r_ready["id"]}, 201)
    loan = [x for x in expect(n.request("GET", "/v1/me/loans", token=m[2].token), 200)["items"]
            if x["resource_id"] == r_ready["id"]][0]
    w.write(n, lib, "POST", "/v1/loans/%s/return" % loan["id"], None, 200)
    w.write(n, lib, "DELETE", "/v1/resources/" + r_ready["id"], None, 204)
    w.write(n, lib, "DELETE", "/v1/resources/" + r_plain["id"], None, 204)
    w.write(n, lib, "DELETE", "/v1/resources/" + r_plain["id"], None, 404, "not-found")
    w.write(n, lib, "DELETE", "/v1/resources/" + r_two["id"], None, 409)  # active loan
    # premium: refused, then the plan changes and it is lent
    w.write(n, m[2], "POST", "/v1/loans", {"resource_id": r_prem["id"]}, 403, "premium-required")
    w.write(n, adm, "PATCH", "/v1/users/" + m[2].id, {"plan": "premium", "name": "P " + ODD}, 200)
    w.write(n, m[2], "POST", "/v1/loans", {"resource_id": r_prem["id"]}, 201)
    # a librarian lends for a member; a member is blocked (and refused a loan through staff)
    w.write(n, lib, "POST", "/v1/loans", {"resource_id": pid, "user_id": m[4].id}, 201)
    w.write(n, lib, "PATCH", "/v1/users/" + m[4].id, {"status": "blocked"}, 200)
    w.write(n, lib, "POST", "/v1/loans", {"resource_id": one, "user_id": m[4].id}, 403,
            "member-blocked")
    # the blocked member's own token: refused by the HTTP layer, no command
    w.write(n, m[4], "POST", "/v1/loans", {"resource_id": pid}, 403, "member-blocked", cmd=False)
    # validation: never a command
    w.write(n, lib, "POST", "/v1/resources", {"title": "x", "type": "NOPE"}, 422, "validation")
    # an API key, created and used
    k = w.write(n, adm, "POST", "/v1/api-keys", {"name": "%s key %s" % (label, ODD),
                                                  "role": "service"}, 201).body
    svc = Actor(k["id"], "service", api_key=k["key"])
    w.resource(n, actor=svc, title="%s by a service" % label, type="AUDIO",
               authors=["Svc"], tags=["a", "b", "c"])
    return m


# ---------------------------------------------------------------- the equality check

_DEC = json.JSONDecoder()


def raw_items(resp):
    """The exact text of every element of a {"items":[...]...} answer."""
    assert resp.status == 200, resp
    s = resp.raw.decode("utf-8")
    head = '{"items":['
    assert s.startswith(head), "unexpected list answer: %r" % s[:200]
    i, out = len(head), []
    if s[i] == "]":
        return out
    while True:
        _, j = _DEC.raw_decode(s, i)
        out.append(s[i:j])
        if s[j] == "]":
            return out
        assert s[j] == ",", "unexpected list answer at %d: %r" % (j, s[j - 20:j + 20])
        i = j + 1


def all_resources_raw(n, tok):
    items, cursor = {}, None
    for _ in range(1000):
        q = {"limit": "200"}
        if cursor:
            q["cursor"] = cursor
        r = n.request("GET", "/v1/resources?" + urllib.parse.urlencode(q), token=tok)
        for it in raw_items(r):
            items[json.loads(it)["id"]] = it
        cursor = r.body["next_cursor"]
        if not cursor:
            return items
    raise AssertionError("resource pagination did not end")


POS = re.compile(r'"position":\d+')


def diff_maps(what, node, pg, problems, node_name="node", pg_name="PostgreSQL"):
    for k in sorted(set(node) - set(pg)):
        problems.append("%s %s: the node serves it, %s lacks it: %s" % (what, k, pg_name, node[k]))
    for k in sorted(set(pg) - set(node)):
        problems.append("%s %s: %s has it, the node does not serve it: %s"
                        % (what, k, pg_name, pg[k]))
    for k in sorted(set(node) & set(pg)):
        if node[k] != pg[k]:
            problems.append("%s %s differs:\n  %s: %s\n  %s: %s" % (what, k, node_name, node[k],
                                                                   pg_name, pg[k]))


def check_equal(n, pg, w, acked_resources=None):
    """PostgreSQL == what the node serves (see the module docstring); returns applied."""
    applied = wait_synced(n, pg)
    adm = w.admin.token
    problems = []

    # -- users: every user PostgreSQL has is one the test created, byte for byte
    pg_users = dict(pg.psql("SELECT id, view::text FROM users"))
    node_users = {}
    for i in w.users:
        r = n.request("GET", "/v1/users/" + i, token=adm)
        node_users[i] = r.raw.decode() if r.status == 200 else "HTTP %d" % r.status
    diff_maps("user", node_users, pg_users, problems)

    # -- resources: live ones equal, deleted ones tombstones in PostgreSQL and 404 on the node
    rows = pg.psql("SELECT id, deleted, view::text FROM resources")
    pg_live = {r[0]: r[2] for r in rows if r[1] == "f"}
    pg_gone = {r[0] for r in rows if r[1] == "t"}
    node_live = all_resources_raw(n, adm)
    diff_maps("resource", node_live, pg_live, problems)
    # GET by id answers the listed bytes (a sample when there are many)
    for rid in sorted(node_live)[::max(1, len(node_live) // 200)]:
        r = n.request("GET", "/v1/resources/" + rid, token=adm)
        if r.raw.decode() != node_live[rid]:
            problems.append("resource %s: GET answers %r, the list %r" % (rid, r, node_live[rid]))
    if pg_gone != w.deleted:
        problems.append("deleted resources: PostgreSQL %s, the test deleted %s"
                        % (sorted(pg_gone), sorted(w.deleted)))
    for rid in sorted(pg_gone):
        r = n.request("GET", "/v1/resources/" + rid, token=adm)
        if r.status != 404:
            problems.append("resource %s is deleted in PostgreSQL but the node answers %r"
                            % (rid, r))
    known = w.resources | w.maybe_resources
    extra = set(pg_live) | pg_gone
    if not extra <= known:
        problems.append("PostgreSQL has resources nobody created: %s" % sorted(extra - known)[:5])
    lost = (w.resources - w.deleted) - set(pg_live)
    if lost:
        problems.append("acknowledged resources missing from PostgreSQL: %s" % sorted(lost)[:5])
    for rid, title in (acked_resources or {}).items():
        v = pg_live.get(rid)
        if v is None or json.loads(v)["title"] != title:
            problems.append("acknowledged resource %s (%r) is not in PostgreSQL as written: %s"
                            % (rid, title, v))
    counts = expect(n.request("GET", "/v1/resources/counts", token=adm), 200)
    pg_counts = {t: 0 for t in TYPES}
    for t, c in pg.psql("SELECT type, count(*) FROM resources WHERE NOT deleted GROUP BY type"):
        pg_counts[t] = int(c)
    if counts != pg_counts:
        problems.append("resource counts: node %s, PostgreSQL %s" % (counts, pg_counts))

    # -- loans: every member's loans as the node serves them
    node_loans = {}
    for i in w.users:
        # limit (1..1000, default 100) is not in openapi.yaml but the handler takes it
        items = raw_items(n.request("GET", "/v1/users/%s/loans?status=all&limit=1000" % i,
                                    token=adm))
        assert len(items) < 1000, "user %s has too many loans to list them all" % i
        for it in items:
            node_loans[json.loads(it)["id"]] = it
    diff_maps("loan", node_loans, dict(pg.psql("SELECT id, view::text FROM loans")), problems)

    # -- holds: the stored view has position 0, the node computes it on read
    node_holds = {}
    for i, a in w.users.items():
        if i in w.blocked:
            continue   # a blocked member cannot read; the workloads give them no holds
        for it in raw_items(n.request("GET", "/v1/me/holds", token=a.token)):
            node_holds[json.loads(it)["id"]] = POS.sub('"position":0', it)
    diff_maps("hold", node_holds, dict(pg.psql("SELECT id, view::text FROM holds")), problems)

    # -- API keys: the answer to their creation without the key; the key's SHA-256
    pg_keys = {}
    for h, view in pg.psql("SELECT encode(key_sha256, 'hex'), view::text FROM api_keys"):
        v = json.loads(view)
        pg_keys[v["id"]] = (h, v)
    want_keys = {}
    for kid, (key, body) in w.apikeys.items():
        want_keys[kid] = (hashlib.sha256(key.encode()).hexdigest(),
                          {k: v for k, v in body.items() if k != "key"})
    diff_maps("api key", want_keys, pg_keys, problems, node_name="created")

    # -- typed columns agree with the view they were extracted from
    bad = pg.psql("""
        SELECT 'user ' || id FROM users WHERE email <> view->>'email' OR status <> view->>'status'
            OR plan <> view->>'plan' OR role <> view->>'role' OR name <> view->>'name'
        UNION ALL SELECT 'resource ' || id FROM resources WHERE NOT deleted AND
            (title <> view->>'title' OR copies <> (view->>'copies')::int
             OR available <> (view->>'available')::int OR type <> view->>'type'
             OR to_jsonb(coalesce(authors, '{}')) <> coalesce(view::jsonb->'authors', '[]')
             OR to_jsonb(coalesce(tags, '{}')) <> coalesce(view::jsonb->'tags', '[]'))
        UNION ALL SELECT 'loan ' || id FROM loans WHERE status <> view->>'status'
            OR renewals <> (view->>'renewals')::int OR user_id::text <> view->>'user_id'
        UNION ALL SELECT 'hold ' || id FROM holds WHERE status <> view->>'status'
            OR user_id::text <> view->>'user_id'
        UNION ALL SELECT 'row newer than the cursor: ' || t FROM (
            SELECT 'users' t, max(log_index) i FROM users UNION ALL
            SELECT 'resources', max(log_index) FROM resources UNION ALL
            SELECT 'loans', max(log_index) FROM loans UNION ALL
            SELECT 'holds', max(log_index) FROM holds UNION ALL
            SELECT 'api_keys', max(log_index) FROM api_keys) x
            WHERE i > (SELECT flushed_index FROM flush_cursor)""")
    for b in bad:
        problems.append("PostgreSQL's typed columns disagree with its view: " + b[0])

    # -- commands: exactly 1..applied, and the recorded answers, refused ones included
    rows = pg.psql("SELECT log_index, type, actor_id, status FROM commands ORDER BY log_index")
    idx = [int(r[0]) for r in rows]
    if idx != list(range(1, applied + 1)):
        missing = sorted(set(range(1, applied + 1)) - set(idx))
        dup = [i for i, c in collections.Counter(idx).items() if c > 1]
        problems.append("commands: %d rows for applied index %d; missing %s, duplicated %s, "
                        "beyond %s" % (len(idx), applied, missing[:10], dup[:10],
                                       [i for i in idx if i > applied][:10]))
    if rows and rows[0][1] != "bootstrap":
        problems.append("command 1 is %r, not bootstrap" % (rows[0],))
    for r in rows:
        if r[1] in SYSTEM_CMDS and not r[3].startswith("2"):
            problems.append("system command refused: %r" % (r,))
    got = collections.Counter((r[1], int(r[3]), r[2]) for r in rows if r[1] not in SYSTEM_CMDS)
    missing = w.cmds - got
    extra = got - w.cmds
    if missing:
        problems.append("answered writes whose command PostgreSQL lacks (type, status, actor): %s"
                        % sorted(missing.items())[:8])
    unexplained = collections.Counter()
    budget = collections.Counter(w.maybe)
    for (t, s, a), c in extra.items():
        take = min(c, budget[(t, a)])
        budget[(t, a)] -= take
        if c > take:
            unexplained[(t, s, a)] = c - take
    if unexplained:
        problems.append("commands in PostgreSQL that no answer or in-flight request explains "
                        "(type, status, actor): %s" % sorted(unexplained.items())[:8])

    if problems:
        raise AssertionError("PostgreSQL differs from the node (%d problems):\n%s"
                             % (len(problems), "\n".join(p[:700] for p in problems[:15])))
    return applied


# ---------------------------------------------------------------- load threads

class Writer(threading.Thread):
    """Creates resources with client-chosen ids on one keep-alive connection until stopped,
    until the node answers 503, or until the connection breaks (kill -9)."""

    def __init__(self, n, w, stop, tag):
        super().__init__(daemon=True)
        self.n, self.w, self.stop, self.tag = n, w, stop, tag
        self.acked = {}          # rid -> title
        self.refused = []        # 503 answers
        self.fail = None

    def run(self):
        a = self.w.lib
        c = http.client.HTTPConnection("127.0.0.1", self.n.port, timeout=20)
        k = 0
        try:
            while not self.stop.is_set():
                rid, k = uid(), k + 1
                title = "%s %d %s" % (self.tag, k, ODD)
                body = json.dumps({"id": rid, "title": title, "type": TYPES[k % 8],
                                   "authors": ["W %d" % k], "tags": [self.tag]})
                self.w.note_inflight("POST", "/v1/resources", a, rid)
                try:
                    c.request("POST", "/v1/resources", body=body,
                              headers={"Authorization": "Bearer " + a.token,
                                       "Content-Type": "application/json"})
                    r = c.getresponse()
                    raw = r.read()
                except TRANSPORT_ERRORS:
                    return   # in flight when the node died: stays in maybe
                with self.w.lock:
                    self.w.maybe[("res_put", a.id)] -= 1
                    self.w.maybe_resources.discard(rid)
                b = json.loads(raw) if raw else None
                self.w.note("POST", "/v1/resources", a, r.status, b)
                if r.status == 201:
                    self.acked[rid] = title
                elif r.status == 503:
                    self.refused.append((r.getheader("Retry-After"), b))
                    return
                else:
                    self.fail = "POST /v1/resources -> %d %r" % (r.status, raw[:300])
                    return
        finally:
            c.close()


class Borrower(threading.Thread):
    """One member checking out and returning one resource in a loop."""

    def __init__(self, n, w, member, rid, stop):
        super().__init__(daemon=True)
        self.n, self.w, self.m, self.rid, self.stop = n, w, member, rid, stop
        self.loans = {}   # loan id -> acknowledged status
        self.fail = None

    def _do(self, c, path, body):
        self.w.note_inflight("POST", path, self.m)
        try:
            c.request("POST", path, body=json.dumps(body) if body else None,
                      headers={"Authorization": "Bearer " + self.m.token,
                               "Content-Type": "application/json"})
            r = c.getresponse()
            raw = r.read()
        except TRANSPORT_ERRORS:
            return None, None
        with self.w.lock:
            self.w.maybe[(command_type("POST", path), self.m.id)] -= 1
        b = json.loads(raw) if raw else None
        self.w.note("POST", path, self.m, r.status, b)
        return r.status, b

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.n.port, timeout=20)
        try:
            while not self.stop.is_set():
                s, b = self._do(c, "/v1/loans", {"resource_id": self.rid})
                if s is None:
                    return
                if s != 201:
                    self.fail = "checkout -> %s %r" % (s, b)
                    return
                self.loans[b["id"]] = "active"
                s, b2 = self._do(c, "/v1/loans/%s/return" % b["id"], None)
                if s is None:
                    return
                if s != 200:
                    self.fail = "return -> %s %r" % (s, b2)
                    return
                self.loans[b["id"]] = "returned"
        finally:
            c.close()


def check_acked_loans(pg, borrowers):
    status = dict(pg.psql("SELECT id, status FROM loans"))
    for b in borrowers:
        assert b.fail is None, b.fail
        for lid, st in b.loans.items():
            assert lid in status, "acknowledged loan %s is not in PostgreSQL" % lid
            if st == "returned":
                assert status[lid] == "returned", \
                    "loan %s: return acknowledged, PostgreSQL says %s" % (lid, status[lid])


def broad_gets(n, w):
    """GETs over everything; returns [(path, who, status, content type, body bytes)]."""
    adm, lib = w.admin, w.lib
    out = []

    def get(path, a):
        r = n.request("GET", path, **a.auth())
        out.append((path, a.id, r.status, r.ctype, r.raw))

    for path in ("/v1/resources/counts", "/v1/reports/overdue", "/v1/reports/loans-per-day",
                 "/v1/reports/top-resources", "/v1/reports/top-resources?limit=3",
                 "/v1/reports/loans-per-day?format=csv", "/v1/reports/top-resources?format=csv",
                 "/v1/reports/overdue?format=csv"):
        get(path, lib)
    for t in [None] + TYPES:
        q = {"limit": "200"}
        if t:
            q["type"] = t
        get("/v1/resources?" + urllib.parse.urlencode(q), adm)
    get("/v1/resources?limit=2", adm)
    for rid in sorted(w.resources):
        get("/v1/resources/" + rid, adm)
    for i, a in sorted(w.users.items()):
        get("/v1/users/" + i, adm)
        get("/v1/users/%s/loans" % i, lib)
        for st in ("active", "returned", "all"):
            get("/v1/users/%s/loans?status=%s" % (i, st), adm)
        get("/v1/me", a)
        get("/v1/me/loans", a)
        get("/v1/me/holds", a)
    for kid, (key, body) in sorted(w.apikeys.items()):
        get("/v1/resources/counts", Actor(kid, "service", api_key=key))
    return out


def failed_gets(n, w):
    """broad_gets whose status is not the expected one (404 for deleted resources, 403 for a
    blocked member's own reads, else 200)."""
    bad = []
    for path, who, status, ctype, raw in broad_gets(n, w):
        want = 200
        if path.startswith("/v1/resources/") and path.split("/")[-1] in w.deleted:
            want = 404
        elif path.startswith("/v1/me") and who in w.blocked:
            want = 403
        if status != want:
            bad.append((path, status, raw[:200]))
    return bad


# ---------------------------------------------------------------- tests

def test_writebehind_mixed_workload_equals_postgres():
    """1. A mixed workload; once flushed, PostgreSQL equals the node row for row."""
    with env("wb-mixed") as (pg, n, _):
        w = World(n)
        mixed_workload(n, w, "mixed")
        applied = check_equal(n, pg, w)
        # the checks above had something to bite on
        refused = pg.psql("SELECT type, status FROM commands WHERE status >= 400")
        kinds = {(t, int(s)) for t, s in refused}
        for want in [("loan_checkout", 409), ("loan_checkout", 404), ("loan_return", 409),
                     ("loan_renew", 409), ("hold_cancel", 409), ("res_delete", 404),
                     ("user_create", 409), ("loan_checkout", 403), ("res_put", 409)]:
            assert want in kinds, "no refused %s command with status %d in PostgreSQL: %s" \
                % (want + (sorted(kinds),))
        counts = dict(pg.psql("""SELECT 'holds ' || status, count(*) FROM holds GROUP BY status
                                 UNION ALL SELECT 'loans ' || status, count(*) FROM loans
                                 GROUP BY status"""))
        for k in ("holds fulfilled", "holds cancelled", "holds ready", "loans active",
                  "loans returned"):
            assert int(counts.get(k, 0)) >= 1, "workload left no %s: %s" % (k, counts)
        m = metrics(n)
        assert m["circa_wb_rows_total"] > 0 and m["circa_wb_errors_total"] == 0, wbm(m)
        assert applied > 50, applied


def test_writebehind_postgres_outage_reads_and_writes_go_on():
    """2. PostgreSQL stops mid-workload: writes succeed, reads answer, the lag grows; after it
    comes back the backlog drains by itself and nothing is lost or doubled."""
    with env("wb-outage") as (pg, n, _):
        w = World(n)
        mixed_workload(n, w, "before")
        check_equal(n, pg, w)

        pg.stop()
        down = time.monotonic()
        before = metrics(n)   # nothing can be flushed from here on
        members = mixed_workload(n, w, "during")   # every write answered as if nothing happened
        wait_until(lambda: metrics(n)["circa_wb_connected"] == 0, 15,
                   "circa_wb_connected 0 with PostgreSQL stopped", lambda: wbm(metrics(n)))
        lag1 = metrics(n)["circa_wb_lag_entries"]
        assert lag1 > 0, wbm(metrics(n))
        # keep PostgreSQL away a few seconds while writes go on and every GET answers
        rid = w.resource(n, title="outage target", copies=50)["id"]
        k = 0
        while time.monotonic() - down < 3.0 or k < 20:
            k += 1
            w.write(n, members[k % 4], "POST", "/v1/loans", {"resource_id": rid}, (201, 409))
            w.resource(n, title="outage %d" % k, type=TYPES[k % 8])
            time.sleep(0.02)
        m = metrics(n)
        assert m["circa_wb_lag_entries"] > lag1, "lag did not grow: %s then %s" % (lag1, wbm(m))
        assert m["circa_wb_lag_seconds"] >= 1.0, wbm(m)
        assert m["circa_wb_flushed_index"] == before["circa_wb_flushed_index"], wbm(m)
        assert m["circa_wb_errors_total"] > 0 and m["circa_wb_connected"] == 0, wbm(m)
        assert m["circa_wb_outbox_entries"] >= m["circa_wb_lag_entries"], wbm(m)
        bad = failed_gets(n, w)
        assert not bad, "GETs failed while PostgreSQL was down: %s" % bad[:5]

        pg.start()
        check_equal(n, pg, w)
        # the flusher logs this right after the batch that moved the flushed index
        wait_until(lambda: "write-behind to PostgreSQL is flowing again" in node_log(n), 10,
                   "the recovery line in the log", lambda: n.log_tail(10))


def test_writebehind_kill9_while_flushing():
    """3. kill -9 while the flusher works (once under write load with a backlog, once while a
    backlog drains); restart on the same data: equality, and every acknowledged write is in
    PostgreSQL."""
    # batch 2: PostgreSQL takes many small transactions, so flushing is under way at the kill
    with env("wb-kill9", batch=2) as (pg, n, _):
        w = World(n)
        members = [w.register(n, "borrower %d" % i) for i in range(3)]
        target = w.resource(n, title="kill9 target", copies=10)["id"]
        check_equal(n, pg, w)
        writers, borrowers, acked = [], [], {}

        # round 1: writes running, the flusher behind them and sending
        start = metrics(n)["circa_wb_flushed_index"]
        stop = threading.Event()
        ws = [Writer(n, w, stop, "r1w%d" % i) for i in range(4)]
        bs = [Borrower(n, w, m, target, stop) for m in members]
        for t in ws + bs:
            t.start()
        snap = {}

        def busy():
            m = metrics(n)
            snap.update(wbm(m))
            return (m["circa_wb_flushed_index"] > start + 100 and
                    m["circa_wb_lag_entries"] > 20) or not all(t.is_alive() for t in ws + bs)
        wait_until(busy, 30, "flushing under write load", lambda: snap)
        assert all(t.is_alive() for t in ws + bs), \
            [t.fail for t in ws + bs if getattr(t, "fail", None)]
        n.kill9()
        stop.set()
        for t in ws + bs:
            t.join(30)
            assert not t.is_alive(), "a load thread hung after kill -9"
        writers += ws
        borrowers += bs
        assert snap["wb_lag_entries"] > 0, snap

        # round 2: PostgreSQL away while a backlog builds, then kill -9 while it drains
        n.start()
        # a checkout in flight at the kill may have been applied: start from no open loan
        for m in members:
            for loan in expect(n.request("GET", "/v1/users/%s/loans?status=active" % m.id,
                                         token=w.lib.token), 200)["items"]:
                w.write(n, w.lib, "POST", "/v1/loans/%s/return" % loan["id"], None, 200)
        pg.stop()
        stop = threading.Event()
        ws = [Writer(n, w, stop, "r2w%d" % i) for i in range(4)]
        bs = [Borrower(n, w, m, target, stop) for m in members]
        for t in ws + bs:
            t.start()
        wait_until(lambda: metrics(n)["circa_wb_lag_entries"] > 1500 or
                   not all(t.is_alive() for t in ws + bs), 30, "a backlog of 1500",
                   lambda: wbm(metrics(n)))
        stop.set()
        for t in ws + bs:
            t.join(30)
            assert t.fail is None, t.fail
        writers += ws
        borrowers += bs
        before = metrics(n)
        pg.start()
        snap = {}

        def draining():
            m = metrics(n)
            snap.update(wbm(m))
            assert m["circa_wb_flushed_index"] < m["circa_applied_index"], \
                "the backlog drained before the kill could land (make it bigger): %s" % snap
            return m["circa_wb_flushed_index"] > before["circa_wb_flushed_index"] + 20
        # the flusher retries with backoff: it may take a few seconds to come back
        wait_until(draining, 30, "the backlog to be draining", lambda: snap, interval=0.005)
        n.kill9()

        # the rest drains in big batches: the batch size may change across restarts
        n.overrides = pg_config(pg, batch=2000)
        n.start()
        for wr in writers:
            assert wr.fail is None, wr.fail
            acked.update(wr.acked)
        assert len(acked) > 500, len(acked)
        check_equal(n, pg, w, acked_resources=acked)
        check_acked_loans(pg, borrowers)
        assert sum(len(b.loans) for b in borrowers) > 0


def test_writebehind_high_water_refuses_writes_then_recovers():
    """4. pg.high_water=1000: with PostgreSQL stopped, writes are refused with 503
    write-behind-backlog and Retry-After once the lag reaches it; reads go on; when PostgreSQL
    is back the backlog drains and writes succeed again."""
    with env("wb-highwater", high_water=1000) as (pg, n, _):
        w = World(n)
        members = mixed_workload(n, w, "hw")
        check_equal(n, pg, w)
        rid = w.resource(n, title="hw target", copies=5)["id"]
        check_equal(n, pg, w)

        pg.stop()
        stop = threading.Event()
        ws = [Writer(n, w, stop, "hw%d" % i) for i in range(6)]
        for t in ws:
            t.start()
        # each writer stops at its first 503; far past the mark without one is a failure
        wait_until(lambda: not any(t.is_alive() for t in ws) or
                   sum(len(t.acked) for t in ws) > 3000, 60, "the writers to be refused",
                   lambda: wbm(metrics(n)))
        stop.set()
        for t in ws:
            t.join(30)
            assert t.fail is None, t.fail
        assert all(t.refused for t in ws), "writes not refused %d commands past the mark: %s" \
            % (sum(len(t.acked) for t in ws), wbm(metrics(n)))
        m = metrics(n)
        refused = [x for t in ws for x in t.refused]
        assert refused, "no 503 although the lag reached %s" % wbm(m)
        for retry_after, body in refused:
            assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, \
                "503 without a usable Retry-After: %r" % retry_after
            assert body["type"].endswith("/problems/write-behind-backlog") and \
                body["status"] == 503, body
        assert m["circa_wb_lag_entries"] >= 1000, wbm(m)
        assert sum(len(t.acked) for t in ws) >= 1000 - 60, wbm(m)
        # every kind of write is refused now, anonymous registration included; no command
        a = w.write(n, members[0], "POST", "/v1/loans", {"resource_id": rid}, 503,
                    "write-behind-backlog")
        assert a.headers.get("Retry-After"), a
        w.write(n, None, "POST", "/v1/auth/register",
                {"email": "late@example.org", "password": "correct horse 1", "name": "x"}, 503,
                "write-behind-backlog")
        m = metrics(n)
        assert m["circa_wb_refused_writes_total"] == len(refused) + 2, \
            "refused %d, metric %s" % (len(refused) + 2, wbm(m))
        bad = failed_gets(n, w)
        assert not bad, "GETs failed at the high-water mark: %s" % bad[:5]

        pg.start()
        wait_synced(n, pg)
        w.write(n, members[0], "POST", "/v1/loans", {"resource_id": rid}, 201)
        w.resource(n, title="after the backlog")
        acked = {}
        for t in ws:
            acked.update(t.acked)
        check_equal(n, pg, w, acked_resources=acked)


def test_writebehind_restore_from_postgres():
    """5. circa restore --from-postgres rebuilds a data directory that answers every GET like
    the original (same tokens) and continues the same log; a non-empty directory is refused."""
    with env("wb-restore") as (pg, n, nodes):
        w = World(n)
        mixed_workload(n, w, "r1")
        mixed_workload(n, w, "r2")
        applied = check_equal(n, pg, w)
        before = broad_gets(n, w)
        assert n.stop() == 0

        # inside the first node's temp dir: removed after the restored node (env stops nodes
        # in reverse order)
        newdir = os.path.join(n.tmp, "restored")
        p = subprocess.run([harness.BIN, "restore", "--from-postgres", pg.dsn(),
                            "--data", newdir], capture_output=True, timeout=120)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        assert p.returncode == 0, "restore failed (%d): %s" % (p.returncode, out)
        assert pg.password not in out, "restore printed the password: %s" % out
        assert "1..%d" % applied in out, "restore did not say what it replays: %s" % out
        for t in ("users", "api_keys", "resources", "loans", "holds"):
            assert "verified %s" % t in out, "restore did not verify %s: %s" % (t, out)

        n2 = Node(name="wb-restored", data=newdir, config=pg_config(pg))
        nodes.append(n2)
        m = metrics(n2)
        assert m["circa_applied_index"] >= applied, wbm(m)
        after = broad_gets(n2, w)
        assert len(after) == len(before) > 50
        diffs = [(b[0], b[2], b[4][:300], a[2], a[4][:300]) for b, a in zip(before, after)
                 if b[:5] != a[:5]]
        assert not diffs, "the restored node answers differently (%d of %d GETs), e.g. " \
            "%s:\n  original %s %r\n  restored %s %r" % ((len(diffs), len(before)) + diffs[0])
        # it continues the same log, and PostgreSQL follows
        mixed_workload(n2, w, "r3")
        check_equal(n2, pg, w)

        # into a directory that is not empty: refused, nothing touched
        n2.stop()
        p = subprocess.run([harness.BIN, "restore", "--from-postgres", pg.dsn(),
                            "--data", newdir], capture_output=True, timeout=60)
        err = (p.stdout + p.stderr).decode("utf-8", "replace")
        assert p.returncode == 1, "restore into a used directory: exit %d: %s" \
            % (p.returncode, err)
        assert "not empty" in err, "unclear message: %r" % err
        assert pg.password not in err, err
        n2.start()
        check_equal(n2, pg, w)


def test_writebehind_migrate_and_secrets():
    """6. circa migrate is idempotent and records each file of schema/sql once; a wrong
    password fails clearly without printing it; no node log ever holds the password."""
    pg = new_pg()
    nodes = []
    try:
        files = sorted(f for f in os.listdir(SQL_DIR) if f.endswith(".sql"))
        assert files, SQL_DIR

        def migrate(dsn, env_dsn=False):
            e = {k: v for k, v in os.environ.items() if k != "CIRCA_PG_DSN"}
            args = [harness.BIN, "migrate"]
            if env_dsn:
                e["CIRCA_PG_DSN"] = dsn
            else:
                args += ["--pg", dsn]
            p = subprocess.run(args, capture_output=True, timeout=60, env=e)
            return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

        rc, out = migrate(pg.dsn())
        assert rc == 0, "first migrate: exit %d: %s" % (rc, out)
        for f in files:
            assert "applied migration %s" % f in out, out
        for dsn_from_env in (False, True):
            rc, out = migrate(pg.dsn(), env_dsn=dsn_from_env)
            assert rc == 0, "second migrate: exit %d: %s" % (rc, out)
            assert "applied migration" not in out, "second migrate applied again: %s" % out
        rows = pg.psql("SELECT version, name FROM circa_migrations ORDER BY version")
        assert [r[1] for r in rows] == files, "circa_migrations %s, schema/sql %s" % (rows, files)
        assert [int(r[0]) for r in rows] == [int(f.split("_")[0]) for f in files], rows
        assert pg.psql("SELECT flushed_index FROM flush_cursor") == [["0"]]

        wrong = "wrong-" + uuid.uuid4().hex
        bad_dsn = pg.dsn().replace(pg.password, wrong)
        rc, out = migrate(bad_dsn)
        assert rc == 1, "migrate with a wrong password: exit %d: %s" % (rc, out)
        assert "password authentication failed" in out, "unclear message: %r" % out
        assert wrong not in out and pg.password not in out, "the password is printed: %r" % out
        # the same through the URI form of a DSN
        uri = "postgresql://circa:%s@127.0.0.1:%d/circa" % (wrong, pg.port)
        rc, out = migrate(uri)
        assert rc == 1 and wrong not in out, (rc, out)
        assert "password authentication failed" in out, out

        # a DSN libpq cannot parse is refused up front, without echoing it (libpq's own
        # message would quote part of an unquoted password)
        fragment = "frag" + uuid.uuid4().hex[:8]
        rc, out = migrate("host=127.0.0.1 port=%d password=abc %s" % (pg.port, fragment))
        assert rc == 2 and "not a valid libpq connection string" in out, (rc, out)
        assert fragment not in out, "a piece of the password is printed: %r" % out

        # a node with a wrong password keeps serving and says why in its log, without it
        n = Node(name="wb-badpass", config={"pg": {"dsn": bad_dsn}})
        nodes.append(n)
        w = World(n)
        w.resource(n, title="no postgres for me")
        wait_until(lambda: metrics(n)["circa_wb_errors_total"] > 0, 15,
                   "a failed connection attempt", lambda: wbm(metrics(n)))
        m = metrics(n)
        assert m["circa_wb_connected"] == 0 and m["circa_wb_lag_entries"] > 0, wbm(m)
        assert "password authentication failed" in node_log(n), n.log_tail(10)
        # and a node with the right one, which also migrates (nothing to do)
        n2 = Node(name="wb-goodpass", config=pg_config(pg))
        nodes.append(n2)
        w2 = World(n2)
        mixed_workload(n2, w2, "secret")
        check_equal(n2, pg, w2)
        n2.stop()
        assert "applied a PostgreSQL migration" not in node_log(n2), n2.log_tail(10)
        assert len(pg.psql("SELECT 1 FROM circa_migrations")) == len(files)
        assert_no_password(nodes, pg.password, wrong)
    finally:
        for n in reversed(nodes):
            n.cleanup()
        pg.cleanup()


def test_writebehind_off_without_dsn():
    """7. Without a DSN the node says once that write-behind is off and reports it disabled;
    the outbox does not accumulate."""
    saved = os.environ.pop("CIRCA_PG_DSN", None)
    n = None
    try:
        n = Node(name="wb-off")
        w = World(n)
        mixed_workload(n, w, "off")
        for start in (1, 2):
            m = metrics(n)
            assert m["circa_wb_enabled"] == 0 and m["circa_wb_connected"] == 0, wbm(m)
            assert m["circa_wb_lag_entries"] == 0 and m["circa_wb_flushed_index"] == 0, wbm(m)
            assert m["circa_applied_index"] > 40, wbm(m)
            wait_until(lambda: metrics(n)["circa_wb_outbox_entries"] == 0, 10,
                       "an empty outbox", lambda: wbm(metrics(n)))
            segment = node_log(n).split("===== start #%d " % start)[1].split("===== start #")[0]
            k = segment.count("write-behind is off")
            assert k == 1, "start #%d logged 'write-behind is off' %d times:\n%s" \
                % (start, k, segment[:3000])
            if start == 1:
                n.restart()
                w.resource(n, title="after restart")
    finally:
        if saved is not None:
            os.environ["CIRCA_PG_DSN"] = saved
        if n:
            n.cleanup()


def test_writebehind_restart_while_postgres_down_is_not_a_backlog():
    """Regression: a node restarted while PostgreSQL is unreachable, with everything already
    flushed, must not count its whole history as unflushed (that refused every write at the
    high-water mark until PostgreSQL came back)."""
    with env("wb-restart-down", high_water=1000) as (pg, n, _):
        w = World(n)
        stop = threading.Event()
        ws = [Writer(n, w, stop, "rd%d" % i) for i in range(4)]
        for t in ws:
            t.start()
        wait_until(lambda: metrics(n)["circa_applied_index"] > 1100, 60,
                   "more than the high-water mark of commands", lambda: wbm(metrics(n)))
        stop.set()
        for t in ws:
            t.join(30)
            assert t.fail is None, t.fail
        applied = wait_synced(n, pg)
        n.stop()
        pg.stop()
        n.start()
        m = metrics(n)
        assert m["circa_wb_connected"] == 0, wbm(m)
        assert m["circa_wb_lag_entries"] < 10, "a flushed history counted as lag: %s" % wbm(m)
        w.resource(n, title="written while PostgreSQL is down after a restart")
        pg.start()
        assert wait_synced(n, pg) > applied


def test_writebehind_sigterm_with_postgres_stalled():
    """A PostgreSQL that accepts connections but never answers (SIGSTOP) delays SIGTERM by a
    few seconds at most, and what it did not get stays in the outbox for the next start."""
    with env("wb-stalled") as (pg, n, _):
        w = World(n)
        w.resource(n, title="before the stall")
        wait_synced(n, pg)
        pg.pause()
        try:
            w.resource(n, title="during the stall")
            time.sleep(0.3)  # the flusher is now waiting on the paused server
            t0 = time.monotonic()
            rc = n.stop(timeout=15)
            took = time.monotonic() - t0
            assert rc == 0, "exit %r after SIGTERM" % rc
            assert took < 9, "SIGTERM took %.1fs with PostgreSQL stalled" % took
        finally:
            pg.resume()
        n.start()
        wait_synced(n, pg)
        titles = [r[0] for r in pg.psql("SELECT title FROM resources")]
        assert "during the stall" in titles, titles
