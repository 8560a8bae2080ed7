#!/usr/bin/env bash
# Sets up, builds and starts the embedded stack (`ledger dev`). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
bash ops/build.sh
exec build/app/ledger dev "$@"
