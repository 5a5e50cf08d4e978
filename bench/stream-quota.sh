#!/usr/bin/env bash
# Issue "fleets at EBS's own limit", item 1: the direct method's block
# stream (a snapshot read where it lies, each block's checksum checked,
# written into a new snapshot with its checksum, every request signed, the
# blocks journaled) against an EBS stand-in on loopback that answers at no
# cost (examples/stream_bench.rs, on its own core). The stream runs pinned
# to one core (taskset), twice: with the request budget out of the way
# (BENCH_UNPACED, 100000 a second: what one core can do) and at the default
# budget of 900 a second. Prints blocks a second, CPU ms per block and peak
# RSS; targets: at least 1,000 blocks a second each way on one core, CPU at
# most 0.5 ms a block. BENCH_BLOCKS (4096: 2 GiB), BENCH_PROFILE (release).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
profile=${BENCH_PROFILE:-release}
blocks=${BENCH_BLOCKS:-4096}
cargo build -q --profile "$profile" --example stream_bench
bin="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")/examples/stream_bench"
work=$(mktemp -d "${BENCH_DIR:-/tmp}/amitool-bench.XXXXXX")
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cores=$(nproc)
taskset -c $((cores > 1 ? 1 : 0)) "$bin" serve "$port" "$blocks" > "$work/serve.out" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
for budget in "${BENCH_UNPACED:-100000}" 900; do
  BENCH_MAX_REQUESTS_PER_SECOND=$budget taskset -c 0 "$bin" run "http://127.0.0.1:$port" > "$work/run-$budget.json"
done
python3 - "$work" "$profile" "${BENCH_UNPACED:-100000}" <<'PY'
import json, sys
w, profile, unpaced = sys.argv[1], sys.argv[2], sys.argv[3]
for budget, label in ((unpaced, "unpaced"), ("900", "budget 900/s")):
    r = json.load(open(f"{w}/run-{budget}.json"))
    print(f"{profile} {label:>13}: {r['blocks']} blocks read and written in {r['seconds']:.2f} s = "
          f"{r['blocks_per_second']:.0f} blocks/s each way, CPU {r['cpu_ms_per_block']:.3f} ms/block "
          f"({r['cpu_seconds']:.2f} s), peak RSS {r['peak_rss_mib']:.0f} MiB")
r = json.load(open(f"{w}/run-{unpaced}.json"))
print(f"target: >= 1000 blocks/s each way on one core: {r['blocks_per_second']:.0f} {'met' if r['blocks_per_second'] >= 1000 else 'MISSED'}")
print(f"target: CPU <= 0.5 ms per block: {r['cpu_ms_per_block']:.3f} {'met' if r['cpu_ms_per_block'] <= 0.5 else 'MISSED'}")
PY
