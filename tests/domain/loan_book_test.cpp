// The loan rules (issue 6) through whole lifecycles: on time, late with fees, partial
// payments, prepayment shortening the term, write-off; close of business idempotent and
// equal day by day or all at once; every repayment allocated to the minor unit.
#include <doctest/doctest.h>

#include <numeric>

#include "ledger/domain/loan_book.hpp"

namespace domain = ledger::domain;
using namespace ledger::domain;

namespace {

Date date(int y, unsigned m, unsigned d) { return Date{std::chrono::year(y), std::chrono::month(m), std::chrono::day(d)}; }
Date plus_days(Date day, int n) { return Date{std::chrono::sys_days(day) + std::chrono::days(n)}; }

// 1,200.00 at 12 % over 12 monthly annuity installments, originated 2026-01-15.
LoanTerms standard_terms() {
  LoanTerms terms;
  terms.principal = 120'000;
  terms.rate_bps = 1'200;
  terms.installments = 12;
  terms.type = ScheduleType::annuity;
  terms.origination_date = date(2026, 1, 15);
  terms.first_due = date(2026, 2, 15);
  terms.origination_fee = 1'000;
  terms.late_fee = 500;
  terms.grace_days = 5;
  return terms;
}

LoanBook active_loan(const LoanTerms& terms = standard_terms()) {
  LoanBook loan = originate(terms);
  apply(loan, disbursement(loan));
  return loan;
}

void close_through(domain::LoanBook& loan, domain::Date day) {
  if (auto closed = close_business_day(loan, day)) apply(loan, *closed);
}

Allocation repay(LoanBook& loan, std::int64_t amount) {
  auto decided = allocate_repayment(loan, amount);
  REQUIRE_MESSAGE(std::holds_alternative<Allocation>(decided),
                  (std::holds_alternative<RepaymentProblem>(decided) ? std::get<RepaymentProblem>(decided).detail : ""));
  const Allocation allocation = std::get<Allocation>(decided);
  CHECK(allocation.total() == amount);  // every minor unit goes somewhere
  std::int64_t by_installment = 0;
  for (const auto& part : allocation.installments) by_installment += part.penalty + part.interest + part.principal;
  CHECK(by_installment == amount);
  apply(loan, allocation);
  return allocation;
}

std::int64_t scheduled_interest(const LoanBook& loan) {
  return std::accumulate(loan.installments.begin(), loan.installments.end(), std::int64_t{0},
                         [](std::int64_t sum, const InstallmentBook& i) { return sum + i.interest; });
}

}  // namespace

TEST_CASE("on time: each installment paid on its due date; no fees, no arrears; repaid at the end") {
  domain::LoanBook loan = active_loan();
  const auto paid = domain::disbursement(loan);
  CHECK(paid.to_borrower == 119'000);
  CHECK(paid.fee == 1'000);
  const std::int64_t interest_total = scheduled_interest(loan);
  std::int64_t interest_paid = 0, principal_paid = 0;
  for (std::size_t k = 0; k < loan.installments.size(); ++k) {
    const InstallmentBook installment = loan.installments[k];
    close_through(loan, installment.due_date);
    CHECK(loan.amount_due() == (installment.principal + installment.interest));
    CHECK(loan.days_past_due == 0);
    // On its due date the period's interest is recognised in full.
    CHECK(loan.interest_recognised == domain::interest_recognised_through(loan, installment.due_date));
    const Allocation allocation = repay(loan, installment.principal + installment.interest);
    CHECK(allocation.penalties == 0);
    interest_paid += allocation.interest;
    principal_paid += allocation.principal;
  }
  CHECK(loan.status == LoanStatus::repaid);
  CHECK(principal_paid == 120'000);
  CHECK(interest_paid == interest_total);
  CHECK(loan.interest_recognised == interest_total);
  CHECK(loan.principal_outstanding() == 0);
  CHECK(std::holds_alternative<domain::RepaymentProblem>(domain::allocate_repayment(loan, 1)));  // repaid: not active
}

TEST_CASE("late: overdue the day after, the late fee once after the grace days, paid first") {
  domain::LoanBook loan = active_loan();
  const InstallmentBook first = loan.installments[0];
  close_through(loan, first.due_date);
  CHECK_FALSE(loan.installments[0].overdue);
  close_through(loan, plus_days(first.due_date, 1));
  CHECK(loan.installments[0].overdue);
  CHECK(loan.days_past_due == 1);
  close_through(loan, plus_days(first.due_date, 5));  // the last day of grace
  CHECK(loan.installments[0].penalty == 0);
  const auto sixth = domain::close_business_day(loan, plus_days(first.due_date, 6));
  REQUIRE(sixth);
  CHECK(sixth->late_fees == std::vector<domain::LateFee>{{1, 500}});
  domain::apply(loan, *sixth);
  for (int day = 7; day < 20; ++day) {
    const auto later = domain::close_business_day(loan, plus_days(first.due_date, day));
    REQUIRE(later);
    CHECK(later->late_fees.empty());  // once per installment
    domain::apply(loan, *later);
  }
  CHECK(loan.days_past_due == 19);
  CHECK(loan.amount_due() == first.principal + first.interest + 500);

  // A partial payment: the penalty first, then interest, then principal.
  const Allocation part = repay(loan, 600);
  CHECK(part.penalties == 500);
  CHECK(part.interest == 100);
  CHECK(part.principal == 0);
  CHECK(loan.installments[0].overdue);
  const Allocation rest = repay(loan, loan.amount_due());
  CHECK(rest.penalties == 0);
  CHECK(rest.interest == first.interest - 100);
  CHECK(rest.principal == first.principal);
  CHECK_FALSE(loan.installments[0].overdue);
  CHECK(loan.days_past_due == 0);
}

TEST_CASE("two installments in arrears: the older is paid first, type by type") {
  domain::LoanBook loan = active_loan();
  close_through(loan, plus_days(loan.installments[1].due_date, 10));
  REQUIRE(loan.installments[0].penalty == 500);
  REQUIRE(loan.installments[1].penalty == 500);
  CHECK(loan.days_past_due == std::chrono::sys_days(plus_days(loan.installments[1].due_date, 10)).time_since_epoch().count() -
                                  std::chrono::sys_days(loan.installments[0].due_date).time_since_epoch().count());
  const std::int64_t interest = loan.installments[0].interest + loan.installments[1].interest;
  const Allocation allocation = repay(loan, 1'000 + interest + 10);
  CHECK(allocation.penalties == 1'000);
  CHECK(allocation.interest == interest);
  CHECK(allocation.principal == 10);
  CHECK(loan.installments[0].principal_paid == 10);  // the oldest first
  CHECK(loan.installments[1].principal_paid == 0);
}

TEST_CASE("prepayment beyond what is due shortens the term from the last installment") {
  domain::LoanBook loan = active_loan();
  const std::int64_t scheduled = scheduled_interest(loan);
  close_through(loan, loan.installments[0].due_date);
  repay(loan, loan.amount_due());
  close_through(loan, plus_days(loan.installments[0].due_date, 10));  // into period 2
  const std::int64_t last_three = loan.installments[9].principal + loan.installments[10].principal + loan.installments[11].principal;
  const Allocation allocation = repay(loan, last_three + 7);
  CHECK(allocation.principal == last_three + 7);
  CHECK(allocation.interest == 0);
  for (int k : {9, 10, 11}) {
    CHECK(loan.installments[static_cast<std::size_t>(k)].settled());
    CHECK(loan.installments[static_cast<std::size_t>(k)].interest_waived);
    CHECK(loan.installments[static_cast<std::size_t>(k)].interest == 0);
  }
  CHECK(loan.installments[8].principal_paid == 7);  // partly prepaid: keeps its interest
  CHECK_FALSE(loan.installments[8].interest_waived);
  CHECK(allocation.interest_reversed == 0);  // nothing of those periods had accrued yet
  // The loan now ends with installment 9.
  for (std::size_t k = 1; k < 9; ++k) {
    close_through(loan, loan.installments[k].due_date);
    repay(loan, loan.amount_due());
  }
  CHECK(loan.status == LoanStatus::repaid);
  CHECK(loan.closed_through == loan.installments[8].due_date);
  CHECK(scheduled_interest(loan) < scheduled);
  CHECK(loan.interest_recognised == scheduled_interest(loan));
}

TEST_CASE("paying off early waives the running period's interest and reverses what accrued of it") {
  domain::LoanBook loan = active_loan();
  close_through(loan, plus_days(loan.terms.origination_date, 10));
  const std::int64_t accrued = loan.interest_recognised;
  CHECK(accrued > 0);
  CHECK(loan.payoff_amount() == 120'000);
  CHECK(std::get<domain::RepaymentProblem>(domain::allocate_repayment(loan, 120'001)).refusal == RepaymentRefusal::overpayment);
  CHECK(std::get<domain::RepaymentProblem>(domain::allocate_repayment(loan, 0)).refusal == RepaymentRefusal::invalid_amount);
  const Allocation allocation = repay(loan, 120'000);
  CHECK(allocation.interest_reversed == accrued);
  CHECK(loan.interest_recognised == 0);
  CHECK(loan.status == LoanStatus::repaid);
}

TEST_CASE("write-off: outstanding principal written off, recognised unpaid interest reversed") {
  domain::LoanBook loan = active_loan();
  close_through(loan, loan.installments[0].due_date);
  repay(loan, loan.amount_due());
  close_through(loan, plus_days(loan.installments[2].due_date, 40));
  const std::int64_t outstanding = loan.principal_outstanding();
  const std::int64_t unpaid_interest = loan.interest_recognised - loan.installments[0].interest;
  const auto written = domain::write_off(loan);
  REQUIRE(written);
  CHECK(written->principal == outstanding);
  CHECK(written->interest_reversed == unpaid_interest);
  CHECK(written->penalties_cancelled == 3 * 500);
  domain::apply(loan, *written);
  CHECK(loan.status == LoanStatus::written_off);
  CHECK(loan.interest_recognised == loan.installments[0].interest);  // what was paid stays
  CHECK_FALSE(domain::write_off(loan));
  CHECK_FALSE(domain::close_business_day(loan, plus_days(loan.installments[3].due_date, 1)));
}

TEST_CASE("close of business: idempotent per date, and many days at once equal day by day") {
  domain::LoanBook day_by_day = active_loan();
  domain::LoanBook at_once = active_loan();
  const Date end = plus_days(day_by_day.installments[3].due_date, 9);
  for (domain::Date day = plus_days(day_by_day.terms.origination_date, 1); day <= end; day = plus_days(day, 1)) {
    close_through(day_by_day, day);
    CHECK_FALSE(domain::close_business_day(day_by_day, day));  // the same date again: nothing
  }
  close_through(at_once, end);
  CHECK(at_once.interest_recognised == day_by_day.interest_recognised);
  CHECK(at_once.installments == day_by_day.installments);
  CHECK(at_once.days_past_due == day_by_day.days_past_due);
  CHECK_FALSE(domain::close_business_day(at_once, plus_days(end, -3)));  // an earlier date: nothing
  // Not disbursed: nothing accrues.
  CHECK_FALSE(domain::close_business_day(domain::originate(standard_terms()), end));
}

TEST_CASE("loan terms out of range are refused with the reason") {
  domain::LoanTerms terms = standard_terms();
  CHECK_FALSE(domain::loan_terms_problem(terms));
  terms.first_due = terms.origination_date;
  CHECK(domain::loan_terms_problem(terms) == "first_due_date must be after the origination date");
  terms = standard_terms();
  terms.origination_fee = terms.principal;
  CHECK(domain::loan_terms_problem(terms).has_value());
  terms = standard_terms();
  terms.late_fee = -1;
  CHECK(domain::loan_terms_problem(terms) == "fees must not be negative");
  terms = standard_terms();
  terms.late_fee = domain::schedule_principal_max + 1;
  CHECK(domain::loan_terms_problem(terms).has_value());
  terms = standard_terms();
  terms.grace_days = 366;
  CHECK(domain::loan_terms_problem(terms).has_value());
  terms = standard_terms();
  terms.installments = 0;
  CHECK(domain::loan_terms_problem(terms) == "installments must be 1 to 600");
  terms = standard_terms();
  terms.rate_bps = 100'001;
  CHECK(domain::loan_terms_problem(terms).has_value());
  terms = standard_terms();
  terms.principal = 0;
  CHECK(domain::loan_terms_problem(terms) == "principal must be positive");
}

TEST_CASE("loan terms: the origination date within 1970-01-01 to 2199-12-31") {
  domain::LoanTerms terms = standard_terms();
  terms.origination_date = domain::Date{std::chrono::year(1969), std::chrono::December, std::chrono::day(31)};
  CHECK(domain::loan_terms_problem(terms).has_value());
  terms = standard_terms();
  terms.first_due = domain::Date{std::chrono::year(2199), std::chrono::June, std::chrono::day(15)};
  CHECK(domain::loan_terms_problem(terms).has_value());  // its last due date passes 2199-12-31
}
