#include "ledger/domain/loan_schedule.hpp"

#include <boost/multiprecision/cpp_int.hpp>

#include <charconv>
#include <stdexcept>

#include "ledger/core/assert.hpp"

namespace ledger::domain {

namespace {

using Rational = boost::multiprecision::cpp_rational;
using Integer = boost::multiprecision::cpp_int;

// Half away from zero: 2.5 -> 3, -2.5 -> -3.
std::int64_t round_half_away(const Rational& value) {
  const Integer numerator = boost::multiprecision::numerator(value);
  const Integer denominator = boost::multiprecision::denominator(value);  // > 0
  const Integer magnitude = (2 * abs(numerator) + denominator) / (2 * denominator);
  const Integer rounded = numerator < 0 ? Integer(-magnitude) : magnitude;
  LEDGER_ASSERT(rounded >= std::numeric_limits<std::int64_t>::min() && rounded <= std::numeric_limits<std::int64_t>::max(),
                "a schedule amount beyond int64");
  return rounded.convert_to<std::int64_t>();
}

Rational monthly_rate(std::int32_t rate_bps) { return Rational(rate_bps, 10'000 * 12); }

}  // namespace

std::optional<Date> parse_date(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  int year = 0;
  unsigned month = 0, day = 0;
  auto field = [&](std::size_t at, std::size_t length, auto& value) {
    const auto [end, error] = std::from_chars(text.data() + at, text.data() + at + length, value);
    return error == std::errc() && end == text.data() + at + length;
  };
  if (!field(0, 4, year) || !field(5, 2, month) || !field(8, 2, day)) return std::nullopt;
  const Date date{std::chrono::year(year), std::chrono::month(month), std::chrono::day(day)};
  if (!date.ok()) return std::nullopt;
  return date;
}

bool is_business_date(Date date) {
  return date.ok() && date >= business_date_min && date <= business_date_max;
}

std::optional<Date> parse_business_date(std::string_view text) {
  const auto date = parse_date(text);
  if (!date || !is_business_date(*date)) return std::nullopt;
  return date;
}

std::string business_date_range() {
  return to_string(business_date_min) + " to " + to_string(business_date_max);
}

std::string to_string(Date date) {
  char text[16];
  std::snprintf(text, sizeof text, "%04d-%02u-%02u", static_cast<int>(date.year()),
                static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()));
  return text;
}

Date add_months(Date date, int months) {
  const std::chrono::year_month shifted = std::chrono::year_month(date.year(), date.month()) + std::chrono::months(months);
  const std::chrono::day last = std::chrono::year_month_day_last(shifted.year(), std::chrono::month_day_last(shifted.month())).day();
  return Date{shifted.year(), shifted.month(), std::min(date.day(), last)};
}

std::int64_t days_between(Date from, Date to) {
  return (std::chrono::sys_days(to) - std::chrono::sys_days(from)).count();
}

std::string_view to_string(ScheduleType type) {
  return type == ScheduleType::annuity ? "annuity" : "equal_principal";
}

std::optional<ScheduleType> schedule_type_from(std::string_view text) {
  if (text == "annuity") return ScheduleType::annuity;
  if (text == "equal_principal") return ScheduleType::equal_principal;
  return std::nullopt;
}

std::optional<std::string> schedule_terms_problem(const ScheduleTerms& terms) {
  if (terms.principal <= 0) return "principal must be positive";
  // Keeps every schedule, accrual and payoff sum far inside int64.
  if (terms.principal > schedule_principal_max) return "principal must be at most 10^15 minor units";
  if (terms.rate_bps < 0 || terms.rate_bps > 100'000) return "rate_bps must be 0 to 100000";
  if (terms.installments < 1 || terms.installments > 600) return "installments must be 1 to 600";
  if (!terms.first_due.ok()) return "first_due_date is not a date";
  if (!is_business_date(terms.first_due)) return "first_due_date must be from " + business_date_range();
  // Every derived date too: a date past the range would not even be written with four digits.
  const Date last_due = add_months(terms.first_due, terms.installments - 1);
  if (!is_business_date(last_due)) {
    return "the last due date " + to_string(last_due) + " is after " + to_string(business_date_max) +
           ": give fewer installments or an earlier first_due_date";
  }
  return std::nullopt;
}

std::vector<ScheduledInstallment> compute_schedule(const ScheduleTerms& terms) {
  if (const auto problem = schedule_terms_problem(terms)) throw std::invalid_argument(*problem);
  const Rational r = monthly_rate(terms.rate_bps);
  const std::int32_t n = terms.installments;
  const Rational principal(terms.principal);

  // The level principal (equal_principal, and annuity at r = 0) or the level installment.
  std::int64_t level = 0;
  if (terms.type == ScheduleType::equal_principal || r == 0) {
    level = round_half_away(principal / n);
  } else {
    // P·r / (1 − (1 + r)^−n) = P·r·g / (g − 1) with g = (1 + r)^n.
    Rational growth = 1;
    const Rational factor = 1 + r;
    for (std::int32_t i = 0; i < n; ++i) growth *= factor;
    level = round_half_away(principal * r * growth / (growth - 1));
  }

  std::vector<ScheduledInstallment> schedule;
  schedule.reserve(static_cast<std::size_t>(n));
  std::int64_t outstanding = terms.principal;
  for (std::int32_t k = 1; k <= n; ++k) {
    ScheduledInstallment installment;
    installment.number = k;
    installment.due_date = add_months(terms.first_due, k - 1);
    installment.interest = round_half_away(Rational(outstanding) * r);
    std::int64_t part = terms.type == ScheduleType::annuity && r != 0 ? level - installment.interest : level;
    part = std::clamp<std::int64_t>(part, 0, outstanding);
    installment.principal = k == n ? outstanding : part;
    outstanding -= installment.principal;
    schedule.push_back(installment);
  }
  return schedule;
}

std::int64_t accrued_interest(std::int64_t scheduled_interest, std::int64_t days_elapsed, std::int64_t days_in_period) {
  LEDGER_ASSERT(days_in_period > 0, "a period of no days");
  const std::int64_t elapsed = std::clamp<std::int64_t>(days_elapsed, 0, days_in_period);
  // Close of business runs this for every installment of every loan: in fixed 128 bits (the
  // product of two int64 fits) it allocates nothing, where a rational took a tenth of a close's
  // CPU (issue 18). The same exact quotient and rounding as round_half_away.
  using Wide = boost::multiprecision::checked_int128_t;
  const Wide numerator = Wide(scheduled_interest) * elapsed;
  const Wide magnitude = (2 * abs(numerator) + days_in_period) / (2 * Wide(days_in_period));
  const Wide rounded = numerator < 0 ? Wide(-magnitude) : magnitude;
  LEDGER_ASSERT(rounded >= std::numeric_limits<std::int64_t>::min() && rounded <= std::numeric_limits<std::int64_t>::max(),
                "accrued interest beyond int64");
  return rounded.convert_to<std::int64_t>();
}

}  // namespace ledger::domain
