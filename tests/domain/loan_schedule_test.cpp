// Loan schedules (issue 6) against an independent reference in exact rationals, to the minor
// unit, over hundreds of parameter sets; dates and accrual.
#include <doctest/doctest.h>

#include <boost/multiprecision/cpp_int.hpp>

#include "ledger/domain/loan_schedule.hpp"

namespace domain = ledger::domain;
using namespace ledger::domain;
using Rational = boost::multiprecision::cpp_rational;
using Integer = boost::multiprecision::cpp_int;

namespace {

Date date(int y, unsigned m, unsigned d) {
  return Date{std::chrono::year(y), std::chrono::month(m), std::chrono::day(d)};
}

// The reference, written apart from the engine's: floor plus a comparison of the fraction
// with one half, and (1 + r)^−n as the reciprocal of a power by squaring.
std::int64_t reference_round(const Rational& q) {
  const bool negative = q < 0;
  const Rational magnitude = negative ? Rational(-q) : q;
  const Integer whole = boost::multiprecision::numerator(magnitude) / boost::multiprecision::denominator(magnitude);
  const Integer rounded = magnitude - Rational(whole) >= Rational(1, 2) ? whole + 1 : whole;
  return (negative ? Integer(-rounded) : rounded).convert_to<std::int64_t>();
}

Rational power(Rational base, int exponent) {
  Rational result = 1;
  while (exponent > 0) {
    if (exponent & 1) result *= base;
    base *= base;
    exponent >>= 1;
  }
  return result;
}

std::vector<std::pair<std::int64_t, std::int64_t>> reference_schedule(std::int64_t p, int rate_bps, int n, ScheduleType type) {
  const Rational r = Rational(rate_bps) / 10'000 / 12;
  std::int64_t level;
  if (type == ScheduleType::equal_principal || rate_bps == 0) {
    level = reference_round(Rational(p) / n);
  } else {
    level = reference_round(Rational(p) * r / (1 - 1 / power(1 + r, n)));
  }
  std::vector<std::pair<std::int64_t, std::int64_t>> rows;  // (principal, interest)
  std::int64_t outstanding = p;
  for (int k = 1; k <= n; ++k) {
    const std::int64_t interest = reference_round(Rational(outstanding) * r);
    std::int64_t principal = (type == ScheduleType::annuity && rate_bps != 0) ? level - interest : level;
    if (principal < 0) principal = 0;
    if (principal > outstanding || k == n) principal = outstanding;
    rows.emplace_back(principal, interest);
    outstanding -= principal;
  }
  return rows;
}

}  // namespace

TEST_CASE("schedules equal an exact reference for 980 parameter sets; principals sum to P") {
  const int rates[] = {0, 1, 350, 999, 1'200, 2'500, 3'600};  // 0 % to 36 %
  const int terms[] = {1, 2, 3, 7, 12, 36, 60, 120, 240, 360};
  const std::int64_t principals[] = {1, 7, 100, 99'999, 1'000'000, 123'456'789, 1'000'000'000'000};
  int sets = 0;
  for (const auto type : {ScheduleType::annuity, ScheduleType::equal_principal}) {
    for (const int rate : rates) {
      for (const int n : terms) {
        for (const std::int64_t p : principals) {
          ++sets;
          INFO(to_string(type) << " P=" << p << " rate=" << rate << " n=" << n);
          const auto schedule = domain::compute_schedule({p, rate, n, type, date(2026, 1, 31)});
          const auto expected = reference_schedule(p, rate, n, type);
          REQUIRE(schedule.size() == static_cast<std::size_t>(n));
          std::int64_t principal_sum = 0;
          for (int k = 0; k < n; ++k) {
            CHECK(schedule[k].number == k + 1);
            CHECK(schedule[k].principal == expected[k].first);
            CHECK(schedule[k].interest == expected[k].second);
            CHECK(schedule[k].principal >= 0);
            principal_sum += schedule[k].principal;
          }
          CHECK(principal_sum == p);
        }
      }
    }
  }
  CHECK(sets == 980);
}

TEST_CASE("known values: 1,000.00 at 12 % over 12 months pays 88.85 a month") {
  const auto schedule = domain::compute_schedule({100'000, 1'200, 12, ScheduleType::annuity, date(2026, 2, 15)});
  CHECK(schedule[0].total() == 8'885);
  CHECK(schedule[0].interest == 1'000);
  CHECK(schedule[0].principal == 7'885);
  for (int k = 0; k < 11; ++k) CHECK(schedule[k].total() == 8'885);
  CHECK(schedule[11].due_date == date(2027, 1, 15));
  // Equal principal: 8,333 a month and the last takes 8,337; interest falls with the balance.
  const auto flat = domain::compute_schedule({100'000, 1'200, 12, ScheduleType::equal_principal, date(2026, 2, 15)});
  CHECK(flat[0].principal == 8'333);
  CHECK(flat[11].principal == 8'337);
  CHECK(flat[0].interest == 1'000);
  CHECK(flat[1].interest == 917);  // round(91,667 · 0.01) = round(916.67)
  // Interest-free: round(P / n), the last the remainder.
  const auto free = domain::compute_schedule({1'000, 0, 3, ScheduleType::annuity, date(2026, 2, 15)});
  CHECK(free[0].principal == 333);
  CHECK(free[2].principal == 334);
  CHECK(free[0].interest == 0);
  // round(P / n) times n - 1 would pass P: later principals are what remains, never negative.
  const auto tiny = domain::compute_schedule({2, 0, 4, ScheduleType::equal_principal, date(2026, 2, 15)});
  CHECK(tiny[0].principal == 1);
  CHECK(tiny[1].principal == 1);
  CHECK(tiny[2].principal == 0);
  CHECK(tiny[3].principal == 0);
}

TEST_CASE("terms out of range are refused with what is wrong") {
  CHECK(domain::schedule_terms_problem({0, 100, 12, ScheduleType::annuity, date(2026, 1, 1)}) == "principal must be positive");
  CHECK(domain::schedule_terms_problem({10, -1, 12, ScheduleType::annuity, date(2026, 1, 1)}) == "rate_bps must be 0 to 100000");
  CHECK(domain::schedule_terms_problem({10, 100'001, 12, ScheduleType::annuity, date(2026, 1, 1)}).has_value());
  CHECK(domain::schedule_terms_problem({10, 100, 0, ScheduleType::annuity, date(2026, 1, 1)}) == "installments must be 1 to 600");
  CHECK(domain::schedule_terms_problem({10, 100, 601, ScheduleType::annuity, date(2026, 1, 1)}).has_value());
  CHECK_FALSE(domain::schedule_terms_problem({10, 100'000, 600, ScheduleType::annuity, date(2026, 1, 1)}).has_value());
  CHECK(domain::schedule_terms_problem({domain::schedule_principal_max + 1, 100, 12, ScheduleType::annuity, date(2026, 1, 1)}) ==
        "principal must be at most 10^15 minor units");
  CHECK_FALSE(domain::schedule_terms_problem({domain::schedule_principal_max, 100'000, 600, ScheduleType::annuity, date(2026, 1, 1)}));
  CHECK_THROWS_AS((void)domain::compute_schedule({10, 100, 0, ScheduleType::annuity, date(2026, 1, 1)}), std::invalid_argument);
  // The extremes still compute: 1000 % a year over 600 months.
  const auto extreme = domain::compute_schedule({1'000'000'000'000, 100'000, 600, ScheduleType::annuity, date(2026, 1, 1)});
  std::int64_t sum = 0;
  for (const auto& installment : extreme) sum += installment.principal;
  CHECK(sum == 1'000'000'000'000);
}

TEST_CASE("dates: parsing, month arithmetic clamped to the month's end, day counts") {
  CHECK(domain::parse_date("2026-02-28") == date(2026, 2, 28));
  CHECK_FALSE(domain::parse_date("2026-02-29"));
  CHECK(domain::parse_date("2024-02-29") == date(2024, 2, 29));
  for (const char* bad : {"2026-13-01", "2026-1-01", "20260101", "2026-01-01T00:00", "", "yyyy-mm-dd"}) {
    CHECK_FALSE(domain::parse_date(bad));
  }
  CHECK(to_string(date(2026, 3, 9)) == "2026-03-09");
  CHECK(domain::add_months(date(2026, 1, 31), 1) == date(2026, 2, 28));
  CHECK(domain::add_months(date(2024, 1, 31), 1) == date(2024, 2, 29));
  CHECK(domain::add_months(date(2026, 1, 31), 2) == date(2026, 3, 31));
  CHECK(domain::add_months(date(2026, 11, 15), 3) == date(2027, 2, 15));
  CHECK(domain::days_between(date(2026, 1, 31), date(2026, 3, 1)) == 29);
  CHECK(domain::days_between(date(2026, 3, 1), date(2026, 1, 31)) == -29);
}

TEST_CASE("accrual spreads a period's interest over its days without drift") {
  for (const std::int64_t interest : {0L, 1L, 7L, 1'000L, 916L, 123'456'789L}) {
    for (const std::int64_t days : {28L, 29L, 30L, 31L, 1L}) {
      std::int64_t previous = 0;
      for (std::int64_t day = 0; day <= days; ++day) {
        const std::int64_t accrued = domain::accrued_interest(interest, day, days);
        CHECK(accrued >= previous);  // never runs backwards
        CHECK(accrued - previous <= interest / days + 1);
        previous = accrued;
      }
      CHECK(previous == interest);  // on the due date: exactly the scheduled interest
      CHECK(domain::accrued_interest(interest, days + 5, days) == interest);
    }
  }
  CHECK(domain::accrued_interest(1'000, 15, 30) == 500);
  CHECK(domain::accrued_interest(1'000, 1, 30) == 33);
}

// accrued_interest works in fixed 128-bit integers: the same as exact rational arithmetic,
// halves rounded away from zero, at the ends of int64 too.
TEST_CASE("accrued interest equals the exact rational quotient, rounded half away from zero") {
  // The file's reference rounding, written apart from the engine's.
  auto exact = [](std::int64_t interest, std::int64_t elapsed, std::int64_t days) {
    Integer product = interest;
    product *= std::clamp<std::int64_t>(elapsed, 0, days);
    return reference_round(Rational(product, Integer(days)));
  };
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  const std::int64_t interests[] = {0, 1, -1, 3, -3, 999, 1'000, -1'001, 123'456'789, 833'333'333'333'333, max, max - 1, min, min + 1};
  const std::int64_t periods[] = {1, 2, 3, 7, 28, 29, 30, 31, 365, 83'000, max};
  for (const std::int64_t interest : interests) {
    for (const std::int64_t days : periods) {
      for (const std::int64_t elapsed : {std::int64_t{-5}, std::int64_t{0}, std::int64_t{1}, days / 2, days / 3, days - 1, days, days < max ? days + 1 : days}) {
        CHECK_MESSAGE(domain::accrued_interest(interest, elapsed, days) == exact(interest, elapsed, days),
                      interest << " over " << elapsed << " of " << days << " days");
      }
    }
  }
  CHECK(domain::accrued_interest(1, 1, 2) == 1);    // a half rounds away from zero
  CHECK(domain::accrued_interest(-1, 1, 2) == -1);
  CHECK(domain::accrued_interest(5, 1, 4) == 1);    // 1.25
  CHECK(domain::accrued_interest(7, 1, 4) == 2);    // 1.75
}

TEST_CASE("dates are bounded: every due date of a schedule within 1970-01-01 to 2199-12-31") {
  CHECK(domain::is_business_date(date(1970, 1, 1)));
  CHECK(domain::is_business_date(date(2199, 12, 31)));
  CHECK_FALSE(domain::is_business_date(date(1969, 12, 31)));
  CHECK_FALSE(domain::is_business_date(date(2200, 1, 1)));
  CHECK(domain::parse_business_date("2199-12-31") == date(2199, 12, 31));
  CHECK_FALSE(domain::parse_business_date("9999-06-15"));
  CHECK_FALSE(domain::parse_business_date("0000-01-01"));
  CHECK(domain::parse_date("9999-06-15") == date(9999, 6, 15));  // stored events still decode
  // The last of 12 due dates from 2199-06-15 is 2200-05-15: refused, naming the bound.
  const auto past = domain::schedule_terms_problem({1'000, 100, 12, ScheduleType::annuity, date(2199, 6, 15)});
  REQUIRE(past);
  CHECK(past->find("2199-12-31") != std::string::npos);
  CHECK(domain::schedule_terms_problem({1'000, 100, 1, ScheduleType::annuity, date(9999, 6, 15)}).has_value());
  CHECK(domain::schedule_terms_problem({1'000, 100, 1, ScheduleType::annuity, date(1969, 12, 31)}).has_value());
  CHECK_FALSE(domain::schedule_terms_problem({1'000, 100, 12, ScheduleType::annuity, date(2199, 1, 31)}));
  CHECK_FALSE(domain::schedule_terms_problem({1'000, 100, 600, ScheduleType::annuity, date(2150, 1, 1)}));
}
