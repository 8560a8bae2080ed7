#!/usr/bin/env bash
# promtool_check_config.sh SOURCE_DIR: `promtool check config` on the compose stack's
# prometheus.yml, with the rule file path it mounts (/etc/prometheus/alerts.yml) pointed at
# ops/prometheus/alerts.yml, so the rules are loaded and checked with the configuration.
set -euo pipefail
source_dir=$(realpath "$1")
if ! command -v promtool >/dev/null 2>&1; then
  echo "FAILED: promtool is not installed (package prometheus): run \`bash ops/setup.sh\`" >&2
  exit 1
fi
copy=$(mktemp -d /tmp/ledger-promtool-config.XXXXXX)
trap 'rm -rf "$copy"' EXIT
sed "s#/etc/prometheus/alerts.yml#$source_dir/ops/prometheus/alerts.yml#" \
  "$source_dir/ops/compose/prometheus.yml" >"$copy/prometheus.yml"
promtool check config "$copy/prometheus.yml"
