"""Idempotency-Key: replays, reuse with a different request, per-principal scope."""

import uuid

from harness import Lazy, expect, uid

node = Lazy(name="idempotency")


def _key():
    return "k-" + uuid.uuid4().hex


def _loans(n, tok):
    return expect(n.request("GET", "/v1/me/loans", token=tok), 200)["items"]


def test_replay_returns_first_answer():
    n = node()
    rid = n.create_resource(n.librarian(), copies=5)["id"]
    _, tok = n.member()
    key = _key()
    h = {"Idempotency-Key": key}
    r1 = n.request("POST", "/v1/loans", {"resource_id": rid}, token=tok, headers=h)
    expect(r1, 201)
    for _ in range(3):
        r2 = n.request("POST", "/v1/loans", {"resource_id": rid}, token=tok, headers=h)
        assert r2.status == r1.status, (r1, r2)
        assert r2.body == r1.body, (r1.body, r2.body)
        assert r2.raw == r1.raw, "replayed body differs byte-wise"
    assert len(_loans(n, tok)) == 1, _loans(n, tok)
    assert n.get_resource(rid, n.librarian())["available"] == 4
    # without the key, a second checkout of the same resource is a real (conflicting) request
    expect(n.request("POST", "/v1/loans", {"resource_id": rid}, token=tok), 409, "conflict")


def test_replay_resource_create():
    n = node()
    lib = n.librarian()
    c0 = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    h = {"Idempotency-Key": _key()}
    body = {"title": "Once only", "type": "HISTORY"}
    r1 = n.request("POST", "/v1/resources", body, token=lib, headers=h)
    expect(r1, 201)
    r2 = n.request("POST", "/v1/resources", body, token=lib, headers=h)
    assert (r2.status, r2.raw) == (r1.status, r1.raw), (r1, r2)
    c1 = expect(n.request("GET", "/v1/resources/counts", token=lib), 200)
    assert c1["HISTORY"] == c0["HISTORY"] + 1, (c0, c1)
    # a return replayed with its key answers 200 again, not 409
    _, tok = n.member()
    loan = expect(n.request("POST", "/v1/loans", {"resource_id": r1.body["id"]}, token=tok), 201)
    hk = {"Idempotency-Key": _key()}
    a = n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok, headers=hk)
    expect(a, 200)
    b = n.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok, headers=hk)
    assert (b.status, b.raw) == (a.status, a.raw), (a, b)
    # a DELETE replay answers 204 again
    hd = {"Idempotency-Key": _key()}
    expect(n.request("DELETE", "/v1/resources/" + r1.body["id"], token=lib, headers=hd), 204)
    expect(n.request("DELETE", "/v1/resources/" + r1.body["id"], token=lib, headers=hd), 204)
    expect(n.request("DELETE", "/v1/resources/" + r1.body["id"], token=lib), 404, "not-found")


def test_same_key_different_request_422():
    n = node()
    lib = n.librarian()
    r1, r2 = n.create_resource(lib)["id"], n.create_resource(lib)["id"]
    _, tok = n.member()
    h = {"Idempotency-Key": _key()}
    expect(n.request("POST", "/v1/loans", {"resource_id": r1}, token=tok, headers=h), 201)
    expect(n.request("POST", "/v1/loans", {"resource_id": r2}, token=tok, headers=h), 422, "idempotency-key-reused")
    # different path, same key
    expect(n.request("POST", "/v1/holds", {"resource_id": r1}, token=tok, headers=h), 422, "idempotency-key-reused")
    loans = _loans(n, tok)
    assert [l["resource_id"] for l in loans] == [r1], loans
    assert n.get_resource(r2, lib)["available"] == 1


def test_key_scoped_per_principal():
    n = node()
    rid = n.create_resource(n.librarian(), copies=3)["id"]
    ua, a = n.member()
    ub, b = n.member()
    key = _key()
    h = {"Idempotency-Key": key}
    la = expect(n.request("POST", "/v1/loans", {"resource_id": rid}, token=a, headers=h), 201)
    lb = expect(n.request("POST", "/v1/loans", {"resource_id": rid}, token=b, headers=h), 201)
    assert la["id"] != lb["id"], (la, lb)
    assert (la["user_id"], lb["user_id"]) == (ua["id"], ub["id"]), (la, lb)
    assert n.get_resource(rid, n.librarian())["available"] == 1
    # and each replay returns that principal's own answer
    ra = expect(n.request("POST", "/v1/loans", {"resource_id": rid}, token=a, headers=h), 201)
    rb = expect(n.request("POST", "/v1/loans", {"resource_id": rid}, token=b, headers=h), 201)
    assert (ra["id"], rb["id"]) == (la["id"], lb["id"])
    # two librarian tokens with different subs are different principals
    body = {"title": "per-principal", "type": "POETRY", "id": uid()}
    l1, l2 = n.librarian(), n.librarian()
    hk = {"Idempotency-Key": _key()}
    expect(n.request("POST", "/v1/resources", body, token=l1, headers=hk), 201)
    expect(n.request("POST", "/v1/resources", body, token=l2, headers=hk), 409, "conflict")


def test_anonymous_keys_are_not_shared():
    # register is anonymous: a key has no principal to be scoped by, so it is
    # ignored rather than letting one stranger replay another's answer
    n = node()
    h = {"Idempotency-Key": _key()}
    a = expect(n.request("POST", "/v1/auth/register",
                         {"email": "anon-a-%s@example.org" % uuid.uuid4().hex[:8], "password": "password-a",
                          "name": "A"}, headers=h), 201)
    b = expect(n.request("POST", "/v1/auth/register",
                         {"email": "anon-b-%s@example.org" % uuid.uuid4().hex[:8], "password": "password-b",
                          "name": "B"}, headers=h), 201)
    assert a["id"] != b["id"] and a["email"] != b["email"], (a, b)
