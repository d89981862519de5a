"""200 members race for 3 copies: exactly 3 win."""

import http.client
import json
import threading

from harness import Node, expect, check_problem, Resp, decode_body

N = 200
COPIES = 3


def _parallel(fn, items, workers=16):
    out = [None] * len(items)
    errs = []
    lock = threading.Lock()
    idx = iter(range(len(items)))

    def run():
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            try:
                out[i] = fn(items[i])
            except BaseException as e:  # noqa: BLE001
                errs.append(e)
                return
    ts = [threading.Thread(target=run) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


def test_200_concurrent_checkouts_3_copies():
    n = Node(name="concurrency")
    try:
        lib = n.librarian()
        rid = n.create_resource(lib, copies=COPIES, title="Hot item")["id"]
        members = _parallel(lambda i: n.member("racer %d" % i), list(range(N)))
        assert len({u["id"] for u, _ in members}) == N

        # open every connection first, then release all requests at once
        barrier = threading.Barrier(N + 1)
        results = [None] * N
        body = json.dumps({"resource_id": rid}).encode()

        def racer(i):
            tok = members[i][1]
            conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=60)
            try:
                conn.connect()
                barrier.wait(timeout=60)
                conn.request("POST", "/v1/loans", body=body,
                             headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
                r = conn.getresponse()
                raw = r.read()
                results[i] = Resp(r.status, r.headers, decode_body(r.headers, raw), raw, "POST /v1/loans")
            except BaseException as e:  # noqa: BLE001
                results[i] = e
            finally:
                conn.close()
        ts = [threading.Thread(target=racer, args=(i,)) for i in range(N)]
        for t in ts:
            t.start()
        barrier.wait(timeout=60)
        for t in ts:
            t.join(120)
        errors = [r for r in results if not isinstance(r, Resp)]
        assert not errors, "%d requests failed at transport level, e.g. %r" % (len(errors), errors[0])
        won = [r for r in results if r.status == 201]
        lost = [r for r in results if r.status != 201]
        statuses = {}
        for r in results:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        assert len(won) == COPIES, "expected %d x 201, got %r" % (COPIES, statuses)
        assert len(lost) == N - COPIES, statuses
        for r in lost:
            expect(r, 409)
            check_problem(r, "no-copy-available")
        assert sorted(r.body["copy"] for r in won) == list(range(1, COPIES + 1)), [r.body for r in won]
        assert len({r.body["user_id"] for r in won}) == COPIES

        res = n.get_resource(rid, lib)
        assert res["available"] == 0, res
        # exactly COPIES active loans exist for the resource, across all 200 members
        def loans_of(m):
            b = expect(n.request("GET", "/v1/users/%s/loans?status=all" % m[0]["id"], token=lib), 200)
            return [l for l in b["items"] if l["resource_id"] == rid]
        all_loans = [l for ls in _parallel(loans_of, members) for l in ls]
        assert len(all_loans) == COPIES, "found %d loans of the resource" % len(all_loans)
        assert all(l["status"] == "active" for l in all_loans), all_loans
        assert sorted(l["id"] for l in all_loans) == sorted(r.body["id"] for r in won)
        top = expect(n.request("GET", "/v1/reports/top-resources?limit=10", token=lib), 200)["items"]
        assert [x["checkouts"] for x in top if x["resource_id"] == rid] == [COPIES], top
    finally:
        n.cleanup()
