// The domain's rules that the read side answers with too (GET /v1/accounts/{id},
// GET /v1/loans/{id}): one definition each, used by the engine's states and by the queries over
// the read models.
#include <doctest/doctest.h>

#include <limits>

#include "ledger/domain/loan_book.hpp"
#include "ledger/domain/state.hpp"

using namespace ledger;
using namespace ledger::domain;

TEST_CASE("account balances: balance, then available with pending debits and the overdraft") {
  const auto balances = account_balances(Amount(1'000), Amount(300), Amount(200), Amount(50));
  REQUIRE(balances.balance);
  REQUIRE(balances.available);
  CHECK(balances.balance->minor_units() == 700);
  CHECK(balances.available->minor_units() == 550);  // 700 - 200 + 50

  // AccountState answers with the same rule.
  AccountState state;
  state.credits_posted = Amount(1'000);
  state.debits_posted = Amount(300);
  state.debits_pending = Amount(200);
  state.overdraft_limit = Amount(50);
  CHECK(state.balance() == balances.balance);
  CHECK(state.available() == balances.available);
}

TEST_CASE("account balances: an overflow is no number, not a wrapped one") {
  constexpr std::int64_t most = std::numeric_limits<std::int64_t>::max();
  const auto balance_overflows = account_balances(Amount(most), Amount(-1), Amount(0), Amount(0));
  CHECK_FALSE(balance_overflows.balance);
  CHECK_FALSE(balance_overflows.available);
  const auto available_overflows = account_balances(Amount(most), Amount(0), Amount(0), Amount(1));
  REQUIRE(available_overflows.balance);
  CHECK(available_overflows.balance->minor_units() == most);
  CHECK_FALSE(available_overflows.available);
}

namespace {

InstallmentBook installment(std::int32_t number, unsigned month, std::int64_t principal, std::int64_t interest) {
  InstallmentBook book;
  book.number = number;
  book.due_date = Date{std::chrono::year(2026), std::chrono::month(month), std::chrono::day(15)};
  book.principal = principal;
  book.interest = interest;
  return book;
}

}  // namespace

TEST_CASE("installment totals: arrears, what was paid, and the next installment with every arrear before it") {
  std::vector<InstallmentBook> installments{installment(1, 1, 1'000, 100), installment(2, 2, 1'000, 90),
                                            installment(3, 3, 1'000, 80)};
  // The first is settled; the second overdue, partly paid, with a late fee; the third not due.
  installments[0].principal_paid = 1'000;
  installments[0].interest_paid = 100;
  installments[1].principal_paid = 400;
  installments[1].interest_paid = 30;
  installments[1].overdue = true;
  installments[1].penalty = 25;
  installments[1].penalty_paid = 5;

  const auto totals = installment_totals(installments);
  CHECK(totals.principal_outstanding == 600 + 1'000);
  CHECK(totals.interest_paid == 130);
  CHECK(totals.interest_overdue == 60);
  CHECK(totals.penalties_due == 20);
  CHECK(totals.penalties_paid == 5);
  REQUIRE(totals.next_unsettled);
  CHECK(*totals.next_unsettled == 1);
  CHECK(totals.next_due_amount == 600 + 60 + 20);

  LoanBook loan;
  loan.installments = installments;
  CHECK(loan.principal_outstanding() == totals.principal_outstanding);
}

TEST_CASE("installment totals: the next amount covers every earlier installment still owing") {
  std::vector<InstallmentBook> installments{installment(1, 1, 1'000, 100), installment(2, 2, 1'000, 90)};
  installments[0].interest_paid = 100;  // principal unpaid, yet counted as owing before the next
  installments[0].principal_paid = 999;
  const auto totals = installment_totals(installments);
  REQUIRE(totals.next_unsettled);
  CHECK(*totals.next_unsettled == 0);
  CHECK(totals.next_due_amount == 1);

  installments[0].principal_paid = 1'000;
  installments[1].principal_paid = 1'000;
  installments[1].interest_paid = 90;
  const auto repaid = installment_totals(installments);
  CHECK_FALSE(repaid.next_unsettled);
  CHECK(repaid.next_due_amount == 0);
  CHECK(repaid.principal_outstanding == 0);
}
