// The relay's partitioning (docs/consumers.md, "Partitions"): it chooses each event's partition
// itself with Kafka's murmur2 partitioner over the stream id, stamps each envelope with the
// position it sent to that partition before, and sends per-partition progress markers so a
// consumer of an idle partition learns how far the log went. After a restart the chain per
// partition continues from what the store says was sent, not from zero.
#include <doctest/doctest.h>

#include <librdkafka/rdkafka.h>

#include <map>
#include <set>

#include "../engine/engine_fixture.hpp"
#include "../projections/read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;

namespace {

// One message of the events topic as a consumer of one partition sees it.
struct Seen {
  bool marker = false;
  std::int64_t position = 0;  // the event's, or the marker's `through`
  std::int64_t previous = 0;
  std::string stream_id;
};

std::map<std::int32_t, std::vector<Seen>> read_partitions(const test::MockKafka& kafka) {
  std::map<std::int32_t, std::vector<Seen>> seen;
  test::for_each_topic_message(kafka, [&](std::int32_t partition, std::string_view payload) {
    if (auto marker = decode_progress_marker(payload)) {
      seen[partition].push_back({true, marker->through.value(), marker->previous_position.value(), {}});
    } else if (auto decoded = decode_envelope_with_incarnation(payload)) {
      seen[partition].push_back(
          {false, decoded->event.position.value(), decoded->previous_position, decoded->event.stream_id});
    } else {
      FAIL("an undecodable message on partition " << partition);
    }
  });
  return seen;
}

// Every event sits in its stream's partition; each envelope names the previous event position
// of its partition; each marker names the last event before it and covers at least that.
// Returns per partition how far it is known to be complete: its last event or marker.
std::map<std::int32_t, std::int64_t> check_partition_chains(const std::map<std::int32_t, std::vector<Seen>>& seen,
                                                            int partitions) {
  std::map<std::int32_t, std::int64_t> marked;
  for (const auto& [partition, messages] : seen) {
    std::int64_t last_event = 0;
    for (const auto& message : messages) {
      if (message.marker) {
        CHECK(message.previous == last_event);
        CHECK(message.position >= last_event);
        marked[partition] = std::max(marked[partition], message.position);
        continue;
      }
      CHECK(partition_for_stream(message.stream_id, partitions) == partition);
      CHECK(message.previous == last_event);
      CHECK(message.position > last_event);
      last_event = message.position;
      marked[partition] = std::max(marked[partition], message.position);
    }
  }
  return marked;
}

}  // namespace

TEST_CASE("the relay's partition of a stream is librdkafka's murmur2 partitioner") {
  // The same answer as the partitioner Kafka's Java client and librdkafka's "murmur2" option use.
  for (int i = 0; i < 2'000; ++i) {
    const std::string key = "account-" + std::to_string(i * 7919);
    for (const std::int32_t count : {1, 2, 3, 4, 6, 12, 64}) {
      CHECK(partition_for_stream(key, count) ==
            rd_kafka_msg_partitioner_murmur2(nullptr, key.data(), key.size(), count, nullptr, nullptr));
    }
  }
}

TEST_CASE("each partition's envelopes chain by previous_position, and markers reach idle partitions") {
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  auto settings = test::relay_settings(kafka);
  auto relay = std::make_unique<relay::Relay>(settings, pool);
  relay->start();
  test::open_accounts(engine);
  test::random_workload(engine, 500);
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return relay->status().acknowledged.value() == head; }));
  CHECK(relay->status().partitions == 4);
  // Markers follow once everything read was handed over; every partition is told of the head.
  REQUIRE(test::eventually([&] {
    const auto marked = check_partition_chains(read_partitions(kafka), 4);
    return marked.size() == 4 && std::all_of(marked.begin(), marked.end(),
                                             [&](const auto& entry) { return entry.second == head; });
  }, 30s));
  // The status is copied from the relay's loop after the markers were produced: wait for it.
  CHECK(test::eventually([&] { return relay->status().markers_sent > 0; }));

  // A restarted relay continues each partition's chain from what the store says it sent.
  relay->stop();
  relay.reset();
  REQUIRE(engine.execute(test::command(Deposit{test::account_name(3), Amount(5)})).accepted());
  REQUIRE(engine.execute(test::command(Deposit{test::account_name(4), Amount(5)})).accepted());
  const std::int64_t later_head = test::store_head(database.app_url());
  relay::Relay again(settings, pool);
  again.start();
  REQUIRE(test::eventually([&] { return again.status().acknowledged.value() == later_head; }));
  REQUIRE(test::eventually([&] {
    const auto marked = check_partition_chains(read_partitions(kafka), 4);
    return marked.size() == 4 && std::all_of(marked.begin(), marked.end(),
                                             [&](const auto& entry) { return entry.second == later_head; });
  }, 30s));
}

TEST_CASE("after a rewind from an older checkpoint each republished envelope names the store's previous position") {
  test::TestDatabase database;
  test::MockKafka kafka(1, 3);
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  test::open_accounts(engine);
  test::random_workload(engine, 300);
  const std::int64_t head = test::store_head(database.app_url());
  {
    relay::Relay first(test::relay_settings(kafka), pool);
    first.start();
    REQUIRE(test::eventually([&] { return first.status().acknowledged.value() == head; }));
  }
  const std::int64_t rewind_to = head / 2;
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec_params("UPDATE checkpoints SET position = $1 WHERE name = 'relay'", rewind_to);
    work.commit();
  }
  relay::Relay again(test::relay_settings(kafka), pool);
  again.start();
  REQUIRE(test::eventually([&] { return again.status().acknowledged.value() == head; }));
  // The expected previous position of each event: the last position of its partition before it.
  std::map<std::int64_t, std::int64_t> expected_previous;
  {
    std::map<std::int32_t, std::int64_t> last;
    pqxx::connection connection(database.app_url());
    pqxx::read_transaction work(connection);
    for (const auto& row : work.exec("SELECT position, stream_id FROM events ORDER BY position")) {
      auto& previous = last[partition_for_stream(row[1].as<std::string>(), 3)];
      expected_previous[row[0].as<std::int64_t>()] = previous;
      previous = row[0].as<std::int64_t>();
    }
  }
  std::int64_t republished = 0;
  test::for_each_topic_message(kafka, [&](std::int32_t, std::string_view payload) {
    if (auto decoded = decode_envelope_with_incarnation(payload)) {
      CHECK(decoded->previous_position == expected_previous.at(decoded->event.position.value()));
      if (decoded->event.position.value() > rewind_to) ++republished;
    }
  });
  CHECK(republished >= 2 * (head - rewind_to));  // sent twice, each time with the same chain
}
