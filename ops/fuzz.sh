#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan, UBSan) into build-fuzz/ and runs each for N
# seconds (default 600) on top of its committed corpus (tests/fuzz/corpus/<target>).
#   ops/fuzz.sh [seconds]        e.g. ops/fuzz.sh 30 (CI), ops/fuzz.sh (10 minutes each)
# New coverage goes to build-fuzz/corpus/<target> (merge it into the committed corpus with
# `<target>_fuzz -merge=1 tests/fuzz/corpus/<target> build-fuzz/corpus/<target>` when worth it).
# A crash, leak, sanitizer report or violated property is saved as
# build-fuzz/findings/<target>/crash-*: reproduce with `build-fuzz/tests/fuzz/<target>_fuzz FILE`,
# fix it, then commit the file as tests/fuzz/corpus/<target>/regression-<what> so every later
# run replays it. Targets run LEDGER_FUZZ_JOBS at a time (default 2). Exit status 1 when any
# target found something; the last line reads "fuzz: N passed, N failed".
# First the unit tier under the same sanitizers (ops/sanitize.sh, which also builds
# build-fuzz/); LEDGER_SANITIZE_UNIT=0 skips it. A failure there also makes the exit status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
targets=(command_parser event_decode event_json envelope snapshot http_front round_trip)

unit_status=0
if [ "${LEDGER_SANITIZE_UNIT:-1}" != 0 ]; then
  bash ops/sanitize.sh || unit_status=$?
fi
# Built already by ops/sanitize.sh unless skipped (then this builds; a broken build stops here).
cmake -S . -B build-fuzz -G Ninja -DLEDGER_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "${LEDGER_BUILD_JOBS:-2}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# One target's run; its exit status goes to build-fuzz/findings/<target>.status.
fuzz_target() {
  local target="$1" status=0
  local work="build-fuzz/corpus/$target" findings="build-fuzz/findings/$target"
  mkdir -p "$work" "$findings"
  # -timeout: one input running longer than 10 s is a finding (a hang); -rss_limit_mb likewise.
  "build-fuzz/tests/fuzz/${target}_fuzz" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$findings/" \
    "$work" "tests/fuzz/corpus/$target" >"$findings.log" 2>&1 || status=$?
  echo "$status" >"$findings.status"
}

# LEDGER_FUZZ_JOBS targets at a time (default 2, one per core: each runs single-threaded, so
# every target still gets its full time on a core).
jobs="${LEDGER_FUZZ_JOBS:-2}"
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "ops/fuzz.sh: LEDGER_FUZZ_JOBS must be a whole number of 1 or more, not '$jobs'" >&2
  exit 2
fi
# A stopped script (Ctrl-C, a CI timeout) takes its fuzzers with it.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true  # a job's status is read from its file below
    running=$((running - 1))
  fi
  rm -f "build-fuzz/findings/$target.status"
  fuzz_target "$target" &
  running=$((running + 1))
done
wait || true

passed=0
failed=0
for target in "${targets[@]}"; do
  findings="build-fuzz/findings/$target"
  log="$findings.log"
  status=$(cat "$findings.status" 2>/dev/null || echo "missing")
  # A target that stops on a seed prints neither line: `|| true` keeps set -e from ending here.
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  found=$(find "$findings" -maxdepth 1 -type f 2>/dev/null | wc -l || true)
  if [ "$status" = 0 ] && [ "$found" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz: $target: ok, ${executions:-0} executions in ${seconds} s, coverage ${coverage:-?} edges"
  else
    failed=$((failed + 1))
    echo "fuzz: $target: FAILED (exit $status), ${executions:-0} executions, $found finding(s) in $findings"
    grep -E 'PROPERTY VIOLATED|ERROR: |runtime error|SUMMARY' "$log" | head -5 | sed 's/^/  /' || true
    echo "  log: $log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$unit_status" -eq 0 ]
