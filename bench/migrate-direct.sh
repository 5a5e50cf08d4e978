#!/usr/bin/env bash
# Migrate a sparse 8 GiB PV image holding 1 GiB of data on LocalStack through
# the EBS direct APIs, and print wall time, blocks read and written (written
# must equal the data blocks + 2), bytes sent and peak RSS, next to the local
# backend's migration of the same image in the same run, and the helper
# method's (on LocalStack: amitool's orchestration plus the stand-in agent).
# Needs LocalStack up (localstack/start.sh); its EBS keeps blocks in memory
# (about 3 GiB for this run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
. bench/lib.sh
profile=${BENCH_PROFILE:-dev}
cargo build -q --profile "$profile" --bin amitool --example ebs_stream_copy
bin="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")/amitool"
work=$(mktemp -d "${BENCH_DIR:-/tmp}/amitool-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export AMITOOL_JOURNAL_DIR="$work/journal" AMITOOL_WORK_DIR="$work/work"
make_pv_image "$work/pv.img" "${BENCH_SIZE:-8G}" "${BENCH_DATA_MIB:-1024}"
echo "input: $(stat -c %s "$work/pv.img") bytes, $(alloc "$work/pv.img") allocated"

s=$(date +%s.%N)
ami=$("$bin" --no-progress import "$work/pv.img" --virtualization pv --kernel aki-5c21674b --name "bench-$(basename "$work")" --output json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
echo "import to LocalStack (coldsnap upload): $(python3 -c "print(round($(date +%s.%N) - $s, 2))") s, $ami"

/usr/bin/time -f '%e %M' -o "$work/time.aws" "$bin" --no-progress migrate --ami "$ami" --output json > "$work/aws.json"
# The helper method on the same AMI. On LocalStack the conversion runs in the
# stand-in SSM agent on volume files (localstack/hooks/30_amitool_ssm.py), so
# this times amitool's orchestration plus that stand-in, not an EC2 helper.
/usr/bin/time -f '%e %M' -o "$work/time.helper" "$bin" --no-progress migrate --method helper --ami "$ami" --name "bench-helper-$(basename "$work")" --output json > "$work/helper.json"
# Design (b): the same source snapshot streamed block by block to index + 2.
aws="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}/bin/aws"
src_snap=$("$aws" --region us-east-1 --endpoint-url "$AWS_ENDPOINT_URL" ec2 describe-images --image-ids "$ami" --query 'Images[0].BlockDeviceMappings[0].Ebs.SnapshotId' --output text)
stream_bin="$(dirname "$bin")/examples/ebs_stream_copy"
/usr/bin/time -f '%e %M' -o "$work/time.stream" "$stream_bin" "$src_snap" > "$work/stream.txt"
state="$work/state"
lami=$("$bin" --backend local --state-dir "$state" import "$work/pv.img" --virtualization pv --kernel aki-5c21674b --output json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
/usr/bin/time -f '%e %M' -o "$work/time.local" "$bin" --backend local --state-dir "$state" migrate --ami "$lami" --output json > "$work/local.json"

python3 - "$work" <<'PY'
import json, os, re, sys
w = sys.argv[1]
def steps(f):
    return {s["name"]: s for s in json.load(open(f))["steps"]}
a = steps(f"{w}/aws.json")
aw, arss = open(f"{w}/time.aws").read().split()
lw, lrss = open(f"{w}/time.local").read().split()
read = int(re.search(r"(\d+) blocks read", a["snapshot"]["detail"]).group(1))
wrote = int(re.search(r"(\d+) blocks written", a["upload"]["detail"]).group(1))
sent = int(re.search(r"\((\d+) bytes\)", a["upload"]["detail"]).group(1))
print(f"aws direct (LocalStack): wall {float(aw):6.2f} s  peak RSS {int(arss):7d} KiB  blocks read {read}  written {wrote} (read + 2 = {read + 2})  bytes sent {sent}")
print("  steps: " + ", ".join(f"{n} {s['seconds']:.2f} s" for n, s in a.items()))
print(f"local backend:           wall {float(lw):6.2f} s  peak RSS {int(lrss):7d} KiB")
hw, hrss = open(f"{w}/time.helper").read().split()
h = steps(f"{w}/helper.json")
print(f"aws helper (LocalStack, stand-in agent): wall {float(hw):6.2f} s  peak RSS {int(hrss):7d} KiB")
print("  steps: " + ", ".join(f"{n} {s['seconds']:.2f} s" for n, s in h.items()))
sw, srss = open(f"{w}/time.stream").read().split()
print(open(f"{w}/stream.txt").read().strip() + f"  peak RSS {int(srss)} KiB")
print(f"design (a) download + upload: {a['snapshot']['seconds'] + a['upload']['seconds']:.2f} s of the {float(aw):.2f} s above")
PY
