#!/usr/bin/env bash
# Compiles every docs/examples/*.c against a build tree with -Wall -Werror
# and runs it once. Usage: docs/examples/check.sh [BUILD_DIR]   (default: build)
#
# The uninstalled pkg-config file links the shared libioloop.so of the
# build tree; the rpath lets the programs find it without LD_LIBRARY_PATH.
set -euo pipefail

cd "$(dirname "$0")/../.."
build=$(realpath "${1:-build}")
[ -f "$build/meson-uninstalled/ioloop-uninstalled.pc" ] || {
  echo "no $build/meson-uninstalled/ioloop-uninstalled.pc: run meson setup $build && ninja -C $build" >&2
  exit 1
}
flags=$(PKG_CONFIG_PATH="$build/meson-uninstalled" pkg-config --cflags --libs ioloop-uninstalled)
out=$(mktemp -d /tmp/iol-docs-XXXXXX)
trap 'rm -rf "$out"' EXIT

# Two processes of reuseport_procs on one port; 20 connections must be
# answered, by both processes.
reuseport_two_processes() {
  local prog=$1 port pids=() replies
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$prog" "$port" 2 >"$out/rp1.log" 2>&1 & pids+=($!)
  "$prog" "$port" 2 >"$out/rp2.log" 2>&1 & pids+=($!)
  sleep 0.5
  replies=$(for _ in $(seq 20); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port" && head -n 1 <&3) 2>/dev/null
  done)
  kill -TERM "${pids[@]}"; wait "${pids[@]}" || true
  cat "$out/rp1.log" "$out/rp2.log"
  echo "$replies" | sort | uniq -c
  [ "$(echo "$replies" | grep -c '^pid ')" -eq 20 ] &&
    [ "$(echo "$replies" | awk '{ print $2 }' | sort -u | wc -l)" -eq 2 ]
}

status=0
for src in docs/examples/*.c; do
  name=$(basename "$src" .c)
  extra=""
  if [[ $name == tls_* ]] && ! grep -q IOL_HAVE_TLS "$build/build.ninja"; then
    echo "skip $name (built without TLS)"; continue
  fi
  if [[ $name == zmq_* ]]; then
    # Only where the build tree has ZeroMQ (meson -Dzmq); it links libzmq too.
    if ! grep -q IOL_HAVE_ZMQ "$build/build.ninja"; then echo "skip $name (built without libzmq)"; continue; fi
    extra=$(pkg-config --cflags --libs libzmq)
  fi
  # shellcheck disable=SC2086  # $flags and $extra are lists of words
  if ! cc -std=gnu11 -Wall -Wextra -Werror -o "$out/$name" "$src" $flags $extra -Wl,-rpath,"$build"; then
    echo "FAIL compile $name" >&2; status=1; continue
  fi
  if [ "$name" = reuseport_procs ]; then
    if reuseport_two_processes "$out/$name"; then echo "ok   $name"; else echo "FAIL run $name" >&2; status=1; fi
    continue
  fi
  args=()
  [ "$name" = runtime_listener ] && args=(handoff)
  if [[ $name == tls_* ]]; then
    # A self-signed certificate for localhost, made now: no key is committed.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$out/key.pem" \
      -out "$out/cert.pem" -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 1 2>/dev/null
    args=("$out/cert.pem" "$out/key.pem" "$out/cert.pem")
  fi
  if [[ $name == zmq_* ]] && ! IOL_POLLER=zmq timeout 20 "$out/$name" >"$out/$name.zmq.log" 2>&1; then
    echo "FAIL run $name (IOL_POLLER=zmq):" >&2; cat "$out/$name.zmq.log" >&2; status=1; continue
  fi
  if timeout 20 "$out/$name" "${args[@]}" >"$out/$name.log" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL run $name:" >&2; cat "$out/$name.log" >&2; status=1
  fi
done
exit $status
