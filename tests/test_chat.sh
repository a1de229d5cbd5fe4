#!/usr/bin/env bash
# examples/chat as 200 clients see it (tests/chat_check.py): every line of
# every client reaches every client in per-sender order, and SIGTERM ends
# each client with all accepted lines, then a clean EOF.
# Usage: test_chat.sh BUILD_ROOT SOURCE_ROOT checker-args...
set -euo pipefail
build=$1 src=$2
shift 2
exec python3 "$src/tests/chat_check.py" "$build/examples/chat" "$@"
