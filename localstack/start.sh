#!/usr/bin/env bash
# Start the LocalStack that amitool's AWS backend is tested against, with the
# amitool hooks installed (see localstack/README.md).  Idempotent: when it is
# already up with every hook done, only the endpoint is printed.
#
# The last line on stdout is the endpoint URL; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

venv="${AMITOOL_LOCALSTACK_VENV:-$HOME/.cache/amitool/localstack-venv}"
root="${AMITOOL_LOCALSTACK_ROOT:-/tmp/amitool-localstack}"
python_bin="${AMITOOL_LOCALSTACK_PYTHON:-python3.11}"
timeout_s="${AMITOOL_LOCALSTACK_TIMEOUT:-120}"
data_dir="${AMITOOL_DATA_DIR:-$repo/data}"
seed_dir="$here/seed"
hooks_dir="$here/hooks"
requirements="$here/requirements.txt"

host=127.0.0.1
port=4566
endpoint="http://$host:$port"
pid_file="$root/localstack.pid"
log_file="$root/localstack.log"
ready_dir="$root/etc/localstack/init/ready.d"
summary_file="$root/amitool-seeded.json"

log() { printf 'localstack/start.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

log_tail() {
    if [[ -f "$log_file" ]]; then
        log "last lines of $log_file:"
        tail -n 40 "$log_file" >&2
    fi
}

# The names of the hooks this script installs, e.g. "10_amitool_ec2.py".
hook_names() {
    local hook
    for hook in "$hooks_dir"/*.py; do
        basename "$hook"
    done
}

# Prints one of: down, foreign, starting, ready, error:<script names>.
# `foreign` is a LocalStack on our port that does not run our hooks.
status() {
    local init
    if ! curl -fsS --max-time 3 "$endpoint/_localstack/health" >/dev/null 2>&1; then
        echo down
        return
    fi
    if ! init="$(curl -fsS --max-time 3 "$endpoint/_localstack/init" 2>/dev/null)"; then
        echo starting
        return
    fi
    "$venv/bin/python" - "$init" $(hook_names) <<'EOF'
import json, sys
init = json.loads(sys.argv[1])
expected = sys.argv[2:]
states = {s["name"]: s["state"] for s in init.get("scripts", []) if s.get("stage") == "READY"}
failed = [name for name, state in states.items() if state == "ERROR"]
if failed:
    print("error:" + ",".join(sorted(failed)))
elif not init.get("completed", {}).get("READY"):
    print("starting")
elif all(states.get(name) == "SUCCESSFUL" for name in expected):
    print("ready")
else:
    print("foreign")
EOF
}

running_pid() {
    local pid
    [[ -f "$pid_file" ]] || return 1
    pid="$(cat "$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack.runtime.main' || return 1
    echo "$pid"
}

warn_if_hooks_changed() {
    local name
    for name in $(hook_names); do
        if ! cmp -s "$hooks_dir/$name" "$ready_dir/$name"; then
            log "warning: $name changed since LocalStack started; run stop.sh and start.sh to apply it"
        fi
    done
}

ensure_venv() {
    local stamp="$venv/.amitool-requirements.sha256" want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    command -v "$python_bin" >/dev/null || die "$python_bin not found (set AMITOOL_LOCALSTACK_PYTHON)"
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating venv $venv with $python_bin"
        mkdir -p "$(dirname "$venv")"
        "$python_bin" -m venv "$venv"
    fi
    log "installing $(grep -cv '^\s*\(#\|$\)' "$requirements") pinned packages from $requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" >"$stamp"
}

wait_until_ready() {
    local pid="$1" started="$2" state
    while :; do
        state="$(status)"
        case "$state" in
            ready) return 0 ;;
            error:*)
                log_tail
                die "init hook(s) failed: ${state#error:} (see $endpoint/_localstack/init)"
                ;;
            foreign)
                die "a LocalStack without the amitool hooks answers on $endpoint; stop it first"
                ;;
        esac
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            log_tail
            die "LocalStack (pid $pid) exited during start-up"
        fi
        if (($(date +%s) - started >= timeout_s)); then
            log_tail
            die "LocalStack was not ready after ${timeout_s}s (state: $state)"
        fi
        sleep 0.5
    done
}

main() {
    command -v curl >/dev/null || die "curl is required"
    command -v flock >/dev/null || die "flock (util-linux) is required"
    [[ -f "$data_dir/kernels.json" ]] || die "$data_dir/kernels.json not found (set AMITOOL_DATA_DIR)"
    # One start at a time: a second caller waits here, then finds it ready.
    mkdir -p "$root"
    exec 9>"$root/start.lock"
    flock -w "$timeout_s" 9 || die "another start.sh holds $root/start.lock"

    ensure_venv

    local state pid started
    state="$(status)"
    case "$state" in
        ready)
            warn_if_hooks_changed
            echo "$endpoint"
            return 0
            ;;
        foreign) die "a LocalStack without the amitool hooks answers on $endpoint; stop it first" ;;
        error:*)
            log_tail
            die "LocalStack is up but init hook(s) failed: ${state#error:}; run stop.sh, fix, start again"
            ;;
        starting)
            log "LocalStack is starting; waiting"
            wait_until_ready "$(running_pid || true)" "$(date +%s)"
            echo "$endpoint"
            return 0
            ;;
    esac

    if pid="$(running_pid)"; then
        log "LocalStack pid $pid is starting but not answering yet; waiting"
        wait_until_ready "$pid" "$(date +%s)"
        echo "$endpoint"
        return 0
    fi
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        die "port $port on $host is taken by something that is not LocalStack"
    fi

    mkdir -p "$ready_dir"
    rm -f "$ready_dir"/[0-9][0-9]_amitool_*.py "$summary_file" "$pid_file"
    cp "$hooks_dir"/*.py "$ready_dir/"

    started="$(date +%s)"
    log "starting LocalStack on $endpoint (root $root, log $log_file)"
    : >"$log_file"
    (
        cd "$root"
        export GATEWAY_LISTEN="$host:$port" \
            SERVICES=ec2,ssm,sts,ebs,stepfunctions,s3 \
            DNS_ADDRESS=0 \
            OVERRIDE_IN_DOCKER=0 \
            FILESYSTEM_ROOT="$root" \
            SKIP_SSL_CERT_DOWNLOAD=1 \
            DISABLE_EVENTS=1 \
            AMITOOL_DATA_DIR="$data_dir" \
            AMITOOL_SEED_DIR="$seed_dir" \
            AMITOOL_SEED_SUMMARY="$summary_file" \
            AMITOOL_AGENT_FAKE_TIME="${AMITOOL_AGENT_FAKE_TIME:-1700000000}"
        # A session of its own, so it outlives the shell that started it;
        # the inner shell records its pid and then becomes LocalStack.  It
        # must not inherit the start lock (fd 9).
        setsid bash -c 'echo $$ >"$1"; exec "$2" -m localstack.runtime.main' \
            _ "$pid_file" "$venv/bin/python" </dev/null >>"$log_file" 2>&1 9>&- &
    )
    for _ in $(seq 50); do
        [[ -s "$pid_file" ]] && break
        sleep 0.1
    done
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    [[ -n "$pid" ]] || die "LocalStack did not start (no pid in $pid_file)"

    if ! wait_until_ready "$pid" "$started"; then
        exit 1
    fi
    # LocalStack loads a service on its first request (~1 s for EC2); take
    # that hit here rather than in the first test or benchmark.
    curl -fsS --max-time 30 -o /dev/null "$endpoint/" \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0' \
        -d 'Action=DescribeRegions&Version=2016-11-15' || log "warning: EC2 warm-up request failed"
    log "ready in $(($(date +%s) - started))s (pid $pid); seeded ids: $summary_file"
    echo "$endpoint"
}

main "$@"
