#!/usr/bin/env bash
# Proves tools/tfcheck can fail: the pristine terraform/ tree must pass, and
# each broken copy (tests/tfcheck/breaks.py, one break per case) must fail
# with the check that case targets named in a FAIL line.
#
# Usage: tests/tfcheck/test.sh [CASE...]     (needs tools/tfcheck/run.sh to
# have installed the parser once; it installs it when missing)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHECK=$ROOT/tools/tfcheck/check.mjs
BREAKS=$ROOT/tests/tfcheck/breaks.py
JOBS=${TFCHECK_JOBS:-4}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tfcheck-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if [ ! -d "$ROOT/tools/tfcheck/node_modules/@cdktf/hcl2json" ]; then
    "$ROOT/tools/tfcheck/run.sh" "$ROOT/terraform" >/dev/null
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

# ---------------------------------------------------------------- pristine

cp -r "$ROOT/terraform" "$TMP/pristine"
if node "$CHECK" "$TMP/pristine" >"$TMP/pristine.out" 2>&1 && tail -n 1 "$TMP/pristine.out" | grep -Eq '^[0-9]+ passed, 0 failed$'; then
    ok "pristine tree passes ($(tail -n 1 "$TMP/pristine.out"))"
else
    bad "pristine tree does not pass:"
    grep -E '^FAIL|failed' "$TMP/pristine.out" | sed 's/^/    /'
fi

# ---------------------------------------------------------------- broken copies

mapfile -t cases < <(python3 "$BREAKS" --list)
if [ $# -gt 0 ]; then
    wanted=" $* "
    filtered=()
    for c in "${cases[@]}"; do
        [[ $wanted == *" ${c%% *} "* ]] && filtered+=("$c")
    done
    cases=("${filtered[@]}")
fi

# one case: copy, break, run the checker; the verdict is read afterwards
run_case() {
    local name=$1 dir=$TMP/case-$1
    cp -r "$ROOT/terraform" "$dir"
    if ! python3 "$BREAKS" "$name" "$dir" >"$dir.break" 2>&1; then
        echo "break" >"$dir.rc"
        return
    fi
    set +e
    node "$CHECK" "$dir" >"$dir.out" 2>&1
    echo $? >"$dir.rc"
    set -e
}

running=0
for c in "${cases[@]}"; do
    run_case "${c%% *}" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

for c in "${cases[@]}"; do
    name=${c%% *}
    check=${c#* }
    dir=$TMP/case-$name
    rc=$(cat "$dir.rc" 2>/dev/null || echo missing)
    if [ "$rc" = break ]; then
        bad "$name: the break does not apply to this tree: $(cat "$dir.break")"
    elif [ "$rc" != 1 ]; then
        bad "$name: checker exited $rc, expected 1"
        tail -n 3 "$dir.out" 2>/dev/null | sed 's/^/    /'
    elif ! grep -q "^FAIL $check " "$dir.out"; then
        bad "$name: no FAIL line for check '$check'; got:"
        grep '^FAIL' "$dir.out" | sed 's/^/    /'
    elif ! tail -n 1 "$dir.out" | grep -Eq '^[0-9]+ passed, [1-9][0-9]* failed$'; then
        bad "$name: last line is not 'N passed, N failed': $(tail -n 1 "$dir.out")"
    else
        ok "$name -> $(grep -m1 "^FAIL $check " "$dir.out" | cut -c1-150)"
    fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
