#!/usr/bin/env bash
# System calls per churned connection (Connection: close, one request per
# connection), or per request with --keepalive, http-hello (on epoll and on
# uring) against nginx, 1 worker each: strace -f -c on the serving process
# during a wrk run. Needs a release build (scripts/demo.sh makes
# build-release), strace, wrk and nginx.
# Usage: scripts/syscalls.sh [--keepalive] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
close_hdr=(-H 'Connection: close')
unit=conn
if [ "${1:-}" = --keepalive ]; then
  close_hdr=()
  unit=req
  shift
fi
secs=${1:-2}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null; rm -rf "$tmp"' EXIT

count() { # label pid port
  local label=$1 pid=$2 port=$3
  timeout $((secs + 4)) strace -f -c -o "$tmp/$label.txt" -p "$pid" 2>/dev/null &
  sleep 0.5
  local reqs
  reqs=$(wrk -t1 -c64 -d"${secs}s" "${close_hdr[@]}" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  wait %?strace 2>/dev/null || sleep $((secs + 1))
  awk -v label="$label" -v reqs="$reqs" -v unit="$unit" '
    $NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { calls[$NF] = $4; total += $4 }
    END {
      printf "%-12s %8d %ss  %5.2f syscalls/%s:", label, reqs, unit, total / reqs, unit
      for (c in calls) if (calls[c] / reqs >= 0.01) printf " %s %.2f", c, calls[c] / reqs
      printf "\n"
    }' "$tmp/$label.txt"
}

IOL_POLLER=epoll build-release/examples/http-hello --port 18180 --workers 1 >/dev/null &
hh=$!
IOL_POLLER=uring build-release/examples/http-hello --port 18182 --workers 1 >/dev/null &
hu=$!
cat > "$tmp/nginx.conf" <<NGX
worker_processes 1; daemon off; master_process on; pid $tmp/nginx.pid; error_log $tmp/error.log;
events { worker_connections 16384; }
http { access_log off; server { listen 127.0.0.1:18181;
  location / { default_type text/plain; return 200 "Hello, World!"; } } }
NGX
nginx -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/error.log" &
sleep 1
count ioloop-epoll "$hh" 18180
count ioloop-uring "$hu" 18182
count nginx "$(pgrep -f 'nginx: worker' | head -1)" 18181
