// What the relay publishes as downstream teams meet it: a consumer that is not ours (kcat)
// reads the topic and decodes the payload with flatc against schemas/, and with the JSON view
// on reads every event as its export line from the second topic.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include <rapidjson/document.h>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "ledger/replay/replay.hpp"
#include "../projections/read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;
using test::make_backlog;
using test::scratch_directory;

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
