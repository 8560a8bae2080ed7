#!/usr/bin/env bash
# Runs the adversarial suites for as long as asked: `ops/soak.sh [minutes]` (default 10).
# Reference model (tests/model): random command sequences against the engine on a private
# PostgreSQL cluster, half the time serial, half with concurrent clients, from a fresh first
# seed each run unless LEDGER_MODEL_SEED is set. Each half prints what it tried; a failure
# prints its seed and the shortest sequence that still fails, and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
  echo "usage: ops/soak.sh [minutes]   (a whole number of minutes, at least 1)" >&2
  exit 2
fi
bash ops/build.sh
seed="${LEDGER_MODEL_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "reference model: ${minutes} min, first seed ${seed} (rerun one with LEDGER_MODEL_SEED=<seed> LEDGER_MODEL_SEQUENCES=1)"
LEDGER_MODEL_SEED="$seed" LEDGER_MODEL_SECONDS=$((minutes * 30)) build/tests/model/model_pgtest
