#!/usr/bin/env bash
# Reproducible loopback benchmark of a circa release build against nginx.
#
#   tests/bench/run.sh                      (defaults below)
#   DURATION=30s CONNECTIONS=128 tests/bench/run.sh
#
# 1. starts circa (release build, free loopback port, temp data dir,
#    password_iterations 1000, rate limits off, threads = nproc, fsync on),
# 2. loads it (tests/bench/setup.py): USERS members with LOANS active loans
#    each, one member token per user from `circa token`,
# 3. starts nginx (own temp prefix, free loopback port, worker_processes =
#    nproc, access_log off) serving a copy of a real GET /v1/me/loans body at
#    the same path, so the file has exactly the same size,
# 4. wrk: GET /v1/me/loans with a random member token per request against
#    circa, then the same wrk settings and script against nginx; then
#    checkout/return pairs against circa,
# 5. prints a markdown table for docs/BENCHMARKS.md.
# Everything it starts is stopped on exit. Only 127.0.0.1 is used.
#
# Environment:
#   DURATION (15s)  CONNECTIONS (64)  THREADS (wrk threads, nproc)  USERS (1000)
#   LOANS (3, active loans per member)  WRITE_RESOURCES (50)
#   CIRCA_BIN (build/circa; built with tools/build.sh release when missing)
#   KEEP_TMP=1 keeps the temp directory (logs, wrk output) for inspection.
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
CIRCA_BIN=${CIRCA_BIN:-$ROOT/build/circa}
HOST=127.0.0.1

say() { printf 'bench: %s\n' "$*" >&2; }
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

TMP=$(mktemp -d "${TMPDIR:-/tmp}/circa-bench.XXXXXX")
# nginx workers drop to an unprivileged user when started as root: they must
# be able to traverse to the html directory.
chmod 755 "$TMP"
CIRCA_PID=
NGINX_PID=
WRK_PID=

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID" TERM
    stop_pid "$NGINX_PID" QUIT
    stop_pid "$CIRCA_PID" TERM
    if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        say "kept $TMP (logs, wrk output)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- circa
CPORT=$(free_port)
CURL=http://$HOST:$CPORT
mkdir -p "$TMP/data"
cat >"$TMP/circa.json" <<EOF
{
  "threads": $NPROC,
  "fsync": true,
  "password_iterations": 1000,
  "limits": {"rate_per_s": 0},
  "policy": {"max_loans": 100000, "max_loans_premium": 100000}
}
EOF
say "starting circa on $CURL ($CIRCA_BIN, threads $NPROC)"
"$CIRCA_BIN" serve --listen "$HOST:$CPORT" --data "$TMP/data" --config "$TMP/circa.json" \
    --threads "$NPROC" 2>"$TMP/circa.log" &
CIRCA_PID=$!
if ! wait_http "$CURL/readyz" 60 "$CIRCA_PID"; then
    tail -n 30 "$TMP/circa.log" >&2 || true
    die "circa did not become ready"
fi

say "loading: $USERS members x $LOANS loans"
python3 "$BENCH/setup.py" --url "$CURL" --bin "$CIRCA_BIN" --data "$TMP/data" \
    --out "$TMP/load" --users "$USERS" --loans "$LOANS" --write-resources "$WRITE_RESOURCES"
BODY_BYTES=$(stat -c %s "$TMP/load/me_loans.body")

# ---------------------------------------------------------------- nginx
NPORT=$(free_port)
NURL=http://$HOST:$NPORT
say "starting nginx on $NURL (worker_processes $NPROC)"
nginx_start "$TMP/nginx" "$HOST" "$NPORT" "$TMP/load/me_loans.body"

# ---------------------------------------------------------------- wrk
WRK=(wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency)

run_wrk() { # NAME URL SCRIPT ARGS...
    local name=$1 url=$2 script=$3
    shift 3
    say "wrk $name: ${WRK[*]} -s $(basename "$script") $url"
    # In the background plus `wait`, so Ctrl-C runs the trap at once (wrk
    # itself treats SIGINT as "stop and print results").
    "${WRK[@]}" -s "$script" "$url" -- "$@" >"$TMP/wrk-$name.txt" &
    WRK_PID=$!
    wait "$WRK_PID"
    WRK_PID=
    sed 's/^/    /' "$TMP/wrk-$name.txt" >&2
}

rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
pct() { awk -v p="$2%" '$1 == p { print $2; exit }' "$1"; }
non2xx() { awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$1"; }
sockerr() { awk '/Socket errors:/ { sub(/.*Socket errors: /, ""); s = $0 } END { print (s == "" ? "none" : s) }' "$1"; }

run_wrk read-circa "$CURL" "$BENCH/me_loans.lua" "$TMP/load/tokens.txt"
run_wrk read-nginx "$NURL" "$BENCH/me_loans.lua" "$TMP/load/tokens.txt"
# Writes last: they add returned loans to the members' histories, which would
# change the size of the /v1/me/loans bodies measured above.
run_wrk write-circa "$CURL" "$BENCH/checkout_return.lua" "$TMP/load/users.txt" \
    "$TMP/load/write_resources.txt"

C_RPS=$(rps "$TMP/wrk-read-circa.txt")
N_RPS=$(rps "$TMP/wrk-read-nginx.txt")
C_ERR=$(non2xx "$TMP/wrk-read-circa.txt")
N_ERR=$(non2xx "$TMP/wrk-read-nginx.txt")
RATIO=$(awk -v a="$C_RPS" -v b="$N_RPS" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
W_LINE=$(grep '^BENCH ' "$TMP/wrk-write-circa.txt" || true)
bench_field() { printf '%s\n' "$W_LINE" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
W_PAIRS=$(bench_field pairs_per_s)
W_WRITES=$(bench_field writes_per_s)
W_CONFLICTS=$(bench_field conflicts)
W_ERRORS=$(bench_field errors)
W_UNPARSED=$(bench_field unparsed)
W_P50=$(pct "$TMP/wrk-write-circa.txt" 50)
W_P99=$(pct "$TMP/wrk-write-circa.txt" 99)

fmt() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
CIRCA_VER=$( ("$CIRCA_BIN" --version 2>/dev/null || echo unknown) | head -n 1)
NGINX_VER=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
WRK_VER=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')

cat <<EOF

### $(date -u +%Y-%m-%d) — $CPU, $NPROC cores, Linux $(uname -r)

circa \`$CIRCA_VER\` (release build), $NGINX_VER, wrk $WRK_VER; all on 127.0.0.1 of the same machine.
wrk \`-t$THREADS -c$CONNECTIONS -d$DURATION\`; $USERS members with $LOANS active loans each;
GET /v1/me/loans body $BODY_BYTES bytes (nginx serves a copy of it at the same path, \`worker_processes $NPROC\`,
access_log off); circa \`threads $NPROC\`, fsync on, rate limits off, password_iterations 1000.

| workload | circa | nginx static file, same size | circa / nginx |
| --- | ---: | ---: | ---: |
| \`GET /v1/me/loans\`, random member token per request | $(fmt "$C_RPS") req/s (p50 $(pct "$TMP/wrk-read-circa.txt" 50), p99 $(pct "$TMP/wrk-read-circa.txt" 99)) | $(fmt "$N_RPS") req/s (p50 $(pct "$TMP/wrk-read-nginx.txt" 50), p99 $(pct "$TMP/wrk-read-nginx.txt" 99)) | $RATIO |
| checkout + return pairs (\`POST /v1/loans\`, \`POST /v1/loans/{id}/return\`), fsync on | $(fmt "${W_PAIRS:-0}") pairs/s = **$(fmt "${W_WRITES:-0}") write commands/s** (p50 $W_P50, p99 $W_P99) | — | — |

Errors: read circa non-2xx $C_ERR, socket errors: $(sockerr "$TMP/wrk-read-circa.txt"); nginx non-2xx $N_ERR;
writes: 409 conflicts ${W_CONFLICTS:-?}, other errors ${W_ERRORS:-?}, unparsed 201 bodies ${W_UNPARSED:-?}.
Reproduce: \`DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS USERS=$USERS tests/bench/run.sh\`
EOF

[ -n "$W_LINE" ] || die "write benchmark printed no BENCH line"
[ "$C_ERR" -eq 0 ] || die "circa answered $C_ERR non-2xx responses to GET /v1/me/loans"
awk -v p="${W_PAIRS:-0}" 'BEGIN { exit !(p > 0) }' || die "no checkout/return pair completed"
