#!/usr/bin/env bash
# The main job with no AWS account: build a sample PV image from Debian
# packages, import it into the local Xen host, migrate it to HVM, boot the
# result under QEMU and show what happened.
#
# System packages come from scripts/install-deps.sh (the default set: it
# installs only what is missing and never removes or downgrades a package).
# The binary is the one cargo builds from this checkout, wherever cargo puts
# it (CARGO_TARGET_DIR, build.target-dir); AMITOOL=/path/to/amitool uses an
# installed one instead (`cargo install --path .` puts it in ~/.cargo/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
fixtures="${AMITOOL_QUICKSTART_IMAGES:-$HOME/.cache/amitool/quickstart-images}"
state="${AMITOOL_STATE_DIR:-$(mktemp -d)}"

bash scripts/install-deps.sh
bash tests/fixtures/build-images.sh "$fixtures" menulst-root-hd0 | tail -n 1
if [ -n "${AMITOOL:-}" ]; then
  bin=$AMITOOL
else
  command -v cargo >/dev/null || { echo "quickstart: cargo not found: install Rust (https://rustup.rs), or set AMITOOL to an amitool binary" >&2; exit 1; }
  bin=$(cargo build -q --bin amitool --message-format=json-render-diagnostics \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -n 1)
fi
[ -x "$bin" ] || { echo "quickstart: no amitool binary at '$bin'" >&2; exit 1; }
echo "== amitool: $bin"
amitool() { "$bin" --backend local --state-dir "$state" --region eu-central-1 "$@"; }

echo "== PV-GRUB kernels of the local eu-central-1 (hd0, x86_64)"
amitool kernels --flavor hd0 --arch x86_64
aki=$(amitool kernels --flavor hd0 --arch x86_64 --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["kernel_id"])')
echo "== import $fixtures/menulst-root-hd0.img as a PV AMI with $aki"
ami=$(amitool import "$fixtures/menulst-root-hd0.img" --virtualization pv --kernel "$aki" --name quickstart-pv --output json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
amitool list
echo "== preflight"
amitool inspect "$ami" || true
echo "== a PV image on t2.micro is refused, as AWS refuses it"
amitool launch "$ami" --instance-type t2.micro || true
echo "== migrate"
hvm=$(amitool migrate --ami "$ami" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
amitool list --virtualization hvm
echo "== boot $hvm under QEMU on t2.micro"
amitool launch "$hvm" --instance-type t2.micro --qemu --expect "AMITOOL-ROOT-OK" --timeout 240
echo "state directory: $state"
