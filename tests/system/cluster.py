"""A Raft cluster of circa nodes on loopback, for system tests (standard library only).

    c = Cluster(3)                 # n1 bootstraps, n2 and n3 --join and are promoted to voters
    try:
        leader = c.leader()
        c.kill9(leader); c.restart(leader); c.wait_caught_up(leader)
        c.pause(n) / c.resume(n)   # SIGSTOP / SIGCONT
        c.isolate(n) / c.isolate(n, False)     # PUT /v1/cluster/fault (needs --fault-injection)
        c.wait_converged(); c.digests()
    finally:
        c.stop()

A ClusterNode is a harness.Node (so it is in harness.NODES, stop_all() stops it, and its crashes
and sanitizer reports fail the test) started as

    circa serve --listen 127.0.0.1:H --data DIR --config FILE --peer 127.0.0.1:P
                [--join 127.0.0.1:P1,...] [--fault-injection]

where the node uses P for raft messages and P+1 for node-to-node requests.  The same peer (and
join) values also go into the config file's "raft" section (raft.peer, raft.join), so the node
gets them whichever way it reads them.  H, P and P+1 are
picked free, below the kernel's ephemeral port range when there is room (a port there is never
taken by an outgoing connection, so it is still free when the node restarts), and stay the same
across restarts: the peer address is part of the cluster configuration.  --join is passed on the
first start only (a restart finds its configuration in its data directory); set
Cluster(rejoin_on_restart=True) to pass it on every start.

Admin and librarian tokens are minted once with `circa token --data` on the first node's data
directory: the signing key is replicated, so they are valid on every node.
"""

import json
import random
import signal
import subprocess
import time

import harness
import history
from harness import Node, deep_merge, BASE_CONFIG, pick_ports

FAST_RAFT = {"election_timeout_ms": 500, "heartbeat_ms": 50}

def poll(fn, timeout, what, interval=0.05):
    """harness.poll, but `what` may be a callable, evaluated only when the wait fails."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last=%r)"
                         % (timeout, what() if callable(what) else what, last))


class ClusterNode(Node):
    """One `circa serve` of a Cluster: stable HTTP and peer ports, --peer/--join flags,
    SIGSTOP/SIGCONT, the fault switch and the cluster admin endpoints."""

    def __init__(self, cluster, name, join=(), config=None, wait_ready=True, start_timeout=30.0):
        self.cluster = cluster
        self.join = list(join)
        self.http_port = pick_ports(1)
        self._peer_port = pick_ports(2)   # (harness.Node.__init__ may set its own peer_port)
        self.paused = False
        self.isolated = False
        self.draining = False
        self.node_id = None
        self._wait_ready = wait_ready
        self._start_timeout = start_timeout
        super().__init__(config=config, name=name)   # registers in harness.NODES, starts

    @property
    def peer(self):
        return "%s:%d" % (self.cluster.peer_host, self._peer_port)

    def __repr__(self):
        return "<%s %s http:%s peer:%s%s>" % (self.name, self.node_id or "?", self.http_port,
                                             self._peer_port, "" if self.alive() else " down")

    # -- process control
    def start(self, timeout=None, wait_ready=None):
        assert self.proc is None or self.proc.poll() is not None, "%s already running" % self.name
        self.port = self.http_port
        self.peer_port = self._peer_port
        join = self.join if self.join and (self.starts == 0 or self.cluster.rejoin_on_restart) else []
        # the peer (and join) go both on the command line and into the config's raft section
        raft = {"peer": self.peer}
        if join:
            raft["join"] = ",".join(join)
        cfg = deep_merge(BASE_CONFIG, {"content_base_url": self.base, "raft": raft})
        cfg = deep_merge(cfg, self.overrides)
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
        args = [harness.BIN, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data", self.data,
                "--config", self.cfg_path, "--peer", self.peer]
        if join:
            args += ["--join", ",".join(join)]
        if self.cluster.fault_injection:
            args.append("--fault-injection")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s =====\n" % (self.starts, " ".join(args[1:]))).encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.paused = self.isolated = self.draining = False
        if wait_ready if wait_ready is not None else self._wait_ready:
            self.wait_ready(timeout or self._start_timeout)

    def stop(self, timeout=10.0):
        if self.paused and self.alive():
            self.resume()
        return super().stop(timeout)

    def kill9(self):
        super().kill9()
        self.paused = False

    def pause(self):
        assert self.alive(), "%s is not running" % self.name
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def expect_exit(self):
        """The process is about to exit on its own (drain): not a crash."""
        if self.proc is not None:
            self.killed.add(self.proc.pid)

    def wait_exit(self, timeout=30.0):
        """Wait for the process to exit on its own; returns its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit within %.0fs (log: %s)"
                                 % (self.name, timeout, self.log_path)) from None

    # -- cluster endpoints
    def status(self, timeout=2.0):
        """GET /v1/cluster as a dict, or None (not running, paused, error, not 200)."""
        if not self.alive() or self.paused:
            return None
        try:
            r = self.request("GET", "/v1/cluster", token=self.cluster.admin_token, timeout=timeout)
        except OSError:
            return None
        if r.status != 200 or not isinstance(r.body, dict):
            return None
        if self.node_id is None and isinstance(r.body.get("id"), str):
            self.node_id = r.body["id"]
        return r.body

    def digest(self, timeout=5.0):
        r = self.request("GET", "/v1/cluster/digest", token=self.cluster.admin_token, timeout=timeout)
        harness.expect(r, 200)
        return r.body

    def set_isolated(self, on=True):
        r = self.request("PUT", "/v1/cluster/fault", {"isolate": bool(on)},
                         token=self.cluster.admin_token, timeout=5)
        harness.expect(r, 200)
        self.isolated = bool(on)


class Cluster:
    """N circa nodes forming one Raft cluster; see the module docstring."""

    def __init__(self, n=3, voters=None, name="c", config=None, raft=None, fault_injection=True,
                 rejoin_on_restart=False, start_timeout=30.0, peer_host="127.0.0.1"):
        self.name = name
        self.config = deep_merge({"raft": dict(raft or FAST_RAFT)}, config or {})
        self.fault_injection = fault_injection
        self.rejoin_on_restart = rejoin_on_restart
        self.start_timeout = start_timeout
        self.peer_host = peer_host      # "localhost": peers dial a DNS name (TLS checks it)
        self.nodes = []
        self.admin_token = None
        self.lib_token = None
        self.seq = 0
        voters = n if voters is None else voters
        try:
            self.add_node(bootstrap=True)
            first = self.nodes[0]
            self.admin_token = first.admin()
            self.lib_token = first.librarian()
            first.status()
            for i in range(1, n):
                node = self.add_node()
                if i < voters:
                    self.promote(node)
        except BaseException:
            self.stop()
            raise

    @property
    def election_s(self):
        return self.config["raft"].get("election_timeout_ms", 1000) / 1000.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- membership
    def add_node(self, bootstrap=False, join=None, wait_ready=True, config=None):
        """Start a new node: the first bootstraps, others --join the peers of the running nodes.
        It is appended to self.nodes once ready (so workloads only target ready nodes)."""
        self.seq += 1
        name = "%s-n%d" % (self.name, self.seq)
        if bootstrap:
            join = []
        elif join is None:
            join = [n.peer for n in self.nodes if n.alive()]
            assert join, "no running node to join through"
        node = ClusterNode(self, name, join=join, config=deep_merge(self.config, config or {}),
                           wait_ready=wait_ready, start_timeout=self.start_timeout)
        if wait_ready and self.admin_token:
            node.status()
        self.nodes.append(node)
        return node

    def node_by_id(self, node_id):
        for n in self.nodes:
            if n.node_id is None:
                n.status()
            if n.node_id == node_id:
                return n
        return None

    def promote(self, node, via=None, timeout=30.0):
        """POST /v1/cluster/nodes/{id}/promote (retried while the cluster has no leader) until
        200, then wait until the leader lists the node as a voter."""
        nid = node.node_id or (node.status() or {}).get("id")
        assert nid, "%s has no node id (GET /v1/cluster failed)" % node.name
        deadline = time.monotonic() + timeout
        last = None
        while True:
            target = via or self.any_live(exclude=[node])
            try:
                r = target.request("POST", "/v1/cluster/nodes/%s/promote" % nid,
                                   token=self.admin_token, timeout=timeout)
                if r.status == 200:
                    break
                last = r
                if r.status not in (503, 504):
                    raise AssertionError("promote %s via %s: %r" % (node.name, target.name, r))
            except OSError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError("promote %s did not succeed within %.0fs: %r"
                                     % (node.name, timeout, last))
            time.sleep(0.2)
        self.wait_role(node, "voter", timeout=max(1.0, deadline - time.monotonic()))

    def roles(self):
        """{node id: role} as the leader sees the configuration."""
        st = self.leader().status() or {}
        return {x.get("id"): x.get("role") for x in st.get("nodes", [])}

    def wait_role(self, node, role, timeout=15.0):
        def ok():
            ld = self.find_leader()
            st = ld.status() if ld else None
            if not st:
                return None
            return any(x.get("id") == node.node_id and x.get("role") == role
                       for x in st.get("nodes", [])) and st
        poll(ok, timeout=timeout, interval=0.1,
             what=lambda: "the leader to list %s (%s) as %s (%s)" % (node.name, node.node_id, role,
                                                                    self.describe()))

    def drain(self, node):
        """POST /v1/cluster/drain on node (202); it is taken out of the workload's targets and
        its coming exit is expected.  Use node.wait_exit() for the exit code."""
        node.expect_exit()
        r = node.request("POST", "/v1/cluster/drain", token=self.admin_token, timeout=10)
        harness.expect(r, 202)
        node.draining = True
        return r

    # -- who is who
    def live(self):
        """Nodes running and not paused."""
        return [n for n in self.nodes if n.alive() and not n.paused]

    def targets(self):
        """Where clients may send requests: live nodes that are not draining (isolated ones
        included: a client cannot know)."""
        return [n for n in self.nodes if n.alive() and not n.paused and not n.draining]

    def any_live(self, exclude=()):
        c = [n for n in self.live() if n not in exclude] or self.live()
        assert c, "no live node"
        return random.choice(c)

    def statuses(self, nodes=None):
        return {n: n.status() for n in (nodes if nodes is not None else self.live())}

    def find_leader(self, exclude=()):
        """The node that leads now, or None: the self-declared leader with the highest term that a
        majority of the voters it lists name as leader in that same term (itself included)."""
        sts = {n: st for n, st in self.statuses().items() if st and n not in exclude}
        cands = [(st.get("term", 0), n) for n, st in sts.items() if st.get("state") == "leader"]
        for term, n in sorted(cands, key=lambda x: -x[0]):
            st = sts[n]
            voters = [x for x in st.get("nodes", []) if x.get("role") == "voter"]
            need = len(voters) // 2 + 1 if voters else 1
            agree = sum(1 for m, s in sts.items()
                        if s.get("term") == term and (m is n or (s.get("leader") or {}).get("id") == st.get("id")))
            if agree >= need:
                return n
        return None

    def leader(self, timeout=15.0, exclude=()):
        """Wait until find_leader() names a node (not in exclude) and return it."""
        return poll(lambda: self.find_leader(exclude=exclude), timeout=timeout,
                    what=lambda: "a leader%s (%s)" % (
                        " other than %s" % ",".join(n.name for n in exclude) if exclude else "",
                        self.describe()))

    def followers(self):
        ld = self.leader()
        return [n for n in self.live() if n is not ld]

    def describe(self):
        """One line per node: state, role, term, indexes, leader — for failure messages."""
        parts = []
        for n in self.nodes:
            if not n.alive():
                parts.append("%s down" % n.name)
                continue
            if n.paused:
                parts.append("%s paused" % n.name)
                continue
            st = n.status(timeout=1.0)
            if not st:
                parts.append("%s no status" % n.name)
                continue
            parts.append("%s %s/%s term %s commit %s applied %s leader %s%s" % (
                n.name, st.get("state"), st.get("role"), st.get("term"), st.get("commit_index"),
                st.get("applied_index"), (st.get("leader") or {}).get("address"),
                " isolated" if n.isolated else ""))
        return "; ".join(parts)

    # -- faults
    def kill9(self, node):
        node.kill9()

    def pause(self, node):
        node.pause()

    def resume(self, node):
        node.resume()

    def restart(self, node, wait_ready=True, timeout=None):
        """Start a stopped or killed node again (stop it first if it runs)."""
        if node.alive():
            node.stop()
        node.start(timeout=timeout, wait_ready=wait_ready)

    def isolate(self, node, on=True):
        node.set_isolated(on)

    # -- convergence
    def wait_caught_up(self, node, timeout=30.0):
        """Until node applied at least what the leader had committed when this was called."""
        target = (self.leader().status() or {}).get("commit_index")
        assert target is not None, "the leader reports no commit_index"

        def ok():
            st = node.status()
            return st and st.get("applied_index", -1) >= target and st
        return poll(ok, timeout=timeout,
                    what=lambda: "%s to apply index %s (%s)" % (node.name, target, self.describe()))

    def wait_converged(self, nodes=None, timeout=30.0):
        """Until all (live) nodes report the same applied index, at least the highest commit
        index any of them reports; returns that index."""
        nodes = nodes if nodes is not None else self.live()

        def ok():
            sts = [n.status() for n in nodes]
            if not all(sts):
                return None
            applied = {st.get("applied_index") for st in sts}
            if len(applied) != 1:
                return None
            a = applied.pop()
            return a is not None and a >= max(st.get("commit_index", 0) for st in sts) and a
        return poll(ok, timeout=timeout, what=lambda: "nodes to converge (%s)" % self.describe())

    def digests(self, nodes=None, timeout=20.0):
        """{node name: {"applied_index", "digest"}} sampled at one applied index (see
        history.fetch_digests)."""
        return history.fetch_digests(nodes if nodes is not None else self.live(), self.admin_token,
                                     timeout=timeout)

    def verify(self, workload, nodes=None, timeout=30.0):
        """Wait for convergence, then check the workload's history against every live node's
        final state and digest.  Returns a history.Report."""
        nodes = nodes if nodes is not None else self.live()
        self.wait_converged(nodes, timeout=timeout)
        return history.verify(workload, nodes, self.admin_token, self.lib_token)

    # -- workload helpers
    def workload(self, **kw):
        """A history.Workload against this cluster's targets(), set up (not started)."""
        kw.setdefault("name", self.name)
        return history.Workload(self.targets, self.lib_token, **kw).setup()

    # -- teardown
    def stop(self):
        """Stop every node (resuming paused ones first) and clean their temp dirs."""
        for n in self.nodes:
            if n.paused:
                n.resume()
        for n in reversed(self.nodes):
            try:
                n.cleanup()
            except Exception:  # noqa: BLE001 -- keep stopping the others
                pass
        # a node that failed to start is in harness.NODES but not in self.nodes
        for n in list(harness.NODES):
            if isinstance(n, ClusterNode) and n.cluster is self and n not in self.nodes:
                n.cleanup()


def kill_leader_round(c, wl, failover_timeout=20.0, settle_s=0.5, catchup_timeout=60.0):
    """One fault round under a running workload: kill -9 the leader, measure the time to the
    first ok write that started after the kill, let writes run settle_s without the node,
    restart it and wait until it caught up.  Returns the failover time in seconds."""
    wl.wait_ok_after(time.monotonic(), timeout=15.0, count=3)     # the workload makes progress
    old = c.leader()
    t = time.monotonic()
    c.kill9(old)
    dt = wl.wait_ok_after(t, timeout=failover_timeout)
    new = c.leader(timeout=failover_timeout, exclude=[old])
    assert new is not old
    time.sleep(settle_s)
    c.restart(old)
    c.wait_caught_up(old, timeout=catchup_timeout)
    return dt
