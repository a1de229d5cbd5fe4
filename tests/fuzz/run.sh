#!/usr/bin/env bash
# Runs the libFuzzer targets, each for SECONDS, over a scratch copy of its
# seed corpus (tests/fuzz/corpus/<target>/; the repository is never
# written). A crash, sanitizer report, leak or timeout fails the run; its
# input is kept in BUILD_DIR/fuzz-artifacts/ with the log.
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [stream|http ...]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2; exit 2; }
build=$(cd "$1" && pwd)
secs=$2
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stream http)
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  cp "$here/corpus/$t/"* "$scratch/$t/"
  log=$artifacts/$t.log
  if ! "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$t-" "$scratch/$t" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz_$t FAILED; input and log in $artifacts/" >&2
    exit 1
  fi
  # The last status line: executions, coverage (cov: edges, ft: features), corpus.
  echo "fuzz_$t: $(grep -E '^#[0-9]+' "$log" | tail -n 1)"
done
