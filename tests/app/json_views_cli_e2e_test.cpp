// `ledger replay balance --json` and `ledger loans close-of-business --json` print exactly the
// JSON the HTTP front answers (ledger/api/json_views.hpp): one view each, the router's names.
#include <doctest/doctest.h>

#include "../engine/engine_fixture.hpp"
#include "ledger/api/json_views.hpp"
#include "ledger/core/process.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/engine/close_of_business.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;

TEST_CASE("the CLI's --json as-of balance and close of business are the HTTP answers") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    OpenAccount alice{"alice", eur()};
    alice.overdraft_limit = Amount(40);
    REQUIRE(engine.execute(command(alice)).accepted());
    REQUIRE(engine.execute(command(OpenAccount{"bob", eur()})).accepted());
    REQUIRE(engine.execute(command(Deposit{"alice", Amount(1'000)})).accepted());
    REQUIRE(engine.execute(command(Transfer{"t-1", "alice", "bob", Amount(250), eur()})).accepted());
  }
  const auto head = test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  auto run = [&](std::vector<std::string> arguments, std::string& output) {
    arguments.insert(arguments.begin(), {test::ledger_binary(), "--home", "/tmp/ledger-json-views-none",
                                         "--database-url", database.app_url(), "--log-level", "warn"});
    output.clear();
    return process::run(arguments, output);
  };

  std::string output;
  auto status = run({"replay", "--json", "balance", "--account", "alice", "--at-position", std::to_string(head)}, output);
  REQUIRE_MESSAGE(status.success(), output);
  db::PoolSettings pool_settings;
  pool_settings.url = database.app_url();
  db::ConnectionPool pool(pool_settings);
  const EventStore store(pool);
  const auto found = balance_as_of(store, "alice", std::nullopt, GlobalPosition(head));
  REQUIRE(found);
  CHECK(output == api::balance_as_of_json("alice", *found, {std::nullopt, head}) + "\n");
  CHECK(output.find("\"overdraft_limit\":40,\"balance\":750,\"available\":790") != std::string::npos);

  status = run({"loans", "close-of-business", "--date", "2026-02-20", "--json"}, output);
  REQUIRE_MESSAGE(status.success(), output);
  const std::string http_answer = api::close_of_business_json(
      Date{std::chrono::year(2026), std::chrono::February, std::chrono::day(20)}, CloseOfBusinessResult{});
  // The HTTP answer's members, then how long the run took.
  CHECK(output.rfind(http_answer.substr(0, http_answer.size() - 1) + ",\"seconds\":", 0) == 0);
}
