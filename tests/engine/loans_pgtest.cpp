// Loans through the engine and PostgreSQL (issue 6): each step of a lifecycle moves money only
// by transfers (the books balance per currency after every step, checked by replay verify),
// the loan's fold equals the loan rules applied by hand, and bad input writes nothing.
#include <doctest/doctest.h>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/close_of_business.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/replay/replay.hpp"
#include "store_sql.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;

namespace {

Date date(int y, unsigned m, unsigned d) { return Date{std::chrono::year(y), std::chrono::month(m), std::chrono::day(d)}; }
Date plus_days(Date day, int n) { return Date{std::chrono::sys_days(day) + std::chrono::days(n)}; }

OriginateLoan loan_command(std::string id) {
  OriginateLoan loan;
  loan.id = std::move(id);
  loan.borrower = "alice";
  loan.currency = eur();
  loan.principal = Amount(120'000);
  loan.rate_bps = 1'200;
  loan.installments = 12;
  loan.schedule = ScheduleType::annuity;
  loan.origination_date = "2026-01-15";
  loan.first_due_date = "2026-02-15";
  loan.origination_fee = Amount(1'000);
  loan.late_fee = Amount(500);
  loan.grace_days = 5;
  return loan;
}

struct LoanLedger {
  explicit LoanLedger(const test::TestDatabase& database)
      : url(database.app_url()), engine(test::engine_settings(database)), pool(make_pool(database.app_url())) {
    REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
    REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(500'000)})).accepted());
  }
  static db::ConnectionPool make_pool(const std::string& url) {
    db::PoolSettings settings;
    settings.url = url;
    settings.connections_max = 3;
    return db::ConnectionPool(settings);
  }
  CommandOutcome run(SingleCommand body) { return engine.execute(command(std::move(body))); }
  void ok(SingleCommand body) {
    const auto outcome = run(std::move(body));
    REQUIRE_MESSAGE(outcome.accepted(), outcome.detail);
  }
  // A rejection with `code` that writes nothing.
  void refused(SingleCommand body, RejectionCode code) {
    const auto before = head();
    const auto outcome = run(std::move(body));
    CHECK_MESSAGE(outcome.code == code, to_string(outcome.code) << ": " << outcome.detail);
    CHECK(head() == before);
  }
  long long head() const { return test::scalar(url, "SELECT position FROM event_store_head"); }
  std::int64_t balance(const std::string& account) {
    return engine.read_account(account).value().balance().value().minor_units();
  }
  // Double entry over the whole log: every currency sums to zero.
  void check_books_balance() {
    const auto result = replay::verify(pool, {});
    REQUIRE_MESSAGE(result.ok, result.problem);
    for (const auto& [currency, totals] : result.checkpoints.back().totals) {
      CHECK_MESSAGE(totals.posted == 0, currency);
      CHECK(totals.pending == 0);
    }
  }
  std::string url;
  Engine engine;
  db::ConnectionPool pool;
};

}  // namespace

TEST_CASE("a loan's life through the engine: fold equals the rules, books balance after every step") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  const std::string receivable = domain::system_account_id(SystemAccount::loan_receivable, "EUR");
  const std::string interest_income = domain::system_account_id(SystemAccount::interest_income, "EUR");
  const std::string fee_income = domain::system_account_id(SystemAccount::fee_income, "EUR");
  const std::string expense = domain::system_account_id(SystemAccount::write_off_expense, "EUR");

  ledger.ok(loan_command("L1"));
  domain::LoanBook expected = domain::originate({120'000, 1'200, 12, ScheduleType::annuity, date(2026, 1, 15), date(2026, 2, 15), 1'000, 500, 5});
  auto same = [&] {
    const auto loan = ledger.engine.read_loan("L1");
    REQUIRE(loan);
    CHECK(loan->book == expected);
    CHECK(loan->borrower == "alice");
    ledger.check_books_balance();
  };
  same();

  ledger.ok(domain::DisburseLoan{"L1"});
  apply(expected, domain::disbursement(expected));
  same();
  CHECK(ledger.balance("alice") == 500'000 + 119'000);
  CHECK(ledger.balance(receivable) == -120'000);
  CHECK(ledger.balance(fee_income) == 1'000);

  // On time: close of business on the first due date, then pay it.
  const Date first_due = expected.installments[0].due_date;
  ledger.ok(domain::CloseLoanBusinessDay{"L1", to_string(first_due)});
  apply(expected, *domain::close_business_day(expected, first_due));
  const std::int64_t first = expected.amount_due();
  ledger.ok(domain::RepayLoan{"L1", Amount(first), "r1"});
  apply(expected, std::get<domain::Allocation>(domain::allocate_repayment(expected, first)));
  same();
  CHECK(ledger.balance(interest_income) == expected.installments[0].interest);

  // Close of business again for the same date: accepted, nothing written.
  const auto head = ledger.head();
  ledger.ok(domain::CloseLoanBusinessDay{"L1", to_string(first_due)});
  CHECK(ledger.head() == head);

  // Late: ten days past the second due date, with the late fee; then paid, the fee first.
  const Date late = plus_days(expected.installments[1].due_date, 10);
  ledger.ok(domain::CloseLoanBusinessDay{"L1", to_string(late)});
  apply(expected, *close_business_day(expected, late));
  same();
  CHECK(expected.installments[1].penalty == 500);
  CHECK(expected.days_past_due == 10);
  const std::int64_t arrears = expected.amount_due();
  ledger.ok(domain::RepayLoan{"L1", Amount(arrears - 1), "r2"});  // a partial payment
  apply(expected, std::get<domain::Allocation>(allocate_repayment(expected, arrears - 1)));
  same();
  CHECK(ledger.balance(fee_income) == 1'000 + 500);

  // Prepayment beyond what is due: the last installments' principal, the term shortens.
  const std::int64_t prepaid = 1 + expected.installments[11].principal + expected.installments[10].principal;
  ledger.ok(domain::RepayLoan{"L1", Amount(prepaid), "r3"});
  apply(expected, std::get<domain::Allocation>(allocate_repayment(expected, prepaid)));
  same();
  CHECK(expected.installments[11].interest_waived);

  // Write-off: the rest of the principal to expense; the receivable is cleared.
  ledger.ok(domain::CloseLoanBusinessDay{"L1", to_string(plus_days(expected.installments[4].due_date, 3))});
  apply(expected, *close_business_day(expected, plus_days(expected.installments[4].due_date, 3)));
  const std::int64_t outstanding = expected.principal_outstanding();
  ledger.ok(domain::WriteOffLoan{"L1"});
  apply(expected, *domain::write_off(expected));
  same();
  CHECK(expected.status == LoanStatus::written_off);
  CHECK(ledger.balance(expense) == -outstanding);
  CHECK(ledger.balance(receivable) == 0);
  ledger.refused(domain::RepayLoan{"L1", Amount(1), "r4"}, RejectionCode::loan_not_active);
  ledger.refused(domain::WriteOffLoan{"L1"}, RejectionCode::loan_not_active);
}

TEST_CASE("a loan repaid on time closes as repaid and clears the receivable") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  auto small = loan_command("L2");
  small.installments = 3;
  small.origination_fee = Amount(0);
  ledger.ok(small);
  ledger.ok(domain::DisburseLoan{"L2"});
  for (int k = 0; k < 3; ++k) {
    const auto loan = ledger.engine.read_loan("L2").value();
    const Date due = loan.book.installments[static_cast<std::size_t>(k)].due_date;
    ledger.ok(domain::CloseLoanBusinessDay{"L2", to_string(due)});
    const auto now_due = ledger.engine.read_loan("L2").value().book.amount_due();
    ledger.ok(domain::RepayLoan{"L2", Amount(now_due), "p" + std::to_string(k)});
  }
  const auto loan = ledger.engine.read_loan("L2").value();
  CHECK(loan.book.status == LoanStatus::repaid);
  CHECK(ledger.balance(domain::system_account_id(SystemAccount::loan_receivable, "EUR")) == 0);
  ledger.check_books_balance();
}

TEST_CASE("bad loan input gets its own code and writes nothing") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  auto bad = [&](auto change, RejectionCode code) {
    auto loan = loan_command("bad");
    change(loan);
    ledger.refused(loan, code);
  };
  bad([](OriginateLoan& l) { l.rate_bps = 100'001; }, RejectionCode::invalid_loan_terms);
  bad([](OriginateLoan& l) { l.installments = 0; }, RejectionCode::invalid_loan_terms);
  bad([](OriginateLoan& l) { l.installments = 601; }, RejectionCode::invalid_loan_terms);
  bad([](OriginateLoan& l) { l.principal = Amount(0); }, RejectionCode::invalid_loan_terms);
  bad([](OriginateLoan& l) { l.first_due_date = "2026-01-10"; }, RejectionCode::invalid_loan_terms);
  bad([](OriginateLoan& l) { l.first_due_date = "2026-02-30"; }, RejectionCode::invalid_date);
  bad([](OriginateLoan& l) { l.borrower = "nobody"; }, RejectionCode::unknown_account);
  bad([](OriginateLoan& l) { l.currency = *Currency::parse("USD"); }, RejectionCode::currency_mismatch);
  bad([](OriginateLoan& l) { l.id = std::string(65, 'x'); }, RejectionCode::invalid_id);
  bad([](OriginateLoan& l) { l.id = "L~1"; }, RejectionCode::invalid_id);

  ledger.ok(loan_command("L3"));
  ledger.refused(loan_command("L3"), RejectionCode::duplicate_id);
  ledger.refused(domain::RepayLoan{"L3", Amount(10), "r"}, RejectionCode::loan_not_active);  // not disbursed
  ledger.ok(domain::DisburseLoan{"L3"});
  ledger.refused(domain::DisburseLoan{"L3"}, RejectionCode::loan_already_disbursed);
  ledger.refused(domain::RepayLoan{"L3", Amount(120'001), "r"}, RejectionCode::overpayment);
  ledger.refused(domain::RepayLoan{"L3", Amount(0), "r"}, RejectionCode::invalid_amount);
  ledger.refused(domain::RepayLoan{"nope", Amount(10), "r"}, RejectionCode::unknown_loan);
  ledger.refused(domain::CloseLoanBusinessDay{"L3", "2026-13-01"}, RejectionCode::invalid_date);
  ledger.refused(domain::CloseLoanBusinessDay{"nope", "2026-03-01"}, RejectionCode::unknown_loan);
  // The borrower cannot pay what it does not have: insufficient funds, nothing written.
  REQUIRE(ledger.engine.execute(command(domain::Withdrawal{"alice", Amount(ledger.balance("alice"))})).accepted());
  ledger.refused(domain::RepayLoan{"L3", Amount(10), "r"}, RejectionCode::insufficient_funds);
  ledger.check_books_balance();
}

TEST_CASE("close of business over many loans: once per date, and a run cut short finishes when run again") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  constexpr int loans = 30;
  for (int i = 0; i < loans; ++i) {
    ledger.ok(loan_command("M" + std::to_string(i)));
    ledger.ok(domain::DisburseLoan{"M" + std::to_string(i)});
  }
  domain::LoanBook expected = domain::originate({120'000, 1'200, 12, ScheduleType::annuity, date(2026, 1, 15), date(2026, 2, 15), 1'000, 500, 5});
  apply(expected, domain::disbursement(expected));
  const Date day = date(2026, 2, 25);  // past the first due date and its grace days
  apply(expected, *domain::close_business_day(expected, day));

  // A run cut short: the first third of the loans closed by hand, as a killed run leaves them.
  for (int i = 0; i < loans / 3; ++i) ledger.ok(domain::CloseLoanBusinessDay{"M" + std::to_string(i), to_string(day)});
  const EventStore store(ledger.pool);
  std::int64_t last_progress = 0;
  const auto rerun = close_of_business(ledger.engine, store, day, {16, 7}, [&](std::int64_t visited) { last_progress = visited; });
  CHECK(rerun.loans == loans);
  CHECK(rerun.closed == loans - loans / 3);
  CHECK(rerun.failed == 0);
  CHECK(last_progress == loans);
  for (int i = 0; i < loans; ++i) CHECK(ledger.engine.read_loan("M" + std::to_string(i))->book == expected);

  const auto head = ledger.head();
  const auto again = close_of_business(ledger.engine, store, day);
  CHECK(again.loans == loans);
  CHECK(again.closed == 0);  // the same date again changes nothing
  CHECK(ledger.head() == head);
  ledger.check_books_balance();
}

// Migration 0014. Close of business pages through every loan by its loan_disbursed event; with
// the type a parameter, or no index on it, each page scanned the log after the page before
// (230 to 430 ms a page on a store of 1,000,000 events, issue 18), and fetching each loan's row
// from the log took 130 ms a page. The partial index answers the statement alone only when the
// statement names the type as the index's predicate does (in the generic plan a prepared
// statement settles on too) and reads no column the index lacks.
TEST_CASE("close of business lists its loans through an index of their loan_disbursed events") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  for (int i = 0; i < 3; ++i) {
    ledger.ok(loan_command("P" + std::to_string(i)));
    ledger.ok(domain::DisburseLoan{"P" + std::to_string(i)});
  }
  ledger.ok(loan_command("never-disbursed"));

  {
    // Pages all-visible, as autovacuum leaves the log (migration 0013): the index alone answers.
    pqxx::connection admin(database.admin_url());
    pqxx::nontransaction vacuum(admin);
    vacuum.exec("VACUUM (ANALYZE) events");
  }
  pqxx::connection connection(database.app_url());
  pqxx::nontransaction work(connection);
  work.exec("SET plan_cache_mode = force_generic_plan");
  // As on a large log: a table this small is cheapest read whole.
  work.exec("SET enable_seqscan = off");
  work.exec(std::string("PREPARE listing AS ") + domain::sql::loans_disbursed_statement.text);
  std::string plan;
  for (const auto& row : work.exec("EXPLAIN EXECUTE listing(0, 10)")) plan += std::string(row[0].c_str()) + "\n";
  CHECK_MESSAGE(plan.find("Index Only Scan using events_loan_disbursed_idx") != std::string::npos, plan);
  CHECK_MESSAGE(plan.find("Filter") == std::string::npos, plan);  // no row read to be dropped

  // The pages hold exactly the disbursed loans, in order, whatever the page size.
  const EventStore store(ledger.pool);
  const auto first = store.loans_disbursed(GlobalPosition(0), 2);
  REQUIRE(first.size() == 2);
  CHECK(first[0].second == "loan-P0");
  CHECK(first[1].second == "loan-P1");
  const auto rest = store.loans_disbursed(first.back().first, 2);
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].second == "loan-P2");
  CHECK(store.loans_disbursed(rest.back().first, 2).empty());
}

TEST_CASE("issue 13: a first due date whose schedule passes 2199-12-31 is refused and nothing is written") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  // The request: its last due date 10000-05-15 could never be decoded again.
  auto far = loan_command("far");
  far.first_due_date = "9999-06-15";
  ledger.refused(far, RejectionCode::invalid_date);
  auto past_bound = loan_command("past-bound");
  past_bound.first_due_date = "2199-06-15";  // the twelfth due date is 2200-05-15
  ledger.refused(past_bound, RejectionCode::invalid_loan_terms);
  CHECK_FALSE(ledger.engine.read_loan("far"));
  CHECK_FALSE(ledger.engine.read_loan("past-bound"));
  ledger.check_books_balance();
}

TEST_CASE("issue 13: a retried repayment charges once; the same repayment id with another amount is duplicate_id") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  ledger.ok(loan_command("L1"));
  ledger.ok(domain::DisburseLoan{"L1"});
  ledger.ok(domain::CloseLoanBusinessDay{"L1", "2026-02-15"});
  const std::int64_t interest = ledger.engine.read_loan("L1")->book.installments[0].interest;
  const auto first = ledger.run(domain::RepayLoan{"L1", Amount(interest), "r1"});
  REQUIRE(first.accepted());
  const auto head = ledger.head();
  const auto balance = ledger.balance("alice");
  const auto loan = ledger.engine.read_loan("L1");

  const auto again = ledger.run(domain::RepayLoan{"L1", Amount(interest), "r1"});
  CHECK_MESSAGE(again.accepted(), again.detail);
  CHECK(again.resource_ids == std::vector<std::string>{"r1"});
  CHECK(ledger.head() == head);  // no second transfer
  CHECK(ledger.balance("alice") == balance);
  CHECK(ledger.engine.read_loan("L1") == loan);

  ledger.refused(domain::RepayLoan{"L1", Amount(interest + 1), "r1"}, RejectionCode::duplicate_id);
  CHECK(ledger.balance("alice") == balance);
  ledger.check_books_balance();
}

TEST_CASE("issue 13: a teller's transfer named like a derived id cannot block a loan") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  ledger.ok(domain::OpenAccount{"bob", eur()});
  ledger.ok(domain::Transfer{"L1.d", "alice", "bob", Amount(1), eur()});
  ledger.ok(domain::Transfer{"L1.f", "alice", "bob", Amount(1), eur()});
  ledger.ok(loan_command("L1"));
  ledger.ok(domain::DisburseLoan{"L1"});
  CHECK(ledger.balance("alice") == 500'000 - 2 + 119'000);
  ledger.refused(domain::Transfer{domain::derived_id("L2", "disbursement"), "alice", "bob", Amount(1), eur()}, RejectionCode::invalid_id);
  ledger.check_books_balance();
}

TEST_CASE("issue 13: transfers and holds naming a system account are refused with system_account") {
  test::TestDatabase database;
  LoanLedger ledger(database);
  ledger.ok(loan_command("L1"));
  ledger.ok(domain::DisburseLoan{"L1"});
  const std::string receivable = domain::system_account_id(SystemAccount::loan_receivable, "EUR");
  const std::string fee_income = domain::system_account_id(SystemAccount::fee_income, "EUR");
  ledger.refused(domain::Transfer{"steal", receivable, "alice", Amount(1'000), eur()}, RejectionCode::system_account);
  ledger.refused(domain::Transfer{"pay", "alice", fee_income, Amount(1'000), eur()}, RejectionCode::system_account);
  ledger.refused(domain::PlaceHold{"hold", receivable, "alice", Amount(1'000), eur()}, RejectionCode::system_account);
  domain::Command batch = command(domain::Deposit{"alice", Amount(1)});
  batch.body = domain::CommandBody{domain::LinkedCommands{{domain::Deposit{"alice", Amount(1)}, domain::Transfer{"t", fee_income, "alice", Amount(1), eur()}}}};
  const auto before = ledger.head();
  CHECK(ledger.engine.execute(std::move(batch)).code == RejectionCode::system_account);
  CHECK(ledger.head() == before);
  ledger.check_books_balance();
}

TEST_CASE("a day close is never skipped on a loan state another engine has changed since it was cached") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    EngineSettings settings = test::engine_settings(database);
    settings.decide_while_committing = pipelined;
    Engine a(settings);
    Engine b(settings);
    REQUIRE(a.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
    REQUIRE(a.execute(command(loan_command("L1"))).accepted());
    // b caches L1 as originated: closing a day of it has nothing to do and writes nothing.
    const auto early = b.execute(command(domain::CloseLoanBusinessDay{"L1", "2026-01-20"}));
    REQUIRE(early.accepted());
    CHECK(early.position.value() == 0);
    // a disburses it; b's day close must see an active loan, not skip it from its cache.
    REQUIRE(a.execute(command(domain::DisburseLoan{"L1"})).accepted());
    const auto closed = b.execute(command(domain::CloseLoanBusinessDay{"L1", "2026-02-20"}));
    REQUIRE_MESSAGE(closed.accepted(), closed.detail);
    CHECK(closed.position.value() > 0);
    Engine fresh(settings);
    const auto loan = fresh.read_loan("L1");
    REQUIRE(loan.has_value());
    REQUIRE(loan->book.closed_through.has_value());
    CHECK(*loan->book.closed_through == date(2026, 2, 20));
  }
}
