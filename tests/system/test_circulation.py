"""Circulation: loans, returns, renewals, limits, premium, blocking, holds, access grants."""

import datetime
import urllib.parse

from harness import Lazy, expect, is_uuid, parse_time, uid

DAY = datetime.timedelta(days=1)
# loan limit 2 (premium 3) for this module's node; every test uses fresh members
node = Lazy(name="circulation", config={"policy": {"max_loans": 2, "max_loans_premium": 3}})


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _res(n, **kw):
    return n.create_resource(n.librarian(), **kw)


def _checkout(n, tok, rid, status=201, problem=None, **extra):
    body = dict(resource_id=rid, **extra)
    return expect(n.request("POST", "/v1/loans", body, token=tok), status, problem)


def _hold(n, tok, rid, status=201, problem=None):
    return expect(n.request("POST", "/v1/holds", {"resource_id": rid}, token=tok), status, problem)


def _my_holds(n, tok):
    b = expect(n.request("GET", "/v1/me/holds", token=tok), 200)
    return {h["id"]: h for h in b["items"]}


def _available(n, rid):
    return n.get_resource(rid, n.librarian())["available"]


def test_checkout_fields():
    n = node()
    res = _res(n, copies=2)
    u, tok = n.member()
    t0 = _now().replace(microsecond=0)
    loan = _checkout(n, tok, res["id"])
    t1 = _now()
    assert is_uuid(loan["id"]), loan
    assert loan["user_id"] == u["id"] and loan["resource_id"] == res["id"], loan
    assert loan["status"] == "active" and loan["returned_at"] is None and loan["renewals"] == 0, loan
    assert loan["copy"] in (1, 2), loan
    out, due = parse_time(loan["checked_out_at"]), parse_time(loan["due_at"])
    assert t0 - datetime.timedelta(seconds=2) <= out <= t1 + datetime.timedelta(seconds=2), (out, t0, t1)
    assert due - out == 21 * DAY, "due_at - checked_out_at = %s" % (due - out)
    assert _available(n, res["id"]) == 1
    # the same member cannot hold two active loans of the same resource
    _checkout(n, tok, res["id"], 409, "conflict")
    assert _available(n, res["id"]) == 1
    mine = expect(n.request("GET", "/v1/me/loans", token=tok), 200)["items"]
    assert [l["id"] for l in mine] == [loan["id"]], mine


def test_checkout_errors():
    n = node()
    u, tok = n.member()
    v, vtok = n.member()
    res = _res(n)
    _checkout(n, tok, uid(), 404, "not-found")
    # member may not borrow for someone else
    _checkout(n, tok, res["id"], 403, "forbidden", user_id=v["id"])
    # but may name themselves
    loan = _checkout(n, tok, res["id"], user_id=u["id"])
    assert loan["user_id"] == u["id"]
    # librarian borrows on behalf of a member; unknown user -> 404
    res2 = _res(n)
    lib = n.librarian()
    loan2 = _checkout(n, lib, res2["id"], user_id=v["id"])
    assert loan2["user_id"] == v["id"], loan2
    assert loan2["id"] in {l["id"] for l in expect(n.request("GET", "/v1/me/loans", token=vtok), 200)["items"]}
    _checkout(n, lib, _res(n)["id"], 404, "not-found", user_id=uid())
    # validation
    expect(n.request("POST", "/v1/loans", {}, token=tok), 422, "validation", "resource_id")
    expect(n.request("POST", "/v1/loans", {"resource_id": res["id"], "x": 1}, token=tok), 400, "validation", "x")


def test_no_copy_available():
    n = node()
    res = _res(n, copies=1)
    _, a = n.member()
    _, b = n.member()
    _checkout(n, a, res["id"])
    _checkout(n, b, res["id"], 409, "no-copy-available")
    assert _available(n, res["id"]) == 0
    zero = _res(n, copies=0)
    _checkout(n, b, zero["id"], 409, "no-copy-available")


def test_return_and_return_twice():
    n = node()
    res = _res(n, copies=1)
    _, tok = n.member()
    loan = _checkout(n, tok, res["id"])
    r = expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok), 200)
    assert r["id"] == loan["id"] and r["status"] == "returned", r
    assert parse_time(r["returned_at"]) >= parse_time(loan["checked_out_at"]), r
    assert _available(n, res["id"]) == 1
    expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok), 409, "conflict")
    assert _available(n, res["id"]) == 1
    expect(n.request("POST", "/v1/loans/%s/return" % uid(), token=tok), 404, "not-found")
    # the copy can be borrowed again (by someone else too)
    _, other = n.member()
    _checkout(n, other, res["id"])


def test_renew_until_limit():
    n = node()
    res = _res(n)
    _, tok = n.member()
    loan = _checkout(n, tok, res["id"])
    prev = parse_time(loan["due_at"])
    for i in (1, 2):
        t = _now().replace(microsecond=0)
        r = expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=tok), 200)
        assert r["renewals"] == i and r["status"] == "active", r
        due = parse_time(r["due_at"])
        assert due >= prev, (due, prev)
        assert abs((due - (t + 21 * DAY)).total_seconds()) <= 5, "due_at %s not ~now+21d" % due
        prev = due
    r = n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=tok)
    expect(r, 409, "renewal-refused")
    mine = expect(n.request("GET", "/v1/me/loans", token=tok), 200)["items"]
    assert [l["renewals"] for l in mine if l["id"] == loan["id"]] == [2], mine
    # a returned loan cannot be renewed
    expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok), 200)
    expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=tok), 409, "renewal-refused")


def test_renew_refused_while_hold_waits():
    n = node()
    res = _res(n, copies=1)
    _, a = n.member()
    _, b = n.member()
    loan = _checkout(n, a, res["id"])
    expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=a), 200)
    h = _hold(n, b, res["id"])
    expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=a), 409, "renewal-refused")
    # cancelling the hold allows renewal again
    expect(n.request("DELETE", "/v1/holds/" + h["id"], token=b), 200)
    r = expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=a), 200)
    assert r["renewals"] == 2, r


def test_loan_limit():
    n = node()
    _, tok = n.member()
    rs = [_res(n) for _ in range(4)]
    _checkout(n, tok, rs[0]["id"])
    l2 = _checkout(n, tok, rs[1]["id"])
    _checkout(n, tok, rs[2]["id"], 403, "loan-limit-reached")
    assert _available(n, rs[2]["id"]) == 1
    # returning one frees a slot
    expect(n.request("POST", "/v1/loans/%s/return" % l2["id"], token=tok), 200)
    _checkout(n, tok, rs[2]["id"])
    # premium members have the higher limit (3 here)
    u, ptok = n.member()
    expect(n.request("PATCH", "/v1/users/" + u["id"], {"plan": "premium"}, token=n.admin()), 200)
    prs = [_res(n) for _ in range(4)]
    for r in prs[:3]:
        _checkout(n, ptok, r["id"])
    _checkout(n, ptok, prs[3]["id"], 403, "loan-limit-reached")


def test_premium_required():
    n = node()
    res = _res(n, premium=True, copies=2)
    u, tok = n.member()
    _checkout(n, tok, res["id"], 403, "premium-required")
    assert _available(n, res["id"]) == 2
    # a librarian cannot upgrade plans; an admin can, and it applies to the existing token at once
    expect(n.request("PATCH", "/v1/users/" + u["id"], {"plan": "premium"}, token=n.librarian()), 403, "forbidden")
    b = expect(n.request("PATCH", "/v1/users/" + u["id"], {"plan": "premium"}, token=n.admin()), 200)
    assert b["plan"] == "premium", b
    assert expect(n.request("GET", "/v1/me", token=tok), 200)["plan"] == "premium"
    loan = _checkout(n, tok, res["id"])
    g = expect(n.request("GET", "/v1/resources/%s/access" % res["id"], token=tok), 200)
    assert g["url"]
    # downgrade: the grant for a premium resource is refused
    expect(n.request("PATCH", "/v1/users/" + u["id"], {"plan": "standard"}, token=n.admin()), 200)
    expect(n.request("GET", "/v1/resources/%s/access" % res["id"], token=tok), 403, "premium-required")
    assert loan["status"] == "active"


def test_blocked_member():
    # a blocked member's tokens stop working at once (even though verified
    # tokens are cached); librarians can still return the member's loans
    n = node()
    res = _res(n, copies=1)
    res2 = _res(n)
    u, tok = n.member()
    loan = _checkout(n, tok, res["id"])
    expect(n.request("GET", "/v1/me", token=tok), 200)  # the token is now cached
    lib = n.librarian()
    b = expect(n.request("PATCH", "/v1/users/" + u["id"], {"status": "blocked"}, token=lib), 200)
    assert b["status"] == "blocked", b
    expect(n.request("GET", "/v1/me", token=tok), 403, "member-blocked")
    expect(n.request("GET", "/v1/me/loans", token=tok), 403, "member-blocked")
    _checkout(n, tok, res2["id"], 403, "member-blocked")
    expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=tok), 403, "member-blocked")
    expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok), 403, "member-blocked")
    expect(n.request("GET", "/v1/resources/%s/access" % res["id"], token=tok), 403, "member-blocked")
    # staff acting for the blocked member: no borrowing, no holds, but returns work
    expect(n.request("POST", "/v1/loans", {"resource_id": res2["id"], "user_id": u["id"]}, token=lib),
           403, "member-blocked")
    expect(n.request("POST", "/v1/holds", {"resource_id": res["id"], "user_id": u["id"]}, token=lib),
           403, "member-blocked")
    expect(n.request("POST", "/v1/loans/%s/renew" % loan["id"], token=lib), 403, "member-blocked")
    expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=lib), 200)
    # unblock: the same token works again
    expect(n.request("PATCH", "/v1/users/" + u["id"], {"status": "active"}, token=lib), 200)
    expect(n.request("GET", "/v1/me", token=tok), 200)
    _checkout(n, tok, res["id"])


def test_holds_queue():
    n = node()
    res = _res(n, copies=1)
    rid = res["id"]
    _, a = n.member()
    ub, b = n.member()
    uc, c = n.member()
    la = _checkout(n, a, rid)
    hb = _hold(n, b, rid)
    hc = _hold(n, c, rid)
    assert is_uuid(hb["id"]) and hb["user_id"] == ub["id"] and hb["resource_id"] == rid, hb
    assert (hb["status"], hb["position"], hb["ready_until"]) == ("waiting", 1, None), hb
    assert (hc["status"], hc["position"]) == ("waiting", 2), hc
    parse_time(hb["created_at"])
    # duplicate hold -> 409
    _hold(n, b, rid, 409, "conflict")
    # holder of the active loan cannot hold -> 409
    _hold(n, a, rid, 409, "conflict")
    ret = expect(n.request("POST", "/v1/loans/%s/return" % la["id"], token=a), 200)
    hb2 = _my_holds(n, b)[hb["id"]]
    assert hb2["status"] == "ready" and hb2["position"] == 0, hb2
    ru = parse_time(hb2["ready_until"])
    assert abs((ru - (parse_time(ret["returned_at"]) + 3 * DAY)).total_seconds()) <= 5, \
        "ready_until %s not returned_at+3d" % hb2["ready_until"]
    hc2 = _my_holds(n, c)[hc["id"]]
    assert (hc2["status"], hc2["position"]) == ("waiting", 1), hc2
    assert _available(n, rid) == 0, "copy reserved for the ready hold must not be available"
    # C cannot take B's reserved copy; A cannot either
    _checkout(n, c, rid, 409, "no-copy-available")
    _checkout(n, a, rid, 409, "no-copy-available")
    lb = _checkout(n, b, rid)
    assert lb["copy"] == la["copy"], (lb, la)
    assert _my_holds(n, b)[hb["id"]]["status"] == "fulfilled"
    # cancel C's hold
    r = expect(n.request("DELETE", "/v1/holds/" + hc["id"], token=c), 200)
    assert r["status"] == "cancelled" and r["id"] == hc["id"], r
    assert _my_holds(n, c).get(hc["id"], {"status": "cancelled"})["status"] == "cancelled"
    # B returns: nobody waits, so the copy becomes available
    expect(n.request("POST", "/v1/loans/%s/return" % lb["id"], token=b), 200)
    assert _available(n, rid) == 1


def test_cancel_ready_hold_passes_on():
    n = node()
    rid = _res(n, copies=1)["id"]
    _, a = n.member()
    _, b = n.member()
    _, c = n.member()
    la = _checkout(n, a, rid)
    hb = _hold(n, b, rid)
    hc = _hold(n, c, rid)
    expect(n.request("POST", "/v1/loans/%s/return" % la["id"], token=a), 200)
    assert _my_holds(n, b)[hb["id"]]["status"] == "ready"
    # another member cannot cancel B's hold
    expect(n.request("DELETE", "/v1/holds/" + hb["id"], token=c), 404, "not-found")
    r = expect(n.request("DELETE", "/v1/holds/" + hb["id"], token=b), 200)
    assert r["status"] == "cancelled", r
    hc2 = _my_holds(n, c)[hc["id"]]
    assert hc2["status"] == "ready" and hc2["ready_until"] is not None, hc2
    assert _available(n, rid) == 0
    expect(n.request("DELETE", "/v1/holds/" + hc["id"], token=c), 200)
    assert _available(n, rid) == 1
    expect(n.request("DELETE", "/v1/holds/" + uid(), token=c), 404, "not-found")


def test_hold_when_available_409():
    n = node()
    rid = _res(n, copies=2)["id"]
    _, a = n.member()
    _, b = n.member()
    _hold(n, a, rid, 409, "conflict")
    _checkout(n, a, rid)
    _hold(n, b, rid, 409, "conflict")
    _hold(n, b, uid(), 404, "not-found")
    assert _my_holds(n, b) == {}


def test_access_grant():
    n = node()
    rid = _res(n, copies=1)["id"]
    u, tok = n.member()
    expect(n.request("GET", "/v1/resources/%s/access" % rid, token=tok), 403, "forbidden")
    loan = _checkout(n, tok, rid)
    t0 = _now()
    g = expect(n.request("GET", "/v1/resources/%s/access" % rid, token=tok), 200)
    exp = parse_time(g["expires_at"])
    assert 200 <= (exp - t0).total_seconds() <= 310, "grant ttl %s" % (exp - t0)
    assert g["url"].startswith(n.base + "/v1/content/" + rid + "?"), g["url"]
    url = urllib.parse.urlsplit(g["url"])
    q = urllib.parse.parse_qs(url.query)
    assert q["user"] == [u["id"]], q
    assert q["exp"] == [str(int(exp.timestamp()))], (q["exp"], g["expires_at"])
    path = url.path + "?" + url.query
    c = expect(n.request("GET", path), 200)  # no auth header: the signature is the credential
    assert c["resource_id"] == rid and c["user_id"] == u["id"], c
    sig = q["sig"][0]
    bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    for qq in (dict(user=u["id"], exp=q["exp"][0], sig=bad),
               dict(user=uid(), exp=q["exp"][0], sig=sig),
               dict(user=u["id"], exp=str(int(q["exp"][0]) + 1000), sig=sig),
               dict(user=u["id"], exp=q["exp"][0])):
        expect(n.request("GET", url.path + "?" + urllib.parse.urlencode(qq)), 403, "forbidden")
    other = _res(n)["id"]
    expect(n.request("GET", "/v1/content/%s?%s" % (other, url.query)), 403, "forbidden")
    # after returning, no new grant
    expect(n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok), 200)
    expect(n.request("GET", "/v1/resources/%s/access" % rid, token=tok), 403, "forbidden")


def test_me_loans_status_filter():
    n = node()
    _, tok = n.member()
    r1, r2 = _res(n)["id"], _res(n)["id"]
    l1 = _checkout(n, tok, r1)
    l2 = _checkout(n, tok, r2)
    expect(n.request("POST", "/v1/loans/%s/return" % l1["id"], token=tok), 200)

    def ids(q):
        b = expect(n.request("GET", "/v1/me/loans" + q, token=tok), 200)
        return [l["id"] for l in b["items"]], b["items"]
    act, items = ids("?status=active")
    assert act == [l2["id"]] and items[0]["status"] == "active", items
    ret, items = ids("?status=returned")
    assert ret == [l1["id"]] and items[0]["status"] == "returned", items
    allv, items = ids("?status=all")
    assert sorted(allv) == sorted([l1["id"], l2["id"]]), allv
    times = [parse_time(l["checked_out_at"]) for l in items]
    assert times == sorted(times, reverse=True), "not newest first: %r" % times
    dflt, _ = ids("")
    assert sorted(dflt) == sorted(allv), dflt
    expect(n.request("GET", "/v1/me/loans?status=bogus", token=tok), 422, "validation", "status")


def test_me_holds():
    n = node()
    rid = _res(n, copies=1)["id"]
    _, a = n.member()
    u, b = n.member()
    _checkout(n, a, rid)
    h = _hold(n, b, rid)
    got = _my_holds(n, b)
    assert list(got) == [h["id"]], got
    g = got[h["id"]]
    for k in ("id", "user_id", "resource_id", "status", "position", "ready_until", "created_at"):
        assert k in g, (k, g)
    assert (g["user_id"], g["resource_id"], g["status"], g["position"]) == (u["id"], rid, "waiting", 1), g
    assert _my_holds(n, a) == {}
