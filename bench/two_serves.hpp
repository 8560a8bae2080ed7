#pragma once
// The two-serves section of ledger-bench (issue 17, item 2): per workload (transfers, and
// deposits, which all move the currency's one cash account), throughput and latency of one
// `ledger serve` alone (the second started and idle), of two serve processes on the same
// database at once (wrk on each directly, as the issue measured), of the one alone again, and
// of the two behind HAProxy. The version conflicts each engine
// counts (`ledger_engine_conflicts_total` on its /metrics) are read before and after each run.

#include <cstdint>
#include <string>
#include <vector>

#include "wrk_load.hpp"

namespace ledger::bench {

struct TwoServesSettings {
  std::string ledger_binary;
  std::string database_url;  // the application role's
  std::string work_directory;
  std::string jwt_secret;
  double seconds = 20;
  // Accounts a0 .. a<N-1> must exist and be funded.
  int accounts = 1'000;
  int connections_per_serve = 32;
};

// One wrk run and what the engine(s) it drove counted meanwhile.
struct ServeLoad {
  WrkResult wrk;
  std::int64_t commands = 0;  // accepted + rejected, from /metrics
  std::int64_t conflicts = 0;   // appends that sent commands back
  std::int64_t redecided = 0;   // commands sent back to be decided again
  std::int64_t stalls = 0;      // times the pipelined writer waited for the committer
  std::int64_t batches = 0;     // committed batches
  // Of them, appended on the serve's own head in one statement; and tries of that which found
  // another serve's commits first (nothing written, the batch then went in a transaction).
  std::int64_t on_own_head = 0;
  std::int64_t on_own_head_missed = 0;
  // Sums over the committed appends: waiting for the head row, then holding it.
  double head_lock_wait_seconds = 0;
  double head_lock_held_seconds = 0;
};

struct TwoServesScenario {
  WrkScript workload = WrkScript::transfers;
  // One serve alone, before and after the run with two (the machine's load drifts: the ratio
  // compares two with the mean of the two runs that bracket it).
  std::vector<ServeLoad> one;
  std::vector<ServeLoad> two;  // each of two serves, loaded at the same time
  ServeLoad balanced;          // both serves through HAProxy (twice the connections)
  std::string balancer_problem;  // why the HAProxy run did not happen
};

struct TwoServesRun {
  std::vector<TwoServesScenario> scenarios;
};

// Starts and stops its own serve processes (`--relay false`: the write path) and HAProxy.
// Throws when a serve does not start.
[[nodiscard]] TwoServesRun run_two_serves(const TwoServesSettings& settings);

}  // namespace ledger::bench
