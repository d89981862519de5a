"""Registration, login, validation, tokens and rate limits."""

import json
import os
import time
import uuid

from harness import (Lazy, Node, expect, check_problem, is_uuid, jwt_parts, jwt_sign, b64url,
                     parse_time, uid)

# small body limit so the 413 test needs no huge upload
node = Lazy(name="auth", config={"limits": {"max_body_bytes": 4096}})


def _email():
    return "a-%s@example.org" % uuid.uuid4().hex[:12]


def _reg(n, **body):
    return n.request("POST", "/v1/auth/register", body)


def test_register_fields():
    n = node()
    local = "MiXeD.%s" % uuid.uuid4().hex[:8]
    r = _reg(n, email=local + "@Example.COM", password="s3cret-pass", name="Ada Lovelace")
    u = expect(r, 201)
    assert r.ctype == "application/json", r.ctype
    assert is_uuid(u["id"]), u
    assert u["email"] == (local + "@example.com").lower(), u
    assert u["name"] == "Ada Lovelace", u
    assert (u["role"], u["plan"], u["status"]) == ("member", "standard", "active"), u
    parse_time(u["created_at"])
    assert "s3cret-pass" not in r.raw.decode(), "password echoed in response"
    assert not any("password" in k for k in u), "password-ish field in user: %r" % u
    # the login with the registered password works
    tok = n.login(u["email"], "s3cret-pass")
    me = expect(n.request("GET", "/v1/me", token=tok), 200)
    assert me["id"] == u["id"] and me["email"] == u["email"], me
    assert "s3cret-pass" not in json.dumps(me)


def test_register_duplicate_409():
    n = node()
    e = _email()
    expect(_reg(n, email=e, password="password1", name="x"), 201)
    expect(_reg(n, email=e, password="password2", name="y"), 409, "conflict")


def test_register_validation():
    n = node()
    ok = {"email": _email(), "password": "password1", "name": "N"}

    def without(k):
        b = dict(ok, email=_email())
        del b[k]
        return b
    for k in ("email", "password", "name"):
        expect(n.request("POST", "/v1/auth/register", without(k)), 422, "validation", k)
    # unknown field -> 400 naming it
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), nickname="z")),
           400, "validation", "nickname")
    # wrong types -> 422
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), name=5)), 422, "validation", "name")
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), password=["x"] * 9)),
           422, "validation", "password")
    # invalid values
    expect(n.request("POST", "/v1/auth/register", dict(ok, email="no-at-sign.example.org")),
           422, "validation", "email")
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), password="short7!")),
           422, "validation", "password")
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), name="")), 422, "validation", "name")
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), name="n" * 201)),
           422, "validation", "name")
    # boundary: 200 chars is fine
    expect(n.request("POST", "/v1/auth/register", dict(ok, email=_email(), name="n" * 200)), 201)
    # malformed JSON -> 400
    expect(n.request("POST", "/v1/auth/register", '{"email": "x@y.z", "password": '), 400, "validation")
    expect(n.request("POST", "/v1/auth/register", "[1, 2]"), (400, 422), "validation")


def test_body_too_large_413():
    n = node()
    body = json.dumps({"email": _email(), "password": "password1", "name": "n" * 8000})
    r = n.request("POST", "/v1/auth/register", body)
    expect(r, 413, "payload-too-large")


def test_json_too_deep_400():
    n = node()
    shallow = "[" * 8 + "]" * 8
    deep = "[" * 40 + "]" * 40
    tmpl = '{"email": "%s", "password": "password1", "name": %s}'
    # a shallow array in a string field is a type error (422) ...
    expect(n.request("POST", "/v1/auth/register", tmpl % (_email(), shallow)), 422, "validation", "name")
    # ... but nesting beyond max_json_depth (16) is rejected by the parser (400)
    expect(n.request("POST", "/v1/auth/register", tmpl % (_email(), deep)), 400, "validation")


def test_login_ok_and_wrong_password():
    n = node()
    u = n.register(password="good-password")
    r = n.request("POST", "/v1/auth/login", {"email": u["email"], "password": "good-password"})
    b = expect(r, 200)
    assert b["token_type"] == "Bearer", b
    assert isinstance(b["expires_in"], int) and b["expires_in"] > 0, b
    me = expect(n.request("GET", "/v1/me", token=b["access_token"]), 200)
    assert me["id"] == u["id"], me
    r = n.request("POST", "/v1/auth/login", {"email": u["email"], "password": "bad-password"})
    expect(r, 401, "unauthorized")
    r = n.request("POST", "/v1/auth/login", {"email": _email(), "password": "whatever1"})
    expect(r, 401, "unauthorized")


def test_login_throttled_after_5_failures():
    n = node()
    u = n.register(password="good-password")
    for i in range(5):
        r = n.request("POST", "/v1/auth/login", {"email": u["email"], "password": "wrong-%d-pass" % i})
        expect(r, 401, "unauthorized")
    r = n.request("POST", "/v1/auth/login", {"email": u["email"], "password": "wrong-x-pass"})
    expect(r, 429, "rate-limited")
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.strip().isdigit() and int(ra) >= 1, "bad Retry-After %r" % ra
    # throttled even with the right password
    r = n.request("POST", "/v1/auth/login", {"email": u["email"], "password": "good-password"})
    expect(r, 429, "rate-limited")
    # another account from the same client is not throttled
    v = n.register(password="good-password")
    n.login(v["email"], "good-password")


def test_missing_and_garbage_token_401():
    n = node()
    r = n.request("GET", "/v1/me")
    expect(r, 401, "unauthorized")
    wa = r.headers.get("WWW-Authenticate") or ""
    assert wa.startswith("Bearer"), "WWW-Authenticate %r" % wa
    for bad in ("garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.eyJ9.x"):
        r = n.request("GET", "/v1/me", token=bad)
        expect(r, 401, "unauthorized")
        assert (r.headers.get("WWW-Authenticate") or "").startswith("Bearer"), r.headers
    r = n.request("GET", "/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    expect(r, 401, "unauthorized")
    expect(n.request("GET", "/v1/resources", api_key="not-a-real-key"), 401, "unauthorized")


def test_member_token_for_unknown_user_401():
    n = node()
    tok = n.token(uid(), "member")
    expect(n.request("GET", "/v1/me", token=tok), 401, "unauthorized")


def test_token_other_key_and_alg_none_401():
    n = node()
    u, tok = n.member()
    expect(n.request("GET", "/v1/me", token=tok), 200)
    header, payload, _ = jwt_parts(tok)
    assert header.get("alg") == "HS256", header
    forged = jwt_sign(header, payload, os.urandom(32))
    expect(n.request("GET", "/v1/me", token=forged), 401, "unauthorized")
    none_hdr = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    none_pl = b64url(json.dumps(payload).encode())
    for t in (none_hdr + "." + none_pl + ".", none_hdr + "." + none_pl + "." + tok.split(".")[2]):
        expect(n.request("GET", "/v1/me", token=t), 401, "unauthorized")
    # payload tampering (role escalation) with the original signature
    p2 = dict(payload, role="admin")
    h, _, s = tok.split(".")
    t = h + "." + b64url(json.dumps(p2).encode()) + "." + s
    expect(n.request("GET", "/v1/me", token=t), 401, "unauthorized")


def test_expired_token_401():
    n = Node(name="auth-leeway0", config={"jwt": {"leeway_s": 0}})
    try:
        sub = uid()
        good = n.token(sub, "librarian")
        expect(n.request("GET", "/v1/resources/counts", token=good), 200)
        short = n.token(sub, "librarian", ttl=1)
        _, payload, _ = jwt_parts(short)
        assert payload["exp"] - payload.get("iat", payload["exp"] - 1) <= 1, payload
        time.sleep(2.2)  # let the 1 s token expire (not synchronisation: wall-clock expiry)
        expect(n.request("GET", "/v1/resources/counts", token=short), 401, "unauthorized")
        expect(n.request("GET", "/v1/resources/counts", token=good), 200)
    finally:
        n.cleanup()


def test_rate_limit_429():
    n = Node(name="auth-ratelimit", config={"limits": {"rate_per_s": 1, "rate_burst": 3}})
    try:
        tok = n.token(uid(), "librarian")
        got = [n.request("GET", "/v1/resources/counts", token=tok) for _ in range(4)]
        for r in got[:3]:
            expect(r, 200)
        r = got[3]
        expect(r, 429, "rate-limited")
        ra = r.headers.get("Retry-After")
        assert ra is not None and ra.strip().isdigit() and int(ra) >= 1, "bad Retry-After %r" % ra
        # the bucket is per principal: another principal is not limited
        expect(n.request("GET", "/v1/resources/counts", token=n.token(uid(), "librarian")), 200)
        # and it refills: after Retry-After seconds the first principal may go again
        time.sleep(int(ra) + 0.2)
        expect(n.request("GET", "/v1/resources/counts", token=tok), 200)
    finally:
        n.cleanup()


def test_password_hashing_does_not_block_reads():
    # one HTTP thread and an expensive hash: if hashing ran on the HTTP
    # thread, a read sent during a login would wait for the whole hash
    import threading
    n = Node(name="auth-hashing", config={"threads": 1, "password_iterations": 3000000})
    try:
        email = _email()
        expect(_reg(n, email=email, password="slow-hash-1", name="Slow"), 201)
        result = {}

        def login():
            t0 = time.monotonic()
            result["r"] = n.request("POST", "/v1/auth/login", {"email": email, "password": "slow-hash-1"})
            result["login_s"] = time.monotonic() - t0

        t = threading.Thread(target=login)
        t.start()
        try:
            time.sleep(0.05)  # let the login reach the hasher
            t0 = time.monotonic()
            expect(n.request("GET", "/healthz"), 200)
            read_s = time.monotonic() - t0
        finally:
            t.join(60)
        expect(result["r"], 200)
        assert read_s < result["login_s"] / 2, \
            "a read took %.3fs during a %.3fs login: it waited for the hash" % (read_s, result["login_s"])
    finally:
        n.cleanup()
