#!/usr/bin/env bash
# `amitool list --virtualization pv --pv-regions` against LocalStack, next to
# the equivalent loop of the aws CLI over the same nine regions, in one run.
# Needs LocalStack up (localstack/start.sh, which also installs awscli).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
aws="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}/bin/aws"
runs=${BENCH_RUNS:-5}
cargo build -q
bin="$CARGO_TARGET_DIR/debug/amitool"
regions=(ap-northeast-1 ap-southeast-1 ap-southeast-2 eu-central-1 eu-west-1 sa-east-1 us-east-1 us-west-1 us-west-2)

amitool_run() { "$bin" --no-progress list --virtualization pv --pv-regions --output json; }
aws_run() {
  for r in "${regions[@]}"; do
    "$aws" ec2 describe-images --region "$r" --filters Name=virtualization-type,Values=paravirtual \
      --query 'Images[].ImageId' --output text
  done
}
count_a=$(amitool_run | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
count_b=$(aws_run | wc -w)
echo "images found: amitool $count_a, aws CLI $count_b"
[ "$count_a" = "$count_b" ] || { echo "the two disagree" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_it() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print($e - $s)"; }
ta=(); tb=()
for _ in $(seq "$runs"); do ta+=("$(time_it amitool_run)"); tb+=("$(time_it aws_run)"); done
ma=$(printf '%s\n' "${ta[@]}" | median); mb=$(printf '%s\n' "${tb[@]}" | median)
printf 'amitool list --pv-regions: median %.3f s over %d runs\n' "$ma" "$runs"
printf 'aws CLI loop, 9 regions:   median %.3f s over %d runs\n' "$mb" "$runs"
printf 'ratio aws/amitool: %.1f\n' "$(python3 -c "print($mb / $ma)")"
