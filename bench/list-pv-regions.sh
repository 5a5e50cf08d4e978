#!/usr/bin/env bash
# `amitool list --virtualization pv --pv-regions --output json` against
# LocalStack, next to the equivalent loop of the aws CLI (pip awscli from the
# venv localstack/start.sh makes) over the same nine regions, in one run.
# Prints the median wall time of each over BENCH_RUNS repetitions (default 5),
# the ratio, and fails when the two did not find the same images.
#
# Needs LocalStack up (localstack/start.sh). Plain bash, date +%s%N and coreutils.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
endpoint="${AMITOOL_TEST_ENDPOINT:-http://127.0.0.1:4566}"
aws="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}/bin/aws"
runs="${BENCH_RUNS:-5}"
# The regions `--pv-regions` selects (the aws-partition regions of the PV table).
regions=(ap-northeast-1 ap-southeast-1 ap-southeast-2 eu-central-1 eu-west-1 sa-east-1 us-east-1 us-west-1 us-west-2)

die() { echo "bench/list-pv-regions.sh: $*" >&2; exit 1; }

# Only what both clients need; nothing of the caller's AWS setup.
for v in $(compgen -e); do
    if [[ $v == AWS_* ]]; then unset "$v"; fi
done
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="$endpoint" AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""

[[ -x "$aws" ]] || die "$aws not found: run localstack/start.sh (it installs awscli into its venv)"
(exec 3<>"/dev/tcp/127.0.0.1/${endpoint##*:}") 2>/dev/null ||
    die "LocalStack is not reachable at $endpoint: start it with localstack/start.sh"

cargo build --quiet --bin amitool
bin="$CARGO_TARGET_DIR/debug/amitool"

amitool_run() { "$bin" --no-progress list --virtualization pv --pv-regions --output json; }
aws_run() {
    local r
    for r in "${regions[@]}"; do
        "$aws" ec2 describe-images --region "$r" --output json \
            --filters Name=virtualization-type,Values=paravirtual
    done
}

# Sorted "region id" lines of each client's output.
amitool_ids() {
    local line region=""
    while IFS= read -r line; do
        if [[ $line =~ ^\ +\"region\":\ \"([^\"]+)\" ]]; then
            region=${BASH_REMATCH[1]}
        elif [[ $line =~ ^\ +\"image_id\":\ \"([^\"]+)\" ]]; then
            echo "$region ${BASH_REMATCH[1]}"
        fi
    done <"$1" | sort
}
aws_ids() {
    # One region's JSON after another, in the order of $regions.
    local line i=-1
    while IFS= read -r line; do
        if [[ $line == '{' ]]; then
            i=$((i + 1))
        elif [[ $line =~ ^\ +\"ImageId\":\ \"([^\"]+)\" ]]; then
            echo "${regions[$i]} ${BASH_REMATCH[1]}"
        fi
    done <"$1" | sort
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Runs "$@" with stdout to $tmp/out; prints the wall time in microseconds.
time_us() {
    local start end
    start=$(date +%s%N)
    "$@" >"$tmp/out"
    end=$(date +%s%N)
    echo $(((end - start) / 1000))
}

median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
seconds() { printf '%d.%03d' $(($1 / 1000000)) $((($1 / 1000) % 1000)); }

# One untimed run each: the first request to a service is slow in LocalStack.
amitool_run >/dev/null
aws_run >/dev/null

ta=() tb=() want=""
for i in $(seq "$runs"); do
    ta+=("$(time_us amitool_run)")
    amitool_ids "$tmp/out" >"$tmp/a"
    tb+=("$(time_us aws_run)")
    aws_ids "$tmp/out" >"$tmp/b"
    na=$(wc -l <"$tmp/a") nb=$(wc -l <"$tmp/b")
    [[ $na -gt 0 ]] || die "run $i: amitool found no image"
    [[ $na -eq $nb ]] || die "run $i: amitool found $na images, the aws CLI $nb"
    cmp -s "$tmp/a" "$tmp/b" || die "run $i: same count ($na) but not the same images"
    got="$(cut -d' ' -f1 "$tmp/a" | uniq | tr '\n' ' ')"
    [[ $got == "${regions[*]} " ]] || die "run $i: amitool listed regions: $got"
    want=$na
done

ma=$(median "${ta[@]}") mb=$(median "${tb[@]}")
echo "images found: $want in ${#regions[@]} regions, the same by both in each of $runs runs"
echo "amitool list --pv-regions (concurrent):   median $(seconds "$ma") s   runs: $(for t in "${ta[@]}"; do printf '%s ' "$(seconds "$t")"; done)"
echo "aws ec2 describe-images, 9-region loop:   median $(seconds "$mb") s   runs: $(for t in "${tb[@]}"; do printf '%s ' "$(seconds "$t")"; done)"
ratio=$((mb * 10 / ma))
echo "ratio aws CLI / amitool: $((ratio / 10)).$((ratio % 10))x"
