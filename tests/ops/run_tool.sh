#!/usr/bin/env bash
# run_tool.sh TOOL ARGS...: runs TOOL, or fails naming the package when it is not installed
# (a check of ops/ is never skipped).
set -euo pipefail
tool=$1
if ! command -v "$tool" >/dev/null 2>&1; then
  echo "FAILED: $tool is not installed: run \`bash ops/setup.sh\`" >&2
  exit 1
fi
exec "$@"
