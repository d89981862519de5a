#!/usr/bin/env bash
# Configure and build circa.
#
#   tools/build.sh [release]  -> build/       (RelWithDebInfo, the binary that is run and benchmarked)
#   tools/build.sh asan       -> build-asan/  (-DCIRCA_SANITIZE=ON: ASan + UBSan, clang if present, else gcc)
#   tools/build.sh fuzz       -> build-fuzz/  (clang, -DCIRCA_FUZZ=ON -DCIRCA_SANITIZE=ON -DCIRCA_TESTS=OFF)
#   tools/build.sh tsan       -> build-tsan/  (clang, -DCIRCA_TSAN=ON -DCIRCA_TESTS=OFF: the server under ThreadSanitizer)
#
# Environment: JOBS (parallel build jobs, default 2), CC (compiler for a fresh
# release/asan build directory; an existing directory keeps its compiler).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

mode=${1:-release}
jobs=${JOBS:-2}

case "$mode" in
release)
    dir=build
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCIRCA_SANITIZE=OFF -DCIRCA_FUZZ=OFF)
    cc=${CC:-}
    ;;
asan)
    dir=build-asan
    # Debug keeps assert() and makes sanitizer stacks precise.
    args=(-DCMAKE_BUILD_TYPE=Debug -DCIRCA_SANITIZE=ON -DCIRCA_FUZZ=OFF)
    if [ -n "${CC:-}" ]; then
        cc=$CC
    elif command -v clang >/dev/null 2>&1; then
        cc=clang
    else
        cc=gcc
    fi
    ;;
tsan)
    dir=build-tsan
    # criterion's own runner cannot start under TSan here, so only the server is built
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCIRCA_TSAN=ON -DCIRCA_TESTS=OFF)
    cc=clang
    ;;
fuzz)
    dir=build-fuzz
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCIRCA_FUZZ=ON -DCIRCA_SANITIZE=ON -DCIRCA_TESTS=OFF)
    cc=clang # libFuzzer (-fsanitize=fuzzer) needs clang
    ;;
-h | --help)
    sed -n '2,11p' "$0"
    exit 0
    ;;
*)
    echo "usage: $0 [release|asan|tsan|fuzz]" >&2
    exit 2
    ;;
esac

# The compiler is fixed when a build directory is first configured; passing a
# different one later would make CMake throw the cache away.
if [ ! -f "$dir/CMakeCache.txt" ] && [ -n "$cc" ]; then
    export CC=$cc
else
    unset CC
fi

echo "==> build $mode ($dir)"
cmake -S . -B "$dir" --log-level=WARNING "${args[@]}"
cmake --build "$dir" -j "$jobs"
