#!/usr/bin/env bash
# Issue "warm migration": on LocalStack, two PV instances launched from one
# 8 GiB PV AMI holding 1 GiB of data (BENCH_SIZE, BENCH_DATA_MIB), each with
# a 4 GiB data volume holding BENCH_VOLUME_DATA_MIB (256) of data.
# - cold: the source stopped, then `migrate --instance --replace`: the
#   outage is the whole command (stop -> replacement running).
# - warm: `migrate --instance --replace --warm` while it runs; then its guest
#   writes BENCH_CHANGED_MIB (16) into a file of the root filesystem and as
#   much into the data volume; then `migrate --cut-over`: the outage is its
#   `outage.seconds` (stop -> replacement running).
# Prints both outages, the blocks each moved, and the targets: the warm
# transfer within the changed blocks + the edited blocks + 2, and its
# outage at most a fifth of the cold one. The bench image holds no kernel
# modules (no drivers to find), so both replacements are t3.small by
# --instance-type. Needs LocalStack up
# (localstack/start.sh) from AMITOOL_LOCALSTACK_ROOT (default
# /tmp/amitool-localstack): the guest's writes go into its volume files.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
. bench/lib.sh
bench_on_localstack
volumes="${AMITOOL_LOCALSTACK_ROOT:-/tmp/amitool-localstack}/amitool-volumes"
aws="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}/bin/aws --region us-east-1 --endpoint-url $AWS_ENDPOINT_URL"
trap 'rm -rf "$work"' EXIT
tag=$(basename "$work")

img="$work/pv.img"
make_pv_image "$img" "${BENCH_SIZE:-8G}" "${BENCH_DATA_MIB:-1024}"
ami=$("$bin" --no-progress import "$img" --virtualization pv --kernel aki-5c21674b \
  --name "bench-warm-$tag" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
rm -f "$img"

# instance: a PV instance from the AMI with a 4 GiB data volume at /dev/sdf.
instance() {
  local i zone v
  i=$($aws ec2 run-instances --image-id "$ami" --instance-type m1.small --count 1 \
    --query 'Instances[0].InstanceId' --output text)
  zone=$($aws ec2 describe-instances --instance-ids "$i" \
    --query 'Reservations[0].Instances[0].Placement.AvailabilityZone' --output text)
  v=$($aws ec2 create-volume --availability-zone "$zone" --size 4 --volume-type gp3 \
    --query VolumeId --output text)
  truncate -s 4G "$volumes/$v"
  head -c "${BENCH_VOLUME_DATA_MIB:-256}M" /dev/urandom | dd of="$volumes/$v" bs=1M conv=notrunc status=none
  $aws ec2 attach-volume --volume-id "$v" --instance-id "$i" --device /dev/sdf > /dev/null
  echo "$i $v"
}

root_volume() {
  $aws ec2 describe-instances --instance-ids "$1" \
    --query 'Reservations[0].Instances[0].BlockDeviceMappings[?DeviceName==`/dev/sda1`].Ebs.VolumeId' --output text
}

# The guest writes: a new file of CHANGED MiB in its root filesystem, and as
# much into its data volume.
guest_writes() { # INSTANCE DATA_VOLUME
  local root changed=${BENCH_CHANGED_MIB:-16}
  root=$(root_volume "$1")
  head -c "${changed}M" /dev/urandom > "$work/changed.bin"
  debugfs -w -R "write $work/changed.bin changed.bin" "$volumes/$root" > /dev/null 2>&1
  head -c "${changed}M" /dev/urandom | dd of="$volumes/$2" bs=1M seek=512 conv=notrunc status=none
}

read -r cold cold_data <<<"$(instance)"
read -r warm warm_data <<<"$(instance)"

# Cold: stopped first, so the replacement has everything; the outage is the whole command.
start=$(date +%s.%N)
$aws ec2 stop-instances --instance-ids "$cold" > /dev/null
"$bin" --no-progress migrate --instance "$cold" --replace --instance-type t3.small --name "bench-cold-$tag" --output json > "$work/cold.json"
end=$(date +%s.%N)
echo "$start $end" > "$work/cold.time"

# Warm: phase 1 while it runs, the guest writes, the cut-over.
p1_start=$(date +%s.%N)
"$bin" --no-progress migrate --instance "$warm" --replace --warm --instance-type t3.small --output json > "$work/phase1.json"
p1_end=$(date +%s.%N)
echo "$p1_start $p1_end" > "$work/phase1.time"
mid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["migration_id"])' "$work/phase1.json")
guest_writes "$warm" "$warm_data"
co_start=$(date +%s.%N)
"$bin" --no-progress migrate --cut-over "$mid" --output json > "$work/cutover.json"
co_end=$(date +%s.%N)
echo "$co_start $co_end" > "$work/cutover.time"

python3 - "$work" "${BENCH_CHANGED_MIB:-16}" <<'PY'
import json, sys
w, changed_mib = sys.argv[1], int(sys.argv[2])
span = lambda n: (lambda a, b: float(b) - float(a))(*open(f"{w}/{n}.time").read().split())
cold, p1, co = (json.load(open(f"{w}/{n}.json")) for n in ("cold", "phase1", "cutover"))
cold_outage = span("cold")
o = co["outage"]
print(f"cold --replace      outage {cold_outage:7.1f} s  root blocks written {cold['transfer']['blocks_written']}")
print(f"warm phase 1        (source running) {span('phase1'):7.1f} s  root blocks written {p1['sync']['blocks_written']}")
print(f"warm --cut-over     outage {o['seconds']:7.1f} s  (command {span('cutover'):.1f} s)  "
      f"root blocks changed {o['changed_blocks']}, edited {o['edited_blocks']}, read {o['blocks_read']}, written {o['blocks_written']} ({o['bytes_written']} bytes)")
print("cut-over steps: " + ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in co["steps"]))
print(f"guest wrote {changed_mib} MiB = {changed_mib * 2} blocks into the root filesystem (and as much into the data volume)")
bound = o["changed_blocks"] + o["edited_blocks"] + 2
ratio = o["seconds"] / cold_outage if cold_outage else float("inf")
print(f"target: warm blocks written {o['blocks_written']} <= changed + edited + 2 = {bound}: {'met' if o['blocks_written'] <= bound else 'MISSED'}")
print(f"target: warm outage / cold outage = {ratio:.3f} <= 0.2: {'met' if ratio <= 0.2 else 'MISSED'}")
PY
