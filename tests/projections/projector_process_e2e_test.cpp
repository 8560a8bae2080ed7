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

TEST_CASE(
    "projectors killed with SIGKILL while a round lingers lose nothing: restarted, they end equal "
    "to the fold") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  make_backlog(engine, 20, 40);
  const std::string url = database.app_url();

  const auto directory = scratch_directory("project-kill-lingering");
  process::SpawnOptions options;
  options.output_file = (directory / "project.log").string();
  // The linger through its environment variable: a round holds what it took for a second
  // before anything of it is written.
  options.extra_environment = {"LEDGER_DATABASE_URL=" + url,
                               "LEDGER_KAFKA_BROKERS=" + kafka.bootstrap(),
                               "LEDGER_PROJECT_BATCH_LINGER_MS=1000"};
  // Kafka is the only way in (no healing from the store while it is quiet): caught up after a
  // restart means the group has its partitions again and the lost round came back from Kafka.
  const std::vector<std::string> argv = {
      test::ledger_binary(), "--home", directory.string(), "project", "all",
      "--gap-wait-ms",       "600000"};
  int kills_mid_round = 0;
  for (int round = 0; round < 3; ++round) {
    const pid_t pid = process::spawn(argv, options);
    REQUIRE_MESSAGE(test::eventually([&] { return test::read_models_caught_up(url); }, 60s),
                    "see " << options.output_file);
    // Let a round a late marker may have opened end, then give the projectors a transfer to hold.
    std::this_thread::sleep_for(1'500ms);
    REQUIRE(
        engine
            .execute(command(domain::Transfer{"", "k" + std::to_string(round),
                                              "k" + std::to_string(round + 1), Amount(5), eur()}))
            .accepted());
    const std::int64_t head = test::store_head(url);
    REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() >= head; }, 5s));
    std::this_thread::sleep_for(300ms);
    // Delivered, taken into a round and not yet written: the kill loses that round in memory.
    if (test::highest_partition_watermark(url, "balance") < head) ++kills_mid_round;
    process::stop(pid, SIGKILL, 1s);
  }
  CHECK(kills_mid_round >= 2);
  const pid_t pid = process::spawn(argv, options);
  REQUIRE_MESSAGE(test::eventually([&] { return test::read_models_caught_up(url); }, 60s),
                  "see " << options.output_file);
  CHECK(process::stop(pid, SIGTERM, 10s).success());
  test::check_read_models_equal_fold(url);
}
