// The JSON views the HTTP front and the CLI share (ledger/api/json_views.hpp): the router's
// field names are the contract, and the CLI prints the same text.
#include <doctest/doctest.h>

#include "ledger/api/json_views.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/engine/close_of_business.hpp"

using namespace ledger;

namespace {

engine::BalanceAsOf alice() {
  engine::BalanceAsOf found;
  found.state.exists = true;
  found.state.id = "alice";
  found.state.currency = *Currency::parse("EUR");
  found.state.credits_posted = Amount(1'000);
  found.state.debits_posted = Amount(250);
  found.state.debits_pending = Amount(100);
  found.state.overdraft_limit = Amount(40);
  found.state.version = StreamVersion(4);
  found.position = GlobalPosition(9);
  found.recorded_at_us = *parse_rfc3339("2026-01-31T12:00:00Z");
  return found;
}

}  // namespace

TEST_CASE("balance as of a position: every field, available with the overdraft") {
  const std::string json = api::balance_as_of_json("alice", alice(), {std::nullopt, 9});
  CHECK(json ==
        R"({"id":"alice","at_position":9,"position":9,"recorded_at":"2026-01-31T12:00:00.000000Z","currency":"EUR",)"
        R"("status":"open","debits_posted":250,"credits_posted":1000,"debits_pending":100,"credits_pending":0,)"
        R"("overdraft_limit":40,"balance":750,"available":690,"version":4})");
}

TEST_CASE("balance as of a time names the time asked for") {
  const std::string json =
      api::balance_as_of_json("alice", alice(), {parse_rfc3339("2026-02-01T00:00:00Z"), std::nullopt});
  CHECK(json.find(R"("as_of":"2026-02-01T00:00:00.000000Z","position":9,)") != std::string::npos);
  CHECK(json.find("at_position") == std::string::npos);
}

TEST_CASE("close of business: the first failure when there is one, the seconds when given") {
  const auto date = std::chrono::year_month_day{std::chrono::year(2026), std::chrono::February, std::chrono::day(20)};
  engine::CloseOfBusinessResult result;
  result.loans = 3;
  result.closed = 2;
  CHECK(api::close_of_business_json(date, result) == R"({"date":"2026-02-20","loans":3,"closed":2,"failed":0})");
  result.failed = 1;
  result.first_failure = "loan L3: loan_not_active";
  CHECK(api::close_of_business_json(date, result, 1.5) ==
        R"({"date":"2026-02-20","loans":3,"closed":2,"failed":1,"first_failure":"loan L3: loan_not_active",)"
        R"("seconds":1.5})");
}
