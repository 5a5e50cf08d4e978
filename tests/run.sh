#!/usr/bin/env bash
# The test command: system packages (scripts/install-deps.sh --tests, a no-op
# when all are there), LocalStack up (installed into a venv on first use),
# the PV fixtures and the real Debian guests built from Debian packages
# (cached) while cargo builds the tests, the whole cargo test suite (the
# unit tests beside the integration tests), LocalStack down again if this
# script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/amitool-target}"
export AMITOOL_FIXTURES="${AMITOOL_FIXTURES:-$HOME/.cache/amitool/fixture-images}"
export AMITOOL_DEBIAN_GUESTS="${AMITOOL_DEBIAN_GUESTS:-$HOME/.cache/amitool/debian-guests}"

# System packages: installs only what is missing (a no-op in well under a
# second when everything is there); never removes or downgrades a package.
bash scripts/install-deps.sh --tests

started=0
if ! curl -fsS -m 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  started=1
fi
logs=$(mktemp -d)
cleanup() {
  [ "$started" = 0 ] || bash localstack/stop.sh || true
  rm -rf "$logs"
}
trap cleanup EXIT

# Fixtures, guests and LocalStack are mostly downloads, dpkg and waiting:
# they go on while cargo compiles.
bash tests/fixtures/build-images.sh "$AMITOOL_FIXTURES" >"$logs/fixtures" 2>&1 & fixtures=$!
bash tests/fixtures/build-debian-guests.sh "$AMITOOL_DEBIAN_GUESTS" >"$logs/guests" 2>&1 & guests=$!
bash localstack/start.sh >"$logs/localstack" 2>&1 & localstack=$!
cargo test --all-targets --no-run
for job in fixtures guests localstack; do
  if ! wait "${!job}"; then
    cat "$logs/$job" >&2
    echo "tests/run.sh: preparing the $job failed" >&2
    exit 1
  fi
  tail -n 1 "$logs/$job"
done

# The unit tests (the fake host's failure matrix: CPU only, under a minute)
# run beside the integration tests; their output follows. (The suite is
# CPU-bound on QEMU boots: running the AWS tests as a third process beside
# the boots was measured slower, 723 s against 640 s.)
cargo test --lib --no-fail-fast >"$logs/unit" 2>&1 & unit=$!
set +e
cargo test --bins --examples --test '*' --no-fail-fast 2>&1 | tee /tmp/amitool-test.log
status=${PIPESTATUS[0]}
wait "$unit" || status=1
set -e
tee -a /tmp/amitool-test.log <"$logs/unit"
exit "$status"
