// Projectors that scale with partitions, as operators run them: 1, 2 and 4 `ledger project all`
// processes in one consumer group per read model, under load, one of them killed with SIGKILL
// and replaced (two rebalances). Every read model ends equal to the fold of the store, every
// event applied once, and no read-your-writes pair (a command's acknowledged position, then a
// query about its stream with min_position) ever reads a stale stream.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "ledger/projections/read_models.hpp"
#include "read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;

namespace {

struct ReadYourWrites {
  int pairs = 0;
  int stale = 0;
  int timed_out = 0;       // waits that ended without the position (504 to a client)
  int never_answered = 0;  // pairs whose stream never reached the position
};

// One deposit to a random account, then the account read with min_position = the deposit's
// position: it must show at least the version the deposit gave the account's stream.
void read_your_writes(Engine& engine, projections::ReadModels& read_models, std::mt19937& random,
                      ReadYourWrites& result) {
  const std::string account = test::account_name(static_cast<int>(random() % test::account_count));
  const auto outcome = engine.execute(test::command(Deposit{account, Amount(3)}));
  REQUIRE(outcome.accepted());
  std::int64_t version = 0;
  for (const auto& [stream, stream_version] : outcome.versions) {
    if (stream == account_stream(account)) version = stream_version.value();
  }
  REQUIRE(version > 0);
  // A wait may time out while the stream's partition has no live owner (a member killed holds
  // it until its session times out, then the group rebalances): a client gets 504 then, never
  // a stale answer. Such a pair is asked again, and must be answered.
  auto wait = [&] {
    std::promise<bool> reached;
    read_models.wait_for(
        projections::ProjectionKind::balance, outcome.position.value(), 20s,
        [&](bool ok, std::int64_t) { reached.set_value(ok); }, account_stream(account));
    return reached.get_future().get();
  };
  ++result.pairs;
  bool reached = wait();
  for (int retry = 0; retry < 5 && !reached; ++retry) {
    ++result.timed_out;
    reached = wait();
  }
  if (!reached) {
    ++result.never_answered;
    return;
  }
  const auto read = read_models.account(account);
  if (!read.value || read.value->version < version || read.watermark < outcome.position.value()) ++result.stale;
}

void run_processes(int processes) {
  CAPTURE(processes);
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url(), 8);
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  test::open_accounts(engine);

  const auto directory = test::scratch_directory("project-scale-" + std::to_string(processes));
  process::SpawnOptions options;
  options.extra_environment = {"LEDGER_DATABASE_URL=" + database.app_url(),
                               "LEDGER_KAFKA_BROKERS=" + kafka.bootstrap()};
  std::vector<pid_t> running;
  int spawned = 0;
  auto spawn = [&] {
    options.output_file = (directory / ("project-" + std::to_string(spawned++) + ".log")).string();
    running.push_back(process::spawn({test::ledger_binary(), "--home", directory.string(), "project", "all",
                                      "--batch-events-max", "500"},
                                     options));
  };
  for (int i = 0; i < processes; ++i) spawn();

  projections::ReadModels read_models(pool);
  ReadYourWrites pairs;
  std::atomic<bool> writing{true};
  std::thread load([&] {
    test::random_workload(engine, 4'000, 3, static_cast<unsigned>(processes));
    writing = false;
  });
  std::mt19937 random(static_cast<unsigned>(17 + processes));
  bool killed = false;
  while (writing || pairs.pairs < 40) {
    read_your_writes(engine, read_models, random, pairs);
    if (!killed && processes > 1 && pairs.pairs == 10) {
      // One member dies without leaving its group; its partitions move after the session
      // timeout, and a replacement joining moves them again.
      process::stop(running.front(), SIGKILL, 1s);
      running.erase(running.begin());
      spawn();
      killed = true;
    }
  }
  load.join();
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE_MESSAGE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }, 180s),
                  "see " << directory);
  MESSAGE(processes << " process(es): " << pairs.pairs << " read-your-writes pairs, " << pairs.stale << " stale, "
                    << pairs.timed_out << " waits timed out (20 s, asked again)");
  CHECK(pairs.stale == 0);
  CHECK(pairs.never_answered == 0);
  if (processes == 1) CHECK(pairs.timed_out == 0);  // nothing killed: every wait answered in time
  for (const pid_t pid : running) {
    const auto status = process::stop(pid, SIGTERM, 15s);
    CHECK_MESSAGE(status.success(), "see " << directory);
  }
  test::check_read_models_equal_fold(database.app_url());
  // Every event applied exactly once over all processes, the kill and the rebalances: the
  // counter moves in the same transaction as the rows and watermarks, so a double counts twice.
  CHECK(test::scalar(database.app_url(), "SELECT applied FROM read.projections WHERE name = 'audit'") == head);
}

}  // namespace

TEST_CASE("one projector process per read model") { run_processes(1); }
TEST_CASE("two projector processes per read model, one killed and replaced") { run_processes(2); }
TEST_CASE("four projector processes per read model, one killed and replaced") { run_processes(4); }
