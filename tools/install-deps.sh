#!/usr/bin/env bash
# Install every build and test dependency of circa on Debian 12 (bookworm).
#
# Idempotent and quiet: packages are checked with dpkg-query first, so a
# machine that already has everything does no network access at all. When
# something is missing, `apt-get update` runs once, then the missing packages
# are installed. libraft-dev (0.22.x, the cowsql raft fork) comes from
# bookworm-backports; the backports source is derived from the mirror that
# is already configured on the machine (no host name is written here).
#
# Environment (mostly for testing the source derivation):
#   CIRCA_APT_DIR           apt configuration root to read (default /etc/apt)
#   CIRCA_BACKPORTS_SOURCE  file to write the backports source to
#                           (default $CIRCA_APT_DIR/sources.list.d/circa-backports.sources)
#
# Usage: tools/install-deps.sh                    install what is missing
#        tools/install-deps.sh --print-backports  print the derived deb822 source and exit
#        tools/install-deps.sh --backports-only   only write the backports source (if needed)
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
    libevent-dev libnng-dev liblmdb-dev lmdb-utils libjansson-dev
    libjwt-dev libssl-dev libcriterion-dev libpq-dev postgresql
    wrk nginx-light curl python3 ca-certificates openssl
)
RAFT_PKG=libraft-dev
RAFT_MIN=0.22
BACKPORTS=bookworm-backports

APT_DIR=${CIRCA_APT_DIR:-/etc/apt}
BACKPORTS_FILE=${CIRCA_BACKPORTS_SOURCE:-$APT_DIR/sources.list.d/circa-backports.sources}

export DEBIAN_FRONTEND=noninteractive

say() { printf 'install-deps: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is not available"
    SUDO=(sudo --preserve-env=DEBIAN_FRONTEND)
fi

# installed PKG -> 0 when the package is fully installed
installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

raft_version() {
    dpkg-query -W -f='${Version}' "$RAFT_PKG" 2>/dev/null || true
}

raft_ok() {
    local v
    installed "$RAFT_PKG" || return 1
    v=$(raft_version)
    dpkg --compare-versions "$v" ge "$RAFT_MIN"
}

# Lists the apt source files apt itself reads (ignores *.disabled etc.).
source_files() {
    local f
    [ -f "$APT_DIR/sources.list" ] && printf '%s\n' "$APT_DIR/sources.list"
    for f in "$APT_DIR"/sources.list.d/*.list "$APT_DIR"/sources.list.d/*.sources; do
        [ -f "$f" ] && printf '%s\n' "$f"
    done
    return 0
}

# 0 when some configured (non-comment) source already names bookworm-backports.
have_backports_source() {
    local f
    [ -f "$BACKPORTS_FILE" ] && return 0
    while IFS= read -r f; do
        if grep -Eq "^[^#]*([[:space:]]|:)$BACKPORTS([[:space:]]|$)" "$f"; then
            return 0
        fi
    done < <(source_files)
    return 1
}

# Prints "URIS<TAB>SIGNED_BY" from the first enabled deb822 entry whose Types
# include deb and whose Suites include exactly "bookworm". A multi-line
# (inline key) Signed-By is passed on with its continuation lines, joined by
# \001 so it fits on one output line.
derive_deb822() {
    local f
    for f in "$APT_DIR"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ &&
                    tolower(enabled) != "no" && uris != "") {
                    print uris "\t" signed
                    found = 1
                    exit
                }
                types = suites = uris = signed = enabled = ""; key = ""
            }
            BEGIN { types = suites = uris = signed = enabled = ""; key = "" }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ {                                   # continuation line
                if (key == "signed-by") signed = signed "\001" $0
                else if (key == "uris") { sub(/^[ \t]+/, ""); uris = uris " " $0 }
                else if (key == "suites") { sub(/^[ \t]+/, ""); suites = suites " " $0 }
                else if (key == "types") { sub(/^[ \t]+/, ""); types = types " " $0 }
                next
            }
            {
                i = index($0, ":")
                if (i == 0) next
                key = tolower(substr($0, 1, i - 1))
                val = substr($0, i + 1)
                sub(/^[ \t]+/, "", val); sub(/[ \t]+$/, "", val)
                if (key == "types") types = val
                else if (key == "suites") suites = val
                else if (key == "uris") uris = val
                else if (key == "signed-by") signed = val
                else if (key == "enabled") enabled = val
            }
            END { if (!found) flush() }
        ' "$f" | head -n 1 | grep . && return 0
    done
    return 1
}

# Same from one-line style: "deb [opts] URI bookworm comp..." in sources.list
# or sources.list.d/*.list. Prints "URI<TAB>SIGNED_BY".
derive_legacy() {
    local f
    for f in "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '
            /^[ \t]*deb[ \t]/ {
                line = $0
                sub(/#.*/, "", line)
                opts = ""
                if (match(line, /\[[^]]*\]/)) {
                    opts = substr(line, RSTART + 1, RLENGTH - 2)
                    line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
                }
                n = split(line, w, /[ \t]+/)
                j = 0
                for (k = 1; k <= n; k++) if (w[k] != "") t[++j] = w[k]
                if (j < 3 || t[3] != "bookworm") next
                signed = ""
                m = split(opts, o, /[ \t]+/)
                for (k = 1; k <= m; k++)
                    if (o[k] ~ /^signed-by=/) { signed = substr(o[k], 11); gsub(/,/, " ", signed) }
                print t[2] "\t" signed
                exit
            }
        ' "$f" | head -n 1 | grep . && return 0
    done
    return 1
}

# Prints the deb822 paragraph for bookworm-backports.
backports_source_text() {
    local line uris signed
    line=$(derive_deb822) || line=$(derive_legacy) ||
        die "no configured 'bookworm' apt source found in $APT_DIR to derive $BACKPORTS from"
    uris=${line%%$'\t'*}
    signed=${line#*$'\t'}
    printf '# Written by circa tools/install-deps.sh (derived from the configured bookworm source).\n'
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "$uris" "$BACKPORTS"
    if [ -n "$signed" ]; then
        printf 'Signed-By: %s\n' "$signed" | tr '\001' '\n' | sed '1s/[[:space:]]*$//'
    fi
}

ensure_backports_source() {
    if have_backports_source; then
        return 0
    fi
    local text
    text=$(backports_source_text)
    say "adding $BACKPORTS source: $BACKPORTS_FILE"
    printf '%s\n' "$text" | "${SUDO[@]}" tee "$BACKPORTS_FILE" >/dev/null
}

case "${1:-}" in
--print-backports)
    backports_source_text
    exit 0
    ;;
--backports-only)
    ensure_backports_source
    exit 0
    ;;
"") ;;
*)
    echo "usage: $0 [--print-backports|--backports-only]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done

# ---- Node.js for tools/tfcheck (the Terraform checker) -------------------
# Only when no node is on PATH: a node installed another way (nvm, NodeSource,
# a distribution image) is used as it is, never shadowed by Debian's package.
if ! command -v node >/dev/null 2>&1; then
    for p in nodejs npm; do
        installed "$p" || missing+=("$p")
    done
fi
# ---------------------------------------------------------------------------
need_raft=0
raft_ok || need_raft=1

if [ ${#missing[@]} -eq 0 ] && [ $need_raft -eq 0 ]; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian 12 expected)"

if [ $need_raft -eq 1 ]; then
    ensure_backports_source
fi

APT=("${SUDO[@]}" apt-get -qq -o Dpkg::Use-Pty=0 -o APT::Install-Recommends=false)

say "apt-get update"
"${APT[@]}" update

if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    "${APT[@]}" install -y "${missing[@]}" >/dev/null
fi

if [ $need_raft -eq 1 ]; then
    say "installing $RAFT_PKG from $BACKPORTS"
    "${APT[@]}" install -y -t "$BACKPORTS" "$RAFT_PKG" >/dev/null
fi

for p in "${PACKAGES[@]}"; do
    installed "$p" || die "package $p is still not installed"
done
if ! raft_ok; then
    die "$RAFT_PKG must be >= $RAFT_MIN (have: '$(raft_version)'); is $BACKPORTS reachable?"
fi
say "done ($RAFT_PKG $(raft_version))"
