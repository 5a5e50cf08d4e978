#!/usr/bin/env bash
# The test command: LocalStack up (installed into a venv on first use), PV
# fixtures built from Debian packages (cached), the whole cargo test suite,
# LocalStack down again if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
export AMITOOL_FIXTURES="${AMITOOL_FIXTURES:-$HOME/.cache/amitool/fixture-images}"

# System packages: installs only what is missing (a no-op in well under a
# second when everything is there); never removes or downgrades a package.
bash scripts/install-deps.sh --tests

started=0
if ! curl -fsS -m 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  started=1
fi
bash localstack/start.sh
if [ "$started" = 1 ]; then
  trap 'bash localstack/stop.sh || true' EXIT
fi

bash tests/fixtures/build-images.sh "$AMITOOL_FIXTURES" | tail -n 1

cargo test --all-targets --no-fail-fast 2>&1 | tee /tmp/amitool-test.log
exit "${PIPESTATUS[0]}"
