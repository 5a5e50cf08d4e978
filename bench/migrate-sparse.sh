#!/usr/bin/env bash
# Migrate a sparse 8 GiB PV image holding 1 GiB of data on the local backend,
# and print wall time, bytes written, output allocation and peak RSS next to
# `cp --sparse=always` and `qemu-img convert -O raw` of the same image.
# Targets: wall within 1.2x of cp, output allocation within 2 MiB of the
# input's, peak RSS under 64 MiB. The three run in turn BENCH_RUNS times
# (default 5) with warm caches; medians are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
# The dev profile by default: a clean release build of the AWS SDK takes
# ~20 min on 2 cores, and the work here is the kernel's copy_file_range.
profile=${BENCH_PROFILE:-dev}
cargo build -q --profile "$profile"
bin="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")/amitool"
work=$(mktemp -d "${BENCH_DIR:-/tmp}/amitool-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
runs=${BENCH_RUNS:-5}
. bench/lib.sh
make_pv_image "$work/pv.img" "${BENCH_SIZE:-8G}" "${BENCH_DATA_MIB:-1024}"
echo "input: $(stat -c %s "$work/pv.img") bytes, $(alloc "$work/pv.img") allocated"

state="$work/state"
ami=$("$bin" --backend local --state-dir "$state" --region us-east-1 import "$work/pv.img" --virtualization pv \
  --kernel aki-5c21674b --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
snaps="$state/us-east-1/snapshots"
src_snap=$(ls "$snaps"/*.raw)

# measure NAME OUTPUT CMD...: one run, appends "wall rss written alloc" to $work/NAME
measure() {
  local name=$1 out=$2; shift 2
  /usr/bin/time -f '%e %M %O' -o "$work/time" "$@" >/dev/null
  read -r wall rss outblocks < "$work/time"
  echo "$wall $rss $(( outblocks * 512 )) $(alloc "$out")" >> "$work/$name"
}
for _ in $(seq "$runs"); do
  /usr/bin/time -f '%e %M %O' -o "$work/time" "$bin" --backend local --state-dir "$state" --region us-east-1 \
    migrate --ami "$ami" --output json > /dev/null
  read -r wall rss outblocks < "$work/time"
  out=$(ls "$snaps"/*.raw | grep -v "$src_snap")
  echo "$wall $rss $(( outblocks * 512 )) $(alloc "$out")" >> "$work/amitool-migrate"
  chmod u+w "$out"; rm -f "$out" "${out%.raw}.json"; find "$state/us-east-1/images" -name '*.json' ! -name "$ami.json" -delete
  measure cp-sparse "$work/cp.img" cp --sparse=always "$src_snap" "$work/cp.img"; rm -f "$work/cp.img"
  if command -v qemu-img >/dev/null; then
    measure qemu-img-convert "$work/q.img" qemu-img convert -O raw "$src_snap" "$work/q.img"; rm -f "$work/q.img"
  fi
done
python3 - "$work" "$(alloc "$work/pv.img")" <<'PY'
import statistics, sys, os
w, input_alloc = sys.argv[1], int(sys.argv[2])
med = {}
for name in ["amitool-migrate", "cp-sparse", "qemu-img-convert"]:
    p = os.path.join(w, name)
    if not os.path.exists(p):
        print(f"{name:18s} skipped (qemu-img is not installed: apt-get install qemu-utils)")
        continue
    rows = [list(map(float, l.split())) for l in open(p)]
    m = [statistics.median(c) for c in zip(*rows)]
    med[name] = m
    print(f"{name:18s} wall {m[0]:6.2f} s  peak RSS {m[1]/1024:6.1f} MiB  written {int(m[2]):>12d} B  output allocated {int(m[3]):>12d} B  ({len(rows)} runs)")
a, c = med["amitool-migrate"], med["cp-sparse"]
print(f"amitool/cp wall: {a[0]/c[0]:.2f} (target <= 1.2); amitool output allocation - input allocation: {(a[3]-input_alloc)/2**20:+.1f} MiB; - cp's output: {(a[3]-c[3])/2**20:+.1f} MiB")
PY
