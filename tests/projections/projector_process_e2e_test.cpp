// The read side as operators meet it: `ledger project` killed with SIGKILL in the middle of
// batches and restarted. What the relay publishes, as a consumer that is not ours reads it, is
// tests/relay/topic_e2e_test.cpp.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <random>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;
using test::make_backlog;
using test::scratch_directory;

TEST_CASE("projectors killed with SIGKILL mid-batch and restarted end equal to the fold") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  make_backlog(engine, 100, 12'000);
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));

  const auto directory = scratch_directory("project-kill");
  process::SpawnOptions options;
  options.output_file = (directory / "project.log").string();
  options.extra_environment = {"LEDGER_DATABASE_URL=" + database.app_url(),
                               "LEDGER_KAFKA_BROKERS=" + kafka.bootstrap()};
  const std::vector<std::string> argv = {test::ledger_binary(), "--home", directory.string(), "project",
                                         "all", "--batch-events-max", "300"};
  std::mt19937 random(5);
  int kills_while_behind = 0;
  for (int round = 0; round < 6; ++round) {
    const pid_t pid = process::spawn(argv, options);
    std::this_thread::sleep_for(std::chrono::milliseconds(1'500 + random() % 1'500));
    if (!test::read_models_caught_up(database.app_url())) ++kills_while_behind;
    process::stop(pid, SIGKILL, 1s);
    // Keep writing between rounds, so each restart has new events and redeliveries to sort out.
    REQUIRE(engine.execute(command(domain::Transfer{"", "k1", "k2", Amount(7), eur()})).accepted());
  }
  MESSAGE("killed " << kills_while_behind << " times while the read models were behind");
  CHECK(kills_while_behind >= 2);
  const pid_t pid = process::spawn(argv, options);
  REQUIRE_MESSAGE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }),
                  "see " << options.output_file);
  const auto status = process::stop(pid, SIGTERM, 10s);
  const std::string ended = std::string(status.exited ? "exit code " : "signal ") + std::to_string(status.code);
  CHECK_MESSAGE(status.success(), ended << "; see " << options.output_file);
  test::check_read_models_equal_fold(database.app_url());
}
