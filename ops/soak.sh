#!/usr/bin/env bash
# Runs the adversarial suites for as long as asked: `ops/soak.sh [minutes]` (default 10).
# Reference model (tests/model): random command sequences (accounts, transfers, holds, loans,
# close of business) against the engine on a private PostgreSQL cluster, half the time serial,
# half with concurrent clients on two engines, each sequence ending with the read models (relay,
# mock Kafka, projectors) compared with the model and `replay verify` and `reconcile`; from a
# fresh first seed each run unless LEDGER_MODEL_SEED is set. Each half prints what it tried
# (sequences, commands, closes of business, read-model rows, every outcome); a failure prints
# its seed and the shortest sequence that still fails, and the script exits 1.
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
