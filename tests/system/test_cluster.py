"""A Raft cluster of circa nodes on loopback (cluster.py), under faults, checked by history.py.

Every test starts its own cluster (election timeout 500 ms, heartbeat 50 ms) and stops it.  The
fault tests run a concurrent checkout/return workload (history.Workload) while they kill -9,
SIGSTOP, isolate (fault switch), join or drain nodes, and end with the history checker: every ok
write on every live node, no failed write took effect, no copy lent twice, identical digests.
"""

import contextlib
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import harness
from cluster import FAST_RAFT, Cluster, kill_leader_round, poll
from harness import expect, check_problem
from history import describe_times

HEX16 = re.compile(r"^[0-9a-f]{16}$")
WORKLOAD = dict(clients=6, resources=3, copies=2)


@contextlib.contextmanager
def running(wl):
    """Run the workload for the block; stop it at the end (its own errors only if the block
    succeeded, so they never hide the block's failure)."""
    wl.start()
    try:
        yield wl
    except BaseException:
        try:
            wl.stop()
        except Exception:  # noqa: BLE001
            pass
        raise
    wl.stop()


def verify(c, wl, nodes=None):
    rep = c.verify(wl, nodes)
    print("    %s\n    %s" % (wl.summary(), str(rep).splitlines()[0]))
    rep.assert_ok()
    assert rep.stats["ok"] > 0, str(rep)
    return rep


def progress(wl, count=5, timeout=15.0):
    """Wait until `count` more writes succeeded from now on."""
    return wl.wait_ok_after(time.monotonic(), timeout=timeout, count=count)


def key():
    return {"Idempotency-Key": "t-" + uuid.uuid4().hex}


# ---------------------------------------------------------------- (a)

def test_follower_read_your_writes_and_tokens_everywhere():
    c = Cluster(3, name="ryw")
    try:
        ld = c.leader()
        # the leader listed the last promotion as committed; every node applies it soon after
        c.wait_converged()
        peers = {n.peer for n in c.nodes}
        ids = set()
        for n in c.nodes:
            st = n.status()
            assert st, "%s: GET /v1/cluster failed" % n.name
            for k in ("id", "address", "state", "role", "leader", "term", "commit_index",
                      "applied_index", "ready", "nodes"):
                assert k in st, "%s: /v1/cluster lacks %r: %r" % (n.name, k, st)
            assert HEX16.match(st["id"]), st
            assert st["address"] == n.peer, (st, n.peer)
            assert st["state"] == ("leader" if n is ld else "follower"), (n.name, st)
            assert st["role"] == "voter" and st["ready"] is True, st
            assert (st["leader"] or {}).get("id") == ld.node_id, (n.name, st, ld.node_id)
            assert (st["leader"] or {}).get("address") == ld.peer, (n.name, st)
            assert {x["address"] for x in st["nodes"]} == peers, st
            assert {x["role"] for x in st["nodes"]} == {"voter"}, st
            ids.add(st["id"])
        assert len(ids) == 3, ids
        expect(c.nodes[0].request("GET", "/v1/cluster", token=c.lib_token), 403)

        f1, f2 = [n for n in c.nodes if n is not ld]
        lib = c.lib_token
        # every write through follower f1 is visible on f1 as soon as it is answered
        r = f1.request("POST", "/v1/resources", {"title": "ryw", "type": "FICTION", "copies": 2},
                       token=lib, headers=key())
        rid = expect(r, 201)["id"]
        expect(f1.request("GET", "/v1/resources/" + rid, token=lib), 200)
        u = f1.register()
        tok = f1.login(u["email"])
        loan = expect(f1.request("POST", "/v1/loans", {"resource_id": rid}, token=tok, headers=key()), 201)
        mine = expect(f1.request("GET", "/v1/me/loans", token=tok), 200)["items"]
        assert [l["id"] for l in mine] == [loan["id"]], mine
        assert f1.get_resource(rid, lib)["available"] == 1
        # a strong read on the other follower confirms with the leader: it sees the write at once
        strong = expect(f2.request("GET", "/v1/me/loans?consistency=strong", token=tok), 200)["items"]
        assert [l["id"] for l in strong] == [loan["id"]], strong
        # and every node has it soon
        for n in c.nodes:
            harness.poll(lambda: loan["id"] in [l["id"] for l in expect(
                n.request("GET", "/v1/users/%s/loans" % u["id"], token=lib), 200)["items"]],
                timeout=10, what="the loan on %s" % n.name)
        # a return through f2: read-your-writes on f2
        ret = expect(f2.request("POST", "/v1/loans/%s/return" % loan["id"], token=tok, headers=key()), 200)
        assert ret["status"] == "returned", ret
        mine = expect(f2.request("GET", "/v1/me/loans", token=tok), 200)["items"]
        assert [(l["id"], l["status"]) for l in mine] == [(loan["id"], "returned")], mine
        assert f2.get_resource(rid, lib)["available"] == 2

        # tokens minted on any node's data dir are valid on every node
        for src in c.nodes:
            adm = src.admin()
            mt = src.token(u["id"], "member")
            for dst in c.nodes:
                expect(dst.request("GET", "/v1/cluster", token=adm), 200)
                me = expect(dst.request("GET", "/v1/me", token=mt), 200)
                assert me["id"] == u["id"], (src.name, dst.name, me)
        # circa status talks to the node running on the data dir
        for n in c.nodes:
            out = n.cli("status", "--data", n.data).stdout.decode()
            assert n.node_id in out, "circa status --data %s printed %r" % (n.data, out)

        idx = c.wait_converged()
        seq = c.leader().status()["command_seq"]
        d = c.digests()
        assert len({(x.get("applied_index"), x.get("digest")) for x in d.values()}) == 1, d
        # the digest covers every command (its applied_index is the raft index of the last
        # command entry: barriers after it move the cluster's applied index, not the state)
        assert all(x["command_seq"] == seq and x["applied_index"] <= idx and
                   re.match(r"^[0-9a-f]{64}$", x["digest"]) for x in d.values()), (d, seq, idx)
    finally:
        c.stop()


# ---------------------------------------------------------------- (b)

def test_a_follower_catches_up_before_refusing_an_unknown_caller():
    """A member or API key created through the leader and used at once on a follower that has
    not applied it yet: the follower asks the leader before it says 401, so the caller is
    served; cut off from the leader it cannot tell and says 503 (retry), never a wrong 401."""
    c = Cluster(3, name="unk", raft=FAST_RAFT)
    try:
        ld = c.leader()
        c.wait_converged()
        f = c.followers()[0]
        rid = expect(ld.request("POST", "/v1/resources", {"title": "unk", "type": "AUDIO",
                                                          "copies": 3}, token=c.lib_token,
                                headers=key()), 201)["id"]
        c.wait_caught_up(f)
        c.isolate(f, True)
        u = ld.register()
        tok = ld.login(u["email"])
        api = expect(ld.request("POST", "/v1/api-keys", {"name": "unk", "role": "librarian"},
                                token=ld.admin()), 201)["key"]
        for what, r in (("token", f.request("GET", "/v1/me/loans", token=tok, timeout=15)),
                        ("API key", f.request("GET", "/v1/resources/" + rid, api_key=api,
                                              timeout=15))):
            assert r.status == 503 and r.headers.get("Retry-After"), (what, r)
        # a caller the leader does not know either is refused once the follower has asked
        stranger = f.token(str(uuid.uuid4()), "member")
        c.isolate(f, False)
        expect(f.request("GET", "/v1/me/loans", token=tok), 200)
        expect(f.request("GET", "/v1/resources/" + rid, api_key=api), 200)
        r = f.request("GET", "/v1/me/loans", token=stranger)
        assert r.status == 401, r
        check_problem(r, "unauthorized")
        r = f.request("GET", "/v1/me", api_key="circa_" + "0" * 40)
        assert r.status == 401, r
        check_problem(r, "unauthorized")
        # the same for a write: a new member borrows through a follower right away
        u2 = ld.register()
        tok2 = ld.login(u2["email"])
        expect(f.request("POST", "/v1/loans", {"resource_id": rid}, token=tok2, headers=key()),
               201)
        expect(f.request("GET", "/v1/me/loans", token=tok2), 200)
    finally:
        c.stop()


def test_kill9_leader_under_load_three_rounds():
    c = Cluster(3, name="kill")
    try:
        wl = c.workload(**WORKLOAD)
        times = []
        with running(wl):
            for _ in range(3):
                times.append(kill_leader_round(c, wl))
            progress(wl)
        print("    failover, kill -9 leader -> first ok write: %s [%s]" % (
            describe_times(times), ", ".join("%.2fs" % t for t in times)))
        verify(c, wl)
    finally:
        c.stop()


# ---------------------------------------------------------------- (c)

def test_sigstop_leader_steps_down_and_catches_up():
    c = Cluster(3, name="pause")
    try:
        wl = c.workload(**WORKLOAD)
        with running(wl):
            progress(wl)
            old = c.leader()
            old_term = old.status()["term"]
            t = time.monotonic()
            c.pause(old)
            new = c.leader(exclude=[old], timeout=15)
            dt = wl.wait_ok_after(t, timeout=15)
            # stay stopped well past the election timeout
            time.sleep(max(0.0, t + 4 * c.election_s + 0.5 - time.monotonic()))
            new_term = new.status()["term"]
            assert new_term > old_term, (old_term, new_term)
            progress(wl)
            c.resume(old)

            def stepped_down():
                st = old.status()
                ld = c.find_leader()
                return st and ld is not None and st["term"] >= new_term and \
                    (st["state"] == "follower" and (st["leader"] or {}).get("id") == ld.node_id or
                     st["state"] == "leader" and ld is old and st["term"] > new_term) and st
            poll(stepped_down, timeout=15, what=lambda: "the old leader to step down (%s)" % c.describe())
            c.wait_caught_up(old)
            progress(wl, count=10)
        print("    failover, SIGSTOP leader -> first ok write: %.2fs" % dt)
        verify(c, wl)
    finally:
        c.stop()


# ---------------------------------------------------------------- (d)

def test_isolated_leader_majority_continues_then_heals():
    c = Cluster(3, name="iso")
    try:
        wl = c.workload(**WORKLOAD)
        # a side resource and member, outside the workload, for direct writes to the isolated node
        side = c.workload(clients=1, resources=1, copies=1, name="iso-side")
        side_rid, side_tok = next(iter(side.resources)), side.clients[0][0].token
        with running(wl):
            progress(wl)
            old = c.leader()
            c.isolate(old, True)
            t_iso = time.monotonic()
            new = c.leader(exclude=[old], timeout=15)
            dt = wl.wait_ok_after(t_iso, timeout=15, count=20)
            # reads on the isolated node still answer
            expect(old.request("GET", "/v1/resources/" + side_rid, token=c.lib_token), 200)
            time.sleep(max(0.0, t_iso + 3 * c.election_s - time.monotonic()))
            # a write to the isolated node does not hang and does not succeed
            t0 = time.monotonic()
            r = old.request("POST", "/v1/loans", {"resource_id": side_rid}, token=side_tok,
                            headers=key(), timeout=15)
            assert r.status == 503 and time.monotonic() - t0 <= 6.0, \
                "write to the isolated node: %r after %.1fs" % (r, time.monotonic() - t0)
            assert r.headers.get("Retry-After"), r
            progress(wl, count=10)
            t_heal = time.monotonic()
            c.isolate(old, False)
            c.wait_caught_up(old)
            poll(lambda: (old.status() or {}).get("state") == "follower" and
                 ((old.status() or {}).get("leader") or {}).get("id") == c.leader().node_id,
                 timeout=15, what=lambda: "the healed node to follow the leader (%s)" % c.describe())
            progress(wl, count=10)
        # nothing the isolated node answered ok while cut off (for operations begun after the cut)
        bad = [o for o in wl.snapshot() if o.invoke > t_iso for a in o.attempts
               if a.node == old.name and a.cls == "ok" and a.t1 < t_heal]
        assert not bad, "the isolated node answered writes ok:\n  %s" % "\n  ".join(map(str, bad[:5]))
        print("    failover, isolate leader -> first ok write: %.2fs" % dt)
        verify(c, wl)
    finally:
        c.stop()


# ---------------------------------------------------------------- (e)

def test_join_fourth_node_under_load_and_promote():
    c = Cluster(3, name="join")
    try:
        wl = c.workload(**WORKLOAD)
        with running(wl):
            progress(wl)
            n4 = c.add_node()                   # --join all three; ready = caught up
            st = n4.status()
            assert st and st["ready"] is True and st["role"] == "standby", st
            c.wait_role(n4, "standby")
            progress(wl)
            c.promote(n4)
            harness.poll(lambda: (n4.status() or {}).get("role") == "voter", timeout=15,
                         what="%s to report role voter" % n4.name)
            t = time.monotonic()
            harness.poll(lambda: any(a.node == n4.name and a.cls == "ok" and a.t0 >= t
                                     for o in wl.snapshot() for a in list(o.attempts)),
                         timeout=15, what="a write through the new node")
            progress(wl, count=10)
        assert len(c.live()) == 4
        assert sorted(c.roles().values()) == ["voter"] * 4, c.roles()
        verify(c, wl)
    finally:
        c.stop()


# ---------------------------------------------------------------- (f)

def test_drain_leader_moves_leadership_and_exits_0():
    c = Cluster(3, name="drain")
    try:
        wl = c.workload(clients=3, resources=3, copies=2)
        with running(wl):
            progress(wl)
            old = c.leader()
            old_id = old.node_id
            c.drain(old)

            def unready():
                try:
                    return old.request("GET", "/readyz", timeout=2).status == 503
                except OSError:
                    return not old.alive()
            harness.poll(unready, timeout=5, what="the draining node to answer /readyz 503")
            c.leader(exclude=[old], timeout=20)
            rc = old.wait_exit(30)
            assert rc == 0, "the drained node exited with %r (log: %s)" % (rc, old.log_path)
            progress(wl, count=10)
        ops = wl.snapshot()
        bad = [o for o in ops if o.outcome == "unknown" or
               (o.outcome == "fail" and (o.status is None or o.status >= 500 or o.status in (429, 503)))]
        assert not bad, "%d operations ended in an error the client could not retry away:\n  %s" % (
            len(bad), "\n  ".join(map(str, bad[:8])))
        st = c.leader().status()
        assert old_id not in [x["id"] for x in st["nodes"]] and len(st["nodes"]) == 2, st
        verify(c, wl)
    finally:
        c.stop()


# ---------------------------------------------------------------- (g)

def test_five_nodes_kill9_leader_and_one_more():
    c = Cluster(5, name="five")
    try:
        wl = c.workload(**WORKLOAD)
        with running(wl):
            progress(wl)
            old = c.leader()
            victim = random.choice([n for n in c.live() if n is not old])
            t = time.monotonic()
            c.kill9(old)
            c.kill9(victim)
            c.leader(exclude=[old, victim], timeout=15)
            dt = wl.wait_ok_after(t, timeout=20)
            progress(wl, count=20)
        print("    failover, kill -9 leader + follower of 5 -> first ok write: %.2fs" % dt)
        assert len(c.live()) == 3
        verify(c, wl)
    finally:
        c.stop()


# ---------------------------------------------------------------- (h)

def _no_quorum_write(n, rid, tok, kinds):
    t0 = time.monotonic()
    r = n.request("POST", "/v1/loans", {"resource_id": rid}, token=tok, headers=key(), timeout=15)
    dt = time.monotonic() - t0
    assert dt <= 5.0, "write without quorum on %s took %.1fs: %r" % (n.name, dt, r)
    expect(r, 503)
    assert r.headers.get("Retry-After"), "503 without Retry-After: %r" % (r,)
    kind = r.body.get("type", "").rsplit("/problems/", 1)[-1] if isinstance(r.body, dict) else None
    assert kind in kinds, "expected problem %s, got %r" % (" or ".join(kinds), r)
    check_problem(r, kind)
    return r


def test_no_quorum_write_503_fast_read_200():
    c = Cluster(3, name="noq")
    try:
        lib = c.lib_token
        ld = c.leader()
        rid = expect(ld.request("POST", "/v1/resources", {"title": "nq", "type": "FICTION", "copies": 3},
                                token=lib, headers=key()), 201)["id"]
        u = ld.register()
        tok = ld.login(u["email"])
        loan = expect(ld.request("POST", "/v1/loans", {"resource_id": rid}, token=tok, headers=key()), 201)
        rid2 = expect(ld.request("POST", "/v1/resources", {"title": "nq2", "type": "FICTION"},
                                 token=lib, headers=key()), 201)["id"]
        c.wait_converged()

        def reads_ok(n):
            mine = expect(n.request("GET", "/v1/me/loans", token=tok, timeout=5), 200)["items"]
            assert loan["id"] in [l["id"] for l in mine], mine
            expect(n.request("GET", "/v1/resources/" + rid, token=lib, timeout=5), 200)

        # 1: the survivor is a follower (the leader and the other follower die)
        f1, f2 = [n for n in c.nodes if n is not ld]
        c.kill9(ld)
        c.kill9(f2)
        _no_quorum_write(f1, rid2, tok, ("no-leader", "outcome-unknown"))
        reads_ok(f1)
        time.sleep(3 * c.election_s)
        _no_quorum_write(f1, rid2, tok, ("no-leader",))
        reads_ok(f1)

        # quorum back: writes work again
        c.restart(ld, wait_ready=False)
        c.restart(f2, wait_ready=False)
        for n in (ld, f2):
            n.wait_ready(30)
        ld2 = c.leader(timeout=20)
        def write_ok():
            try:
                return ld2.request("POST", "/v1/resources", {"title": "back", "type": "FICTION"},
                                   token=lib, headers=key(), timeout=5).status == 201
            except OSError:
                return False
        poll(write_ok, timeout=15, what="a write after quorum came back")
        c.wait_converged()

        # 2: the survivor is the leader (both followers die)
        for n in [n for n in c.nodes if n is not ld2]:
            c.kill9(n)
        _no_quorum_write(ld2, rid2, tok, ("no-leader", "outcome-unknown"))
        reads_ok(ld2)
        time.sleep(3 * c.election_s)
        _no_quorum_write(ld2, rid2, tok, ("no-leader",))
        reads_ok(ld2)
        st = ld2.status()
        assert st and st["state"] != "leader", "a leader without quorum did not step down: %r" % (st,)
    finally:
        c.stop()


# ---------------------------------------------------------------- (i) snapshots

# a snapshot every 8 entries, 32 kept: a new node's first entries are long gone, and once it
# installed a snapshot it can catch up from the log even on a loaded machine
SNAP_RAFT = dict(FAST_RAFT, snapshot_threshold=8, snapshot_trailing=32, snapshot_chunk_kib=1)


def test_join_after_compaction_installs_the_state_in_chunks():
    """The leader compacted its log long ago: a new node must install the state from a snapshot,
    fetched in many small chunks (1 KiB here), while writes go on."""
    c = Cluster(3, name="snap", raft=SNAP_RAFT)
    try:
        lib = c.lib_token
        ld = c.leader()
        # enough entries for several snapshots and compactions, and rows for many chunks
        for i in range(100):
            expect(ld.request("POST", "/v1/resources", {"title": "snapshot %03d %s" % (i, "x" * 200),
                                                         "type": "FICTION", "copies": 2},
                              token=lib, headers=key()), 201)
        wl = c.workload(**WORKLOAD)
        with running(wl):
            progress(wl, count=20)
            n4 = c.add_node()                   # ready = installed and caught up
            log = open(n4.log_path, errors="replace").read()
            m = re.search(r'"msg":"snapshot installed".*"rows":(\d+),"bytes":(\d+)', log)
            assert m, "%s joined without installing a snapshot (log: %s)" % (n4.name, n4.log_path)
            rows, nbytes = int(m.group(1)), int(m.group(2))
            assert rows > 100 and nbytes > 100 * 200, m.group(0)
            # 1 KiB chunks: the state came in many of them
            assert nbytes // 1024 >= 10, m.group(0)
            c.promote(n4)
            progress(wl, count=10)
        verify(c, wl)
        # the installed node serves the catalog written before it existed
        r = expect(n4.request("GET", "/v1/resources?limit=100", token=lib), 200)
        assert sum(1 for x in r["items"] if x["title"].startswith("snapshot ")) >= 100 or r.get("next"), r
    finally:
        c.stop()


def test_cluster_started_from_existing_state_gives_it_to_joiners():
    """A data directory with state made outside any log (here `circa user add` before the first
    start) bootstraps from a snapshot of it, so a node that joins later has that state too."""
    import cluster as cl
    made = {}
    orig = cl.ClusterNode.start

    def start(self, *a, **kw):
        if self.starts == 0 and self.name.endswith("-n1"):
            made["user"], made["pw"] = self.user_add("first-admin@example.org", "admin",
                                                     password="first admin pw 1")
        return orig(self, *a, **kw)
    cl.ClusterNode.start = start
    try:
        c = Cluster(2, name="seed")
    finally:
        cl.ClusterNode.start = orig
    try:
        assert made, "the first node was not seeded"
        n1, n2 = c.nodes
        log = open(n1.log_path, errors="replace").read()
        assert "bootstrapped a one-voter cluster from the state in the data directory" in log, log
        for n in (n1, n2):
            tok = n.login("first-admin@example.org", password="first admin pw 1")
            me = expect(n.request("GET", "/v1/me", token=tok), 200)
            assert me["id"] == made["user"]["id"] and me["role"] == "admin", me
        c.wait_converged()
        d = c.digests()
        assert len({x.get("digest") for x in d.values()}) == 1, d
        # from now on the state is replicated: a local write would reach no other node
        p = n2.cli("user", "add", "--data", n2.data, "--email", "late@example.org", "--role",
                   "admin", check=False)
        assert p.returncode == 1 and b"through the API" in p.stderr, (p.returncode, p.stderr)
        assert c.digests() == d or len({x.get("digest") for x in c.digests().values()}) == 1
    finally:
        c.stop()


# ---------------------------------------------------------------- (j) peer TLS

def _pki(d, name, nodes):
    """A CA and one certificate per node (CN and SAN 127.0.0.1), made with the openssl CLI."""
    def run(*a):
        subprocess.run(["openssl"] + list(a), check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", name + "-ca.key", "-out", name + "-ca.pem", "-days", "2", "-subj", "/CN=" + name)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    out = {}
    for n in nodes:
        base = "%s-%s" % (name, n)
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            base + ".key", "-out", base + ".csr", "-subj", "/CN=127.0.0.1")
        run("x509", "-req", "-in", base + ".csr", "-CA", name + "-ca.pem", "-CAkey", name + "-ca.key",
            "-CAcreateserial", "-out", base + ".pem", "-days", "2", "-extfile", "san.ext")
        out[n] = {"tls_ca": os.path.join(d, name + "-ca.pem"),
                  "tls_cert": os.path.join(d, base + ".pem"),
                  "tls_key": os.path.join(d, base + ".key")}
    return out


def test_peers_use_mutual_tls_and_refuse_strangers():
    d = tempfile.mkdtemp(prefix="circa-pki-")
    try:
        good = _pki(d, "cluster", ["n1", "n2", "n3"])
        bad = _pki(d, "other", ["x"])
        c = Cluster(1, name="tls", config={"raft": good["n1"]})
        try:
            n2 = c.add_node(config={"raft": good["n2"]})
            c.promote(n2)
            lib = c.lib_token
            rid = expect(n2.request("POST", "/v1/resources", {"title": "tls", "type": "FICTION"},
                                    token=lib, headers=key()), 201)["id"]
            expect(c.nodes[0].request("GET", "/v1/resources/" + rid, token=lib), 200)
            log = open(c.nodes[0].log_path, errors="replace").read()
            assert '"tls":true' in log, "n1 did not start with TLS"
            # a certificate from another CA, and no TLS at all: neither gets in
            for name, raft in (("foreign CA", bad["x"]), ("plain tcp", {})):
                x = c.add_node(config={"raft": dict(raft, tls_ca=raft.get("tls_ca", ""),
                                                    tls_cert=raft.get("tls_cert", ""),
                                                    tls_key=raft.get("tls_key", ""))},
                               wait_ready=False)
                time.sleep(3 * c.election_s + 1)
                assert x.alive(), "%s: the node exited" % name
                xlog = open(x.log_path, errors="replace").read()
                assert "asked to join" not in xlog and "joined the cluster" not in xlog, \
                    "%s got in: %s" % (name, x.log_path)
                assert len(c.roles()) == 2, "%s: %r" % (name, c.roles())
                x.stop()
                c.nodes.remove(x)
            c.wait_converged()
        finally:
            c.stop()
        # peers named by DNS name: a listener's certificate must carry that name
        named = _pki(d, "named", ["n1", "n2", "w"])
        for n in ("n1", "n2"):
            subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-keyout", "named-%s.key" % n, "-out", "named-%s.csr" % n,
                            "-subj", "/CN=localhost"], check=True, capture_output=True, cwd=d)
            with open(os.path.join(d, "dns.ext"), "w") as f:
                f.write("subjectAltName=DNS:localhost\n")
            subprocess.run(["openssl", "x509", "-req", "-in", "named-%s.csr" % n, "-CA",
                            "named-ca.pem", "-CAkey", "named-ca.key", "-CAcreateserial", "-out",
                            "named-%s.pem" % n, "-days", "2", "-extfile", "dns.ext"],
                           check=True, capture_output=True, cwd=d)
        c = Cluster(1, name="tlsdns", config={"raft": named["n1"]}, peer_host="localhost")
        try:
            c.add_node(config={"raft": named["n2"]})        # localhost matches: in
            assert len(c.roles()) == 2, c.roles()
        finally:
            c.stop()
        # the first node's certificate names 127.0.0.1, not localhost: nobody gets in
        c = Cluster(1, name="tlsbad", config={"raft": named["w"]}, peer_host="localhost")
        try:
            x = c.add_node(config={"raft": named["n2"]}, wait_ready=False)
            time.sleep(3 * c.election_s + 1)
            assert "asked to join" not in open(x.log_path, errors="replace").read()
            assert len(c.roles()) == 1, c.roles()
        finally:
            c.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- (k) write-behind moves

def test_write_behind_runs_on_the_leader_and_moves_with_it():
    """Three nodes with the same PostgreSQL: only the leader flushes; kill -9 it under load and
    the new leader goes on from PostgreSQL's cursor.  At the end PostgreSQL has every command
    exactly once (1..N, no gap) and the same loans as the nodes, and followers trimmed their
    outbox from the leader's notices."""
    import pgfix
    from test_writebehind import metrics, pg_config
    ok, why = pgfix.available()
    assert ok, "this test needs a PostgreSQL server: " + why
    pg = pgfix.PG().start()
    try:
        c = Cluster(3, name="wb", config=pg_config(pg))
        try:
            wl = c.workload(**WORKLOAD)
            with running(wl):
                progress(wl, count=10)
                ld = c.leader()
                flushers = [n for n in c.nodes if metrics(n)["circa_wb_connected"] == 1]
                assert flushers in ([], [ld]), "flushing: %s, leader %s" % (flushers, ld.name)
                kill_leader_round(c, wl)
                progress(wl, count=10)
            verify(c, wl)
            ld = c.leader()
            seq = ld.status()["command_seq"]

            def flushed():
                cur = int(pg.psql("SELECT flushed_index FROM flush_cursor WHERE id = 1")[0][0])
                return cur >= seq and cur
            cur = poll(flushed, timeout=30, what="PostgreSQL to have every command")
            rows = pg.psql("SELECT count(*), min(log_index), max(log_index) FROM commands")[0]
            assert [int(x) for x in rows] == [cur, 1, cur], (rows, cur)
            for n in c.live():
                m = metrics(n)
                assert m["circa_wb_connected"] == (1 if n is ld else 0), (n.name, m)
            # followers heard how far PostgreSQL is and trimmed their outbox
            poll(lambda: all(metrics(n)["circa_wb_outbox_entries"] < 200 for n in c.live()),
                 timeout=15, what="every outbox to be trimmed")
            # PostgreSQL has every acknowledged loan, and exactly the nodes' loans and states
            pg_rows = pg.psql("SELECT id, user_id, status FROM loans")
            ok_loans = {o.loan["id"] for o in wl.snapshot() if o.kind == "checkout" and o.loan}
            assert ok_loans and ok_loans <= {r[0] for r in pg_rows}, "acknowledged loans missing"
            node_loans = {}
            for uid in {r[1] for r in pg_rows}:
                items = expect(ld.request("GET", "/v1/users/%s/loans?limit=1000" % uid,
                                          token=c.lib_token), 200)["items"]
                node_loans.update({l["id"]: l["status"] for l in items})
            assert node_loans == {r[0]: r[2] for r in pg_rows}, "PostgreSQL and the nodes differ"
        finally:
            c.stop()
    finally:
        pg.cleanup()
