// The read side as operators and downstream teams meet it: `ledger project` killed with
// SIGKILL in the middle of batches and restarted, and a consumer that is not ours (kcat)
// reading the topic and decoding the payload with flatc against schemas/.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <rapidjson/document.h>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "ledger/replay/replay.hpp"
#include "read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;

namespace {

void make_backlog(Engine& engine, int accounts, int transfers) {
  for (int i = 0; i < accounts; ++i) {
    REQUIRE(engine.execute(command(domain::OpenAccount{"k" + std::to_string(i), eur()})).accepted());
    REQUIRE(engine.execute(command(domain::Deposit{"k" + std::to_string(i), Amount(1'000'000)})).accepted());
  }
  std::mt19937 random(99);
  std::vector<std::future<domain::CommandOutcome>> outcomes;
  for (int n = 0; n < transfers; ++n) {
    const int from = static_cast<int>(random() % accounts);
    const int to = (from + 1 + static_cast<int>(random() % (accounts - 1))) % accounts;
    outcomes.push_back(engine.submit(command(
        domain::Transfer{"", "k" + std::to_string(from), "k" + std::to_string(to), Amount(1 + random() % 500), eur()})));
  }
  for (auto& outcome : outcomes) REQUIRE(outcome.get().accepted());
}

std::filesystem::path scratch_directory(const std::string& name) {
  auto directory = std::filesystem::temp_directory_path() / ("ledger-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  return directory;
}

}  // namespace

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

TEST_CASE("a consumer that is not ours reads the topic with kcat and decodes it with flatc") {
  test::TestDatabase database;
  test::MockKafka kafka(1, 1);
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  REQUIRE(engine.execute(command(domain::OpenAccount{"downstream-1", eur()})).accepted());
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == 1; }));

  const auto directory = scratch_directory("kcat");
  const auto message = directory / "message.bin";
  std::string output;
  const auto consumed = process::run({"kcat", "-C", "-b", kafka.bootstrap(), "-t", test::events_topic, "-o",
                                      "beginning", "-c", "1", "-e", "-q", "-f", "%k|%h\n"},
                                     output);
  REQUIRE_MESSAGE(consumed.success(), output);
  CHECK(output.find("account-downstream-1|") == 0);  // key = stream id
  CHECK(output.find("event-type=account_opened") != std::string::npos);
  CHECK(output.find("position=1") != std::string::npos);
  CHECK(output.find("content-type=application/x-flatbuffers") != std::string::npos);

  // The value alone, byte for byte, for flatc.
  process::SpawnOptions to_file;
  to_file.output_file = message.string();
  const pid_t pid = process::spawn({"kcat", "-C", "-b", kafka.bootstrap(), "-t", test::events_topic, "-o",
                                    "beginning", "-c", "1", "-e", "-q", "-D", "", "-f", "%s"},
                                   to_file);
  REQUIRE(process::wait_for(pid, 30s).value_or(process::ExitStatus{}).success());
  const auto decoded = process::run({"flatc", "--json", "--strict-json", "--raw-binary", "-o", directory.string(),
                                     "-I", LEDGER_SCHEMAS_DIR, std::string(LEDGER_SCHEMAS_DIR) + "/envelope.fbs",
                                     "--", message.string()},
                                    output);
  REQUIRE_MESSAGE(decoded.success(), output);
  std::ifstream json(directory / "message.json");
  const std::string text((std::istreambuf_iterator<char>(json)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"stream_id\": \"account-downstream-1\"") != std::string::npos);
  CHECK(text.find("\"type\": \"account_opened\"") != std::string::npos);
  CHECK(text.find("\"position\": 1") != std::string::npos);
  CHECK(text.find("\"actor\": \"test\"") != std::string::npos);

  // The payload inside is the stored FlatBuffers Event: decode it against events.fbs too.
  rapidjson::Document envelope;
  envelope.Parse(text.c_str());
  REQUIRE_MESSAGE(!envelope.HasParseError(), text);
  REQUIRE(envelope["payload"].IsArray());
  std::string payload;
  for (const auto& byte : envelope["payload"].GetArray()) payload.push_back(static_cast<char>(byte.GetUint()));
  std::ofstream(directory / "payload.bin", std::ios::binary) << payload;
  const auto payload_decoded = process::run(
      {"flatc", "--json", "--strict-json", "--raw-binary", "-o", directory.string(), "-I", LEDGER_SCHEMAS_DIR,
       std::string(LEDGER_SCHEMAS_DIR) + "/events.fbs", "--", (directory / "payload.bin").string()},
      output);
  REQUIRE_MESSAGE(payload_decoded.success(), output);
  std::ifstream payload_json(directory / "payload.json");
  const std::string event((std::istreambuf_iterator<char>(payload_json)), std::istreambuf_iterator<char>());
  CHECK(event.find("\"AccountOpened\"") != std::string::npos);
  CHECK(event.find("\"account_id\": \"downstream-1\"") != std::string::npos);
  CHECK(event.find("\"currency\": \"EUR\"") != std::string::npos);
}

TEST_CASE("with the JSON view on, kcat reads every event as its export line from the second topic") {
  test::TestDatabase database;
  test::MockKafka kafka(1, 2);
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  auto settings = test::relay_settings(kafka);
  settings.json_topic = test::events_json_topic;
  relay::Relay relay(settings, pool);
  relay.start();
  make_backlog(engine, 4, 40);
  REQUIRE(engine.execute(command(domain::PlaceHold{"json-hold", "k0", "k1", Amount(5), eur(), "", std::nullopt})).accepted());
  REQUIRE(engine.execute(command(domain::VoidHold{"json-hold"})).accepted());
  const std::int64_t head = test::store_head(database.app_url());
  // Acknowledged means both topics have it.
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));

  std::string output;
  const auto consumed = process::run({"kcat", "-C", "-b", kafka.bootstrap(), "-t", test::events_json_topic, "-o",
                                      "beginning", "-e", "-q", "-f", "%k|%h|%s\n"},
                                     output);
  REQUIRE_MESSAGE(consumed.success(), output);
  std::map<std::int64_t, domain::RecordedEvent> seen;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    const auto key_end = line.find('|');
    const auto headers_end = line.find('|', key_end + 1);
    REQUIRE_MESSAGE(headers_end != std::string::npos, line);
    const std::string key = line.substr(0, key_end);
    const std::string headers = line.substr(key_end + 1, headers_end - key_end - 1);
    // The export line format reads back to the exact stored event (payload re-encoded byte for byte).
    const auto event = replay::parse_exported_event(line.substr(headers_end + 1));
    REQUIRE_MESSAGE(event.has_value(), line);
    CHECK(key == event->stream_id);
    CHECK(headers.find("content-type=application/json") != std::string::npos);
    CHECK(headers.find("event-type=" + event->type) != std::string::npos);
    CHECK(headers.find("position=" + std::to_string(event->position.value())) != std::string::npos);
    seen.emplace(event->position.value(), *event);
  }
  REQUIRE(static_cast<std::int64_t>(seen.size()) == head);
  engine::EventStore store(pool);
  for (const auto& stored : store.read_all(GlobalPosition(1), static_cast<std::size_t>(head))) {
    const auto& published = seen.at(stored.position.value());
    CHECK(published.stream_id == stored.stream_id);
    CHECK(published.version == stored.version);
    CHECK(published.payload == stored.payload);
    CHECK(published.metadata == stored.metadata);
    CHECK(published.hash == stored.hash);
    CHECK(published.recorded_at_us == stored.recorded_at_us);
  }
}
