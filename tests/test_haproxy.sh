#!/usr/bin/env bash
# tests/test_haproxy.sh — examples/haproxy/haproxy.cfg in front of two
# examples/http-hello servers, as docs/scaling.md describes.
#
#   tests/test_haproxy.sh [BUILD_DIR]
#
# BUILD_DIR: the argument, else $MESON_BUILD_ROOT, else ./build next to
# tests/. Installs nothing; exits 77 (meson: skipped) without haproxy,
# python3 or a built http-hello. IOL_HELLO overrides the backend program
# (it must take --host, --port, --workers like http-hello).
#
# For each mode (http, tcp): two backends on free ports, HAProxy on a free
# frontend port running the shipped config unchanged (addresses come from
# the environment); 20 requests through the frontend must all answer 200
# "Hello, World!", and HAProxy's stats must show both backends served
# (roundrobin: 10 each). Then failover: one backend is killed; requests
# still succeed at once (retry + redispatch), the health check marks it
# DOWN, and the survivor serves everything. Every process dies on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-${MESON_BUILD_ROOT:-$root/build}}
config=$root/examples/haproxy/haproxy.cfg
hello=${IOL_HELLO:-$build/examples/http-hello}
requests=20

skip() { echo "SKIP: $*"; exit 77; }
command -v haproxy >/dev/null || skip "haproxy is not installed (Debian: apt-get install haproxy)"
command -v python3 >/dev/null || skip "python3 is not installed"
[ -x "$hello" ] || skip "$hello is not built (it needs libhttp-parser-dev)"
[ -f "$config" ] || { echo "FAIL: no $config"; exit 1; }

tmp=$(mktemp -d /tmp/iol-haproxy-XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  exit 1
}

# The client and the stats reader, in python3 (curl may be missing, and
# bash cannot talk to HAProxy's unix stats socket).
cat >"$tmp/tool.py" <<'EOF'
import csv, http.client, socket, sys, time

def get(port, n):
    ok = 0
    for i in range(int(n)):
        try:
            c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read().decode(errors="replace")
            c.close()
        except OSError as e:
            print(f"request {i}: {e}", file=sys.stderr)
            continue
        if r.status == 200 and body.strip() == "Hello, World!":
            ok += 1
        else:
            print(f"request {i}: {r.status} {body!r}", file=sys.stderr)
    print(ok)

def stat(sock):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
    for r in rows:
        if r["pxname"] == "hello" and r["svname"] in ("b1", "b2"):
            print(r["svname"], r["status"].split()[0], r["stot"])

{"get": get, "stat": stat}[sys.argv[1]](*sys.argv[2:])
EOF
tool() { python3 "$tmp/tool.py" "$@"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_accepting PORT PID: until PORT accepts, while PID lives (10 s).
wait_accepting() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# wait_status SERVER STATUS: until HAProxy's stats show it (5 s).
wait_status() {
  for _ in $(seq 100); do
    tool stat "$sock" 2>/dev/null | grep -q "^$1 $2 " && return 0
    sleep 0.05
  done
  return 1
}

start_backend() { # NAME PORT
  "$hello" --host 127.0.0.1 --port "$2" --workers 1 >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  eval "$1_pid=$!"
  wait_accepting "$2" "$!" || fail "backend $1 did not start on port $2"
}

haproxy_pid=""
start_haproxy() { # MODE
  sock=$tmp/haproxy-$1.sock
  IOL_MODE=$1 IOL_BALANCE=roundrobin IOL_FRONTEND=127.0.0.1:$front \
    IOL_BACKEND1=127.0.0.1:$port1 IOL_BACKEND2=127.0.0.1:$port2 \
    IOL_CHECK_INTER=200ms IOL_HAPROXY_SOCKET=$sock \
    haproxy -f "$config" -db >"$tmp/haproxy-$1.log" 2>&1 &
  haproxy_pid=$!
  pids+=("$haproxy_pid")
  wait_accepting "$front" "$haproxy_pid" || fail "haproxy ($1) did not start"
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  wait_status b1 UP && wait_status b2 UP || fail "haproxy ($1): backends not UP: $(tool stat "$sock" | tr '\n' ' ')"
}

stop_haproxy() {
  kill -TERM "$haproxy_pid" 2>/dev/null || true
  wait "$haproxy_pid" 2>/dev/null || true
}

served() { # SERVER: its session total
  tool stat "$sock" | awk -v s="$1" '$1 == s { print $3 }'
}

port1=$(free_port)
port2=$(free_port)
front=$(free_port)
start_backend b1 "$port1"
start_backend b2 "$port2"

for mode in http tcp; do
  start_haproxy "$mode"
  # Deltas: in tcp mode the startup probe of the frontend was a session too.
  b1_before=$(served b1)
  b2_before=$(served b2)
  ok=$(tool get "$front" "$requests" 2>>"$tmp/client.log") || fail "the client failed"
  [ "$ok" -eq "$requests" ] || fail "$mode: $ok of $requests requests answered 200 Hello, World!"
  s1=$(($(served b1) - b1_before))
  s2=$(($(served b2) - b2_before))
  [ "$s1" -gt 0 ] && [ "$s2" -gt 0 ] || fail "$mode: not both backends served (b1 $s1, b2 $s2)"
  [ $((s1 + s2)) -eq "$requests" ] || fail "$mode: backends served $((s1 + s2)) sessions for $requests requests"
  echo "ok $mode: $requests/$requests through haproxy, b1 served $s1, b2 served $s2"
  [ "$mode" = tcp ] || stop_haproxy
done

# Failover, on the tcp-mode HAProxy still running: kill b2.
kill -TERM "$b2_pid"
wait "$b2_pid" 2>/dev/null || true
ok=$(tool get "$front" "$requests" 2>>"$tmp/client.log") || fail "the client failed"
[ "$ok" -eq "$requests" ] || fail "failover: $ok of $requests requests succeeded right after b2 died"
wait_status b2 DOWN || fail "failover: the health check did not mark b2 DOWN"
before=$(served b1)
ok=$(tool get "$front" "$requests" 2>>"$tmp/client.log") || fail "the client failed"
after=$(served b1)
[ "$ok" -eq "$requests" ] || fail "failover: $ok of $requests requests succeeded with b2 DOWN"
[ $((after - before)) -eq "$requests" ] || fail "failover: b1 served $((after - before)) of $requests"
echo "ok failover: b2 killed, $requests/$requests at once (redispatch), b2 DOWN, b1 served the next $requests"
