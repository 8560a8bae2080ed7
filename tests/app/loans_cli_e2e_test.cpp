// `ledger loans close-of-business` as an operator runs it: counts, idempotence, exit codes.
#include <doctest/doctest.h>

#include "../engine/engine_fixture.hpp"
#include <filesystem>

#include "ledger/core/process.hpp"
#include "ledger/engine/snapshot_store.hpp"
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

TEST_CASE("ledger loans close-of-business --snapshot-directory reads loans through a snapshot cache it may own") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    REQUIRE(engine.execute(command(OpenAccount{"alice", eur()})).accepted());
    for (int i = 0; i < 3; ++i) {
      OriginateLoan loan{"S" + std::to_string(i), "alice", eur(), Amount(10'000), 1'200, 6, ScheduleType::annuity,
                         "2026-01-15", "2026-02-15", Amount(0), Amount(0), 0};
      REQUIRE(engine.execute(command(loan)).accepted());
      REQUIRE(engine.execute(command(DisburseLoan{loan.id})).accepted());
    }
  }
  const auto directory = std::filesystem::temp_directory_path() / ("ledger-loans-cli-snapshots-" + database.name());
  std::filesystem::remove_all(directory);
  auto run = [&](std::vector<std::string> arguments, std::string& output) {
    arguments.insert(arguments.begin(), {test::ledger_binary(), "--home", "/tmp/ledger-loans-cli-none",
                                         "--database-url", database.app_url(), "--log-level", "warn"});
    output.clear();
    return process::run(arguments, output);
  };
  std::string output;
  auto status = run({"loans", "close-of-business", "--date", "2026-02-20", "--json", "--snapshot-directory",
                     directory.string()},
                    output);
  CHECK_MESSAGE(status.success(), output);
  CHECK(output.find("\"loans\":3,\"closed\":3,\"failed\":0") != std::string::npos);
  CHECK(std::filesystem::exists(directory / "CURRENT"));  // a RocksDB directory

  // A directory another process holds (a running serve's) is refused by name; nothing is closed.
  {
    SnapshotStore held(directory.string());
    const auto before = test::scalar(database.app_url(), "SELECT position FROM event_store_head");
    status = run({"loans", "close-of-business", "--date", "2026-02-21", "--snapshot-directory", directory.string()},
                 output);
    CHECK(status.code == 1);
    CHECK_MESSAGE(output.find("in use by another process") != std::string::npos, output);
    CHECK(test::scalar(database.app_url(), "SELECT position FROM event_store_head") == before);
  }
  status = run({"loans", "close-of-business", "--date", "2026-02-21", "--json", "--snapshot-directory",
                directory.string()},
               output);
  CHECK_MESSAGE(status.success(), output);
  CHECK(output.find("\"loans\":3,\"closed\":3,\"failed\":0") != std::string::npos);
  std::filesystem::remove_all(directory);
}
