#pragma once
// JSON answers written by both the HTTP front and the CLI, so `ledger replay balance --json`
// and `GET /v1/accounts/{id}/balance` (and `ledger loans close-of-business --json` and `POST
// /v1/loans/close-of-business`) say the same thing under the same names. The HTTP answers are
// the contract (README "Replay and rebuild", "Loans").

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ledger::engine {
struct BalanceAsOf;
struct CloseOfBusinessResult;
}  // namespace ledger::engine

namespace ledger::api {

// The moment an as-of balance was asked for: exactly one of the two.
struct BalanceMoment {
  std::optional<std::int64_t> as_of_us;     // as_of: an RFC 3339 time
  std::optional<std::int64_t> at_position;  // at_position: a global position >= 1
};

// {id, as_of | at_position, position, recorded_at, currency, status, debits_posted,
// credits_posted, debits_pending, credits_pending, overdraft_limit, balance, available,
// version}; balance and available are null when they would overflow int64.
[[nodiscard]] std::string balance_as_of_json(std::string_view account_id, const engine::BalanceAsOf& found,
                                             const BalanceMoment& moment);

// {date, loans, closed, failed, first_failure (only when a loan failed)}, and `seconds` when
// given (the CLI says how long the run took).
[[nodiscard]] std::string close_of_business_json(std::chrono::year_month_day date,
                                                 const engine::CloseOfBusinessResult& result,
                                                 std::optional<double> seconds = std::nullopt);

}  // namespace ledger::api
