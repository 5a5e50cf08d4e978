#!/usr/bin/env bash
# Issue "fleets at EBS's own limit", on LocalStack: one migration, then a
# fleet of BENCH_ITEMS (20) at 4 wide in one process (`migrate
# --from-file`), then as many more through Step Functions (`fleet start`,
# BENCH_WORKERS (2) local `worker` processes of --concurrency 2 each,
# `fleet status --wait`), in one run. Every source is its own PV AMI
# imported from one BENCH_SIZE (1G) image holding BENCH_DATA_MIB (64) of
# random data. Prints each wall time, the fleet's ratio to one migration
# (target: at most 6x), the engine's own counts, and the request budget's
# line. Needs LocalStack up (localstack/start.sh) with Step Functions and S3.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
. bench/lib.sh
bench_on_localstack
items=${BENCH_ITEMS:-20}
workers=${BENCH_WORKERS:-2}
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
tag=$(basename "$work" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9')

img="$work/pv.img"
make_pv_image "$img" "${BENCH_SIZE:-1G}" "${BENCH_DATA_MIB:-64}"
import() { # NAME
  "$bin" --no-progress import "$img" --virtualization pv --kernel aki-5c21674b \
    --name "$1" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])'
}
now() { date +%s.%N; }
# LocalStack's CPU seconds so far (one Python process answers every request).
ls_pid=$(cat "${AMITOOL_LOCALSTACK_ROOT:-/tmp/amitool-localstack}/localstack.pid" 2>/dev/null || echo)
ls_cpu() {
  if [ -n "$ls_pid" ] && [ -r "/proc/$ls_pid/stat" ]; then
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$ls_pid/stat"
  else echo 0; fi
}
# amitool's CPU seconds so far: this shell's waited-for children.
my_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($16 + $17) / hz}' "/proc/$$/stat"; }

one=$(import "bench-fleet-$tag-one")
: > "$work/fleet.txt"
: > "$work/sfn.txt"
for i in $(seq 1 "$items"); do
  import "bench-fleet-$tag-$i" >> "$work/fleet.txt"
  import "bench-sfn-$tag-$i" >> "$work/sfn.txt"
done
rm -f "$img"

c0=$(ls_cpu); a0=$(my_cpu); t0=$(now)
"$bin" --no-progress migrate --ami "$one" --output json > "$work/one.json"
c1=$(ls_cpu); a1=$(my_cpu); t1=$(now)
"$bin" migrate --from-file "$work/fleet.txt" --output json > "$work/fleet.json" 2> "$work/fleet.err"
c2=$(ls_cpu); a2=$(my_cpu); t2=$(now)

# Step Functions: deploy and start, then the workers, until the execution ends.
"$bin" --no-progress fleet start --from-file "$work/sfn.txt" --bucket "bench-fleet-$tag" \
  --concurrency 4 --heartbeat-seconds 60 --output json > "$work/start.json"
activity=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["activities"]["us-east-1"])' "$work/start.json")
execution=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["execution_arn"])' "$work/start.json")
for w in $(seq 1 "$workers"); do
  AMITOOL_JOURNAL_DIR="$work/w$w/journal" AMITOOL_WORK_DIR="$work/w$w/work" \
    "$bin" worker --activity-arn "$activity" --concurrency 2 --name "bench-w$w" \
    --output json > "$work/w$w.json" 2> "$work/w$w.err" &
  pids+=($!)
done
"$bin" fleet status "$execution" --wait --interval 1 --output json > "$work/status.json" 2> "$work/status.err"
c3=$(ls_cpu); t3=$(now)
for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" || true; done
pids=()

python3 - "$work" "$t0" "$t1" "$t2" "$t3" "$items" "$workers" "$c0" "$c1" "$c2" "$c3" "$a0" "$a1" "$a2" "$profile" <<'PY'
import json, sys
w = sys.argv[1]
t0, t1, t2, t3 = map(float, sys.argv[2:6])
n, workers = int(sys.argv[6]), int(sys.argv[7])
c0, c1, c2, c3 = map(float, sys.argv[8:12])
a0, a1, a2 = map(float, sys.argv[12:15])
profile = sys.argv[15]
one = json.load(open(f"{w}/one.json"))
fleet = json.load(open(f"{w}/fleet.json"))
status = json.load(open(f"{w}/status.json"))
single, many, sfn = t1 - t0, t2 - t1, t3 - t2
ok = sum(1 for i in fleet if i["error"] is None)
print(f"one migration           {single:7.1f} s  ({one['transfer']['blocks_written']} blocks written), "
      f"LocalStack CPU {c1 - c0:.1f} s, amitool ({profile}) CPU {a1 - a0:.1f} s")
print(f"fleet of {n}, 4 wide     {many:7.1f} s  ({ok}/{n} migrated), {many / single:.1f}x one, "
      f"LocalStack CPU {c2 - c1:.1f} s ({(c2 - c1) / many:.0%} of a core), amitool CPU {a2 - a1:.1f} s")
# LocalStack answers every request in one Python process, at most one core:
# the fleet cannot end before its LocalStack CPU time has passed.
print(f"  LocalStack's CPU alone sets a floor of {(c2 - c1) / single:.1f}x one migration "
      f"({(c2 - c1) / n:.2f} s of it per item against {single:.2f} s for one migration)")
for line in open(f"{w}/fleet.err"):
    if "budget" in line:
        print("  " + line.strip())
done = sum(1 for i in status["items"] if i["state"] == "succeeded")
tries = sum(i["attempts"] for i in status["items"])
print(f"Step Functions, {workers} workers x 2  {sfn:7.1f} s  (start to the execution's end: {status['status']}, "
      f"{done}/{n} succeeded, {tries} tries), {sfn / single:.1f}x one, LocalStack CPU {c3 - c2:.1f} s")
if status.get("map_run"):
    m = status["map_run"]
    print("  the engine's map run: " + ", ".join(f"{k} {m[k]}" for k in
          ("total", "succeeded", "failed", "timed_out", "aborted", "pending", "running")))
for k in range(1, workers + 1):
    s = json.load(open(f"{w}/w{k}.json"))
    secs = sum(i["seconds"] for i in s["items"])
    print(f"  worker {s['worker']}: {len(s['items'])} items, {secs:.1f} s of item time")
r = many / single
print(f"target: fleet of {n} at 4 wide <= 6x one migration: {r:.1f}x {'met' if r <= 6 else 'MISSED'}")
PY
