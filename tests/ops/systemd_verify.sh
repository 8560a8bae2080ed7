#!/usr/bin/env bash
# systemd_verify.sh LEDGER_BINARY SOURCE_DIR: `systemd-analyze verify` on every unit of
# ops/systemd. The units run /usr/bin/ledger, which verify requires to exist; so verify reads a
# copy of the units with that path replaced by the built binary (the only change). Any output
# of verify (an unknown key, a bad value, a missing unit) fails the check, not only its exit code.
# Then `systemd-analyze security --offline` rates each service's sandbox: an exposure above
# 2.0 (of 10; the units are at 1.2) fails, so no hardening line is dropped unnoticed.
set -euo pipefail
binary=$(realpath "$1")
source_dir=$(realpath "$2")
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "FAILED: systemd-analyze is not installed: run \`bash ops/setup.sh\`" >&2
  exit 1
fi
copy=$(mktemp -d /tmp/ledger-systemd-verify.XXXXXX)
trap 'rm -rf "$copy"' EXIT
units=()
for unit in "$source_dir"/ops/systemd/*.service "$source_dir"/ops/systemd/*.timer; do
  name=$(basename "$unit")
  sed "s#/usr/bin/ledger#$binary#g" "$unit" >"$copy/$name"
  case "$name" in
    *@.service)  # a template is verified through its instances, one per read model
      for instance in balance audit loan all; do units+=("$copy/${name%@.service}@$instance.service"); done ;;
    *) units+=("$copy/$name") ;;
  esac
done
if grep -q /usr/bin/ledger "$copy"/*; then
  echo "FAILED: a unit still names /usr/bin/ledger after the substitution" >&2
  exit 1
fi
output=$(cd "$copy" && systemd-analyze verify --man=no "${units[@]}" 2>&1) || {
  echo "$output"
  echo "FAILED: systemd-analyze verify"
  exit 1
}
if [ -n "$output" ]; then
  echo "$output"
  echo "FAILED: systemd-analyze verify complained"
  exit 1
fi
echo "ok: systemd-analyze verify found nothing in ${#units[@]} units (${units[*]##*/})"
exposure_max=20  # systemd-analyze's threshold is in tenths: 20 is an exposure of 2.0
for unit in "${units[@]}"; do
  case "$unit" in *.timer) continue ;; esac
  if ! report=$(cd "$copy" && systemd-analyze security --offline=yes --no-pager --threshold="$exposure_max" "$unit" 2>&1); then
    echo "$report" | grep -E '^✗|Overall'
    echo "FAILED: ${unit##*/} is exposed more than $exposure_max/100 (systemd-analyze security)"
    exit 1
  fi
  echo "$report" | grep Overall
done
