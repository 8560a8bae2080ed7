#pragma once

#include <chrono>
#include <thread>

#include <pqxx/except>
#include <spdlog/spdlog.h>

namespace ledger::db {

struct RetryPolicy {
  int attempts_max = 5;
  std::chrono::milliseconds backoff_initial{20};
  std::chrono::milliseconds backoff_max{2'000};
};

// True for errors after which running the same unit of work again is safe and may succeed.
// A commit whose outcome is unknown (pqxx::in_doubt_error) is not one of them.
[[nodiscard]] inline bool is_transient(const std::exception& error) {
  return dynamic_cast<const pqxx::broken_connection*>(&error) != nullptr ||
         dynamic_cast<const pqxx::serialization_failure*>(&error) != nullptr ||
         dynamic_cast<const pqxx::deadlock_detected*>(&error) != nullptr;
}

// Runs `work` (which must open its own transaction each time) and retries it on transient
// errors with exponential backoff; rethrows the last error once the attempts are spent.
template <typename Work>
auto with_retry(const RetryPolicy& policy, Work&& work) -> decltype(work()) {
  auto backoff = policy.backoff_initial;
  for (int attempt = 1;; ++attempt) {
    try {
      return work();
    } catch (const pqxx::in_doubt_error&) {
      throw;
    } catch (const std::exception& error) {
      if (!is_transient(error) || attempt >= policy.attempts_max) throw;
      spdlog::warn("transient database error (attempt {}/{}), retrying in {} ms: {}", attempt,
                   policy.attempts_max, backoff.count(), error.what());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, policy.backoff_max);
    }
  }
}

}  // namespace ledger::db
