#pragma once

#include <chrono>
#include <string>
#include <thread>

#include <pqxx/except>
#include <spdlog/spdlog.h>

namespace ledger::db {

struct RetryPolicy {
  int attempts_max = 5;
  std::chrono::milliseconds backoff_initial{20};
  std::chrono::milliseconds backoff_max{2'000};
};

// True for errors after which running the same unit of work again is safe and may succeed: the
// connection is gone (SQLSTATE class 08, or the server shutting down, 57P), a serialization
// failure (40001) or a deadlock (40P01). A commit whose outcome is unknown
// (pqxx::in_doubt_error) is not one of them.
[[nodiscard]] inline bool is_transient(const std::exception& error) {
  if (dynamic_cast<const pqxx::in_doubt_error*>(&error) != nullptr) return false;
  if (dynamic_cast<const pqxx::broken_connection*>(&error) != nullptr ||
      dynamic_cast<const pqxx::serialization_failure*>(&error) != nullptr ||
      dynamic_cast<const pqxx::deadlock_detected*>(&error) != nullptr) {
    return true;
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&error)) {
    const std::string& state = sql->sqlstate();
    return state.starts_with("08") || state.starts_with("57P") || state == "40001" || state == "40P01";
  }
  return false;
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
