#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, integration, e2e) with ctest.
# Extra arguments go to ctest, e.g. `ops/test.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
bash ops/build.sh
ctest --test-dir build --output-on-failure -j 2 "$@"
