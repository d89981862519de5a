#!/usr/bin/env bash
# Checks terraform/ offline: installs the pinned HCL parser (npm ci from
# package-lock.json into tools/tfcheck/node_modules) when it is missing or
# out of date, then runs check.mjs. Prints one line per check result and
# "N passed, N failed"; exits non-zero on any failure.
#
# Usage: tools/tfcheck/run.sh [TERRAFORM_DIR]   (default: terraform/ of this repository)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=${1:-$ROOT/terraform}

command -v node >/dev/null 2>&1 || { echo "tfcheck: node is not installed (tools/install-deps.sh)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "tfcheck: npm is not installed (tools/install-deps.sh)" >&2; exit 1; }

# npm ci again only when the lockfile changed since the last install.
stamp=$HERE/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ ! -d "$HERE/node_modules/@cdktf/hcl2json" ] || [ "$HERE/package-lock.json" -nt "$stamp" ]; then
    echo "tfcheck: npm ci" >&2
    (cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
fi

exec node "$HERE/check.mjs" "$DIR"
