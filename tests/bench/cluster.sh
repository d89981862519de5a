#!/usr/bin/env bash
# Reproducible loopback benchmark of a 3-node circa Raft cluster (release build).
#
#   tests/bench/cluster.sh                       (defaults below)
#   DURATION=30s ROUNDS=10 tests/bench/cluster.sh
#
# All on 127.0.0.1, free ports, one temp directory; in this order:
# 0. a disk reference (4 KiB append + fdatasync for 3 s; again at the end);
# 1. reference: a fresh one-node circa (same config), loaded by setup.py, then
#    wrk with checkout_return.lua (checkout + return pairs, fsync on); one
#    real 201 answer of POST /v1/loans is saved;
# 2. reference: nginx serving a copy of that checkout answer (same size),
#    wrk with me_loans.lua (GET, random bearer token per request, the same
#    wrk settings);
# 3. a 3-voter cluster: node 1 bootstraps, nodes 2 and 3 --join it and are
#    promoted (POST /v1/cluster/nodes/{id}/promote) until the leader lists
#    three voters; setup.py loads it through the leader; wrk with
#    checkout_return.lua against the LEADER, then against a FOLLOWER (its
#    writes are forwarded to the leader);
# 4. failover, ROUNDS times: open-loop writes (POST /v1/resources with an
#    Idempotency-Key, one every FAILOVER_INTERVAL s) spread over the two
#    followers, kill -9 the leader, time from the kill to the end of the
#    first 201 of a write that started after the kill; then the killed
#    node is restarted and waits until it applied the leader's commit index;
# 5. prints markdown tables for docs/BENCHMARKS.md and the command to
#    reproduce.
# Every wrk run goes through a generated wrapper of its Lua script that also
# counts the answers by HTTP status. The exit status is non-zero if a node
# died on its own or did not stop cleanly, a wrk run saw 5xx answers, socket
# errors or no completed pair, the leader changed during a wrk run, or a
# failover round saw no successful write within 30 s.
# Everything it starts is stopped on exit.
#
# Environment:
#   DURATION (15s)  CONNECTIONS (64)  THREADS (wrk threads, nproc)  USERS (1000)
#   LOANS (3, active loans per member)  WRITE_RESOURCES (50)  ROUNDS (5)
#   ELECTION_MS (1000, raft.election_timeout_ms)  HEARTBEAT_MS (100)
#   FAILOVER_INTERVAL (0.01 s between failover writes)
#   QUIET_WAIT (120: seconds to wait before each wrk run and failover round
#   for other processes and the hypervisor's steal to leave the machine
#   idle)  TRIES (3)  FOREIGN_LIMIT (0.15 cores: a wrk run during which
#   other processes + steal took more is repeated, up to TRIES runs, and the
#   least disturbed one is kept)
#   CIRCA_BIN (build/circa; built with tools/build.sh release when missing;
#   copied into the temp directory, so a rebuild during the run changes nothing)
#   KEEP_TMP=1 keeps the temp directory (node logs, wrk output, rounds).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BENCH=$ROOT/tests/bench
START_S=$SECONDS

NPROC=$(nproc)
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-$NPROC}
USERS=${USERS:-1000}
LOANS=${LOANS:-3}
WRITE_RESOURCES=${WRITE_RESOURCES:-50}
ROUNDS=${ROUNDS:-5}
ELECTION_MS=${ELECTION_MS:-1000}
HEARTBEAT_MS=${HEARTBEAT_MS:-100}
FAILOVER_INTERVAL=${FAILOVER_INTERVAL:-0.01}
QUIET_WAIT=${QUIET_WAIT:-120}
TRIES=${TRIES:-3}
FOREIGN_LIMIT=${FOREIGN_LIMIT:-0.15}
CIRCA_BIN=${CIRCA_BIN:-$ROOT/build/circa}
HOST=127.0.0.1
N=3

say() { printf 'cluster-bench: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

for c in wrk nginx curl python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (run tools/install-deps.sh)"
done
if [ ! -x "$CIRCA_BIN" ]; then
    [ "$CIRCA_BIN" = "$ROOT/build/circa" ] || die "$CIRCA_BIN is not executable"
    "$ROOT/tools/build.sh" release >&2
fi
NGINX_BIN=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/circa-cluster-bench.XXXXXX")
# nginx workers drop to an unprivileged user when started as root: they must
# be able to traverse to the html directory.
chmod 755 "$TMP"
BIN=$TMP/circa
cp "$CIRCA_BIN" "$BIN"
PY=(python3 "$BENCH/cluster_bench.py")

NODE_PID=()
SINGLE_PID=
NGINX_PID=
WRK_PID=
SAMPLER_PID=
PY_PID=
PROBLEMS=()

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    stop_pid "$WRK_PID" TERM
    stop_pid "$SAMPLER_PID" TERM
    stop_pid "$PY_PID" TERM
    stop_pid "$NGINX_PID" QUIT
    stop_pid "$SINGLE_PID" TERM
    for i in "${!NODE_PID[@]}"; do
        stop_pid "${NODE_PID[i]}" TERM
    done
    if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        say "kept $TMP (node logs, wrk output, failover rounds)"
    else
        rm -rf "$TMP"
    fi
    say "took $((SECONDS - START_S)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop_clean NAME PID: SIGTERM, wait up to 30 s; a non-zero exit is a problem
stop_clean() {
    local name=$1 pid=$2 rc=0 i
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" || rc=$?
        PROBLEMS+=("$name had exited on its own (status $rc) before the end")
        return 0
    }
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        PROBLEMS+=("$name did not exit within 30 s of SIGTERM")
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || PROBLEMS+=("$name exited with status $rc after SIGTERM")
    return 0
}

# ---------------------------------------------------------------- ports, config
# one "HTTP PEER" pair per line: nodes 1..3, the single node, nginx (HTTP only);
# PEER and PEER+1 are free (raft messages and node-to-node requests)
mapfile -t PORT_LINES < <("${PY[@]}" ports $((N + 2)))
HPORT=() PPORT=()
for i in $(seq 1 $((N + 2))); do
    read -r "HPORT[i]" "PPORT[i]" <<<"${PORT_LINES[i - 1]}"
done
URL=()
for i in $(seq 1 "$N"); do URL[i]=http://$HOST:${HPORT[i]}; done
URLS=$(IFS=,; echo "${URL[*]}")
PIDFILES=$(for i in $(seq 1 "$N"); do printf '%s,' "$TMP/n$i/pid"; done)
PIDFILES=${PIDFILES%,}

write_config() { # FILE
    cat >"$1" <<EOF
{
  "threads": $NPROC,
  "fsync": true,
  "password_iterations": 1000,
  "limits": {"rate_per_s": 0},
  "policy": {"max_loans": 100000, "max_loans_premium": 100000},
  "raft": {"election_timeout_ms": $ELECTION_MS, "heartbeat_ms": $HEARTBEAT_MS}
}
EOF
}

# ---------------------------------------------------------------- wrk
# A wrapper around a wrk script that also counts the answers by status and
# prints "STATUS 201=n 200=n ..." plus wrk's socket error counts in done().
wrap_lua() { # BASE OUT
    cat >"$2" <<EOF
dofile("$1")
local base_setup, base_response, base_done = setup, response, done
local all_threads = {}
function setup(thread)
    all_threads[#all_threads + 1] = thread
    if base_setup then base_setup(thread) end
end
statuses = {}
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if base_response then base_response(status, headers, body) end
end
function done(summary, latency, requests)
    if base_done then base_done(summary, latency, requests) end
    local sum, keys = {}, {}
    for _, t in ipairs(all_threads) do
        for k, v in pairs(t:get("statuses") or {}) do
            if sum[k] == nil then keys[#keys + 1] = k end
            sum[k] = (sum[k] or 0) + v
        end
    end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. sum[k] end
    local e = summary.errors
    io.write(string.format("STATUS %s connect=%d read=%d write=%d timeout=%d\n",
        table.concat(parts, " "), e.connect, e.read, e.write, e.timeout))
end
EOF
}
wrap_lua "$BENCH/checkout_return.lua" "$TMP/checkout_return_status.lua"
wrap_lua "$BENCH/me_loans.lua" "$TMP/me_loans_status.lua"

WRK=(wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency)

dur_s() { # a wrk duration (15s, 2m, 1h, 30) in whole seconds
    local d=$1
    case "$d" in
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
    esac
}
WRK_S=$(dur_s "$DURATION")
if ! [[ "$WRK_S" =~ ^[0-9]+$ ]] || [ "$WRK_S" -lt 3 ]; then
    die "DURATION=$DURATION: want whole seconds, at least 3s"
fi

SERVER_PIDS=() # the servers a wrk run measures (for the CPU of other processes)
wrk_once() { # NAME URL SCRIPT ARGS...
    local name=$1 url=$2 script=$3
    shift 3
    # In the background plus `wait`, so Ctrl-C runs the trap at once.
    "${WRK[@]}" -s "$script" "$url" -- "$@" >"$TMP/wrk-$name.txt" &
    WRK_PID=$!
    # the CPU of wrk, of the servers and of everything else, from the 1st
    # second of the run to 1 s before its end (the machine may be shared)
    "${PY[@]}" cpu-window --from 1 --to $((WRK_S - 1)) "$WRK_PID" "${SERVER_PIDS[@]}" \
        >"$TMP/cpu-$name.txt" &
    SAMPLER_PID=$!
    wait "$WRK_PID"
    WRK_PID=
    wait "$SAMPLER_PID" || : >"$TMP/cpu-$name.txt"
    SAMPLER_PID=
    sed 's/^/    /' "$TMP/wrk-$name.txt" >&2
}
# cpu-NAME.txt: two `cluster_bench.py cpu` samples, "BUSY OWN KERNEL STEAL T" each
other_cpu() { # NAME: cores used by other processes (not ours, not kernel threads) during that wrk run
    awk -v hz="$CLK_TCK" 'NF == 10 && $10 > $5 { o = (($6 - $1) - ($7 - $2) - ($8 - $3)) / hz / ($10 - $5) }
        END { if (o == "") print "?"; else printf "%.2f\n", (o < 0 ? 0 : o) }' "$TMP/cpu-$1.txt"
}
own_cpu() { # NAME: "OURS KERNEL STEAL" cores during that wrk run
    awk -v hz="$CLK_TCK" 'NF == 10 && $10 > $5 { d = hz * ($10 - $5); o = ($7 - $2) / d; k = ($8 - $3) / d; st = ($9 - $4) / d }
        END { if (o == "") print "? ? ?"; else printf "%.2f %.2f %.2f\n", o, k, st }' "$TMP/cpu-$1.txt"
}
steal_cpu() { own_cpu "$1" | awk '{ print $3 }'; }
# run_wrk NAME URL SCRIPT ARGS...: waits up to QUIET_WAIT s for other processes
# to leave the machine idle, runs wrk, and repeats the run (up to TRIES) while
# other processes took more than FOREIGN_LIMIT cores; keeps the least
# disturbed run as wrk-NAME.txt
declare -A TRIES_USED=()
run_wrk() {
    local name=$1 url=$2 script=$3 try best=1 bestv='' q o ours kern steal rate d
    shift 3
    for ((try = 1; try <= TRIES; try++)); do
        read -r o steal < <("${PY[@]}" quiet --max-wait "$QUIET_WAIT" --limit "$FOREIGN_LIMIT" "${SERVER_PIDS[@]}")
        say "wrk $name (try $try/$TRIES; before: other processes $o cores, steal $steal): ${WRK[*]} -s $(basename "$script") $url"
        wrk_once "$name.$try" "$url" "$script" "$@"
        o=$(other_cpu "$name.$try")
        read -r ours kern steal < <(own_cpu "$name.$try")
        rate=$(bench_field "$TMP/wrk-$name.$try.txt" writes_per_s)
        if [ -n "$rate" ]; then rate="$rate write commands/s"; else rate="$(rps "$TMP/wrk-$name.$try.txt") req/s"; fi
        say "wrk $name: $rate; CPU: wrk + servers $ours cores, kernel threads $kern, other processes $o, steal $steal"
        # the disturbance: other processes + steal; not measured is the worst
        d=$(awk -v o="$o" -v s="$steal" 'BEGIN { if (o == "?" || s == "?") print 99; else print o + s }')
        if [ -z "$bestv" ] || awk -v a="$d" -v b="$bestv" 'BEGIN { exit !(a < b) }'; then
            best=$try bestv=$d
        fi
        awk -v a="$d" -v l="$FOREIGN_LIMIT" 'BEGIN { exit !(a <= l) }' && break
    done
    TRIES_USED[$name]=$((try > TRIES ? TRIES : try))
    cp "$TMP/wrk-$name.$best.txt" "$TMP/wrk-$name.txt"
    cp "$TMP/cpu-$name.$best.txt" "$TMP/cpu-$name.txt"
}

# the wrapper's STATUS line: per-status counts and wrk's socket errors
status_line() { sed -n 's/^STATUS //p' "$1"; }
count_5xx() {
    awk '/^STATUS / { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /^5[0-9][0-9]$/) n += kv[2] } } END { print n + 0 }' "$1"
}
sock_errors() {
    awk '/^STATUS / { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /^(connect|read|write|timeout)$/) n += kv[2] } } END { print n + 0 }' "$1"
}
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
pct() { awk -v p="$2%" '$1 == p { print $2; exit }' "$1"; }
bench_field() { # FILE KEY: a field of checkout_return.lua's BENCH line
    { grep '^BENCH ' "$1" || true; } | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}
fmt() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }

# ---------------------------------------------------------------- 0. disk
# the write path is fsync-bound: a disk reference at the start and at the end
read -r FS0_RATE FS0_P50 FS0_P99 < <("${PY[@]}" fsync "$TMP")
say "disk: 4 KiB append + fdatasync: $FS0_RATE/s (p50 $FS0_P50 ms, p99 $FS0_P99 ms)"

# ---------------------------------------------------------------- 1. single node
SD=$TMP/single
mkdir -p "$SD/data"
write_config "$SD/circa.json"
SURL=http://$HOST:${HPORT[N + 1]}
say "single node on $SURL (threads $NPROC)"
"$BIN" serve --listen "$HOST:${HPORT[N + 1]}" --data "$SD/data" --config "$SD/circa.json" \
    --peer "$HOST:${PPORT[N + 1]}" --threads "$NPROC" >>"$SD/circa.log" 2>&1 &
SINGLE_PID=$!
if ! wait_http "$SURL/readyz" 60 "$SINGLE_PID"; then
    tail -n 30 "$SD/circa.log" >&2 || true
    die "the single node did not become ready"
fi
say "loading the single node: $USERS members x $LOANS loans"
python3 "$BENCH/setup.py" --url "$SURL" --bin "$BIN" --data "$SD/data" --out "$SD/load" \
    --users "$USERS" --loans "$LOANS" --write-resources "$WRITE_RESOURCES"

# one real checkout answer (201 of POST /v1/loans), returned again at once
read -r _ U_TOK < <(head -n 1 "$SD/load/users.txt")
W_RID=$(head -n 1 "$SD/load/write_resources.txt")
code=$(curl -sS -o "$TMP/checkout.body" -w '%{http_code}' -X POST "$SURL/v1/loans" \
    -H "Authorization: Bearer $U_TOK" -H 'Content-Type: application/json' \
    --data "{\"resource_id\":\"$W_RID\"}")
[ "$code" = 201 ] || die "sample checkout: HTTP $code: $(head -c 300 "$TMP/checkout.body")"
LOAN_ID=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/checkout.body")
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$SURL/v1/loans/$LOAN_ID/return" \
    -H "Authorization: Bearer $U_TOK")
[ "$code" = 200 ] || die "sample return: HTTP $code"
CHECKOUT_BYTES=$(stat -c %s "$TMP/checkout.body")

SERVER_PIDS=("$SINGLE_PID")
run_wrk write-single "$SURL" "$TMP/checkout_return_status.lua" "$SD/load/users.txt" \
    "$SD/load/write_resources.txt"
kill -0 "$SINGLE_PID" 2>/dev/null || PROBLEMS+=("the single node died during its wrk run")
stop_clean "single node" "$SINGLE_PID"
SINGLE_PID=

# ---------------------------------------------------------------- 2. nginx
NPORT=${HPORT[N + 2]}
NURL=http://$HOST:$NPORT
# me_loans.lua asks for /v1/me/loans: the checkout answer is served there
say "nginx on $NURL (worker_processes $NPROC), static file of $CHECKOUT_BYTES bytes"
nginx_start "$TMP/nginx" "$HOST" "$NPORT" "$TMP/checkout.body"
SERVER_PIDS=("$NGINX_PID")
run_wrk nginx "$NURL" "$TMP/me_loans_status.lua" "$SD/load/tokens.txt"
stop_pid "$NGINX_PID" QUIT
NGINX_PID=

# ---------------------------------------------------------------- 3. cluster
node_start() { # I [JOIN]
    local i=$1 join=${2:-} d=$TMP/n$1
    local args=(serve --listen "$HOST:${HPORT[i]}" --data "$d/data" --config "$d/circa.json"
        --peer "$HOST:${PPORT[i]}" --threads "$NPROC")
    [ -z "$join" ] || args+=(--join "$join")
    printf '\n===== start: circa %s\n' "${args[*]}" >>"$d/circa.log"
    "$BIN" "${args[@]}" >>"$d/circa.log" 2>&1 &
    NODE_PID[i]=$!
    echo "${NODE_PID[i]}" >"$d/pid"
}
node_ready() { # I
    if ! wait_http "${URL[$1]}/readyz" 60 "${NODE_PID[$1]}"; then
        tail -n 40 "$TMP/n$1/circa.log" >&2 || true
        die "node $1 did not become ready"
    fi
}
for i in $(seq 1 "$N"); do
    mkdir -p "$TMP/n$i/data"
    write_config "$TMP/n$i/circa.json"
done
say "cluster: n1 on ${URL[1]} (peer $HOST:${PPORT[1]}) bootstraps"
node_start 1
node_ready 1
ADMIN=$("$BIN" token --data "$TMP/n1/data" --sub "$(python3 -c 'import uuid; print(uuid.uuid4())')" --role admin)
LIB=$("$BIN" token --data "$TMP/n1/data" --sub "$(python3 -c 'import uuid; print(uuid.uuid4())')" --role librarian)
for i in $(seq 2 "$N"); do
    say "cluster: n$i on ${URL[i]} (peer $HOST:${PPORT[i]}) joins $HOST:${PPORT[1]}"
    node_start "$i" "$HOST:${PPORT[1]}"
    node_ready "$i"
done
"${PY[@]}" form --urls "$URLS" --admin "$ADMIN"

leader() { "${PY[@]}" leader --urls "$URLS" --admin "$ADMIN"; } # prints "INDEX TERM"
read -r L _ < <(leader)
say "loading the cluster through the leader n$L: $USERS members x $LOANS loans"
python3 "$BENCH/setup.py" --url "${URL[L]}" --bin "$BIN" --data "$TMP/n1/data" --out "$TMP/load" \
    --users "$USERS" --loans "$LOANS" --write-resources "$WRITE_RESOURCES"

SERVER_PIDS=("${NODE_PID[@]}")
LEADER_CHANGES=()
cluster_wrk() { # NAME NODE
    local name=$1 i=$2 l0 t0 l1 t1
    read -r l0 t0 < <(leader)
    run_wrk "$name" "${URL[i]}" "$TMP/checkout_return_status.lua" "$TMP/load/users.txt" \
        "$TMP/load/write_resources.txt"
    read -r l1 t1 < <(leader)
    if [ "$l0 $t0" != "$l1 $t1" ]; then
        LEADER_CHANGES+=("during $name the leader changed from n$l0 (term $t0) to n$l1 (term $t1)")
        say "warning: ${LEADER_CHANGES[-1]}"
    fi
    "${PY[@]}" status --urls "$URLS" --admin "$ADMIN" | sed 's/^/    /' >&2
}
read -r L _ < <(leader)
F=$(((L % N) + 1))
cluster_wrk write-leader "$L"
read -r L _ < <(leader)
F=$(((L % N) + 1))
cluster_wrk write-follower "$F"
FOLLOWER_RUN="n$F -> leader n$L"

for i in $(seq 1 "$N"); do
    kill -0 "${NODE_PID[i]}" 2>/dev/null || die "node $i died during the wrk runs (log: $TMP/n$i/circa.log)"
done

# ---------------------------------------------------------------- 4. failover
: >"$TMP/rounds.jsonl"
FAILED_ROUNDS=0
for r in $(seq 1 "$ROUNDS"); do
    read -r q qs < <("${PY[@]}" quiet --max-wait "$QUIET_WAIT" --limit "$FOREIGN_LIMIT" "${NODE_PID[@]}")
    say "failover round $r/$ROUNDS (before: other processes $q cores, steal $qs)"
    rc=0
    # In the background plus `wait`, so Ctrl-C or SIGTERM runs the trap at once.
    "${PY[@]}" failover --urls "$URLS" --admin "$ADMIN" --pids "$PIDFILES" --token "$LIB" \
        --round "$r" --interval "$FAILOVER_INTERVAL" >"$TMP/round-$r.json" &
    PY_PID=$!
    wait "$PY_PID" || rc=$?
    PY_PID=
    line=$(cat "$TMP/round-$r.json")
    [ -n "$line" ] || die "failover round $r printed nothing (status $rc)"
    printf '%s\n' "$line" >>"$TMP/rounds.jsonl"
    say "round $r: $line"
    K=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["killed"])' "$line")
    { wait "${NODE_PID[K]}" || true; } 2>/dev/null # reap the node killed with SIGKILL
    if [ "$rc" -ne 0 ]; then
        FAILED_ROUNDS=$((FAILED_ROUNDS + 1))
        for i in $(seq 1 "$N"); do
            say "--- n$i log tail ($TMP/n$i/circa.log)"
            tail -n 25 "$TMP/n$i/circa.log" >&2 || true
        done
        die "failover round $r: no write succeeded after the leader n$K was killed"
    fi
    printf '\n===== killed with SIGKILL (failover round %s)\n' "$r" >>"$TMP/n$K/circa.log"
    node_start "$K"
    node_ready "$K"
    "${PY[@]}" caught-up --urls "$URLS" --admin "$ADMIN" --node "$K"
done
read -r FO_MIN FO_MED FO_MAX FO_N EL_MED EL_MAX < <("${PY[@]}" summary "$TMP/rounds.jsonl")
FO_OUTCOMES=$(python3 - "$TMP/rounds.jsonl" <<'EOF'
import collections, json, sys
c = collections.Counter()
for l in open(sys.argv[1]):
    if l.strip():
        c.update(json.loads(l).get("writes_after_kill", {}))
ok = c.pop("ok", 0)
print("%d ok%s" % (ok, "".join(", %d %s" % (n, k) for k, n in c.most_common())))
EOF
)
FO_TOTAL=$(python3 -c 'import json, sys; print(sum(json.loads(l).get("writes_total", 0) for l in open(sys.argv[1]) if l.strip()))' "$TMP/rounds.jsonl")
FO_ROUNDS=$(python3 -c 'import json, sys; print(", ".join("%.2f s (%.2f, %.2f)" % (r["failover_s"], r.get("other_cores", float("nan")), r.get("steal_cores", float("nan"))) for r in map(json.loads, filter(str.strip, open(sys.argv[1]))) if r.get("failover_s") is not None))' "$TMP/rounds.jsonl")

"${PY[@]}" status --urls "$URLS" --admin "$ADMIN" | sed 's/^/    /' >&2
for i in $(seq 1 "$N"); do
    stop_clean "node $i" "${NODE_PID[i]}"
done
NODE_PID=()

read -r FS1_RATE FS1_P50 FS1_P99 < <("${PY[@]}" fsync "$TMP")
say "disk: 4 KiB append + fdatasync: $FS1_RATE/s (p50 $FS1_P50 ms, p99 $FS1_P99 ms)"

# ---------------------------------------------------------------- 5. report
LOGSUM=$(for i in $(seq 1 "$N"); do
    printf 'n%s: %s warn, %s error; ' "$i" \
        "$(grep -c '"level":"warn"' "$TMP/n$i/circa.log" || true)" \
        "$(grep -c '"level":"error"' "$TMP/n$i/circa.log" || true)"
done)
LOGSUM=${LOGSUM%; }

S_W=$(bench_field "$TMP/wrk-write-single.txt" writes_per_s)
N_RPS=$(rps "$TMP/wrk-nginx.txt")

row() { # LABEL NAME
    local f=$TMP/wrk-$2.txt w
    w=$(bench_field "$f" writes_per_s)
    printf '| %s | **%s** | %s | %s | %s | %s |\n' "$1" "$(fmt "${w:-0}")" \
        "$(pct "$f" 50)" "$(pct "$f" 99)" "$(ratio "${w:-0}" "${S_W:-0}")" "$(ratio "${w:-0}" "$N_RPS")"
}
errs() { # NAME
    local f=$TMP/wrk-$1.txt
    printf "%s: \`%s\`" "$1" "$(status_line "$f")"
    if grep -q '^BENCH ' "$f"; then
        printf ' (409 conflicts %s, other errors %s, unparsed 201 %s)' "$(bench_field "$f" conflicts)" \
            "$(bench_field "$f" errors)" "$(bench_field "$f" unparsed)"
    fi
    printf ', other processes %s cores, steal %s' "$(other_cpu "$1")" "$(steal_cpu "$1")"
    [ "${TRIES_USED[$1]:-1}" -eq 1 ] || printf ' (the least disturbed of %s runs)' "${TRIES_USED[$1]}"
}

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
CIRCA_VER=$( ("$BIN" --version 2>/dev/null || echo unknown) | head -n 1)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -n 1)
NGINX_VER=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
WRK_VER=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')
TARGET=$(awk -v m="${FO_MAX:-n/a}" 'BEGIN { if (m == "n/a") print "n/a"; else if (m + 0 <= 3) print "met (max ≤ 3 s)"; else print "**not met** (max > 3 s)" }')

cat <<EOF

### $(date -u +%Y-%m-%d) — 3-node cluster on loopback — $CPU, $NPROC cores, Linux $(uname -r)

circa \`$CIRCA_VER\` (release build, $GIT_REV${GIT_DIRTY:+ with local changes}), $NGINX_VER, wrk $WRK_VER; all on 127.0.0.1 of the same machine:
3 circa nodes (3 voters, \`raft.election_timeout_ms\` $ELECTION_MS, \`heartbeat_ms\` $HEARTBEAT_MS), wrk, and for the
references a one-node circa and nginx, measured one after the other in the same run. Every circa: \`threads $NPROC\`,
fsync on, rate limits off, password_iterations 1000. wrk \`-t$THREADS -c$CONNECTIONS -d$DURATION\` with
\`checkout_return.lua\` (checkout + return pairs, 2 write commands each); $USERS members with $LOANS active loans each,
$WRITE_RESOURCES resources written. nginx (\`worker_processes $NPROC\`, access_log off) serves a static file of the size
of a checkout answer ($CHECKOUT_BYTES bytes), driven by \`me_loans.lua\` (GET, random bearer token) with the same wrk settings.
Disk (temp directory), 4 KiB append + fdatasync: $FS0_RATE/s (p50 $FS0_P50 ms, p99 $FS0_P99 ms) before, $FS1_RATE/s (p50 $FS1_P50 ms, p99 $FS1_P99 ms) after.

| checkout + return pairs, fsync on | write commands/s | p50 | p99 | / single node | / nginx static file |
| --- | ---: | ---: | ---: | ---: | ---: |
$(row "3-node cluster, wrk → leader" write-leader)
$(row "3-node cluster, wrk → follower ($FOLLOWER_RUN, forwarded)" write-follower)
$(row "single node (one-voter cluster)" write-single)
| nginx, static file of $CHECKOUT_BYTES bytes (GET) | $(fmt "$N_RPS") req/s | $(pct "$TMP/wrk-nginx.txt" 50) | $(pct "$TMP/wrk-nginx.txt" 99) | — | 1 |

| failover: kill -9 the leader → end of the first 201 write started after the kill | min | median | max | rounds |
| --- | ---: | ---: | ---: | ---: |
| writes (\`POST /v1/resources\`, Idempotency-Key) every ${FAILOVER_INTERVAL} s, round-robin to the 2 followers | ${FO_MIN} s | **${FO_MED} s** | ${FO_MAX} s | $FO_N |

Rounds (and, from the kill to that write, the cores used by other processes, and steal): $FO_ROUNDS.
New leader visible in \`GET /v1/cluster\` of a survivor after the kill: median ${EL_MED} s, max ${EL_MAX} s.
Target ≤ 3 s with election_timeout_ms $ELECTION_MS: $TARGET. Failover writes: $FO_TOTAL sent; answers to those
started after a kill: $FO_OUTCOMES.

Answers by status (and wrk socket errors): $(errs write-leader);
$(errs write-follower); $(errs write-single); $(errs nginx).
Node logs: $LOGSUM.
Reproduce: \`DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS USERS=$USERS ROUNDS=$ROUNDS tests/bench/cluster.sh\`
EOF

# ---------------------------------------------------------------- verdict
for n in write-leader write-follower write-single; do
    f=$TMP/wrk-$n.txt
    grep -q '^BENCH ' "$f" || PROBLEMS+=("$n: no BENCH line")
    awk -v p="$(bench_field "$f" pairs_per_s)" 'BEGIN { exit !(p > 0) }' || PROBLEMS+=("$n: no checkout/return pair completed")
    [ "$(count_5xx "$f")" -eq 0 ] || PROBLEMS+=("$n: $(count_5xx "$f") answers 5xx")
    [ "$(sock_errors "$f")" -eq 0 ] || PROBLEMS+=("$n: $(sock_errors "$f") wrk socket errors")
done
[ "$(count_5xx "$TMP/wrk-nginx.txt")" -eq 0 ] || PROBLEMS+=("nginx answered 5xx")
for m in "${LEADER_CHANGES[@]}"; do PROBLEMS+=("$m"); done
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    for m in "${PROBLEMS[@]}"; do say "problem: $m"; done
    exit 1
fi
