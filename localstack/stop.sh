#!/usr/bin/env bash
# Stop the LocalStack started by start.sh.  Not running is not an error.
# Asks LocalStack to shut down, then ends the recorded pid if it lingers.
set -euo pipefail

root="${AMITOOL_LOCALSTACK_ROOT:-/tmp/amitool-localstack}"
endpoint="http://127.0.0.1:4566"
pid_file="$root/localstack.pid"

log() { printf 'localstack/stop.sh: %s\n' "$*" >&2; }

# The recorded pid, only if that process is still LocalStack.
recorded_pid() {
    local pid
    [[ -f "$pid_file" ]] || return 1
    pid="$(cat "$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack.runtime.main' || return 1
    echo "$pid"
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
    local pid="$1" deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

pid="$(recorded_pid || true)"
asked=0
if curl -fsS --max-time 3 "$endpoint/_localstack/health" >/dev/null 2>&1; then
    curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' \
        -d '{"action":"kill"}' "$endpoint/_localstack/health" >/dev/null 2>&1 || true
    asked=1
fi

if [[ -n "$pid" ]]; then
    if ! wait_gone "$pid" 20; then
        log "pid $pid still running after the shutdown request; sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 10; then
            log "pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || { log "error: pid $pid survived SIGKILL"; exit 1; }
        fi
    fi
    log "stopped LocalStack (pid $pid)"
elif ((asked)); then
    # Started by someone else: give it time to release the port.
    for _ in $(seq 50); do
        curl -fsS --max-time 1 "$endpoint/_localstack/health" >/dev/null 2>&1 || break
        sleep 0.2
    done
    log "asked the LocalStack on $endpoint to shut down (no pid recorded in $pid_file)"
else
    log "LocalStack is not running"
fi
rm -f "$pid_file"
