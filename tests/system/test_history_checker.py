"""Self-tests of the history checker (history.py).  They start no server.

First on hand-written histories (a correct one passes; a lost ok write, a failed write that took
effect, a double-lent copy and differing digests each fail, with the right check named), then
end to end through the Workload against an in-process fake loan service that injects faults
(refused connections, 503 no-leader, answers lost after applying, 503 outcome-unknown, 500):
the honest fake passes, fakes with a bug are caught.
"""

import copy
import datetime
import hashlib
import json
import random
import threading
import uuid

import history
from history import Attempt, NotSent, Op, check, classify, resolve

T0 = 1_800_000_000          # wall clock of t=0 in the hand-written histories
A, B = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
R1, R2 = "11111111-0000-4000-8000-000000000001", "22222222-0000-4000-8000-000000000002"
L = {i: "%08d-0000-4000-8000-0000000000%02d" % (i, i) for i in range(1, 10)}


def iso(t):
    return datetime.datetime.fromtimestamp(T0 + t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def loan(lid, user, res, copy_, out, ret=None, renewals=0):
    return {"id": lid, "user_id": user, "resource_id": res, "copy": copy_,
            "status": "returned" if ret is not None else "active",
            "checked_out_at": iso(out), "due_at": iso(out + 21 * 86400),
            "returned_at": iso(ret) if ret is not None else None, "renewals": renewals}


def problem(kind, status):
    return {"type": "/problems/" + kind, "title": kind, "status": status, "detail": kind}


def mkop(idx, kind, user, t, attempts, res=None, lid=None, client=0):
    """attempts: list of (status, body) or an exception; each takes 0.2 s."""
    op = Op(idx, client, kind, user, resource_id=res, loan_id=lid, key="k%d" % idx,
            invoke=t, invoke_wall=T0 + t)
    at = t
    for a in attempts:
        if isinstance(a, Exception):
            op.attempts.append(Attempt("n%d" % (len(op.attempts) % 3 + 1), at, at + 0.2, error=a))
        else:
            op.attempts.append(Attempt("n%d" % (len(op.attempts) % 3 + 1), at, at + 0.2,
                                       status=a[0], problem=history.problem_kind(a[1]), body=a[1]))
        at += 0.2
    return op.finish(complete=at, complete_wall=T0 + at)


def scenario(l4_copy=2, l3_returned=True, op4_t=21):
    """A correct history of two members on R1 (1 copy) and R2 (2 copies), the nodes' final
    states and digests.  Returns (ops, states, digests, resources)."""
    l1 = loan(L[1], A, R1, 1, 10, 20)
    l2 = loan(L[2], B, R1, 1, 20)                        # touches L1: allowed
    l3 = loan(L[3], A, R2, 1, 21, 25 if l3_returned else None)   # made by an unknown checkout
    l4 = loan(L[4], B, R2, l4_copy, 27)
    ops = [
        mkop(0, "checkout", A, 10, [(201, l1)], res=R1),
        mkop(1, "checkout", B, 11, [(409, problem("no-copy-available", 409))], res=R1),
        mkop(2, "return", A, 20, [(200, loan(L[1], A, R1, 1, 10, 20))], lid=L[1]),
        mkop(3, "checkout", B, 20, [(201, l2)], res=R1),
        mkop(4, "checkout", A, op4_t, [TimeoutError("timed out")] * 3, res=R2),
        mkop(5, "checkout", B, 22, [ConnectionResetError("reset"), (503, problem("no-leader", 503))],
             res=R2),
        mkop(6, "return", A, 25, [TimeoutError("timed out"), (503, problem("no-leader", 503))],
             lid=L[3]),
        mkop(7, "return", B, 26, [(503, problem("no-leader", 503))], lid=L[2]),
        mkop(8, "checkout", B, 27, [(500, problem("internal", 500)), (201, l4)], res=R2),
        mkop(9, "checkout", A, 30, [NotSent("refused"), (403, problem("loan-limit-reached", 403))],
             res=R2),
    ]
    state = [l1, l2, l3, l4]
    states = {n: copy.deepcopy(state) for n in ("n1", "n2", "n3")}
    digests = {n: {"applied_index": 42, "digest": "ab" * 32} for n in states}
    return ops, states, digests, {R1: 1, R2: 2}


def checks_of(rep):
    return set(rep.by_check())


# ---------------------------------------------------------------- classification

def test_classify_answers():
    assert classify(200, {}) == "ok" and classify(201, {}) == "ok"
    for st, kind in ((400, "validation"), (404, "not-found"), (409, "no-copy-available"),
                     (403, "member-blocked"), (429, "rate-limited"), (422, "validation")):
        assert classify(st, problem(kind, st)) == "fail", (st, kind)
    for kind in ("no-leader", "unavailable", "write-behind-backlog"):
        assert classify(503, problem(kind, 503)) == "fail", kind
    assert classify(503, problem("outcome-unknown", 503)) == "unknown"
    assert classify(503, "plain text") == "unknown"
    assert classify(500, problem("internal", 500)) == "unknown"
    assert classify(502, "") == "unknown"
    assert classify(error=TimeoutError("timed out")) == "unknown"
    assert classify(error=ConnectionResetError("reset")) == "unknown"
    assert classify(error=NotSent("refused")) == "fail"


def test_resolve_operations():
    def at(*xs):
        out = []
        for x in xs:
            if isinstance(x, Exception):
                out.append(Attempt("n1", 0, 1, error=x))
            else:
                out.append(Attempt("n1", 0, 1, status=x[0], problem=x[1],
                                   body=problem(x[1], x[0]) if x[1] else {}))
        return out
    unk, nl = TimeoutError("t"), (503, "no-leader")
    assert resolve(at(unk, (201, None)))[0] == "ok"
    assert resolve(at(unk, nl))[0] == "unknown"
    assert resolve(at(nl, nl))[0] == "fail"
    assert resolve(at(nl, (409, "no-copy-available")))[0] == "fail"
    assert resolve(at(unk, (409, "conflict")))[0] == "fail"      # apply's answer under the key
    assert resolve(at(unk, (429, "rate-limited")))[0] == "unknown"  # HTTP layer: says nothing
    assert resolve(at(NotSent("refused"), nl))[0] == "fail"
    assert resolve(at((503, "outcome-unknown"), (500, "internal")))[0] == "unknown"
    assert resolve([])[0] == "fail"


# ---------------------------------------------------------------- hand-written histories

def test_correct_history_passes():
    ops, states, digests, res = scenario()
    # op#5: a reset after sending is unknown, the later no-leader does not resolve it
    assert [o.outcome for o in ops] == ["ok", "fail", "ok", "ok", "unknown", "unknown", "unknown",
                                        "fail", "ok", "fail"], [o.outcome for o in ops]
    rep = check(ops, states, digests, res)
    assert rep.ok, str(rep)
    assert "PASSED" in str(rep) and "ok 4" in str(rep), str(rep)
    rep.assert_ok()
    # the unknown return may also not have landed, the unknown checkout may not have either
    ops, states, digests, res = scenario(l3_returned=False)
    assert check(ops, states, digests, res).ok
    for n in states:
        states[n] = [l for l in states[n] if l["id"] != L[3]]
    assert check(ops, states, digests, res).ok


def test_lost_ok_write_fails():
    ops, states, digests, res = scenario()
    states["n2"] = [l for l in states["n2"] if l["id"] != L[4]]
    rep = check(ops, states, digests, res)
    assert not rep.ok and "ok-write-lost" in checks_of(rep), str(rep)
    text = str(rep)
    assert "n2" in text and L[4] in text and "op#8" in text, text
    try:
        rep.assert_ok()
        raise RuntimeError("assert_ok passed a failed report")
    except AssertionError as e:
        assert "ok-write-lost" in str(e)
    # an ok return whose loan is still active on one node
    ops, states, digests, res = scenario()
    for l in states["n3"]:
        if l["id"] == L[1]:
            l.update(status="active", returned_at=None)
    rep = check(ops, states, digests, res)
    assert "ok-write-lost" in checks_of(rep) and "op#2" in str(rep), str(rep)
    # an ok answer that differs from what the nodes have (another copy)
    ops, states, digests, res = scenario()
    for n in states:
        for l in states[n]:
            if l["id"] == L[2]:
                l["copy"] = 2
    assert "ok-write-lost" in checks_of(check(ops, states, digests, {R1: 2, R2: 2}))


def test_failed_write_that_took_effect_fails():
    # the checkout answered 403 (op#9) made a loan anyway
    ops, states, digests, res = scenario()
    for n in states:
        states[n].append(loan(L[6], A, R2, 1, 30))
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"failed-write"}, str(rep)
    assert L[6] in str(rep) and "op#9" in str(rep), str(rep)
    # the return answered 503 no-leader (op#7) returned the loan anyway
    ops, states, digests, res = scenario()
    for n in states:
        for l in states[n]:
            if l["id"] == L[2]:
                l.update(status="returned", returned_at=iso(26))
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"failed-write"}, str(rep)
    assert "op#7" in str(rep), str(rep)
    # an unknown checkout invoked after the loan's time cannot have made it
    ops, states, digests, res = scenario(op4_t=40)
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"failed-write"}, str(rep)


def test_double_lent_copy_fails():
    ops, states, digests, res = scenario(l4_copy=1, l3_returned=False)
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"double-lend"}, str(rep)
    text = str(rep)
    assert "lent twice" in text and "open loans" in text and L[3] in text and L[4] in text, text
    # overlapping returned intervals, no open loan left
    ops, states, digests, res = scenario()
    for n in states:
        states[n].append(loan(L[7], B, R1, 1, 12, 15))      # inside L1 [10, 20)
    ops.append(mkop(10, "checkout", B, 12, [TimeoutError("t")], res=R1))
    ops.append(mkop(11, "return", B, 15, [TimeoutError("t")], lid=L[7]))
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"double-lend"}, str(rep)
    # touching timestamps, but the clients saw both loans out at once: caught by real time
    c, r = {R1: 1}, []
    l1, l2 = loan(L[1], A, R1, 1, 100, 100), loan(L[2], B, R1, 1, 100, 101)
    ops = [mkop(0, "checkout", A, 100, [(201, loan(L[1], A, R1, 1, 100))], res=R1),       # ends 100.2
           mkop(1, "checkout", B, 100.3, [(201, loan(L[2], B, R1, 1, 100))], res=R1),     # ends 100.5
           mkop(2, "return", A, 100.6, [(200, l1)], lid=L[1]),
           mkop(3, "return", B, 101, [(200, l2)], lid=L[2])]
    states = {"n1": [l1, l2], "n2": [dict(l1), dict(l2)]}
    rep = check(ops, states, None, c)
    assert checks_of(rep) == {"double-lend"} and "client clocks" in str(rep), str(rep)
    assert "op#1" in str(rep) and "op#2" in str(rep) and "all nodes" in str(rep), str(rep)
    ops[1] = mkop(1, "checkout", B, 100.7, [(201, loan(L[2], B, R1, 1, 100))], res=R1)   # after: fine
    assert check(ops, states, None, c).ok
    # a copy number beyond the resource's copies
    ops, states, digests, res = scenario()
    rep = check(ops, states, digests, {R1: 1, R2: 1})
    assert checks_of(rep) == {"double-lend"} and "copies 1..1" in str(rep), str(rep)


def test_differing_digests_fail():
    ops, states, digests, res = scenario()
    digests["n3"]["digest"] = "cd" * 32
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"divergence"} and "n3" in str(rep), str(rep)
    ops, states, digests, res = scenario()
    digests["n2"]["applied_index"] = 41
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"divergence"} and "n2@41" in str(rep), str(rep)
    ops, states, digests, res = scenario()
    digests["n1"] = {"error": "TimeoutError: timed out"}
    assert checks_of(check(ops, states, digests, res)) == {"divergence"}
    ops, states, digests, res = scenario()
    del digests["n1"]
    assert checks_of(check(ops, states, digests, res)) == {"divergence"}
    # nodes that disagree on a loan (same digests reported) are caught loan by loan
    ops, states, digests, res = scenario()
    states["n2"][1]["renewals"] = 1
    rep = check(ops, states, digests, res)
    assert checks_of(rep) == {"divergence"} and L[2] in str(rep), str(rep)


def test_read_errors_fail():
    ops, states, digests, res = scenario()
    rep = check(ops, states, digests, res, read_errors=["n2: GET /v1/users/x/loans -> 503"])
    assert checks_of(rep) == {"read-error"}, str(rep)
    assert not check(ops, {}, {}, res).ok


# ---------------------------------------------------------------- end to end, in-process fake

class FakeService:
    """A linearizable toy loan service with Idempotency-Key replay, shared by FakeNodes.
    bug: None, "ack-without-apply", "double-lend", "no-idempotency"."""

    def __init__(self, bug=None):
        self.lock = threading.Lock()
        self.bug = bug
        self.resources, self.users, self.tokens, self.emails = {}, {}, {}, {}
        self.loans, self.idem = {}, {}
        self.applied = 0
        self.rng = random.Random(7)

    @staticmethod
    def now():
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def write(self, uid, key, fn):
        with self.lock:
            if key and (uid, key) in self.idem and self.bug != "no-idempotency":
                return copy.deepcopy(self.idem[(uid, key)])
            self.applied += 1
            ans = fn()
            if key:
                self.idem[(uid, key)] = copy.deepcopy(ans)
            return ans

    def checkout(self, uid, rid):
        if rid not in self.resources:
            return 404, problem("not-found", 404)
        if any(l["user_id"] == uid and l["resource_id"] == rid and l["returned_at"] is None
               for l in self.loans.values()):
            return 409, problem("conflict", 409)
        busy = {l["copy"] for l in self.loans.values()
                if l["resource_id"] == rid and l["returned_at"] is None}
        free = [c for c in range(1, self.resources[rid] + 1) if c not in busy]
        if self.bug == "double-lend":
            free = [self.rng.randint(1, self.resources[rid])]
        if not free:
            return 409, problem("no-copy-available", 409)
        now = self.now()
        l = {"id": str(uuid.uuid4()), "user_id": uid, "resource_id": rid, "copy": free[0],
             "status": "active", "checked_out_at": now, "due_at": now, "returned_at": None,
             "renewals": 0}
        if not (self.bug == "ack-without-apply" and self.rng.random() < 0.2):
            self.loans[l["id"]] = l
        return 201, copy.deepcopy(l)

    def ret(self, uid, lid):
        l = self.loans.get(lid)
        if l is None or l["user_id"] != uid:
            return 404, problem("not-found", 404)
        if l["returned_at"] is not None:
            return 409, problem("conflict", 409)
        l.update(status="returned", returned_at=self.now())
        return 200, copy.deepcopy(l)

    def digest(self):
        return hashlib.sha256(json.dumps(sorted(self.loans.items()), sort_keys=True).encode()).hexdigest()


class FakeNode:
    """One 'node' of the fake: answers through fake_transport, injecting faults on writes.
    hide: loans this node's reads leave out (a lost write on one replica)."""

    def __init__(self, name, svc, faults=0.25, hide=None):
        self.name, self.svc, self.faults, self.hide = name, svc, faults, hide
        self.rng = random.Random(name)
        self.port = None

    def handle(self, method, path, body, token, key):
        svc = self.svc
        uid = svc.tokens.get(token)
        path, _, _ = path.partition("?")
        if method == "POST" and path == "/v1/resources":
            rid = str(uuid.uuid4())
            with svc.lock:
                svc.resources[rid] = body["copies"]
            return 201, {"id": rid, "copies": body["copies"]}
        if method == "POST" and path == "/v1/auth/register":
            u = str(uuid.uuid4())
            with svc.lock:
                svc.users[u] = body["email"]
                svc.emails[body["email"]] = u
            return 201, {"id": u, "email": body["email"]}
        if method == "POST" and path == "/v1/auth/login":
            u = svc.emails[body["email"]]
            tok = "tok-" + u
            svc.tokens[tok] = u
            return 200, {"access_token": tok}
        if method == "GET" and path == "/v1/me/loans":
            with svc.lock:
                return 200, {"items": [copy.deepcopy(l) for l in svc.loans.values()
                                       if l["user_id"] == uid and l["returned_at"] is None]}
        if method == "GET" and path.startswith("/v1/users/"):
            u = path.split("/")[3]
            with svc.lock:
                return 200, {"items": [copy.deepcopy(l) for l in svc.loans.values()
                                       if l["user_id"] == u and not (self.hide and self.hide(l))]}
        if method == "GET" and path == "/v1/cluster/digest":
            with svc.lock:
                d = svc.digest()
                if self.hide:
                    d = hashlib.sha256((d + self.name).encode()).hexdigest()
                return 200, {"applied_index": svc.applied, "digest": d}
        if method == "POST" and (path == "/v1/loans" or path.endswith("/return")):
            fault = self.rng.random() < self.faults and self.rng.choice(
                ["refused", "no-leader", "drop", "lost", "outcome-unknown", "500"])
            if fault == "refused":
                raise NotSent("ConnectionRefusedError: [Errno 111] Connection refused")
            if fault == "no-leader":
                return 503, problem("no-leader", 503)
            if fault == "drop":
                raise TimeoutError("timed out")
            if path == "/v1/loans":
                ans = svc.write(uid, key, lambda: svc.checkout(uid, body["resource_id"]))
            else:
                ans = svc.write(uid, key, lambda: svc.ret(uid, path.split("/")[3]))
            if fault == "lost":
                raise TimeoutError("timed out")
            if fault == "outcome-unknown":
                return 503, problem("outcome-unknown", 503)
            if fault == "500":
                return 500, problem("internal", 500)
            return ans
        return 404, problem("not-found", 404)


def fake_transport(node, method, path, body=None, token=None, key=None, timeout=None):
    st, b = node.handle(method, path, body, token, key)
    h = {"Retry-After": "1"} if st == 503 else {}
    return st, h, b


def run_fake(bug=None, hide=None, seconds=0.6, max_attempts=3):
    svc = FakeService(bug)
    nodes = [FakeNode("n1", svc), FakeNode("n2", svc, hide=hide), FakeNode("n3", svc)]
    wl = history.Workload(lambda: nodes, "lib-token", clients=5, resources=3, copies=2, seed=11,
                          max_attempts=max_attempts, max_backoff=0.002, think=(0, 0.002),
                          transport=fake_transport, name="fake")
    wl.setup()
    wl.run_for(seconds)
    rep = history.verify(wl, nodes, "admin-token")
    return wl, rep


def test_workload_against_honest_fake_passes():
    wl, rep = run_fake()
    assert rep.ok, str(rep) + "\n" + wl.summary()
    ops = wl.snapshot()
    assert len(ops) > 100, wl.summary()
    outcomes = {o.outcome for o in ops}
    assert outcomes == {"ok", "fail", "unknown"}, wl.summary()
    # retries resolved unknown attempts (same key, another node)
    resolved = [o for o in ops if o.outcome in ("ok", "fail") and
                any(a.cls == "unknown" for a in o.attempts)]
    assert resolved, wl.summary()
    for o in resolved:
        assert len({a.node for a in o.attempts[:2]}) == 2, str(o)   # retried on another node
    assert all(len(o.attempts) <= 3 for o in ops)
    assert len({o.key for o in ops}) == len(ops)
    assert sum(1 for o in ops if o.kind == "return" and o.outcome == "ok") > 10, wl.summary()
    assert wl.first_ok_after(ops[0].invoke) is not None


def test_workload_catches_ack_without_apply():
    wl, rep = run_fake(bug="ack-without-apply")
    assert "ok-write-lost" in checks_of(rep), str(rep)


def test_workload_catches_double_lend():
    wl, rep = run_fake(bug="double-lend")
    assert "double-lend" in checks_of(rep), str(rep)


def test_workload_catches_broken_idempotency():
    wl, rep = run_fake(bug="no-idempotency")
    assert "failed-write" in checks_of(rep), str(rep)


def test_workload_catches_lost_write_on_one_node():
    wl, rep = run_fake(hide=lambda l: l["id"].endswith(("0", "1", "2")))
    assert {"ok-write-lost", "divergence"} <= checks_of(rep), str(rep)
    assert "n2" in str(rep)


def test_describe_times():
    assert history.describe_times([]) == "no samples"
    assert history.describe_times([1.0, 3.0, 2.0]) == "min 1.00s median 2.00s max 3.00s (n=3)"
