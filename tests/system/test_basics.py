"""Health, readiness, metrics, routing errors and the problem+json shape."""

import re

from harness import Lazy, expect, check_problem, uid

node = Lazy(name="basics")


def _requests_total(text):
    total = 0.0
    n = 0
    for line in text.splitlines():
        if line.startswith("circa_http_requests_total{") or line.startswith("circa_http_requests_total "):
            total += float(line.rsplit(" ", 1)[1])
            n += 1
    return total, n


def test_healthz_readyz():
    n = node()
    r = n.request("GET", "/healthz")
    assert expect(r, 200) == {"status": "ok"}, r
    assert r.ctype == "application/json", r.ctype
    r = n.request("GET", "/readyz")
    assert expect(r, 200) == {"status": "ready"}, r


def test_metrics_names():
    n = node()
    # make sure at least one write happened so the write-batch histogram has samples
    n.create_resource(n.librarian())
    r = n.request("GET", "/metrics")
    expect(r, 200)
    assert r.ctype == "text/plain", "metrics content-type %r" % r.ctype
    text = r.raw.decode()
    for name in ("circa_http_requests_total", "circa_http_request_duration_seconds_bucket",
                 "circa_http_request_duration_seconds_sum", "circa_http_request_duration_seconds_count",
                 "circa_write_batch_size_bucket", "circa_write_batch_size_count",
                 "circa_lmdb_map_used_bytes", "circa_lmdb_map_size_bytes", "circa_applied_index"):
        assert re.search(r"^%s[{ ]" % re.escape(name), text, re.M), "metric %s missing" % name
    # labels route and status on the request counter
    assert re.search(r'^circa_http_requests_total\{[^}]*route="[^"]*"[^}]*status="\d{3}"', text, re.M) or \
        re.search(r'^circa_http_requests_total\{[^}]*status="\d{3}"[^}]*route="[^"]*"', text, re.M), \
        "circa_http_requests_total lacks route/status labels"
    m = re.search(r"^circa_applied_index (\d+)", text, re.M)
    assert m and int(m.group(1)) > 0, "circa_applied_index not > 0 after a write"
    m = re.search(r"^circa_lmdb_map_size_bytes (\S+)", text, re.M)
    assert m and float(m.group(1)) > 0, "circa_lmdb_map_size_bytes not > 0"


def test_metrics_counters_increase():
    n = node()
    before, _ = _requests_total(n.metrics())
    for _ in range(5):
        expect(n.request("GET", "/healthz"), 200)
    expect(n.request("GET", "/v1/definitely-not-here", token=n.librarian()), 404)
    after, count = _requests_total(n.metrics())
    assert count > 0, "no circa_http_requests_total samples"
    assert after >= before + 6, "requests_total went %s -> %s after 6+ requests" % (before, after)
    # a 404 series exists
    assert re.search(r'^circa_http_requests_total\{[^}]*status="404"', n.metrics(), re.M), \
        "no status=\"404\" series after a 404"
    # the write-batch histogram count grows with writes
    def batch_count():
        m = re.search(r"^circa_write_batch_size_count (\S+)", n.metrics(), re.M)
        return float(m.group(1)) if m else 0.0
    c0 = batch_count()
    n.create_resource(n.librarian())
    assert batch_count() > c0, "circa_write_batch_size_count did not grow after a write"


def test_unknown_path_404():
    n = node()
    tok = n.librarian()
    for path in ("/v1/nope", "/v1/resources/x/y/z", "/nothing"):
        r = n.request("GET", path, token=tok)
        expect(r, 404, "not-found")


def test_wrong_method_405():
    n = node()
    tok = n.librarian()
    for method, path in (("DELETE", "/v1/me"), ("GET", "/v1/auth/login"), ("PATCH", "/v1/resources"),
                         ("POST", "/healthz")):
        r = n.request(method, path, token=tok, body={} if method in ("PATCH", "POST") else None)
        expect(r, 405, "method-not-allowed")


def test_problem_shape():
    n = node()
    r = n.request("GET", "/v1/resources/" + uid(), token=n.librarian())
    expect(r, 404, "not-found")
    b = r.body
    assert isinstance(b["title"], str) and b["title"], b
    assert isinstance(b["detail"], str), b
    assert b["type"].startswith("/problems/") or "/problems/" in b["type"], b
    # 401 is also a problem document
    r = n.request("GET", "/v1/me")
    expect(r, 401, "unauthorized")
    check_problem(r, "unauthorized")
