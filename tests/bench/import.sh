#!/usr/bin/env bash
# Catalog import throughput: a ROWS-row JSON Lines file through POST /v1/imports
# (release build, loopback). Target: >= 100,000 rows/s for 1,000,000 rows.
#
#   tests/bench/import.sh                  (defaults below)
#   ROWS=200000 REPEAT=1 tests/bench/import.sh
#
# All on 127.0.0.1, free ports, one temp directory:
# 1. a JSON Lines file of ROWS resources in circa's shape (id, title, type,
#    copies, premium, authors, tags; ~150 bytes a row, fixed seed);
# 2. reference: nginx serving that same file as a static file; the time of
#    `curl` downloading it (the cost of moving the bytes over loopback);
# 3. circa: a fresh node (fsync on, default limits but max_import_bytes
#    raised to fit the file), `curl --data-binary @FILE` to POST /v1/imports
#    as a librarian, timed from the request to the answer; the answer must
#    say created == ROWS and rejected == 0, and GET /v1/resources/counts must
#    add up to ROWS; then the same file again (a duplicate: nothing changes),
#    timed too. REPEAT fresh nodes, one after the other; the median is
#    reported, with the CPU the node used during the import;
# 4. prints a markdown section for docs/BENCHMARKS.md and the command to
#    reproduce. Exit status non-zero when an import failed or miscounted.
#
# Environment: ROWS (1000000)  IDS (v4: random ids; v7: time-ordered ids, as
# UUIDv7 gives them: B-tree appends)  REPEAT (3)  QUIET_WAIT (30: seconds to wait
# for the machine to go idle before each run)  CIRCA_BIN (build/circa; built
# with tools/build.sh release when missing; copied into the temp directory)
# KEEP_TMP=1 keeps the temp directory (node logs, answers).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
ROWS=${ROWS:-1000000}
IDS=${IDS:-v4}
REPEAT=${REPEAT:-3}
QUIET_WAIT=${QUIET_WAIT:-30}
CIRCA_BIN=${CIRCA_BIN:-$ROOT/build/circa}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}

say() { printf 'import-bench: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
for c in curl python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (run tools/install-deps.sh)"
done
[ -x "$NGINX_BIN" ] || die "nginx not found (run tools/install-deps.sh)"
if [ ! -x "$CIRCA_BIN" ]; then
    [ "$CIRCA_BIN" = "$ROOT/build/circa" ] || die "$CIRCA_BIN is not executable"
    "$ROOT/tools/build.sh" release >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/circa-import-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers read the file from here
CIRCA_PID=
NGINX_PID=
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$CIRCA_PID" TERM
    stop_pid "$NGINX_PID" QUIT
    if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        rm -rf "$TMP"/data* "$TMP/rows.jsonl" "$TMP/nginx/html"
        say "kept $TMP (node logs, answers)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cp "$CIRCA_BIN" "$TMP/circa"
START_S=$SECONDS

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# cores used: CPU ticks of the process and wall seconds between two samples
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
quiet() { # waits up to QUIET_WAIT s for the 1-minute load to fall under 0.5
    local i
    for ((i = 0; i < QUIET_WAIT; i++)); do
        awk '{ exit !($1 < 0.5) }' /proc/loadavg && return 0
        sleep 1
    done
}

case "$IDS" in v4 | v7) ;; *) die "IDS must be v4 or v7" ;; esac
say "generating $ROWS rows ($IDS ids)"
python3 - "$ROWS" "$TMP/rows.jsonl" "$IDS" <<'EOF'
import json, random, sys, uuid
n, path, kind = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rnd = random.Random(42)
types = ["FICTION", "FANTASY", "NONFICTION", "HISTORY", "POETRY", "SCHOLARLY_JOURNAL", "VIDEO", "AUDIO"]
words = "river stone night garden winter letters empire sea glass paper house moon".split()
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({
            "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)) if kind == "v4" else
                  str(uuid.UUID(int=((1763805600000 + i // 16) << 80) | (0x7 << 76) | (rnd.getrandbits(12) << 64) | (0x2 << 62) | rnd.getrandbits(62))),
            "title": " ".join(rnd.choice(words).capitalize() for _ in range(3)) + " %d" % i,
            "type": types[i % 8], "copies": 1 + i % 4, "premium": i % 10 == 0,
            "authors": ["Author %d" % (i % 5000)], "tags": [rnd.choice(words)]},
            separators=(",", ":")) + "\n")
EOF
BYTES=$(stat -c %s "$TMP/rows.jsonl")
say "file: $BYTES bytes ($((BYTES / ROWS)) bytes a row)"

# reference: nginx serving the same bytes
NG_PORT=$(free_port)
nginx_start "$TMP/nginx" 127.0.0.1 "$NG_PORT" "$TMP/rows.jsonl"
quiet
t0=$(now)
curl -fsS -o /dev/null "http://127.0.0.1:$NG_PORT/v1/me/loans"
t1=$(now)
NG_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
stop_pid "$NGINX_PID" QUIT
NGINX_PID=
say "nginx: the file in $NG_S s"

cat >"$TMP/circa.json" <<EOF
{"fsync": true, "password_iterations": 1000,
 "limits": {"max_import_bytes": $((BYTES + 1048576)), "rate_per_s": 100000, "rate_burst": 100000}}
EOF
RUN_S=()
CORES=()
DUP_S=()
for ((r = 1; r <= REPEAT; r++)); do
    PORT=$(free_port)
    rm -rf "$TMP/data"
    "$TMP/circa" serve --listen "127.0.0.1:$PORT" --data "$TMP/data" --config "$TMP/circa.json" \
        >>"$TMP/node.log" 2>&1 &
    CIRCA_PID=$!
    wait_http "http://127.0.0.1:$PORT/readyz" 30 "$CIRCA_PID" || die "circa did not start (see $TMP/node.log)"
    TOKEN=$("$TMP/circa" token --data "$TMP/data" --sub 00000000-0000-4000-8000-00000000b001 --role librarian)
    quiet
    c0=$(ticks "$CIRCA_PID")
    t0=$(now)
    code=$(curl -sS -o "$TMP/answer.$r.json" -w '%{http_code}' --max-time 900 \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' \
        --data-binary @"$TMP/rows.jsonl" "http://127.0.0.1:$PORT/v1/imports?name=rows.jsonl")
    t1=$(now)
    c1=$(ticks "$CIRCA_PID")
    [ "$code" = 200 ] || die "import answered $code: $(head -c 400 "$TMP/answer.$r.json")"
    python3 - "$TMP/answer.$r.json" "$ROWS" <<'EOF' || die "wrong summary: $(head -c 400 "$TMP/answer.$r.json")"
import json, sys
a = json.load(open(sys.argv[1])); n = int(sys.argv[2])
sys.exit(0 if (a["created"], a["rejected"], a["rows"], a["duplicate"]) == (n, 0, n, False) else 1)
EOF
    total=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/resources/counts" |
        python3 -c 'import json,sys; print(sum(json.load(sys.stdin).values()))')
    [ "$total" = "$ROWS" ] || die "counts add up to $total, not $ROWS"
    s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    RUN_S+=("$s")
    CORES+=("$(awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v s="$s" 'BEGIN { printf "%.2f", c / hz / s }')")
    t0=$(now)
    curl -fsS -o "$TMP/dup.$r.json" -H "Authorization: Bearer $TOKEN" \
        --data-binary @"$TMP/rows.jsonl" "http://127.0.0.1:$PORT/v1/imports" ||
        die "the second import failed"
    t1=$(now)
    grep -q '"duplicate":true' "$TMP/dup.$r.json" || die "the same file again was not a duplicate"
    DUP_S+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    du_data=$(du -sm "$TMP/data" | cut -f1)
    say "run $r: $s s ($(awk -v n="$ROWS" -v s="$s" 'BEGIN { printf "%d", n / s }') rows/s), ${CORES[-1]} cores, again ${DUP_S[-1]} s, data dir ${du_data} MB"
    stop_pid "$CIRCA_PID" TERM
    CIRCA_PID=
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
MED=$(median "${RUN_S[@]}")
RATE=$(awk -v n="$ROWS" -v s="$MED" 'BEGIN { printf "%d", n / s }')
NG_RATE=$(awk -v n="$ROWS" -v s="$NG_S" 'BEGIN { printf "%d", n / s }')
cat <<EOF
### Catalog import, $ROWS rows of JSON Lines, $IDS ids — $(date -u +%Y-%m-%d)

\`\`\`sh
ROWS=$ROWS IDS=$IDS REPEAT=$REPEAT tests/bench/import.sh
\`\`\`

| POST /v1/imports, one file of $ROWS rows ($BYTES bytes) | seconds (median of $REPEAT) | rows/s | / nginx |
| --- | ---: | ---: | ---: |
| circa, fresh node, fsync on | $MED (runs: ${RUN_S[*]}) | **$RATE** | $(awk -v a="$RATE" -v b="$NG_RATE" 'BEGIN { printf "%.3f", a / b }') |
| the same file again (duplicate, nothing written) | $(median "${DUP_S[@]}") | — | — |
| nginx, the same file as a static file (GET) | $NG_S | $NG_RATE | 1 |

Cores used by the node during the import: ${CORES[*]}.
EOF
say "took $((SECONDS - START_S)) s"
