#!/usr/bin/env bash
# Smoke check of the running LocalStack with the aws CLI from the venv:
# the init hooks' state, then per PV region (every region of data/kernels.json)
# the number of AKIs and of paravirtual machine images: all owners, owned by
# the account, with a KernelId, instance-store backed.  Exits 1 when a hook failed or a PV region has no AKI or PV image.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}"
data_dir="${AMITOOL_DATA_DIR:-$repo/data}"
endpoint="http://127.0.0.1:4566"

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_PAGER="" AWS_MAX_ATTEMPTS=1
unset AWS_PROFILE AWS_SESSION_TOKEN
aws=("$venv/bin/aws" --endpoint-url "$endpoint" --output text)

if ! init="$(curl -fsS --max-time 3 "$endpoint/_localstack/init" 2>/dev/null)"; then
    echo "LocalStack is not answering on $endpoint (run localstack/start.sh)" >&2
    exit 1
fi

status=0
hooks="$("$venv/bin/python" -c '
import json, sys
init = json.loads(sys.argv[1])
for s in init.get("scripts", []):
    print(s["name"], s["state"])
' "$init")"
echo "init hooks:"
echo "${hooks:-  (none)}" | sed 's/^/  /'
if [[ -z "$hooks" ]] || grep -qv ' SUCCESSFUL$' <<<"$hooks"; then
    status=1
fi

mapfile -t regions < <("$venv/bin/python" -c '
import json, sys
print("\n".join(sorted({k["region"] for k in json.load(open(sys.argv[1]))["kernels"]})))
' "$data_dir/kernels.json")

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# One DescribeImages per region (paravirtual only, filtered by LocalStack),
# all regions at once: the CLI's start-up time dominates, not LocalStack.
for region in "${regions[@]}"; do
    "${aws[@]}" --region "$region" ec2 describe-images \
        --filters Name=virtualization-type,Values=paravirtual --query \
        '[length(Images[?ImageType==`kernel`]),
          length(Images[?ImageType==`machine`]),
          length(Images[?ImageType==`machine` && OwnerId==`000000000000`]),
          length(Images[?ImageType==`machine` && KernelId!=null]),
          length(Images[?ImageType==`machine` && RootDeviceType==`instance-store`])]' \
        >"$tmp/$region" 2>"$tmp/$region.err" &
done
wait

printf '%-16s %5s %9s %8s %11s %15s\n' region AKIs PV-images PV-self PV-w/kernel PV-inst-store
for region in "${regions[@]}"; do
    if [[ -s "$tmp/$region.err" ]]; then
        printf '%-16s error: %s\n' "$region" "$(tr '\n' ' ' <"$tmp/$region.err")"
        status=1
        continue
    fi
    read -r akis pv pv_self pv_kernel pv_store <"$tmp/$region"
    printf '%-16s %5s %9s %8s %11s %15s\n' "$region" "$akis" "$pv" "$pv_self" "$pv_kernel" "$pv_store"
    if ((akis == 0 || pv_kernel == 0)); then
        status=1
    fi
done

if ((status)); then
    echo "check FAILED" >&2
else
    echo "check ok: $endpoint"
fi
exit "$status"
