#!/usr/bin/env bash
# Join time of a new node into a circa cluster whose state holds LOANS loans
# (release build, loopback). Target: <= 60 s for 1,000,000 loans.
#
#   tests/bench/join.sh                              (defaults below)
#   LOANS=100000 tests/bench/join.sh                 (a quicker run)
#
# tests/bench/join_bench.py does the work, all on 127.0.0.1, free ports, one
# temp directory:
# 1. node 1 (`circa serve --peer`, fresh data dir, fsync on, default raft
#    settings, password_iterations 1000, rate limits off, policy.max_loans
#    raised) gets RESOURCES resources, MEMBERS members and LOANS checkouts of
#    distinct (member, resource) pairs (wrk with join_loans.lua, POST
#    /v1/loans as a librarian); the loans are counted on the server and must
#    be exactly LOANS. Recorded: load rate, data dir size (du), raft index;
# 2. node 2 starts with --join: time from its process start to GET /readyz
#    200 and to applied_index >= node 1's commit_index; snapshot install
#    (rows, bytes, seconds from node 2's log) or log replay; CPU of both
#    nodes over the join;
# 3. GET /v1/cluster/digest on both nodes, at the same applied_index, must
#    be equal;
# 4. if that join replayed the log instead of installing a snapshot, all of
#    it again with raft.snapshot_threshold = snapshot_trailing = SMALL on
#    node 1 from the start, so that the join must install one;
# 5. prints a markdown section for docs/BENCHMARKS.md and the command to
#    reproduce. Exit status non-zero when a join took longer than
#    JOIN_TIMEOUT, digests differed, the loan count was wrong, or a node did
#    not stop cleanly on SIGTERM (also when a join exceeded TARGET seconds).
# Everything it starts is stopped on exit (join_bench.py's cleanup, and this
# script's trap for whatever a killed join_bench.py left).
#
# Environment:
#   LOANS (1000000)  MEMBERS (LOANS/500)  RESOURCES (1000)
#   CONNECTIONS (64, wrk connections of the load)  THREADS (wrk threads, nproc)
#   SMALL (256: snapshot_threshold/_trailing of the forced-install run)
#   SECOND (auto: forced-install run only if the first join replayed the
#   log; always; never)  CHUNK_KIB (raft.snapshot_chunk_kib, circa's default)
#   JOIN_TIMEOUT (900 s)  TARGET (60 s)  MAP_MB (8192, map_size_mb)
#   REPEAT (1: joins of a fresh node into the same node 1 state, one after
#   the other; each is measured and digest-checked)
#   PERF (0; 1 = perf record -g of both nodes during each join, report on stderr)
#   QUIET_WAIT (60: seconds to wait before the join for other processes to
#   leave the machine idle)  FOREIGN_LIMIT (0.15 cores)
#   CIRCA_BIN (build/circa; built with tools/build.sh release when missing;
#   copied into the temp directory, so a rebuild during the run changes nothing)
#   KEEP_TMP=1 keeps the temp directory (node logs, wrk output, /v1/cluster
#   samples of the join; the data directories are deleted unless KEEP_DATA=1).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BENCH=$ROOT/tests/bench

NPROC=$(nproc)
LOANS=${LOANS:-1000000}
MEMBERS=${MEMBERS:-$((LOANS / 500 > 0 ? LOANS / 500 : 1))}
RESOURCES=${RESOURCES:-1000}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-$NPROC}
SMALL=${SMALL:-256}
SECOND=${SECOND:-auto}
CHUNK_KIB=${CHUNK_KIB:-0}
JOIN_TIMEOUT=${JOIN_TIMEOUT:-900}
TARGET=${TARGET:-60}
MAP_MB=${MAP_MB:-8192}
QUIET_WAIT=${QUIET_WAIT:-60}
FOREIGN_LIMIT=${FOREIGN_LIMIT:-0.15}
REPEAT=${REPEAT:-1}
PERF=${PERF:-0}
CIRCA_BIN=${CIRCA_BIN:-$ROOT/build/circa}

say() { printf 'join-bench: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

for c in wrk curl python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (run tools/install-deps.sh)"
done
[ "$PERF" = 0 ] || command -v perf >/dev/null 2>&1 || die "PERF=1 but perf is not installed"
if [ ! -x "$CIRCA_BIN" ]; then
    [ "$CIRCA_BIN" = "$ROOT/build/circa" ] || die "$CIRCA_BIN is not executable"
    "$ROOT/tools/build.sh" release >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/circa-join-bench.XXXXXX")
PY_PID=

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # join_bench.py stops what it started; give it time
    [ -z "$PY_PID" ] || stop_pid "$PY_PID" TERM
    # whatever a killed join_bench.py left behind (it keeps TMP/pids current)
    if [ -f "$TMP/pids" ]; then
        local kind val
        while read -r kind val; do
            [ "$kind" = pid ] && stop_pid "$val" TERM
        done <"$TMP/pids"
    fi
    if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        # the data directories are large: only the logs and samples are kept
        [ "${KEEP_DATA:-0}" = 1 ] || find "$TMP" -maxdepth 2 -type d -name 'node*-data' \
            -exec rm -rf {} + 2>/dev/null || true
        say "kept $TMP (node logs, wrk output, join samples)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$CIRCA_BIN" "$TMP/circa"
START_S=$SECONDS
say "temp dir $TMP; $LOANS loans, $MEMBERS members, $RESOURCES resources; wrk -t$THREADS -c$CONNECTIONS"
KEEP=()
[ "${KEEP_DATA:-0}" = 1 ] && KEEP=(--keep-data)
# In the background plus `wait`, so Ctrl-C runs the trap at once.
python3 "$BENCH/join_bench.py" --bin "$TMP/circa" --tmp "$TMP" --loans "$LOANS" \
    --members "$MEMBERS" --resources "$RESOURCES" --connections "$CONNECTIONS" \
    --threads "$THREADS" --nproc "$NPROC" --small "$SMALL" --second "$SECOND" \
    --chunk-kib "$CHUNK_KIB" --join-timeout "$JOIN_TIMEOUT" --target "$TARGET" \
    --map-mb "$MAP_MB" --quiet-wait "$QUIET_WAIT" --foreign-limit "$FOREIGN_LIMIT" \
    --repeat "$REPEAT" --perf "$PERF" "${KEEP[@]}" >"$TMP/report.md" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=
cat "$TMP/report.md"
say "total run time $((SECONDS - START_S)) s"
[ "$rc" -eq 0 ] || die "join_bench.py exited with status $rc"
