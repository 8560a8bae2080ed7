#pragma once
// Reading a running `ledger serve`'s /metrics from the bench: the counters a run's figures are
// the difference of (commands, conflicts, head-row time, state cache lookups).

#include <cstdint>
#include <string>

namespace ledger::bench {

// The body of GET `target` on 127.0.0.1:`port` (no authentication: /metrics and /health).
[[nodiscard]] std::string http_get(int port, const std::string& target);

// A counter's value in a /metrics text (0 when absent).
[[nodiscard]] std::int64_t metric(const std::string& metrics, const std::string& name);

// A histogram's sum (`<name>_sum`) in a /metrics text (0 when absent).
[[nodiscard]] double metric_sum(const std::string& metrics, const std::string& name);

// A series' value, fractional (counters of seconds), in a /metrics text (0 when absent).
[[nodiscard]] double metric_value(const std::string& metrics, const std::string& name);

// The serve's commits so far and where their hold of the head row went (the engine's
// append steps): a run's figures are the difference of two readings. Not `read` (all zero)
// when the serve does not answer.
struct CommitSteps {
  bool read = false;       // the serve answered
  std::int64_t holds = 0;  // committed appends (each held the head row once)
  std::int64_t batches = 0;
  std::int64_t commands = 0;
  double held_seconds = 0;
  double rows_seconds = 0;
  double write_seconds = 0;
  double commit_seconds = 0;
};
[[nodiscard]] CommitSteps commit_steps(int port);

// The serve's state cache lookups of account streams so far.
struct AccountCacheLookups {
  std::int64_t hits = 0;
  std::int64_t misses = 0;
};
[[nodiscard]] AccountCacheLookups account_cache_lookups(int port);

// The hit rate, in %, of the lookups between two readings (0 when there were none).
[[nodiscard]] double hit_rate_percent(const AccountCacheLookups& before,
                                      const AccountCacheLookups& after);

}  // namespace ledger::bench
