#!/usr/bin/env bash
# Start a circa node: install missing dependencies, build the release binary,
# then run `circa serve` with any arguments given here.
#
# With no arguments this is the embedded default: a one-node cluster on
# 127.0.0.1:8080 with its data in ./data (relative to the current directory;
# run it from the repository root to use the git-ignored data/ there).
#   tools/run.sh
#   tools/run.sh --listen 127.0.0.1:9090 --data /var/lib/circa --config circa.json
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$ROOT/tools/install-deps.sh"
"$ROOT/tools/build.sh" release >&2

exec "$ROOT/build/circa" serve "$@"
