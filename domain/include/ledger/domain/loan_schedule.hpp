#pragma once
// Loan repayment schedules and interest accrual, in exact arithmetic (issue 6): rational
// numbers (Boost.Multiprecision) throughout, rounded half away from zero to the minor unit
// only where the rules say so. No floating point touches money.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ledger::domain {

using Date = std::chrono::year_month_day;

// "YYYY-MM-DD"; std::nullopt unless it is a valid calendar date. Any four-digit year: events
// stored before dates were bounded must still decode.
[[nodiscard]] std::optional<Date> parse_date(std::string_view text);

// Every date a command gives or a schedule derives lies in this range (API.md, README): far
// enough for any loan, and always four digits, so that to_string and parse_date round-trip.
constexpr Date business_date_min{std::chrono::year(1970), std::chrono::January, std::chrono::day(1)};
constexpr Date business_date_max{std::chrono::year(2199), std::chrono::December, std::chrono::day(31)};
[[nodiscard]] bool is_business_date(Date date);
// parse_date, and within business_date_min..business_date_max.
[[nodiscard]] std::optional<Date> parse_business_date(std::string_view text);
// "1970-01-01 to 2199-12-31", for details of refusals.
[[nodiscard]] std::string business_date_range();
[[nodiscard]] std::string to_string(Date date);
// `date` plus `months` calendar months, the day clamped to the month's last (Jan 31 + 1 = Feb 28/29).
[[nodiscard]] Date add_months(Date date, int months);
// Days from `from` to `to` (negative when `to` is earlier).
[[nodiscard]] std::int64_t days_between(Date from, Date to);

enum class ScheduleType : std::uint8_t { annuity = 0, equal_principal = 1 };
[[nodiscard]] std::string_view to_string(ScheduleType type);
[[nodiscard]] std::optional<ScheduleType> schedule_type_from(std::string_view text);

constexpr std::int64_t schedule_principal_max = 1'000'000'000'000'000;

struct ScheduleTerms {
  std::int64_t principal = 0;       // minor units, 1 to schedule_principal_max
  std::int32_t rate_bps = 0;        // annual, 0..100000
  std::int32_t installments = 0;    // monthly, 1..600
  ScheduleType type = ScheduleType::annuity;
  Date first_due{};                 // installment k is due first_due + (k - 1) months
};

struct ScheduledInstallment {
  std::int32_t number = 0;  // 1-based
  Date due_date{};
  std::int64_t principal = 0;
  std::int64_t interest = 0;
  [[nodiscard]] std::int64_t total() const { return principal + interest; }
  friend bool operator==(const ScheduledInstallment&, const ScheduledInstallment&) = default;
};

// The limits of ScheduleTerms; a description of the first one broken, or std::nullopt.
[[nodiscard]] std::optional<std::string> schedule_terms_problem(const ScheduleTerms& terms);

// Monthly rate r = rate_bps / 10000 / 12.
// annuity: installment = round(P·r / (1 − (1 + r)^−n)); interest = round(outstanding · r);
//   principal = installment − interest; at r = 0 principal = round(P / n).
// equal_principal: principal = round(P / n); interest = round(outstanding · r).
// A principal never exceeds what is outstanding, and the last installment's principal is
// whatever remains, so the principals sum to P exactly. Terms must pass schedule_terms_problem.
[[nodiscard]] std::vector<ScheduledInstallment> compute_schedule(const ScheduleTerms& terms);

// The part of a period's scheduled interest recognised after `days_elapsed` of its
// `days_in_period` days: round(interest · elapsed / days), so the cumulative amount never
// drifts and equals the scheduled interest on the due date.
[[nodiscard]] std::int64_t accrued_interest(std::int64_t scheduled_interest, std::int64_t days_elapsed,
                                            std::int64_t days_in_period);

}  // namespace ledger::domain
