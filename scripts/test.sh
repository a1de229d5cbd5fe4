#!/usr/bin/env bash
# Builds and runs the whole test suite in seven flavours: the normal build,
# the normal build with every loop on the uring poller (IOL_POLLER=uring;
# skipped without liburing), AddressSanitizer + UndefinedBehaviorSanitizer,
# ThreadSanitizer, valgrind memcheck, and 30 s of each libFuzzer target
# (clang, ASan + UBSan), and the Python package (pytest, then Tornado's
# own suite on ioloop.Loop, with Debian's /usr/bin/python3).
# Stress sizes shrink under the slow flavours through IOL_TEST_SCALE (set
# by the meson test setups). Exits non-zero on any failure.
# Usage: scripts/test.sh [normal|uring|asan|tsan|valgrind|fuzz|python ...]
set -euo pipefail
cd "$(dirname "$0")/.."

flavours=("$@")
[ ${#flavours[@]} -gt 0 ] || flavours=(normal uring asan tsan valgrind fuzz python)
extra=()
for f in "${flavours[@]}"; do
  [ "$f" != fuzz ] || extra=(fuzz) # clang only when fuzzing
done
scripts/deps.sh "${extra[@]}"

setup() { # dir, meson options...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >/dev/null
  fi
  ninja -C "$dir" >/dev/null
}

# meson test, and on failure one rerun of only the failed tests. The
# machines are 2-vCPU and shared; a test that fails and then passes is
# reported as FLAKY (loudly, in the log and in flaky.txt) so it gets
# fixed, but it does not throw away the run. A test that fails twice
# fails the run. Usage: mtest DIR SETUP(or "") meson-test-args...
mtest() {
  local dir=$1 setup=$2; shift 2
  local sargs=() log=$dir/meson-logs/testlog.json
  if [ -n "$setup" ]; then sargs=(--setup "$setup"); log=$dir/meson-logs/testlog-$setup.json; fi
  if meson test -C "$dir" "${sargs[@]}" --print-errorlogs "$@"; then return 0; fi
  local failed=()
  mapfile -t failed < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL"):
        print(t["name"].split(" / ", 1)[-1])
' "$log")
  [ ${#failed[@]} -gt 0 ] || return 1
  echo "=== rerunning once: ${failed[*]}"
  meson test -C "$dir" "${sargs[@]}" --print-errorlogs "${failed[@]}" || return 1
  echo "=== FLAKY in $dir ${setup:-normal}: ${failed[*]} (failed once, passed on rerun)" | tee -a flaky.txt
}

start=$(date +%s)
for f in "${flavours[@]}"; do
  echo "=== tests: $f ($(( $(date +%s) - start )) s)"
  case $f in
    normal)
      setup build
      mtest build ""
      # The compiled examples of docs/api.md, against the shared library.
      docs/examples/check.sh build ;;
    uring)
      setup build
      # The per-poller suites cover uring in every flavour; this runs all
      # the others (runtime, listener, stream, examples...) on it too.
      if meson test -C build --setup uring --list >/dev/null 2>&1; then
        mtest build uring --no-suite soak
      else
        echo "=== uring: built without liburing, skipped"
      fi ;;
    asan)
      setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        mtest build-asan sanitize ;;
    tsan)
      setup build-tsan -Db_sanitize=thread -Db_lundef=false
      TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
        mtest build-tsan sanitize ;;
    valgrind)
      setup build
      # The soak smokes drive processes and fd limits valgrind cannot follow.
      mtest build valgrind --no-suite soak ;;
    fuzz)
      # Its own build dir: every object carries coverage instrumentation.
      if [ ! -f build-fuzz/build.ninja ]; then
        CC=clang meson setup build-fuzz -Dwerror=true -Dfuzz=true \
          -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
      fi
      ninja -C build-fuzz tests/fuzz/fuzz_stream tests/fuzz/fuzz_http >/dev/null
      tests/fuzz/run.sh build-fuzz 30 ;;
    python)
      setup build
      python/run_tests.sh build ;;
    *) echo "unknown flavour $f" >&2; exit 2 ;;
  esac
done
echo "=== all test flavours passed in $(( $(date +%s) - start )) s"
