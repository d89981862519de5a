#!/usr/bin/env bash
# Rolls a circa release out one region at a time.
#
#   terraform/scripts/rollout.sh ENV VERSION SHA256 [REGION...]
#
# For each region in turn (default: every region of envs/ENV/regions, the
# Aurora primary's region last): set releases[REGION] in
# envs/ENV/regions/releases.auto.tfvars.json, terraform apply (the launch
# templates of that region change, which starts a rolling instance refresh of
# its voter and standby groups), then wait until both refreshes are
# Successful. A refresh that fails or is rolled back by the 5xx / p99 alarms
# stops the rollout: the region's entry is put back to the previous release
# and applied (the groups already run it again), and the script exits 1.
#
# Needs: terraform (>= 1.11), aws CLI v2, jq; run from a machine or CI job
# with the env's backend configured (terraform init done).
set -euo pipefail

usage() { echo "usage: $0 prod|staging VERSION SHA256 [REGION...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
ENV=$1 VERSION=$2 SHA=$3
shift 3
[[ $SHA =~ ^[0-9a-f]{64}$ ]] || { echo "SHA256 must be 64 hex digits" >&2; exit 2; }

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../envs/$ENV/regions" && pwd)
FILE=$DIR/releases.auto.tfvars.json
[ -f "$FILE" ] || { echo "$FILE is missing (first deploy: see terraform/README.md)" >&2; exit 1; }
cd "$DIR"

if [ $# -gt 0 ]; then
    regions=("$@")
else
    # secondary regions first, the region of the Aurora writer last
    primary=$(sed -n 's/^ *primary_region *= *"\(.*\)"/\1/p' main.tf | head -n 1)
    mapfile -t regions < <(jq -r --arg p "$primary" '.releases | keys[] | select(. != $p)' "$FILE")
    regions+=("$primary")
fi

set_release() { # REGION VERSION SHA
    jq --arg r "$1" --arg v "$2" --arg s "$3" '.releases[$r] = {version: $v, sha256: $s}' "$FILE" >"$FILE.tmp"
    mv "$FILE.tmp" "$FILE"
}

wait_refresh() { # REGION ASG -> 0 when Successful
    local status
    while :; do
        status=$(aws autoscaling describe-instance-refreshes --region "$1" \
            --auto-scaling-group-name "$2" --max-records 1 \
            --query 'InstanceRefreshes[0].Status' --output text)
        case "$status" in
        Successful | None) return 0 ;;
        Pending | InProgress | Baking | RollbackInProgress) sleep 30 ;;
        *)
            echo "instance refresh of $2 in $1: $status" >&2
            return 1
            ;;
        esac
    done
}

for region in "${regions[@]}"; do
    previous=$(jq -c --arg r "$region" '.releases[$r]' "$FILE")
    [ "$previous" != null ] || { echo "no release entry for $region in $FILE" >&2; exit 1; }
    if [ "$(jq -r .version <<<"$previous")" = "$VERSION" ]; then
        echo "== $region already runs $VERSION"
        continue
    fi
    echo "== $region: $(jq -r .version <<<"$previous") -> $VERSION"
    set_release "$region" "$VERSION" "$SHA"
    terraform apply -input=false -auto-approve
    ok=1
    for asg in $(terraform output -json autoscaling_group_names | jq -r --arg r "$region" '.[$r][]'); do
        wait_refresh "$region" "$asg" || ok=0
    done
    if [ $ok -ne 1 ]; then
        echo "== $region: refresh failed or rolled back; restoring $previous in the configuration" >&2
        set_release "$region" "$(jq -r .version <<<"$previous")" "$(jq -r .sha256 <<<"$previous")"
        terraform apply -input=false -auto-approve
        exit 1
    fi
    echo "== $region runs $VERSION"
done
