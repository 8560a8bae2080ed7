#!/usr/bin/env bash
# promtool_check_dashboard.sh SOURCE_DIR: every PromQL expression of the Grafana dashboard
# parses, checked by promtool (as recording rules; Grafana's variables replaced by values).
set -euo pipefail
source_dir=$(realpath "$1")
if ! command -v promtool >/dev/null 2>&1; then
  echo "FAILED: promtool is not installed (package prometheus): run \`bash ops/setup.sh\`" >&2
  exit 1
fi
copy=$(mktemp -d /tmp/ledger-promtool-dashboard.XXXXXX)
trap 'rm -rf "$copy"' EXIT
python3 "$source_dir/tests/ops/check_deployment.py" dashboard-rules "$source_dir" "$copy/dashboard.yml"
promtool check rules "$copy/dashboard.yml"
