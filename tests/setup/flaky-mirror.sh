#!/usr/bin/env bash
# A mirror that is briefly unavailable (a sync in progress) must not fail
# scripts/install-deps.sh: apt-get update is retried, and when the mirror
# stays down the script ends with one line naming the step.
#
# A local HTTP proxy (Python, on loopback) stands between apt and the
# machine's own mirrors: it answers 503 to the first FAIL requests, then
# passes requests through. apt's own retries are turned off for the test
# (AMITOOL_APT_RETRIES=0) so that the script's retry is what is proven.
# Needs root (apt-get update); prints "flaky-mirror: SKIPPED: ..." otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "flaky-mirror: SKIPPED: needs root (apt-get update)"; exit 0; }
command -v apt-get >/dev/null || { echo "flaky-mirror: SKIPPED: no apt-get"; exit 0; }
grep -rqs 'http://' /etc/apt/sources.list /etc/apt/sources.list.d/ \
  || { echo "flaky-mirror: SKIPPED: no http:// apt source to put a proxy in front of"; exit 0; }

work=$(mktemp -d)
proxy_pid=""
cleanup() { [ -z "$proxy_pid" ] || kill "$proxy_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_proxy() { # FAIL -> sets proxy_pid, port in $work/port
  rm -f "$work/port"
  python3 - "$1" "$work/port" <<'PY' &
import http.server, socketserver, sys, threading, urllib.request, urllib.error
fail_first, port_file = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        with lock:
            seen[0] += 1
            n = seen[0]
        if fail_first < 0 or n <= fail_first:
            body = b"Mirror sync in progress?"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        req = urllib.request.Request(self.path, headers={k: v for k, v in self.headers.items() if k.lower() in ("if-modified-since", "range", "if-range", "user-agent")})
        try:
            r = urllib.request.urlopen(req, timeout=60)
            status, headers, data = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, data = e.code, e.headers, e.read()
        self.send_response(status)
        for k in ("Last-Modified", "Content-Type", "Content-Range"):
            if headers.get(k):
                self.send_header(k, headers[k])
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
open(port_file, "w").write(str(s.server_address[1]))
s.serve_forever()
PY
  proxy_pid=$!
  for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
  [ -s "$work/port" ] || { echo "flaky-mirror: FAILED: the proxy did not start"; exit 1; }
  printf 'Acquire::http::Proxy "http://127.0.0.1:%s";\n' "$(cat "$work/port")" > "$work/apt.conf"
}
stop_proxy() { kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=""; }

run() { # -> exit status; output in $work/out
  local rc=0
  APT_CONFIG="$work/apt.conf" AMITOOL_APT_RETRIES=0 AMITOOL_APT_RETRY_SLEEP=1 \
    bash "$repo/scripts/install-deps.sh" --refresh-lists >"$work/out" 2>&1 || rc=$?
  return $rc
}

# 1. Down for the first requests of the first update, then up: retried, exit 0.
start_proxy 2
t0=$(date +%s%N)
if ! run; then cat "$work/out"; echo "flaky-mirror: FAILED: a mirror down for 2 requests made install-deps.sh fail"; exit 1; fi
t1=$(date +%s%N)
grep -q 'apt-get update failed (attempt 1 of 4): retrying' "$work/out" \
  || { cat "$work/out"; echo "flaky-mirror: FAILED: no retry was said"; exit 1; }
echo "flaky-mirror: down for 2 requests: retried and refreshed in $(( (t1 - t0) / 1000000 )) ms"
stop_proxy

# 2. Down for good: exit 1, one line that names the step.
start_proxy -1
rc=0; run || rc=$?
[ "$rc" = 1 ] || { cat "$work/out"; echo "flaky-mirror: FAILED: exit $rc with the mirror down (want 1)"; exit 1; }
last=$(tail -n 1 "$work/out")
case $last in
  "install-deps: apt-get update failed 4 times"*) ;;
  *) cat "$work/out"; echo "flaky-mirror: FAILED: the last line does not name the step: $last"; exit 1 ;;
esac
[ "$(grep -c 'retrying' "$work/out")" = 3 ] || { cat "$work/out"; echo "flaky-mirror: FAILED: not exactly 3 retries"; exit 1; }
echo "flaky-mirror: down for good: $last"
stop_proxy
echo "flaky-mirror: OK"
