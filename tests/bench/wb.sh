#!/usr/bin/env bash
# Loopback benchmark of circa's write-behind to PostgreSQL (release build).
#
#   tests/bench/wb.sh                                   (defaults below)
#   DURATION=30s DRAIN_BATCHES="2000" tests/bench/wb.sh
#
# One private PostgreSQL (tests/system/pgfix.py: initdb in a temp dir, free
# loopback port, fsync on) shares the machine's cores with circa and wrk.
# tests/bench/wb_bench.py does the work:
# 1. steady state: the write benchmark of run.sh (setup.py load, then wrk
#    with checkout_return.lua, fsync on), first with write-behind off, then,
#    on a fresh data dir, with it on (pg.batch = BATCH). With it on,
#    /metrics is sampled every SAMPLE seconds: flushed table rows/s and
#    commands/s (circa_wb_rows_total / circa_wb_commands_total deltas over
#    the wrk run), p50 / max of circa_wb_lag_entries and
#    circa_wb_lag_seconds, and the time from wrk's end to a lag of 0;
# 2. backlog drain, once per pg.batch in DRAIN_BATCHES: circa restarted with
#    that batch size, PostgreSQL stopped, the write benchmark run until
#    circa_wb_lag_entries >= BACKLOG, wrk stopped, PostgreSQL started, then
#    the time until the lag is 0: rows/s and commands/s from the first
#    committed batch (the flusher's reconnect backoff, up to 10 s, is shown
#    apart), CPU seconds of the flusher thread and of PostgreSQL's processes
#    (/proc), PostgreSQL's time per statement (its log, with
#    log_min_duration_statement = 0 during the drains), and with PERF=1
#    `perf record -g` of circa and the flusher's PostgreSQL backend over
#    PERF_SECONDS of the drain with pg.batch = BATCH (report on stderr).
#    A steady-state run or a drain during which other processes used more
#    than FOREIGN_LIMIT cores is repeated (up to TRIES times), and the least
#    disturbed one is reported;
# 3. checks that PostgreSQL's cursor, its commands table and circa's flushed
#    index agree, and prints a markdown section for docs/BENCHMARKS.md.
# Everything it starts is stopped on exit (wb_bench.py's cleanup, and this
# script's trap for whatever a killed wb_bench.py left). Only 127.0.0.1.
#
# Environment:
#   DURATION (15s)  CONNECTIONS (64)  THREADS (wrk threads, nproc)  USERS (1000)
#   LOANS (3)  WRITE_RESOURCES (50)  BATCH (2000, steady-state pg.batch)
#   DRAIN_BATCHES ("500 2000 10000")  BACKLOG (200000 commands)  SAMPLE (0.5 s)
#   PERF (0; 1 = perf record during a drain)  PERF_SECONDS (5)
#   QUIET_WAIT (120: seconds to wait before each measurement for other
#   processes to leave the machine idle; their CPU is shown as "other
#   processes")  TRIES (3)  FOREIGN_LIMIT (0.15 cores)
#   CIRCA_BIN (build/circa; built with tools/build.sh release when missing)
#   KEEP_TMP=1 keeps the temp directory (circa and PostgreSQL logs, wrk
#   output, lag samples, perf data; not PostgreSQL's data directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BENCH=$ROOT/tests/bench

NPROC=$(nproc)
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-$NPROC}
USERS=${USERS:-1000}
LOANS=${LOANS:-3}
WRITE_RESOURCES=${WRITE_RESOURCES:-50}
BATCH=${BATCH:-2000}
DRAIN_BATCHES=${DRAIN_BATCHES:-500 2000 10000}
BACKLOG=${BACKLOG:-200000}
SAMPLE=${SAMPLE:-0.5}
PERF=${PERF:-0}
PERF_SECONDS=${PERF_SECONDS:-5}
QUIET_WAIT=${QUIET_WAIT:-120}
TRIES=${TRIES:-3}
FOREIGN_LIMIT=${FOREIGN_LIMIT:-0.15}
CIRCA_BIN=${CIRCA_BIN:-$ROOT/build/circa}

say() { printf 'wb-bench: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

for c in wrk curl python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (run tools/install-deps.sh)"
done
[ "$PERF" = 0 ] || command -v perf >/dev/null 2>&1 || die "PERF=1 but perf is not installed"
python3 -c "import sys; sys.path.insert(0, '$ROOT/tests/system'); import pgfix; ok, why = pgfix.available(); sys.exit(0 if ok else why)" ||
    die "no PostgreSQL server to run (tools/install-deps.sh installs it)"
if [ ! -x "$CIRCA_BIN" ]; then
    [ "$CIRCA_BIN" = "$ROOT/build/circa" ] || die "$CIRCA_BIN is not executable"
    "$ROOT/tools/build.sh" release >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/circa-wb-bench.XXXXXX")
PY_PID=

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # wb_bench.py stops what it started; give it time (circa flushes for up to 5 s)
    [ -z "$PY_PID" ] || stop_pid "$PY_PID" TERM
    # whatever a killed wb_bench.py left behind (it keeps TMP/pids current)
    if [ -f "$TMP/pids" ]; then
        local kind val pgdata='' pgbin=''
        while read -r kind val; do
            case "$kind" in
            pid) stop_pid "$val" TERM ;;
            pgdata) pgdata=$val ;;
            pgbin) pgbin=$val ;;
            esac
        done <"$TMP/pids"
        if [ -n "$pgdata" ] && [ -f "$pgdata/postmaster.pid" ]; then
            say "stopping the PostgreSQL left in $pgdata"
            if [ "$(id -u)" = 0 ]; then
                runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate -w stop >&2 || true
            else
                "$pgbin/pg_ctl" -D "$pgdata" -m immediate -w stop >&2 || true
            fi
        fi
        case "$pgdata" in # pgfix's mkdtemp directory, and nothing else
        */circa-pg-*/data) rm -rf "$(dirname "$pgdata")" ;;
        esac
    fi
    if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        say "kept $TMP (logs, wrk output, lag samples)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "temp dir $TMP; circa $CIRCA_BIN; wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
# In the background plus `wait`, so Ctrl-C runs the trap at once.
python3 "$BENCH/wb_bench.py" --bin "$CIRCA_BIN" --tmp "$TMP" --duration "$DURATION" \
    --connections "$CONNECTIONS" --threads "$THREADS" --nproc "$NPROC" --users "$USERS" \
    --loans "$LOANS" --write-resources "$WRITE_RESOURCES" --batch "$BATCH" \
    --drain-batches "$DRAIN_BATCHES" --backlog "$BACKLOG" --sample "$SAMPLE" \
    --perf "$PERF" --perf-seconds "$PERF_SECONDS" --quiet-wait "$QUIET_WAIT" \
    --tries "$TRIES" --foreign-limit "$FOREIGN_LIMIT" >"$TMP/report.md" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=
cat "$TMP/report.md"
[ "$rc" -eq 0 ] || die "wb_bench.py exited with status $rc"
