#!/usr/bin/env bash
# Configures and builds ledger into build/ (Ninja, two jobs). -Werror when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLEDGER_WERROR="$werror" >/dev/null
cmake --build build -j "${LEDGER_BUILD_JOBS:-2}"
