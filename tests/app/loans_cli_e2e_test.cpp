// `ledger loans close-of-business` as an operator runs it: counts, idempotence, exit codes.
#include <doctest/doctest.h>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;

TEST_CASE("ledger loans close-of-business closes every loan once per date") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    REQUIRE(engine.execute(command(OpenAccount{"alice", eur()})).accepted());
    for (int i = 0; i < 5; ++i) {
      OriginateLoan loan{"L" + std::to_string(i), "alice", eur(), Amount(10'000), 1'200, 6, ScheduleType::annuity,
                         "2026-01-15", "2026-02-15", Amount(0), Amount(0), 0};
      REQUIRE(engine.execute(command(loan)).accepted());
      if (i < 4) REQUIRE(engine.execute(command(DisburseLoan{loan.id})).accepted());  // L4 stays undisbursed
    }
  }
  auto run = [&](std::vector<std::string> arguments, std::string& output) {
    arguments.insert(arguments.begin(), {test::ledger_binary(), "--home", "/tmp/ledger-loans-cli-none",
                                         "--database-url", database.app_url(), "--log-level", "warn"});
    output.clear();
    return process::run(arguments, output);
  };
  std::string output;
  auto status = run({"loans", "close-of-business", "--date", "2026-02-20", "--json"}, output);
  CHECK_MESSAGE(status.success(), output);
  CHECK(output.find("\"loans\":4,\"closed\":4,\"failed\":0") != std::string::npos);
  status = run({"loans", "close-of-business", "--date", "2026-02-20"}, output);
  CHECK_MESSAGE(status.success(), output);
  CHECK(output.find("closed 2026-02-20 for 4 loans (0 changed)") != std::string::npos);

  for (const std::vector<std::string>& bad : {std::vector<std::string>{"loans", "close-of-business", "--date", "2026-02-30"},
                                              {"loans", "close-of-business", "--date", "2200-01-01"},
                                              {"loans", "close-of-business"},
                                              {"loans"}}) {
    status = run(bad, output);
    CHECK_MESSAGE(status.code == 2, output);
    CHECK(output.find("ledger: error: ") != std::string::npos);
  }
}
