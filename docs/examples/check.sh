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

status=0
for src in docs/examples/*.c; do
  name=$(basename "$src" .c)
  # shellcheck disable=SC2086  # $flags is a list of words
  if ! cc -std=gnu11 -Wall -Wextra -Werror -o "$out/$name" "$src" $flags -Wl,-rpath,"$build"; then
    echo "FAIL compile $name" >&2; status=1; continue
  fi
  args=()
  [ "$name" = runtime_listener ] && args=(handoff)
  if timeout 20 "$out/$name" "${args[@]}" >"$out/$name.log" 2>&1; then
    echo "ok   $name"
  else
    echo "FAIL run $name:" >&2; cat "$out/$name.log" >&2; status=1
  fi
done
exit $status
