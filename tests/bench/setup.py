#!/usr/bin/env python3
"""Load a running circa node with benchmark data (used by tests/bench/run.sh).

Creates resources (as a librarian, token from `circa token`), registers
USERS members (POST /v1/auth/register), gives each member LOANS loans
(POST /v1/loans with user_id, as the librarian), signs one member token per
user with `circa token --data DIR --sub UID --role member`, and measures a
real GET /v1/me/loans body.

Writes into --out:
  tokens.txt           one member JWT per line            (me_loans.lua)
  users.txt            "<user_id> <JWT>" per line          (checkout_return.lua)
  write_resources.txt  resource ids for checkout/return    (checkout_return.lua)
  me_loans.body        the GET /v1/me/loans body of the first member
Only the standard library is used.
"""
import argparse
import concurrent.futures as cf
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

LIBRARIAN_SUB = "00000000-0000-4000-8000-00000000b001"

_local = threading.local()


def connection(url):
    c = getattr(_local, "conn", None)
    if c is None:
        u = urllib.parse.urlsplit(url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        _local.conn = c
    return c


def call(url, method, path, body=None, token=None):
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    for attempt in range(3):
        c = connection(url)
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, OSError):
            c.close()
            _local.conn = None
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def expect(status, raw, want, what):
    if status != want:
        sys.exit(f"setup: {what}: HTTP {status} (want {want}): {raw[:300]!r}")
    return json.loads(raw) if raw else None


def circa_token(binary, data, sub, role):
    out = subprocess.run(
        [binary, "token", "--data", data, "--sub", sub, "--role", role],
        check=True, capture_output=True, text=True)
    tok = out.stdout.strip()
    if not tok:
        sys.exit(f"setup: `circa token` printed nothing: {out.stderr}")
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--loans", type=int, default=3, help="active loans per member")
    ap.add_argument("--write-resources", type=int, default=50)
    ap.add_argument("--copies", type=int, default=0, help="copies per resource (0: derive)")
    ap.add_argument("--workers", type=int, default=8)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()

    lib = circa_token(a.bin, a.data, LIBRARIAN_SUB, "librarian")
    copies = a.copies or min(100000, a.users + 1024)
    pool = cf.ThreadPoolExecutor(max_workers=a.workers)

    def make_resource(i):
        st, raw = call(a.url, "POST", "/v1/resources", {
            "title": f"Bench resource {i}", "type": "FICTION", "copies": copies,
            "authors": ["Bench Author"], "tags": ["bench"]}, lib)
        return expect(st, raw, 201, "create resource")["id"]

    nres = a.loans + a.write_resources
    rids = list(pool.map(make_resource, range(nres)))
    read_rids, write_rids = rids[:a.loans], rids[a.loans:]

    def register(i):
        st, raw = call(a.url, "POST", "/v1/auth/register", {
            "email": f"bench-{i}@bench.example", "password": f"bench-password-{i}",
            "name": f"Bench Member {i}"})
        return expect(st, raw, 201, "register")["id"]

    uids = list(pool.map(register, range(a.users)))

    def lend(job):
        uid, rid = job
        st, raw = call(a.url, "POST", "/v1/loans", {"resource_id": rid, "user_id": uid}, lib)
        expect(st, raw, 201, "checkout")

    list(pool.map(lend, [(u, r) for u in uids for r in read_rids]))

    def member_token(uid):
        return circa_token(a.bin, a.data, uid, "member")

    with cf.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as tp:
        tokens = list(tp.map(member_token, uids))

    with open(os.path.join(a.out, "tokens.txt"), "w") as f:
        f.writelines(t + "\n" for t in tokens)
    with open(os.path.join(a.out, "users.txt"), "w") as f:
        f.writelines(f"{u} {t}\n" for u, t in zip(uids, tokens))
    with open(os.path.join(a.out, "write_resources.txt"), "w") as f:
        f.writelines(r + "\n" for r in write_rids)

    st, body = call(a.url, "GET", "/v1/me/loans", token=tokens[0])
    loans = expect(st, body, 200, "GET /v1/me/loans")
    if len(loans.get("items", [])) != a.loans:
        sys.exit(f"setup: member has {len(loans.get('items', []))} loans, want {a.loans}")
    with open(os.path.join(a.out, "me_loans.body"), "wb") as f:
        f.write(body)
    pool.shutdown()
    print(f"setup: {nres} resources x {copies} copies, {a.users} members x {a.loans} loans, "
          f"{len(tokens)} tokens, /v1/me/loans body {len(body)} bytes, "
          f"{time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
