#!/usr/bin/env bash
# The README's first command: installs what is missing (scripts/deps.sh),
# builds everything in release, then in well under a minute shows what the
# runtime does: examples/http-hello with one worker loop per CPU, loaded by
# iol-bench http in both shard modes (SO_REUSEPORT per worker, and one
# acceptor handing fds to the least-loaded worker), with keep-alive req/s,
# churn connections/s, p50/p99, the per-worker accepted counts, and the
# cross-thread handoff figure; then the same http-hello beside the raw
# epoll floor (bench/floor_http.c), nginx and h2o (iol-bench compare http:
# keep-alive, churn and idle memory, 1 worker each; req/s and requests
# per server CPU-ms); UDP echo beside libuv and the raw floor; the Python
# asyncio loop beside uvloop. Writes demo.svg. Leaves no process behind.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh

build=build-release
[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
ninja -C "$build" >/dev/null

hello=$build/examples/http-hello
bench=$build/bench/iol-bench
for f in "$hello" "$bench"; do
  [ -x "$f" ] || { echo "demo: $f was not built" >&2; exit 1; }
done

cpus=$(nproc)
# The load generator shares the machine with the server: half the CPUs.
load_workers=$(( cpus > 1 ? cpus / 2 : 1 ))
keepalive_s=3
churn_s=2
tmp=$(mktemp -d /tmp/iol-demo-XXXXXX)
server_pid=""

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 20); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_accepting() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# json FILE EXPR: a figure from iol-bench's first JSON line (r = results).
json() {
  python3 -c 'import json, sys
o = json.loads(open(sys.argv[1]).readline()); r = o["results"]
v = eval(sys.argv[2])
print("-" if v is None else (f"{v:.0f}" if isinstance(v, (int, float)) and v >= 100 else v))' "$1" "$2"
}

echo "ioloop demo: $cpus CPUs, http-hello with $cpus workers, iol-bench http with $load_workers load workers" >&2
for mode in reuseport handoff; do
  port=$(free_port)
  url="http://127.0.0.1:$port/"
  "$hello" --host 127.0.0.1 --port "$port" --workers "$cpus" --shard "$mode" >"$tmp/server-$mode.log" 2>&1 &
  server_pid=$!
  wait_accepting "$port" || { echo "demo: http-hello ($mode) did not start:" >&2; cat "$tmp/server-$mode.log" >&2; exit 1; }
  echo "  $mode: keep-alive ${keepalive_s} s, churn ${churn_s} s ..." >&2
  "$bench" http --connections 64 --workers "$load_workers" --duration "$keepalive_s" --repeat 1 --json "$url" \
    >"$tmp/ka-$mode.json" 2>"$tmp/ka-$mode.err"
  "$bench" http --connections 16 --workers "$load_workers" --duration "$churn_s" --repeat 1 --churn --json "$url" \
    >"$tmp/churn-$mode.json" 2>"$tmp/churn-$mode.err"
  # http-hello prints its per-worker accepted counts when it stops.
  stop_server
done

echo "  handoff: 1 producer -> 1 loop ..." >&2
"$bench" handoff --producers 1 --duration 1 --repeat 1 --json >"$tmp/handoff.json" 2>"$tmp/handoff.err"

echo "  compare with the floor, nginx and h2o (1 worker each): keep-alive, churn, idle memory ..." >&2
"$bench" compare http --workers 1 --duration 2 --repeat 1 --json >"$tmp/cmp-ka.json" 2>"$tmp/cmp-ka.err" || true
"$bench" compare http --workers 1 --duration 2 --repeat 1 --churn --json >"$tmp/cmp-churn.json" 2>"$tmp/cmp-churn.err" || true
"$bench" compare http --workers 1 --idle 2000 --repeat 1 --json >"$tmp/cmp-idle.json" 2>"$tmp/cmp-idle.err" || true

accepted() {
  # Lines of http-hello's exit report that carry the per-worker counts.
  local line
  line=$(grep -i -E '^accepted per worker:' "$tmp/server-$1.log" | sed 's/^accepted per worker: *//' | tr '\n' ' ')
  echo "${line:-(not reported by http-hello)}"
}

printf '\n%-10s %12s %14s %10s %10s %10s %10s\n' "shard" "req/s" "connections/s" "p50 us" "p99 us" "churn p50" "churn p99"
for mode in reuseport handoff; do
  printf '%-10s %12s %14s %10s %10s %10s %10s\n' "$mode" \
    "$(json "$tmp/ka-$mode.json" 'r["requests_per_sec"]')" \
    "$(json "$tmp/churn-$mode.json" 'r["connections_per_sec"]')" \
    "$(json "$tmp/ka-$mode.json" 'round(r["latency_us"]["p50"])')" \
    "$(json "$tmp/ka-$mode.json" 'round(r["latency_us"]["p99"])')" \
    "$(json "$tmp/churn-$mode.json" 'round(r["latency_us"]["p50"])')" \
    "$(json "$tmp/churn-$mode.json" 'round(r["latency_us"]["p99"])')"
done
for mode in reuseport handoff; do
  printf 'accepted per worker (%s): %s\n' "$mode" "$(accepted "$mode")"
done
python3 - "$tmp/handoff.json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o["impl"] == "ioloop":
        r = o["results"]
        print(f"handoff (1 producer -> 1 loop): {r['callbacks_per_sec'] / 1e6:.1f} M callbacks/s, "
              f"{r.get('wakeups_per_callback', float('nan')):.4f} eventfd writes per callback")
EOF

# The comparison: one row per server.
python3 - "$tmp/cmp-ka.json" "$tmp/cmp-churn.json" "$tmp/cmp-idle.json" "$tmp/compare.dat" <<'EOF'
import json, sys
rows = {}
nan = float("nan")
def load(path, key, fig, cpu=None):
    try:
        for line in open(path):
            o = json.loads(line)
            r = o["results"]
            row = rows.setdefault(o["label"], {})
            row[key] = r.get(fig, nan)
            if cpu:
                row[key + "_cpu"] = r.get(cpu, nan)
    except (OSError, ValueError):
        pass
load(sys.argv[1], "ka", "requests_per_sec", "requests_per_cpu_ms")
load(sys.argv[2], "churn", "connections_per_sec", "connections_per_cpu_ms")
load(sys.argv[3], "idle", "kib_per_idle_conn")
if not rows:
    print("\ncompare with nginx/h2o: nothing measured (see iol-bench compare http)")
    sys.exit(0)
print(f"\n{'server (1 worker)':<18} {'keep-alive req/s':>17} {'req/CPU-ms':>11} {'churn conn/s':>13} {'conn/CPU-ms':>12} {'KiB/idle conn':>14}")
with open(sys.argv[4], "w") as dat:
    for label, r in rows.items():
        g = lambda k: r.get(k, nan)
        print(f"{label:<18} {g('ka'):>17.0f} {g('ka_cpu'):>11.1f} {g('churn'):>13.0f} {g('churn_cpu'):>12.1f} {g('idle'):>14.2f}")
        dat.write(f"\"{label}\" {g('ka')} {g('churn')} {g('idle')} {g('ka_cpu')} {g('churn_cpu')}\n")
# The floor (a raw epoll server) is what no server can beat per CPU.
if "ioloop" in rows and "floor" in rows:
    f = rows["floor"].get("ka_cpu", nan)
    print(f"ioloop keep-alive requests per server CPU-ms over the floor's: {rows['ioloop'].get('ka_cpu', nan) / f:.2f}x"
          if f == f and f > 0 else "ioloop over the floor: not measured")
EOF

# Datagrams: udp echo per server CPU-ms beside libuv's uv_udp and the raw
# recvmmsg/sendmmsg floor, and GSO bulk send against sendmmsg.
echo >&2
echo "  udp: echo of 64-byte datagrams (ioloop, libuv uv_udp, raw floor) and GSO bulk send ..." >&2
"$bench" udp --duration 1 --repeat 1 --gso 2>"$tmp/udp.err" || { echo "udp bench failed:" >&2; cat "$tmp/udp.err" >&2; }

# Python: the asyncio loop (python/) beside uvloop and asyncio's default
# loop, when the package was built (python3-dev) and uvloop is there.
if [ -f "$build/python/ioloop/__init__.py" ] && /usr/bin/python3 -c 'import uvloop' 2>/dev/null; then
  echo >&2
  echo "  python: echo on a Protocol (1 KiB) and call_soon_threadsafe, ioloop / uvloop / asyncio ..." >&2
  PYTHONPATH=$build/python /usr/bin/python3 bench/python/bench.py --rounds 1 --duration 1 --count 100000 \
    --client "$build/bench/python/echo-client" --only echo-1k --only threadsafe-1 || echo "python bench failed" >&2
fi

# demo.svg: both shard modes side by side (throughput and latency), and
# ioloop beside nginx and h2o.
if command -v gnuplot >/dev/null; then
  {
    for mode in reuseport handoff; do
      echo "$mode $(json "$tmp/ka-$mode.json" 'r["requests_per_sec"]') $(json "$tmp/churn-$mode.json" 'r["connections_per_sec"]') $(json "$tmp/ka-$mode.json" 'r["latency_us"]["p50"]') $(json "$tmp/ka-$mode.json" 'r["latency_us"]["p99"]')"
    done
  } >"$tmp/demo.dat"
  gnuplot <<EOF
set terminal svg size 1950,440 dynamic font 'sans,11'
set output 'demo.svg'
set multiplot layout 1,5 title "ioloop http-hello: $cpus workers (iol-bench http, $load_workers load workers); right: beside the raw epoll floor, nginx and h2o, 1 worker each"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.6 border -1
set grid ytics
set yrange [0:*]
set key below
set title 'throughput'
plot '$tmp/demo.dat' using 2:xtic(1) title 'keep-alive req/s', '' using 3 title 'churn connections/s'
set title 'keep-alive latency (us)'
plot '$tmp/demo.dat' using 4:xtic(1) title 'p50', '' using 5 title 'p99'
set title 'vs floor, nginx, h2o: throughput'
plot '$tmp/compare.dat' using 2:xtic(1) title 'keep-alive req/s', '' using 3 title 'churn connections/s'
set title 'vs floor, nginx, h2o: per server CPU-ms'
plot '$tmp/compare.dat' using 5:xtic(1) title 'keep-alive requests', '' using 6 title 'churn connections'
set title 'vs floor, nginx, h2o: KiB per idle connection (lower is better)'
plot '$tmp/compare.dat' using 4:xtic(1) title 'KiB per idle keep-alive connection'
unset multiplot
EOF
  echo "plot written to demo.svg"
fi
