#!/usr/bin/env bash
# Issue "any size, no local copy": on LocalStack, in one run, the same PV
# filesystem content (a kernel, an initramfs, BENCH_DATA_MIB of random data)
# in a sparse BENCH_SIZE image (default 8G) and in a BENCH_BIG volume
# (default 1T). For each: `inspect` on AWS (wall time, blocks read), then
# `migrate --method direct` and `--method helper`: wall time, peak RSS, peak
# bytes on local disk under amitool's work and journal directories (sampled
# every 0.1 s), and the migration's `transfer` (blocks read and written,
# bytes sent), next to the source's data blocks. Targets: direct <= helper
# wall; peak local disk <= 64 MiB; RSS <= 128 MiB; blocks read = data blocks
# (+ <= 1 %); blocks written = data blocks + <= 2 + edited blocks; the big
# volume within 20 % of the small one; inspect reads <= 1 % of the data blocks.
# Needs LocalStack up (localstack/start.sh); its EBS keeps blocks in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
. bench/lib.sh
bench_on_localstack
trap 'rm -rf "$work"' EXIT
profile_name=${BENCH_HELPER_PROFILE:-amitool-helper-ssm}

# peak_disk PID OUT: the largest `du` of amitool's directories while PID runs.
peak_disk() {
  local pid=$1 out=$2 peak=0 now
  while kill -0 "$pid" 2>/dev/null; do
    now=$(du -sb "$work/amitool" 2>/dev/null | cut -f1)
    [ "${now:-0}" -gt "$peak" ] && peak=$now
    sleep 0.1
  done
  echo "$peak" > "$out"
}

# run NAME CMD...: wall, RSS (KiB) and peak local disk of one command, its JSON kept.
run() {
  local name=$1; shift
  /usr/bin/time -f '%e %M %U %S' -o "$work/$name.time" "$@" > "$work/$name.json" &
  local pid=$!
  peak_disk "$pid" "$work/$name.disk" &
  wait "$pid"
  wait
}

for size in "${BENCH_SIZE:-8G}" "${BENCH_BIG:-1T}"; do
  img="$work/pv-$size.img"
  make_pv_image "$img" "$size" "${BENCH_DATA_MIB:-1024}"
  ami=$("$bin" --no-progress import "$img" --virtualization pv --kernel aki-5c21674b \
    --name "bench-$size-$(basename "$work")" --output json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
  rm -f "$img"
  run "inspect-$size" "$bin" --no-progress inspect "$ami" --output json
  run "direct-$size" "$bin" --no-progress migrate --ami "$ami" --name "bench-direct-$size-$(basename "$work")" --output json
  # BENCH_BIG_HELPER=0 skips the helper on the big volume.
  if [ "$size" = "${BENCH_SIZE:-8G}" ] || [ "${BENCH_BIG_HELPER:-1}" = 1 ]; then
    run "helper-$size" "$bin" --no-progress migrate --method helper --helper-profile "$profile_name" --ami "$ami" \
      --name "bench-helper-$size-$(basename "$work")" --output json
  fi
  aws="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}/bin/aws"
  snap=$("$aws" --region us-east-1 --endpoint-url "$AWS_ENDPOINT_URL" ec2 describe-images --image-ids "$ami" \
    --query 'Images[0].BlockDeviceMappings[0].Ebs.SnapshotId' --output text)
  "$aws" --region us-east-1 --endpoint-url "$AWS_ENDPOINT_URL" ebs list-snapshot-blocks --snapshot-id "$snap" \
    --max-results 10000 --query 'length(Blocks)' --output text > "$work/data-$size"
done

python3 - "$work" "${BENCH_SIZE:-8G}" "${BENCH_BIG:-1T}" <<'PY'
import json, os, sys
w, small, big = sys.argv[1], sys.argv[2], sys.argv[3]
def facts(name):
    wall, rss, user, system = open(f"{w}/{name}.time").read().split()[-4:]
    disk = int(open(f"{w}/{name}.disk").read() or 0)
    return float(wall), int(rss), disk, json.load(open(f"{w}/{name}.json")), float(user) + float(system)
rows = {}
for size in (small, big):
    data = int(open(f"{w}/data-{size}").read())
    iw, irss, idisk, i, _ = facts(f"inspect-{size}")
    ir = i.get("blocks_read")
    print(f"{size}: source data blocks {data}")
    print(f"  inspect           wall {iw:7.2f} s  RSS {irss/1024:6.1f} MiB  local disk {idisk/2**20:6.1f} MiB  blocks read {ir} ({100*ir/data:.2f} % of the data blocks)")
    for method in ("direct", "helper"):
        if not os.path.exists(f"{w}/{method}-{size}.time"):
            print(f"  migrate {method:8s}  not run (BENCH_BIG_HELPER=0)")
            continue
        mw, mrss, mdisk, m, cpu = facts(f"{method}-{size}")
        t = m["transfer"]
        rows[(size, method)] = mw
        print(f"  migrate {method:8s}  wall {mw:7.2f} s  amitool CPU {cpu:6.2f} s  RSS {mrss/1024:6.1f} MiB  local disk {mdisk/2**20:6.1f} MiB  "
              f"blocks read {t['blocks_read']}  written {t['blocks_written']}  bytes sent {t['bytes_written']}")
for method in ("direct", "helper"):
    if (big, method) in rows:
        print(f"{method}: {big} / {small} wall = {rows[(big, method)] / rows[(small, method)]:.2f} (target <= 1.2)")
for size in (small, big):
    if (size, "helper") in rows:
        print(f"{size}: direct / helper wall = {rows[(size, 'direct')] / rows[(size, 'helper')]:.2f} (target <= 1)")
PY
