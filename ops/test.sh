#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, integration, e2e) with ctest, then
# ops/fuzz.sh: the unit tier under ASan and UBSan (ops/sanitize.sh) and the fuzz smoke run, every
# libFuzzer target for LEDGER_FUZZ_SECONDS (default 30) on top of its corpus
# (LEDGER_FUZZ_SECONDS=0 skips both). LEDGER_TEST_JOBS sets ctest's -j (default 3). Extra
# arguments go to ctest, e.g.
# `ops/test.sh -L unit`. The last line is the fuzz summary "fuzz: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash ops/setup.sh
bash ops/build.sh
# Three tests at a time on two cores: most of the suite waits (on timeouts it provokes, on
# PostgreSQL, on child processes), and at -j 2 the CPU was 47 % busy (README "Tests").
ctest --test-dir build --output-on-failure -j "${LEDGER_TEST_JOBS:-3}" "$@"
fuzz_seconds="${LEDGER_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  bash ops/fuzz.sh "$fuzz_seconds"
fi
