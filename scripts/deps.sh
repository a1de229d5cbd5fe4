#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing.
# Idempotent; needs root (or sudo) the first time.
# Usage: scripts/deps.sh [fuzz]   (fuzz: also clang and libFuzzer)
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config    # build
  liburcu-dev check libhttp-parser-dev            # library, tests, HTTP example
  valgrind                                        # test flavour
  libzmq3-dev                                     # optional zmq poller and handlers
  liburing-dev                                    # optional uring poller
  libssl-dev openssl curl                         # optional TLS streams; certs and clients in tests
  libuv1-dev libevent-dev libczmq-dev             # bench competitors
  wrk nginx-light h2o haproxy gnuplot-nox python3 procps  # load, competitors, plots, checks
  python3-dev python3-pytest python3-tornado python3-uvloop  # the Python package, its tests, Tornado's suite, bench
)
for group in "$@"; do
  case $group in
    # libclang-rt-dev holds libFuzzer and the sanitizer runtimes (only a
    # Recommends of clang); llvm gives llvm-symbolizer for stack traces.
    fuzz) packages+=(clang libclang-rt-dev llvm) ;;
    *) echo "deps.sh: unknown group $group" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Servers from Debian start themselves on install; we start our own copies.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
$SUDO chmod +x /usr/sbin/policy-rc.d
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
