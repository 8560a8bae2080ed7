#!/usr/bin/env bash
# The unit tier under ASan and UBSan: builds build-fuzz/ (clang-14, the LEDGER_FUZZ
# configuration, which compiles every module the unit tests use with the sanitizers) and runs
# the `sanitized` ctest label there: the unit-labelled doctest binaries of tests/core,
# tests/domain, tests/engine and tests/api (not app_settings_test, which runs the `ledger` binary).
# A sanitizer report fails the test that triggered it. Called by ops/fuzz.sh (so by CI);
#   ops/sanitize.sh             build and run
# The last line reads "sanitize: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-fuzz -G Ninja -DLEDGER_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "${LEDGER_BUILD_JOBS:-2}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
log=build-fuzz/sanitize.log
status=0
ctest --test-dir build-fuzz -L sanitized --output-on-failure -j 2 >"$log" 2>&1 || status=$?
passed=$(grep -c ' Passed ' "$log" || true)
failed=$(grep -cE '\*\*\*|Failed  ' "$log" || true)
grep -E 'Test +#|Total Test time' "$log" | sed 's/^/  /' || true
if [ "$status" -ne 0 ]; then
  grep -E 'ERROR: AddressSanitizer|runtime error|SUMMARY|ERROR:' "$log" | head -5 | sed 's/^/  /' || true
  echo "  log: $log"
  [ "$failed" -gt 0 ] || failed=1
fi
echo "sanitize: $passed passed, $failed failed"
[ "$status" -eq 0 ]
