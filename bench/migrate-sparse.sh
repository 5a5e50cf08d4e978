#!/usr/bin/env bash
# Migrate a sparse 8 GiB PV image holding 1 GiB of data on the local backend,
# and print wall time, bytes written, output allocation and peak RSS next to
# `cp --sparse=always` and `qemu-img convert -O raw` of the same image.
# Targets: wall within 1.2x of cp, output allocation within 2 MiB of the
# input's, peak RSS under 64 MiB.
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
size=${BENCH_SIZE:-8G}; data_mib=${BENCH_DATA_MIB:-1024}

. bench/lib.sh
make_pv_image "$work/pv.img" "$size" "$data_mib"
echo "input: $(stat -c %s "$work/pv.img") bytes, $(alloc "$work/pv.img") allocated"

# run NAME OUTPUT CMD...: wall seconds, peak RSS (KiB), bytes written (from /proc io accounting via GNU time)
run() {
  local name=$1 out=$2; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f '%e %M %O' -o "$work/time" "$@" >/dev/null
  read -r wall rss outblocks < "$work/time"
  printf '%-22s wall %6.2f s   peak RSS %7d KiB   written %12d B   output allocated %12d B\n' \
    "$name" "$wall" "$rss" $(( outblocks * 512 )) "$([ -f "$out" ] && alloc "$out" || echo 0)"
  echo "$wall" > "$work/$name.wall"
}

state="$work/state"
aki=aki-5c21674b   # us-east-1 pv-grub-hd0_1.05-x86_64.gz (data/kernels.json)
ami=$("$bin" --backend local --state-dir "$state" --region us-east-1 import "$work/pv.img" --virtualization pv --kernel "$aki" --output json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
run amitool-migrate "$state/none" "$bin" --backend local --state-dir "$state" --region us-east-1 migrate --ami "$ami" --output json
hvm_snap=$(ls -t "$state/us-east-1/snapshots/"*.raw | head -1)
echo "  amitool's output (the new HVM snapshot): $(alloc "$hvm_snap") B allocated of $(stat -c %s "$hvm_snap")"
run cp-sparse "$work/cp.img" cp --sparse=always "$work/pv.img" "$work/cp.img"
# amitool fsyncs its result before it records the snapshot; cp does not.
rm -f "$work/cp.img"
run cp-sparse+sync "$work/cp.img" sh -c 'cp --sparse=always "$1" "$2" && sync "$2"' sh "$work/pv.img" "$work/cp.img"
if command -v qemu-img >/dev/null; then
  run qemu-img-convert "$work/qemu.img" qemu-img convert -O raw "$work/pv.img" "$work/qemu.img"
else
  echo "qemu-img-convert       skipped: qemu-img is not installed (apt-get install qemu-utils)"
fi
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
a = float(open(f"{w}/amitool-migrate.wall").read()); c = float(open(f"{w}/cp-sparse.wall").read())
s = float(open(f"{w}/cp-sparse+sync.wall").read())
print(f"ratio amitool/cp wall: {a / c:.2f} (target <= 1.2); amitool/(cp + sync): {a / s:.2f}")
PY
