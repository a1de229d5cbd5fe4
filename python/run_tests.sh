#!/usr/bin/env bash
# Runs the Python package's tests against a build dir, with Debian's
# /usr/bin/python3 (never a python3 that comes first on PATH):
#   1. pytest python/tests (on the default poller, then on uring when the
#      build has it),
#   2. Tornado's own suite (python3 -m tornado.test.runtests) on
#      ioloop.Loop, which must end "OK (skipped=55)" as on the default loop.
# Tornado's suite holds a few timing tests (a 0.1 s request timeout over
# TLS, two linear-time checks) that fail on an overloaded machine with any
# loop, the default one included: the tests that failed are rerun alone
# (at most three times, on ioloop.Loop) and reported as FLAKY if they pass.
# Usage: python/run_tests.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
py=/usr/bin/python3
export PYTHONPATH=$PWD/$build/python PYTHONDONTWRITEBYTECODE=1
[ -f "$build/python/ioloop/__init__.py" ] || { echo "no Python package in $build (python3-dev missing, or -Dpython=disabled)" >&2; exit 1; }

echo "=== python: pytest"
$py -m pytest -q -p no:cacheprovider python/tests
if grep -q IOL_HAVE_URING "$build/build.ninja" 2>/dev/null; then
  echo "=== python: pytest on the uring poller"
  IOL_POLLER=uring $py -m pytest -q -p no:cacheprovider python/tests
fi

echo "=== python: Tornado's suite on ioloop.Loop"
log=$build/meson-logs/tornado-on-ioloop.txt
mkdir -p "$(dirname "$log")"
if $py python/tornado_tests.py >"$log" 2>&1; then
  tail -n 8 "$log"
  exit 0
fi
tail -n 8 "$log"
mapfile -t failed < <(sed -n 's/^\(FAIL\|ERROR\): [^ ]* (\(.*\))$/\2/p' "$log")
[ ${#failed[@]} -gt 0 ] || { echo "=== python: Tornado's suite failed outside any test (log: $log)"; exit 1; }
# Rerun only the failed tests, on ioloop.Loop again, up to three times.
for attempt in 1 2 3; do
  echo "=== python: rerunning on ioloop.Loop (attempt $attempt): ${failed[*]}"
  if $py python/tornado_tests.py "${failed[@]}" >"$log.rerun" 2>&1; then
    echo "=== FLAKY python: Tornado ${failed[*]} failed in the full run, passed alone" | tee -a flaky.txt
    exit 0
  fi
  tail -n 3 "$log.rerun"
done
echo "=== python: Tornado's suite failed (logs: $log, $log.rerun)"
exit 1
