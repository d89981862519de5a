#!/usr/bin/env bash
# Run every test of circa: install missing dependencies, build release and
# sanitizer binaries, then unit tests, system tests and a fuzz smoke run.
#
# Each step runs in its own subshell with `set -euo pipefail`; a failing step
# does not stop the others (a step whose build failed is reported as not run
# and counted as failed). The end is a summary, one line per step, and a last
# line `N passed, N failed`. Exit status is non-zero when any step failed.
#
#   tools/test.sh            all steps
#   tools/test.sh STEP...    only the named steps (see STEPS below)
#   tools/test.sh soak       opt-in, not in the default run: 20 rounds of
#                            kill -9 the leader of a 3-node cluster under
#                            load, then the history checker (SOAK_ROUNDS)
#
# Environment: FUZZ_SECONDS (per fuzz target, default 20), JOBS (build jobs).
#
# Adding a step: write a function step_<name> and append "<name>" to STEPS
# (and to NEEDS if it needs a build).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STEPS=(
    deps
    format
    terraform
    build-release
    build-asan
    unit-release
    unit-asan
    system-release
    system-asan
    build-tsan
    system-tsan
    fuzz
)
# step -> the step whose failure makes it pointless
declare -A NEEDS=(
    [build-release]=deps
    [build-asan]=deps
    [unit-release]=build-release
    [unit-asan]=build-asan
    [system-release]=build-release
    [system-asan]=build-asan
    [build-tsan]=deps
    [system-tsan]=build-tsan
    [fuzz]=deps
    [format]=deps
    [terraform]=deps
    [soak]=deps
)

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/circa-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- sanitizers

# LeakSanitizer needs ptrace-like access to stop the world; some sandboxes
# (restricted containers, running under a tracer) forbid it and LSan then dies
# with "LeakSanitizer has encountered a fatal error". Probe once with the ASan
# build's own compiler: leaks stay on where that works (it does on a normal
# Debian 12 machine), and are turned off with a note where it does not.
asan_options() {
    if [ -z "${ASAN_DETECT_LEAKS:-}" ]; then
        local cc=cc probe=$TMP/lsan-probe
        if [ -f build-asan/CMakeCache.txt ]; then
            cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' build-asan/CMakeCache.txt)
        fi
        printf '#include <stdlib.h>\nint main(void){void *p = malloc(7); free(p); return 0;}\n' >"$probe.c"
        ASAN_DETECT_LEAKS=0
        if "${cc:-cc}" -fsanitize=address -g "$probe.c" -o "$probe" 2>/dev/null &&
            ASAN_OPTIONS=detect_leaks=1 "$probe" >/dev/null 2>&1; then
            ASAN_DETECT_LEAKS=1
        else
            echo "note: LeakSanitizer does not work in this environment; running with detect_leaks=0" >&2
        fi
    fi
    export ASAN_OPTIONS="detect_leaks=$ASAN_DETECT_LEAKS:detect_stack_use_after_return=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    export LSAN_OPTIONS="${LSAN_OPTIONS:-}"
}

# ---------------------------------------------------------------- steps

step_deps() {
    tools/install-deps.sh
}

# every C file as .clang-format says; `clang-format -i $(git ls-files '*.c' '*.h')` fixes it
step_format() {
    local bad=0 f
    for f in $(git ls-files '*.c' '*.h'); do
        clang-format --dry-run --Werror "$f" 2>/dev/null || { echo "not formatted: $f"; bad=1; }
    done
    return $bad
}

# terraform/ is well-formed (offline: pinned HCL parser, no terraform binary),
# and each check of the checker can fail
step_terraform() {
    tools/tfcheck/run.sh
    tests/tfcheck/test.sh
}

step_build-release() {
    tools/build.sh release
}

step_build-asan() {
    tools/build.sh asan
}

step_unit-release() {
    ctest --test-dir build --output-on-failure --no-tests=error --timeout 300
}

step_unit-asan() {
    asan_options
    ctest --test-dir build-asan --output-on-failure --no-tests=error --timeout 600
}

system_tests() {
    if [ ! -f tests/system/run.py ]; then
        echo "tests/system/run.py is missing" >&2
        return 1
    fi
    python3 tests/system/run.py --bin "$1"
}

step_system-release() {
    system_tests build/circa
}

step_system-asan() {
    asan_options
    system_tests build-asan/circa
}

step_build-tsan() {
    tools/build.sh tsan
}

# the whole system suite against the server under ThreadSanitizer; the
# harness fails a test whose node printed a sanitizer report
step_system-tsan() {
    TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1" system_tests build-tsan/circa
}

step_soak() {
    tools/build.sh release
    python3 tests/system/soak_cluster.py --bin build/circa --rounds "${SOAK_ROUNDS:-20}"
}

step_fuzz() {
    tools/build.sh fuzz
    asan_options
    local bin name corpus seeds n=0 failed=0 log
    mkdir -p build-fuzz/artifacts
    for bin in build-fuzz/fuzz_*; do
        if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
        name=$(basename "$bin")
        n=$((n + 1))
        corpus=$TMP/corpus-$name
        mkdir -p "$corpus"
        seeds=()
        [ -d "tests/fuzz/corpus/$name" ] && seeds=("tests/fuzz/corpus/$name")
        dict=()
        [ -f "tests/fuzz/$name.dict" ] && dict=("-dict=tests/fuzz/$name.dict")
        log=$TMP/$name.log
        echo "--- $name (${FUZZ_SECONDS}s)"
        if "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
            -detect_leaks="$ASAN_DETECT_LEAKS" -print_final_stats=1 \
            -artifact_prefix="build-fuzz/artifacts/$name-" "${dict[@]}" \
            "$corpus" "${seeds[@]}" >"$log" 2>&1; then
            grep -E '^(stat::number_of_executed_units|Done )' "$log" || true
        else
            failed=$((failed + 1))
            echo "$name FAILED (crash input in build-fuzz/artifacts/); last output:"
            tail -n 60 "$log"
        fi
    done
    if [ "$n" -eq 0 ]; then
        echo "no fuzz targets were built (tests/fuzz/fuzz_*.c)" >&2
        return 1
    fi
    [ "$failed" -eq 0 ]
}

# ---------------------------------------------------------------- driver

declare -A RESULT
SUMMARY=()
passed=0
failed=0

run_step() {
    local name=$1 need rc start secs
    need=${NEEDS[$name]:-}
    if [ -n "$need" ] && [ "${RESULT[$need]:-}" = FAIL ]; then
        RESULT[$name]=FAIL
        SUMMARY+=("$(printf 'FAIL  %-16s not run: %s failed' "$name" "$need")")
        failed=$((failed + 1))
        return
    fi
    printf '\n==> [%s]\n' "$name"
    start=$(date +%s)
    (
        set -euo pipefail
        "step_$name"
    )
    rc=$?
    secs=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ]; then
        RESULT[$name]=PASS
        passed=$((passed + 1))
    else
        RESULT[$name]=FAIL
        failed=$((failed + 1))
    fi
    SUMMARY+=("$(printf '%s  %-16s %4ds' "${RESULT[$name]}" "$name" "$secs")")
}

selected=("$@")
if [ ${#selected[@]} -eq 0 ]; then
    selected=("${STEPS[@]}")
fi
for s in "${selected[@]}"; do
    if ! declare -F "step_$s" >/dev/null; then
        echo "unknown step: $s (steps: ${STEPS[*]})" >&2
        exit 2
    fi
done

t0=$(date +%s)
for s in "${selected[@]}"; do
    run_step "$s"
done

printf '\n==> summary (%ds)\n' "$(($(date +%s) - t0))"
printf '%s\n' "${SUMMARY[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
