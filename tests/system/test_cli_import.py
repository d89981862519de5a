"""`circa import` (cli/import.c): the operator's client of catalog imports (POST /v1/imports).

FakeImports stands in for the endpoint: a small HTTP server on a free loopback port, in a thread,
that records every request (path with its query, headers, body) and answers from a list of
canned answers, the last one again and again; it can read a body slowly and wait before
answering.  The tests check the lines printed, the exit status, the bytes and the query sent, the
token, the progress bar on a terminal, and --watch: backoff and retries, failed/ with its .reason,
done/ without overwriting, files still being written left alone, --once, signals.  The last tests
use a real node: the Library module's sample file, the same file again, and a watched folder.
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

import harness

TOKEN = "tok.IMPORT-SECRET-not-to-be-printed.sig"
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                      "library-sample.json")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z ")

LIBRARY = [
    {"contentId": "0190f6a2-7c1e-7c3a-9a55-3f5c2b1e0001", "title": "The Hobbit",
     "contentType": "FANTASY"},
    {"contentId": "0190f6a2-7c1e-7c3a-9a55-3f5c2b1e0002", "title": "A Wizard of Earthsea",
     "contentType": "FANTASY"},
    {"contentId": "0190f6a2-7c1e-7c3a-9a55-3f5c2b1e0003", "title": "The Name of the Wind",
     "contentType": "FANTASY"},
    {"contentId": "0190f6a2-7c1e-7c3a-9a55-3f5c2b1e0004", "title": "Leaves of Grass",
     "contentType": "POETRY"},
    {"contentId": "0190f6a2-7c1e-7c3a-9a55-3f5c2b1e0005", "title": "Silent Spring",
     "contentType": "NONFICTION"},
    {"contentId": "0190f6a2-7c1e-7c3a-9a55-3f5c2b1e0006", "title": "The Double Helix",
     "contentType": "NONFICTION"},
]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def summary(data, name, fmt="library", created=6, rejected=0, rejections=(), truncated=False,
            duplicate=False):
    return (200, {"sha256": sha(data), "format": fmt, "name": name, "duplicate": duplicate,
                  "rows": created + rejected, "created": created, "updated": 0, "unchanged": 0,
                  "rejected": rejected, "rejections": list(rejections),
                  "rejections_truncated": truncated, "imported_at": "2026-11-22T10:00:00Z",
                  "by": "0190f6a2-0000-7000-8000-000000000001"})


def problem(status, kind, title, detail, retry_after=None):
    return (status, {"type": "/problems/" + kind, "title": title, "status": status,
                     "detail": detail}, {"Retry-After": str(retry_after)} if retry_after else {})


class FakeImports:
    """answers: a list of (status, body[, headers[, delay]]) given in order, the last one again
    and again.  requests: (path, headers, body) of every POST /v1/imports, in order; times: when
    each arrived (monotonic).  read_chunk/read_pause read a body slowly."""

    def __init__(self, answers, read_chunk=None, read_pause=0.0):
        self.answers = list(answers)
        self.requests, self.times = [], []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                parts = []
                while n > 0:
                    chunk = self.rfile.read(min(n, read_chunk or n))
                    if not chunk:
                        return
                    parts.append(chunk)
                    n -= len(chunk)
                    if read_pause:
                        time.sleep(read_pause)
                if urllib.parse.urlsplit(self.path).path != "/v1/imports":
                    ans = problem(404, "not-found", "Not Found", "no such endpoint")
                else:
                    with fake.lock:
                        fake.requests.append((self.path, dict(self.headers), b"".join(parts)))
                        fake.times.append(time.monotonic())
                        ans = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                if len(ans) > 3 and fake.stopping.wait(ans[3]):
                    return
                body = json.dumps(ans[1]).encode()
                try:
                    self.send_response(ans[0])
                    self.send_header("Content-Type", "application/problem+json"
                                     if ans[0] >= 400 else "application/json")
                    for k, v in (ans[2] if len(ans) > 2 else {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def count(self):
        with self.lock:
            return len(self.requests)

    def stop(self):
        if not self.stopping.is_set():
            self.stopping.set()
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def circa(*args, env=None, timeout=30):
    """Run the binary without CIRCA_TOKEN/CIRCA_CONFIG from the outside; (rc, stdout, stderr)."""
    e = {k: v for k, v in os.environ.items() if k not in ("CIRCA_TOKEN", "CIRCA_CONFIG")}
    e.update(env or {})
    p = subprocess.run([harness.BIN] + [str(a) for a in args], capture_output=True,
                       timeout=timeout, env=e)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def no_token_shown(out, err):
    assert TOKEN not in out and TOKEN not in err, "the token was printed: %r %r" % (out, err)


def query(path):
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)


def unstamped(out):
    """--watch lines without their leading time (every line must have one)."""
    lines = out.splitlines()
    assert all(STAMP.match(l) for l in lines), out
    return [STAMP.sub("", l) for l in lines]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return data


def reason_of(path):
    with open(path) as f:
        return dict(l.split(": ", 1) for l in f.read().splitlines())


class Tmp:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="circa-sys-import-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def library_bytes():
    return (json.dumps(LIBRARY, indent=1) + "\n").encode()


# ---------------------------------------------------------------- FILE...

def test_cli_import_sends_each_file_and_prints_the_results():
    with Tmp() as tmp:
        a = write(os.path.join(tmp, "a.json"), library_bytes())
        b = write(os.path.join(tmp, "b.csv"), b"id,title,type\n")
        rejections = [{"line": 7, "id": LIBRARY[0]["contentId"], "reason": "title is missing"},
                      {"line": 9, "reason": "type BOOK\x1b[2J is not one of the types"}]
        with FakeImports([summary(a, "a.json", created=5, rejected=2, rejections=rejections),
                          summary(b, "b.csv", fmt="csv", duplicate=True)]) as f:
            rc, out, err = circa("import", "--url", f.url, "--token", TOKEN,
                                 os.path.join(tmp, "a.json"), os.path.join(tmp, "b.csv"))
            reqs = f.requests
    assert rc == 0, (rc, out, err)
    assert err == "", err
    no_token_shown(out, err)
    pa, pb = os.path.join(tmp, "a.json"), os.path.join(tmp, "b.csv")
    assert out.splitlines() == [
        "importing %s (%d bytes)" % (pa, len(a)),
        "%s: created 5, updated 0, unchanged 0, rejected 2 (library, sha256 %s…)"
        % (pa, sha(a)[:12]),
        "  line 7: title is missing",
        "  line 9: type BOOK?[2J is not one of the types",
        "importing %s (%d bytes)" % (pb, len(b)),
        "%s: already imported (same sha256 %s…): nothing changed" % (pb, sha(b)[:12]),
    ], out
    assert [r[2] for r in reqs] == [a, b]
    assert [query(r[0]) for r in reqs] == [{"name": ["a.json"]}, {"name": ["b.csv"]}], reqs
    for _, h, _ in reqs:
        assert h.get("Authorization") == "Bearer " + TOKEN, h
        assert h.get("Content-Type") == "application/octet-stream", h


def test_cli_import_names_and_formats_in_the_query():
    with Tmp() as tmp:
        name = "my catalog ü+&=#.csv"
        data = write(os.path.join(tmp, name), b"id,title,type\n")
        latin1 = os.path.join(tmp.encode(), b"caf\xe9.csv")
        write(latin1, b"x")
        with FakeImports([summary(data, name, fmt="csv", created=0)]) as f:
            rc, out, err = circa("import", "--url", f.url + "/", "--format", "csv",
                                 os.path.join(tmp, name), env={"CIRCA_TOKEN": TOKEN})
            assert rc == 0, (rc, out, err)
            p = subprocess.run([harness.BIN, "import", "--url", f.url, "--token", TOKEN,
                                latin1], capture_output=True, timeout=30)
            assert p.returncode == 0, p
            reqs = f.requests
    path = reqs[0][0]
    assert path.startswith("/v1/imports?name=my%20catalog%20%C3%BC%2B%26%3D%23.csv&format=csv"), \
        path
    assert query(path) == {"name": [name], "format": ["csv"]}, path
    assert reqs[0][1].get("Authorization") == "Bearer " + TOKEN, reqs[0][1]
    # the node takes UTF-8 names only: the other bytes become '?'
    assert query(reqs[1][0]) == {"name": ["caf?.csv"]}, reqs[1][0]


def test_cli_import_truncated_rejections_say_how_many_more():
    with Tmp() as tmp:
        data = write(os.path.join(tmp, "big.jsonl"), b'{"id": 1}\n' * 5)
        shown = [{"line": i, "reason": "id is not a UUID"} for i in range(1, 4)]
        with FakeImports([summary(data, "big.jsonl", fmt="jsonl", created=0, rejected=1500,
                                  rejections=shown, truncated=True)]) as f:
            rc, out, err = circa("import", "--url", f.url, "--token", TOKEN,
                                 os.path.join(tmp, "big.jsonl"))
    assert rc == 0, (rc, out, err)
    assert out.splitlines()[2:] == ["  line 1: id is not a UUID", "  line 2: id is not a UUID",
                                    "  line 3: id is not a UUID", "  ... and 1497 more"], out


def test_cli_import_failures_go_on_with_the_other_files():
    with Tmp() as tmp:
        good = write(os.path.join(tmp, "good.json"), library_bytes())
        write(os.path.join(tmp, "bad.json"), b"[{\"contentId\": ")
        write(os.path.join(tmp, "huge.json"), b"[]")
        missing = os.path.join(tmp, "missing.json")
        os.mkdir(os.path.join(tmp, "adir"))
        with FakeImports([problem(422, "validation", "Unprocessable Content",
                                  "broken JSON array at line 1"),
                          problem(413, "payload-too-large", "Payload Too Large",
                                  "the file is larger than limits.max_import_bytes"),
                          summary(good, "good.json")]) as f:
            rc, out, err = circa("import", "--url", f.url, "--token", TOKEN,
                                 os.path.join(tmp, "bad.json"), missing,
                                 os.path.join(tmp, "huge.json"), os.path.join(tmp, "adir"),
                                 os.path.join(tmp, "good.json"))
            names = [query(r[0])["name"][0] for r in f.requests]
    assert rc == 1, (rc, out, err)
    no_token_shown(out, err)
    assert names == ["bad.json", "huge.json", "good.json"], names
    where = "127.0.0.1:%d" % f.port
    assert err.splitlines() == [
        "circa: import of %s/bad.json on %s: HTTP 422 Unprocessable Content: broken JSON array "
        "at line 1" % (tmp, where),
        "circa: cannot read %s: No such file or directory" % missing,
        "circa: import of %s/huge.json on %s: HTTP 413 Payload Too Large: the file is larger "
        "than limits.max_import_bytes" % (tmp, where),
        "circa: cannot read %s/adir: it is not a regular file" % tmp,
    ], err
    assert out.splitlines()[-1].startswith("%s/good.json: created 6," % tmp), out


def test_cli_import_without_an_answer():
    with Tmp() as tmp:
        path = os.path.join(tmp, "a.json")
        write(path, library_bytes())
        rc, out, err = circa("import", "--url", "http://127.0.0.1:%d" % harness.free_port(),
                             "--token", TOKEN, path)
        assert rc == 1, (rc, out, err)
        assert "connection refused; is the node running?" in err, err
        with FakeImports([summary(b"", "a.json") + ({}, 5)]) as f:
            t0 = time.monotonic()
            rc, out, err = circa("import", "--url", f.url, "--token", TOKEN, "--timeout", "1",
                                 path)
            dt = time.monotonic() - t0
    assert rc == 1, (rc, out, err)
    assert 0.9 < dt < 4, dt
    assert "on 127.0.0.1:%d: no answer within 1 s" % f.port in err, err
    assert "may still finish importing %s; sending it again is safe" % path in err, err
    no_token_shown(out, err)


def test_cli_import_progress_bar_on_a_terminal():
    with Tmp() as tmp:
        data = write(os.path.join(tmp, "catalog.csv"), os.urandom(16 << 20))
        with FakeImports([summary(data, "catalog.csv", fmt="csv", created=3) + ({}, 1.3)],
                         read_chunk=1 << 20, read_pause=0.05) as f:
            rc, text, err = harness.run_on_pty([harness.BIN, "import", "--url", f.url, "--token",
                                                TOKEN, os.path.join(tmp, "catalog.csv")])
            assert f.requests[0][2] == data
    assert rc == 0, (rc, text, err)
    no_token_shown(text, "")
    progress, _, rest = text.rpartition("\r\x1b[K")
    assert rest == "%s/catalog.csv: created 3, updated 0, unchanged 0, rejected 0 (csv, sha256 " \
        "%s…)\n" % (tmp, sha(data)[:12]), repr(rest)
    shown = progress.split("\r\x1b[K")
    assert shown[0] == "" and "\n" not in progress, repr(progress)
    bar = re.compile(r"^\[1/1\] catalog\.csv  ([█░]{20})  ([ \d]{3})%  ([\d.]+)/16\.8 MB$")
    bars = [bar.match(s) for s in shown[1:] if "applying" not in s]
    assert bars and all(bars), shown
    pcts = [int(m.group(2)) for m in bars]
    assert pcts[0] == 0 and pcts == sorted(pcts) and any(0 < x < 100 for x in pcts), shown
    assert all(m.group(1).count("█") == int(m.group(2)) * 20 // 100 for m in bars), shown
    applying = [s for s in shown if "applying" in s]
    assert applying == ["[1/1] catalog.csv  applying… 0 s", "[1/1] catalog.csv  applying… 1 s"], \
        shown


def test_cli_import_usage_errors():
    for args, msg in [
        (["import", "f"], "--data DIR, or --url URL"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t"], "name a FILE"),
        (["import", "--url", "http://127.0.0.1:1", "f"], "--token TOKEN or CIRCA_TOKEN"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t", "--format", "xml", "f"],
         "--format must be auto, library, jsonl or csv"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t", "--timeout", "0", "f"],
         "--timeout"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t", "--watch", "/tmp", "f"],
         "not both"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t", "--once", "f"],
         "go with --watch"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t", "--watch", "/tmp",
          "--interval", "0"], "--interval"),
        (["import", "--url", "http://127.0.0.1:1", "--token", "t", "--watch", "/tmp",
          "--retries", "x"], "--retries"),
        (["import", "--bogus"], "usage: circa import"),
    ]:
        rc, out, err = circa(*args)
        assert rc == 2, (args, rc, out, err)
        assert msg in err, (args, err)
        assert out == "", (args, out)
    rc, out, err = circa("import", "--help")
    assert rc == 0 and out.startswith("usage: circa import"), (rc, out, err)
    for word in ("--watch DIR", "--format F", "auto", "library", "jsonl", "csv", "--timeout",
                 "--retries", "--once", "Exit status: 0", "2 usage error"):
        assert word in out, (word, out)
    assert max(len(l) for l in out.splitlines()) <= 80, out
    rc, out, err = circa("--help")
    assert rc == 0 and re.search(r"^  import +", out, re.M), out


def test_cli_import_data_dir_signs_a_token_per_request():
    """--data DIR: the address from DIR/circa.addr, and before each file a new admin token signed
    with DIR's key and the config's issuer and audience, for 300 s more than --timeout."""
    with Tmp() as tmp:
        data, cfg = os.path.join(tmp, "data"), os.path.join(tmp, "config.json")
        with open(cfg, "w") as f:
            json.dump({"password_iterations": 1000,
                       "jwt": {"issuer": "iss-imp", "audience": "aud-imp"}}, f)
        rc, out, err = circa("user", "add", "--data", data, "--email", "a@example.org", "--role",
                             "admin", "--config", cfg)
        assert rc == 0, err
        a = write(os.path.join(tmp, "a.json"), library_bytes())
        with FakeImports([summary(a, "a.json")]) as f:
            write(os.path.join(data, "circa.addr"), b"127.0.0.1:%d\n" % f.port)
            rc, out, err = circa("import", "--data", data, "--config", cfg, "--timeout", "60",
                                 os.path.join(tmp, "a.json"), os.path.join(tmp, "a.json"))
            authz = [h.get("Authorization", "") for _, h, _ in f.requests]
    assert rc == 0, (rc, out, err)
    assert len(authz) == 2 and authz[0] != authz[1], authz
    for a in authz:
        assert a.startswith("Bearer "), a
        assert a[7:] not in out + err
        head, claims, _ = harness.jwt_parts(a[7:])
        assert head.get("alg") == "HS256", head
        assert claims.get("role") == "admin" and harness.is_uuid(claims.get("sub")), claims
        assert claims.get("iss") == "iss-imp" and claims.get("aud") == "aud-imp", claims
        assert claims["exp"] - claims["iat"] == 360, claims


# ---------------------------------------------------------------- --watch

def watch(url, folder, *extra, timeout=30):
    return circa("import", "--url", url, "--token", TOKEN, "--watch", folder, *extra,
                 timeout=timeout)


def test_cli_import_watch_retries_with_backoff_then_files_it_in_done():
    with Tmp() as tmp:
        drop = os.path.join(tmp, "drop")
        os.mkdir(drop)
        data = write(os.path.join(drop, "a.json"), library_bytes())
        write(os.path.join(drop, ".a.json.part"), b"being written")
        os.mkdir(os.path.join(drop, "subdir"))
        unavailable = problem(503, "import-incomplete", "Service Unavailable",
                              "the import stopped midway; send the same file again",
                              retry_after=1)
        with FakeImports([unavailable, unavailable, summary(data, "a.json")]) as f:
            rc, out, err = watch(f.url, drop, "--once", "--interval", "0.2")
            times, reqs = f.times, f.requests
        assert rc == 0, (rc, out, err)
        assert err == "", err
        no_token_shown(out, err)
        assert [r[2] for r in reqs] == [data] * 3
        assert 0.9 < times[1] - times[0] < 1.8 and 1.9 < times[2] - times[1] < 2.8, times
        detail = "HTTP 503 Service Unavailable: the import stopped midway; send the same file again"
        assert unstamped(out) == [
            "importing the files in %s into the node at 127.0.0.1:%d" % (drop, f.port),
            "importing a.json (%d bytes)" % len(data),
            "a.json: %s; attempt 1 of 5 failed, next in 1 s" % detail,
            "importing a.json (%d bytes), attempt 2 of 5" % len(data),
            "a.json: %s; attempt 2 of 5 failed, next in 2 s" % detail,
            "importing a.json (%d bytes), attempt 3 of 5" % len(data),
            "a.json: created 6, updated 0, unchanged 0, rejected 0 (library, sha256 %s…)"
            % sha(data)[:12],
            "a.json: moved to done/a.json",
            "done",
        ], out
        assert sorted(os.listdir(drop)) == [".a.json.part", "done", "failed", "subdir"]
        assert os.listdir(os.path.join(drop, "done")) == ["a.json"]
        assert os.listdir(os.path.join(drop, "failed")) == []


def test_cli_import_watch_gives_up_after_its_retries():
    with Tmp() as tmp:
        drop = os.path.join(tmp, "drop")
        os.mkdir(drop)
        data = write(os.path.join(drop, "a.json"), library_bytes())
        with FakeImports([problem(503, "unavailable", "Service Unavailable",
                                  "no leader right now")]) as f:
            rc, out, err = watch(f.url, drop, "--once", "--retries", "2")
            assert f.count() == 2
        assert rc == 1, (rc, out, err)
        lines = unstamped(out)
        assert lines[4] == "a.json: HTTP 503 Service Unavailable: no leader right now; gave up " \
            "after 2 attempts", out
        assert lines[5:] == ["a.json: moved to failed/a.json (why: failed/a.json.reason)",
                             "done; some files went to failed/"], out
        failed = os.path.join(drop, "failed")
        assert sorted(os.listdir(failed)) == ["a.json", "a.json.reason"]
        assert open(os.path.join(failed, "a.json"), "rb").read() == data
        r = reason_of(os.path.join(failed, "a.json.reason"))
        assert (r["file"], r["node"], r["attempts"], r["status"], r["title"], r["detail"]) == \
            ("a.json", "127.0.0.1:%d" % f.port, "2", "503", "Service Unavailable",
             "no leader right now"), r
        assert r["error"] == "HTTP 503 Service Unavailable: no leader right now", r
        harness.parse_time(r["time"])

        # no node at all: the same, with the connection's error
        write(os.path.join(drop, "b.json"), b"[]")
        rc, out, err = watch("http://127.0.0.1:%d" % harness.free_port(), drop, "--once",
                             "--retries", "2")
        assert rc == 1, (rc, out, err)
        r = reason_of(os.path.join(failed, "b.json.reason"))
        assert (r["attempts"], r["status"]) == ("2", "no answer"), r
        assert r["error"].endswith(": connection refused; is the node running?"), r
        assert "gave up after 2 attempts" in out, out


def test_cli_import_watch_refusal_fails_at_once_and_nothing_is_overwritten():
    with Tmp() as tmp:
        drop = os.path.join(tmp, "drop")
        for d in ("done", "failed"):
            os.makedirs(os.path.join(drop, d))
        good = write(os.path.join(drop, "a.json"), library_bytes())
        write(os.path.join(drop, "done", "a.json"), b"an earlier a.json")
        write(os.path.join(drop, "done", "a.json.1"), b"another earlier a.json")
        bad = write(os.path.join(drop, "b.csv"), b"isbn,name\n1,x\n")
        write(os.path.join(drop, "failed", "b.csv.reason"), b"an earlier reason")
        odd = write(os.path.join(drop, "c\nline.csv"), b"x")
        with FakeImports([summary(good, "a.json"),
                          problem(422, "validation", "Unprocessable Content",
                                  "unknown CSV column isbn")]) as f:
            rc, out, err = watch(f.url, drop, "--once")
            assert [query(r[0])["name"][0] for r in f.requests] == ["a.json", "b.csv",
                                                                     "c\nline.csv"]
        assert rc == 1, (rc, out, err)
        lines = unstamped(out)
        assert lines[3:] == [
            "a.json: moved to done/a.json.2",
            "importing b.csv (%d bytes)" % len(bad),
            "b.csv: HTTP 422 Unprocessable Content: unknown CSV column isbn",
            "b.csv: moved to failed/b.csv.1 (why: failed/b.csv.1.reason)",
            "importing c?line.csv (%d bytes)" % len(odd),
            "c?line.csv: HTTP 422 Unprocessable Content: unknown CSV column isbn",
            "c?line.csv: moved to failed/c?line.csv (why: failed/c?line.csv.reason)",
            "done; some files went to failed/",
        ], out
        done, failed = os.path.join(drop, "done"), os.path.join(drop, "failed")
        assert open(os.path.join(done, "a.json"), "rb").read() == b"an earlier a.json"
        assert open(os.path.join(done, "a.json.2"), "rb").read() == good
        assert sorted(os.listdir(failed)) == ["b.csv.1", "b.csv.1.reason", "b.csv.reason",
                                              "c\nline.csv", "c\nline.csv.reason"]
        assert reason_of(os.path.join(failed, "c\nline.csv.reason"))["file"] == "c?line.csv"
        assert open(os.path.join(failed, "b.csv.reason"), "rb").read() == b"an earlier reason"
        r = reason_of(os.path.join(failed, "b.csv.1.reason"))
        assert (r["attempts"], r["status"], r["title"], r["detail"]) == \
            ("1", "422", "Unprocessable Content", "unknown CSV column isbn"), r


def test_cli_import_watch_waits_until_a_file_stops_changing():
    with Tmp() as tmp:
        drop = os.path.join(tmp, "drop")
        os.mkdir(drop)
        path = os.path.join(drop, "growing.jsonl")
        with FakeImports([summary(b"", "growing.jsonl", fmt="jsonl", created=1)]) as f:
            p = subprocess.Popen([harness.BIN, "import", "--url", f.url, "--token", TOKEN,
                                  "--watch", drop, "--interval", "0.3"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                harness.poll(lambda: os.path.isdir(os.path.join(drop, "failed")), 5,
                             what="done/ and failed/")
                written = b""
                with open(path, "wb") as out:
                    for i in range(14):  # 1.4 s of writing, a line each 0.1 s
                        line = b'{"title": "part %d"}\n' % i
                        out.write(line)
                        out.flush()
                        written += line
                        time.sleep(0.1)
                        assert f.count() == 0, "taken while it was still being written"
                finished = time.monotonic()
                harness.poll(lambda: f.count() == 1, 5, what="the import")
                assert f.times[0] - finished < 1.5, f.times[0] - finished
                harness.poll(lambda: os.path.exists(os.path.join(drop, "done", "growing.jsonl")),
                             5, what="done/growing.jsonl")
                p.send_signal(signal.SIGTERM)
                out, err = p.communicate(timeout=10)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            body = f.requests[0][2]
    assert p.returncode == 0, (p.returncode, out, err)
    assert body == written
    lines = unstamped(out.decode())
    assert lines[0].startswith("watching %s every 0.3 s" % drop), lines
    assert lines[-1] == "stopped by SIGTERM", lines
    assert "growing.jsonl: moved to done/growing.jsonl" in lines, lines


def test_cli_import_watch_signal_abandons_the_request_and_keeps_the_file():
    with Tmp() as tmp:
        drop = os.path.join(tmp, "drop")
        os.mkdir(drop)
        write(os.path.join(drop, "slow.json"), library_bytes())
        with FakeImports([summary(b"", "slow.json") + ({}, 20)]) as f:
            p = subprocess.Popen([harness.BIN, "import", "--url", f.url, "--token", TOKEN,
                                  "--watch", drop, "--interval", "0.2"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                harness.poll(lambda: f.count() == 1, 5, what="the import")
                t0 = time.monotonic()
                p.send_signal(signal.SIGINT)
                out, err = p.communicate(timeout=10)
                dt = time.monotonic() - t0
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert p.returncode == 0, (p.returncode, out, err)
        assert dt < 2, dt
        lines = unstamped(out.decode())
        assert lines[-2:] == ["slow.json: abandoned; it stays in %s" % drop,
                              "stopped by SIGINT"], lines
        assert os.path.exists(os.path.join(drop, "slow.json"))
        assert os.listdir(os.path.join(drop, "done")) == []


# ---------------------------------------------------------------- a real node

def sample_file(tmp):
    """The Library module's sample file (or, until it is in the tree, one like it)."""
    if os.path.isfile(SAMPLE):
        return SAMPLE
    path = os.path.join(tmp, "library-sample.json")
    write(path, library_bytes())
    return path


def counts(node):
    r = node.request("GET", "/v1/resources/counts", token=node.librarian())
    return harness.expect(r, 200)


def test_cli_import_into_a_real_node_then_the_same_file_again():
    node = harness.Node(name="cli-import")
    try:
        with Tmp() as tmp:
            path = sample_file(tmp)
            data = open(path, "rb").read()
            rc, out, err = circa("import", "--data", node.data, "--config", node.cfg_path, path)
            assert rc == 0, (rc, out, err)
            assert out.splitlines() == [
                "importing %s (%d bytes)" % (path, len(data)),
                "%s: created 6, updated 0, unchanged 0, rejected 0 (library, sha256 %s…)"
                % (path, sha(data)[:12])], out
            c = counts(node)
            assert (c.get("FANTASY"), c.get("POETRY"), c.get("NONFICTION")) == (3, 1, 2), c
            rc, out, err = circa("import", "--data", node.data, "--config", node.cfg_path,
                                 "--format", "library", path)
            assert rc == 0, (rc, out, err)
            assert out.splitlines()[-1] == "%s: already imported (same sha256 %s…): nothing " \
                "changed" % (path, sha(data)[:12]), out
            assert counts(node) == c
    finally:
        node.stop()


def test_cli_import_watch_into_a_real_node():
    node = harness.Node(name="cli-import-watch")
    try:
        with Tmp() as tmp:
            drop = os.path.join(tmp, "drop")
            os.mkdir(drop)
            data = open(sample_file(tmp), "rb").read()
            write(os.path.join(drop, "1-catalog.json"), data)
            write(os.path.join(drop, "2-catalog-copy.json"), data)
            write(os.path.join(drop, "3-broken.json"), b'[{"contentId": "0190f6a2-7c1e-7c3a-')
            rc, out, err = circa("import", "--data", node.data, "--config", node.cfg_path,
                                 "--watch", drop, "--once")
            assert rc == 1, (rc, out, err)
            lines = unstamped(out)
            assert "2-catalog-copy.json: already imported (same sha256 %s…): nothing changed" \
                % sha(data)[:12] in lines, out
            assert sorted(os.listdir(os.path.join(drop, "done"))) == \
                ["1-catalog.json", "2-catalog-copy.json"]
            failed = os.path.join(drop, "failed")
            assert sorted(os.listdir(failed)) == ["3-broken.json", "3-broken.json.reason"]
            r = reason_of(os.path.join(failed, "3-broken.json.reason"))
            assert (r["attempts"], r["status"]) == ("1", "422"), r
            assert r.get("detail"), r
            assert sorted(os.listdir(drop)) == ["done", "failed"]
            c = counts(node)
            assert (c.get("FANTASY"), c.get("POETRY"), c.get("NONFICTION")) == (3, 1, 2), c
    finally:
        node.stop()
