#!/usr/bin/env bash
# Samples one running process with perf and draws its flame graph (bench/flame/README.md).
#   bench/flame/flame.sh PID SECONDS OUT.png [TITLE]
# Installs linux-perf and python3-matplotlib with apt-get when they are missing (not part of
# ops/setup.sh: only profiling needs them). Leaves OUT.png, OUT.folded (the folded stacks) and
# OUT.txt (the functions with the most samples).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 PID SECONDS OUT.png [TITLE]" >&2
  exit 2
fi
pid=$1 seconds=$2 out=$3 title=${4:-"pid $1"}
hz=${FLAME_HZ:-499}  # samples a second
here=$(cd "$(dirname "$0")" && pwd)

missing=()
command -v perf >/dev/null || missing+=(linux-perf)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || missing+=(python3-matplotlib)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

data=$(mktemp /tmp/flame.XXXXXX.data)
trap 'rm -f "$data"' EXIT
# DWARF unwinding: the RelWithDebInfo build keeps no frame pointers, so -g alone would cut most
# stacks at the first libstdc++ or OpenSSL frame. cpu-clock, because a VM often has no PMU.
perf record -e cpu-clock -F "$hz" --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep "$seconds" 2>&1 |
  grep -v '^\[ perf record: Woken' >&2 || true
perf script -i "$data" 2>/dev/null |
  /usr/bin/python3 "$here/flamegraph.py" --out "$out" --title "$title" --folded "${out%.png}.folded" |
  tee "${out%.png}.txt"
