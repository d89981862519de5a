"""`circa status`, `circa promote` and `circa drain` (cli/cluster.c), the operator's client of a
node's cluster admin API.

FakeNode stands in for that API: a small HTTP server on a free loopback port, in a thread, that
answers from canned JSON (GET /v1/cluster, POST /v1/cluster/nodes/{id}/promote,
POST /v1/cluster/drain) and records every request.  The tests check output, the bearer token,
the retries of promote, the progress of drain and the errors.  The last test uses a real node for
the address file DIR/circa.addr, by which `--data DIR` finds the node.
"""

import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import harness

LEADER, FOLLOWER, STANDBY = "8dee1daa1832a6e2", "dbbd263cab80a221", "3722f71a76ce67e6"
TOKEN = "tok.SECRET-not-to-be-printed.sig"

STATUS = {
    "id": LEADER, "address": "127.0.0.1:7080", "state": "leader", "role": "voter", "term": 7,
    "commit_index": 1520, "applied_index": 1519, "last_index": 1521, "ready": True,
    "leader": {"id": LEADER, "address": "127.0.0.1:7080"}, "drain": None,
    "nodes": [
        {"id": LEADER, "address": "127.0.0.1:7080", "role": "voter", "match_index": 1521, "lag": 0},
        {"id": FOLLOWER, "address": "127.0.0.1:7082", "role": "voter", "match_index": 1520,
         "lag": 1},
        {"id": STANDBY, "address": "127.0.0.1:7084", "role": "standby", "match_index": 1400,
         "lag": 121},
    ],
}


def problem(status, kind, title, detail):
    return (status, {"type": "/problems/" + kind, "title": title, "status": status,
                     "detail": detail})


def cluster_with(drain):
    return (200, dict(STATUS, drain=drain))


class FakeNode:
    """routes: {(method, path): [answer, ...]}; an answer is (status, body) or (status, body,
    "stop"), and they are given in order, the last one again and again.  "stop" shuts the server
    down after that answer, as a drained node exits.  requests: (method, path, headers) seen."""

    def __init__(self, routes):
        self.routes = {k: list(v) for k, v in routes.items()}
        self.requests = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                fake.requests.append((self.command, self.path, dict(self.headers)))
                queue = fake.routes.get((self.command, self.path))
                ans = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else \
                    problem(404, "not-found", "Not Found", "no such endpoint")
                status, body = ans[0], json.dumps(ans[1]).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json" if status >= 400
                                 else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if len(ans) > 2 and ans[2] == "stop":
                    threading.Thread(target=fake.stop, daemon=True).start()

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.stopped = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def circa(*args, env=None, timeout=60):
    """Run the binary without CIRCA_TOKEN/CIRCA_CONFIG from the outside; (rc, stdout, stderr)."""
    e = {k: v for k, v in os.environ.items() if k not in ("CIRCA_TOKEN", "CIRCA_CONFIG")}
    e.update(env or {})
    p = subprocess.run([harness.BIN] + [str(a) for a in args], capture_output=True,
                       timeout=timeout, env=e)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def data_dir(tmp):
    """A data directory with a signing key (as `circa user add` leaves one) and its config file
    (issuer iss-cli, audience aud-cli); no node serves it."""
    data, cfg = os.path.join(tmp, "data"), os.path.join(tmp, "config.json")
    with open(cfg, "w") as f:
        json.dump({"password_iterations": 1000,
                   "jwt": {"issuer": "iss-cli", "audience": "aud-cli"}}, f)
    rc, out, err = circa("user", "add", "--data", data, "--email", "a@example.org", "--role",
                         "admin", "--config", cfg)
    assert rc == 0, err
    return data, cfg


def no_token_shown(out, err):
    assert TOKEN not in out and TOKEN not in err, "the token was printed: %r %r" % (out, err)


# ---------------------------------------------------------------- status

def test_cli_cluster_status_prints_the_cluster():
    with FakeNode({("GET", "/v1/cluster"): [(200, STATUS)]}) as f:
        rc, out, err = circa("status", "--url", f.url, "--token", TOKEN)
        assert rc == 0, (rc, out, err)
        no_token_shown(out, err)
        assert [(m, p) for m, p, _ in f.requests] == [("GET", "/v1/cluster")], f.requests
        assert f.requests[0][2].get("Authorization") == "Bearer " + TOKEN, f.requests[0][2]
    assert re.search(r"^node +%s +peer 127\.0\.0\.1:7080" % LEADER, out, re.M), out
    assert re.search(r"^state +leader, role voter, term 7$", out, re.M), out
    assert re.search(r"^indexes +commit 1520, applied 1519, last 1521$", out, re.M), out
    assert re.search(r"^ready +yes$", out, re.M), out
    assert re.search(r"^leader +%s +peer 127\.0\.0\.1:7080 +\(this node\)$" % LEADER, out, re.M), out
    rows = {l.split()[0]: l.split() for l in out.splitlines() if l[:16] in (LEADER, FOLLOWER, STANDBY)}
    assert rows[LEADER][:5] == [LEADER, "127.0.0.1:7080", "voter", "1521", "0"], rows
    assert "leader," in rows[LEADER] and "this node" in " ".join(rows[LEADER]), rows
    assert rows[FOLLOWER] == [FOLLOWER, "127.0.0.1:7082", "voter", "1520", "1"], rows
    assert rows[STANDBY] == [STANDBY, "127.0.0.1:7084", "standby", "1400", "121"], rows


def test_cli_cluster_status_of_a_follower_without_leader():
    st = dict(STATUS, id=FOLLOWER, state="candidate", ready=False, leader=None,
              drain="leaving", nodes=[{k: v for k, v in n.items() if k not in ("match_index", "lag")}
                                      for n in STATUS["nodes"]])
    with FakeNode({("GET", "/v1/cluster"): [(200, st)]}) as f:
        rc, out, err = circa("status", "--url", f.url + "/", env={"CIRCA_TOKEN": TOKEN})
        assert rc == 0, (rc, out, err)
        assert f.requests[0][2].get("Authorization") == "Bearer " + TOKEN, f.requests[0][2]
    assert re.search(r"^leader +none known$", out, re.M), out
    assert re.search(r"^ready +no$", out, re.M), out
    assert re.search(r"^drain +leaving$", out, re.M), out
    assert "MATCH" not in out and "LAG" not in out, out
    assert re.search(r"^%s +127\.0\.0\.1:7082 +voter +this node$" % FOLLOWER, out, re.M), out
    assert re.search(r"^%s +127\.0\.0\.1:7084 +standby$" % STANDBY, out, re.M), out


def test_cli_cluster_status_json_round_trips():
    with FakeNode({("GET", "/v1/cluster"): [(200, STATUS)]}) as f:
        rc, out, err = circa("status", "--json", "--url", f.url, "--token", TOKEN)
    assert rc == 0, (rc, out, err)
    assert json.loads(out) == STATUS, out


def test_cli_cluster_status_unauthorized_shows_the_problem():
    with FakeNode({("GET", "/v1/cluster"): [problem(401, "unauthorized", "Unauthorized",
                                                    "signature does not verify")]}) as f:
        rc, out, err = circa("status", "--url", f.url, "--token", TOKEN)
    assert rc == 1, (rc, out, err)
    assert "401 Unauthorized: signature does not verify" in err, err
    assert out == "", out
    no_token_shown(out, err)


# ---------------------------------------------------------------- promote

def test_cli_cluster_promote_retries_while_there_is_no_leader():
    path = "/v1/cluster/nodes/%s/promote" % STANDBY
    no_leader = problem(503, "unavailable", "Service Unavailable", "no leader right now")
    with FakeNode({("POST", path): [no_leader, no_leader,
                                    (200, {"id": STANDBY, "role": "voter"})]}) as f:
        rc, out, err = circa("promote", STANDBY, "--url", f.url, "--token", TOKEN)
        assert rc == 0, (rc, out, err)
        assert [(m, p) for m, p, _ in f.requests] == [("POST", path)] * 3, f.requests
        assert all(h.get("Authorization") == "Bearer " + TOKEN for _, _, h in f.requests)
    lines = out.splitlines()
    assert lines[-1] == "node %s is now a voter" % STANDBY, out
    assert len(lines) == 2 and lines[0].startswith("no leader right now"), out
    assert "retrying for up to 30 s" in lines[0], out


def test_cli_cluster_promote_unknown_node():
    path = "/v1/cluster/nodes/%s/promote" % STANDBY
    with FakeNode({("POST", path): [problem(404, "not-found", "Not Found",
                                            "no node with this id is in the cluster")]}) as f:
        rc, out, err = circa("promote", STANDBY, "--url", f.url, "--token", TOKEN)
        assert len(f.requests) == 1, f.requests
    assert rc == 1, (rc, out, err)
    assert "404 Not Found: no node with this id is in the cluster" in err, err


# ---------------------------------------------------------------- drain

def drain_node():
    return FakeNode({
        ("POST", "/v1/cluster/drain"): [(202, {"drain": "transferring-leadership"})],
        ("GET", "/v1/cluster"): [cluster_with("transferring-leadership"),
                                 cluster_with("transferring-leadership"), cluster_with("leaving"),
                                 cluster_with("leaving"), cluster_with("stopping") + ("stop",)],
    })


def test_cli_cluster_drain_shows_progress_until_the_node_exits():
    with drain_node() as f:
        rc, out, err = circa("drain", "--url", f.url, "--token", TOKEN, timeout=30)
        reqs = [(m, p) for m, p, _ in f.requests]
    assert rc == 0, (rc, out, err)
    assert reqs == [("POST", "/v1/cluster/drain")] + [("GET", "/v1/cluster")] * 5, reqs
    assert out.splitlines() == ["drain: transferring-leadership", "drain: leaving",
                                "drain: stopping", "the node at 127.0.0.1:%d stopped" % f.port], out
    assert err == "", err


def test_cli_cluster_drain_progress_is_one_line_on_a_terminal():
    with drain_node() as f:
        rc, text, err = harness.run_on_pty([harness.BIN, "drain", "--url", f.url, "--token", TOKEN],
                                           timeout=30)
    assert rc == 0, (rc, text, err)
    progress, _, rest = text.partition("\n")
    assert progress.split("\r\x1b[K") == ["", "drain: transferring-leadership", "drain: leaving",
                                          "drain: stopping"], repr(text)
    assert rest == "the node at 127.0.0.1:%d stopped\n" % f.port, repr(text)


def test_cli_cluster_drain_times_out_while_the_node_still_answers():
    with FakeNode({("POST", "/v1/cluster/drain"): [(202, {"drain": "transferring-leadership"})],
                   ("GET", "/v1/cluster"): [cluster_with("leaving")]}) as f:
        t0 = time.monotonic()
        rc, out, err = circa("drain", "--url", f.url, "--token", TOKEN, "--timeout", "1")
        dt = time.monotonic() - t0
    assert rc == 1, (rc, out, err)
    assert 0.9 < dt < 10, dt
    assert out.splitlines() == ["drain: transferring-leadership", "drain: leaving"], out
    assert "still answers after 1 s (drain: leaving)" in err, err


def test_cli_cluster_drain_refused_for_the_last_voter():
    detail = "this node is the last voter: add and promote another node before draining it"
    with FakeNode({("POST", "/v1/cluster/drain"): [problem(409, "conflict", "Conflict",
                                                           detail)]}) as f:
        rc, out, err = circa("drain", "--url", f.url, "--token", TOKEN)
        assert len(f.requests) == 1, f.requests
    assert rc == 1, (rc, out, err)
    assert "409 Conflict: " + detail in err, err


# ---------------------------------------------------------------- finding the node

def test_cli_cluster_usage_errors():
    for args, msg in [
        (["status"], "--data DIR, or --url URL"),
        (["promote", STANDBY], "--data DIR, or --url URL"),
        (["drain"], "--data DIR, or --url URL"),
        (["status", "--url", "https://127.0.0.1:1", "--token", "t"], "only http://"),
        (["status", "--url", "127.0.0.1:1", "--token", "t"], "http://HOST:PORT"),
        (["status", "--url", "http://127.0.0.1:1"], "--token TOKEN or CIRCA_TOKEN"),
        (["status", "--url", "http://127.0.0.1:1", "--data", "/nonexistent"], "not both"),
        (["promote", "--url", "http://127.0.0.1:1", "--token", "t"], "name one NODE_ID"),
        (["promote", "xyz", "--url", "http://127.0.0.1:1", "--token", "t"], "16 hex digits"),
        (["drain", "--timeout", "0", "--url", "http://127.0.0.1:1", "--token", "t"], "--timeout"),
        (["status", "--bogus"], "usage: circa status"),
    ]:
        rc, out, err = circa(*args)
        assert rc == 2, (args, rc, out, err)
        assert msg in err, (args, err)
    for cmd in ("status", "promote", "drain"):
        rc, out, err = circa(cmd, "--help")
        assert rc == 0 and out.startswith("usage: circa " + cmd) and "--url" in out, (cmd, out)


def test_cli_cluster_data_dir_without_a_node():
    tmp = tempfile.mkdtemp(prefix="circa-sys-cli-")
    try:
        data, cfg = data_dir(tmp)
        rc, out, err = circa("status", "--data", data, "--config", cfg)
        assert rc == 1, (rc, out, err)
        assert "no node is serving %s" % data in err, err
        # a file left by a node that died: nothing listens there any more
        with open(os.path.join(data, "circa.addr"), "w") as f:
            f.write("127.0.0.1:%d\n" % harness.free_port())
        rc, out, err = circa("drain", "--data", data, "--config", cfg)
        assert rc == 1, (rc, out, err)
        assert "connection refused; is the node running?" in err, err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_cli_cluster_data_dir_signs_an_admin_token():
    """--data DIR: the address from DIR/circa.addr, a 300 s admin token signed with DIR's key
    and the config's issuer and audience."""
    tmp = tempfile.mkdtemp(prefix="circa-sys-cli-")
    try:
        data, cfg = data_dir(tmp)
        with FakeNode({("GET", "/v1/cluster"): [(200, STATUS)]}) as f:
            with open(os.path.join(data, "circa.addr"), "w") as a:
                a.write("127.0.0.1:%d\n" % f.port)
            rc, out, err = circa("status", "--data", data, env={"CIRCA_CONFIG": cfg})
            assert rc == 0, (rc, out, err)
            assert "http 127.0.0.1:%d" % f.port in out, out
            authz = f.requests[0][2].get("Authorization", "")
        assert authz.startswith("Bearer "), authz
        tok = authz[7:]
        assert tok not in out + err
        head, claims, _ = harness.jwt_parts(tok)
        assert head.get("alg") == "HS256", head
        assert claims.get("role") == "admin" and harness.is_uuid(claims.get("sub")), claims
        assert claims.get("iss") == "iss-cli" and claims.get("aud") == "aud-cli", claims
        assert claims["exp"] - claims["iat"] == 300, claims
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_cli_cluster_addr_file_follows_a_real_node():
    node = harness.Node(name="cli-addr")
    path = os.path.join(node.data, "circa.addr")
    assert os.path.isfile(path), os.listdir(node.data)
    with open(path) as f:
        assert f.read() == "127.0.0.1:%d\n" % node.port
    assert not [n for n in os.listdir(node.data) if n.startswith(".circa.addr")], \
        os.listdir(node.data)
    assert node.stop() == 0
    assert not os.path.exists(path), os.listdir(node.data)
