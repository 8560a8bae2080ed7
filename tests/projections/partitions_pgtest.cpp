// Read models that scale with partitions (projections/README.md, "Partitions"): every
// projection keeps one watermark per partition of the events topic, in the same transaction as
// its rows; several projectors of one projection in one consumer group each apply only the
// partitions Kafka assigned them, and a rebalance moves a partition without losing or doubling
// anything. Gaps in one partition are healed from the store, progress markers move idle
// partitions, and a garbled or forged marker changes nothing.
#include <doctest/doctest.h>

#include <librdkafka/rdkafka.h>

#include <map>
#include <future>
#include <set>
#include <thread>
#include <atomic>

#include "../engine/engine_fixture.hpp"
#include "ledger/domain/types.hpp"
#include "ledger/projections/read_models.hpp"
#include "read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;

using test::open_accounts;
using test::random_workload;

namespace {

std::map<std::int32_t, std::int64_t> partition_watermarks(const std::string& url, const std::string& projection) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  std::map<std::int32_t, std::int64_t> result;
  for (const auto& row : work.exec_params(
           "SELECT partition, position FROM read.partition_watermarks WHERE projection = $1", projection)) {
    result[row[0].as<std::int32_t>()] = row[1].as<std::int64_t>();
  }
  return result;
}

bool every_partition_at(const std::string& url, std::int64_t position, int partitions) {
  for (const auto* projection : {"balance", "audit", "loan"}) {
    const auto marks = partition_watermarks(url, projection);
    if (static_cast<int>(marks.size()) != partitions) return false;
    for (const auto& [partition, mark] : marks) {
      if (mark != position) return false;
    }
  }
  return true;
}

projections::ProjectorSettings fast_group_settings(const test::MockKafka& kafka) {
  auto settings = test::projector_settings(kafka);
  settings.session_timeout = 3'000ms;
  return settings;
}

// Publishes raw bytes with the progress-marker header to one partition: what a forger or a
// corrupted relay could put on the topic.
void produce_marker_bytes(const test::MockKafka& kafka, std::int32_t partition, const std::string& header,
                          const std::string& value) {
  char error[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", kafka.bootstrap().c_str(), error, sizeof error);
  rd_kafka_conf_set(conf, "log_level", "2", error, sizeof error);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> producer(
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error), &rd_kafka_destroy);
  REQUIRE(producer);
  rd_kafka_headers_t* headers = rd_kafka_headers_new(1);
  rd_kafka_header_add(headers, progress_marker_header, -1, header.data(), static_cast<ssize_t>(header.size()));
  REQUIRE(rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(test::events_topic), RD_KAFKA_V_PARTITION(partition),
                            RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
                            RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR);
  REQUIRE(rd_kafka_flush(producer.get(), 10'000) == RD_KAFKA_RESP_ERR_NO_ERROR);
}

// Catch-up rounds of 500 positions from a backlog beyond 200; no round before Kafka assigns
// the partitions (gap_wait), so the first one catches up.
projections::ProjectorSettings catch_up_in_rounds_of_500(const test::MockKafka& kafka) {
  auto settings = fast_group_settings(kafka);
  settings.batch_events_max = 200;
  settings.catch_up_events_min = 200;
  settings.catch_up_batch_events_max = 500;
  settings.gap_wait = 60s;
  return settings;
}

// Rewrites the store's events from `from` to `head` into another valid chain (recorded_at an
// hour later, hashes recomputed, the head's hash too): what a point-in-time restore onto
// another timeline leaves.
void rewrite_timeline_from(const test::TestDatabase& database, db::ConnectionPool& pool,
                           std::int64_t from, std::int64_t head) {
  pqxx::connection owner(database.admin_url());
  pqxx::work rewrite(owner);
  rewrite.exec("SET session_replication_role = replica");  // superuser bypass of the trigger
  EventStore reader(pool);
  const auto before = rewrite.exec_params1("SELECT hash FROM events WHERE position = $1", from - 1);
  std::string previous = pqxx::binarystring(before[0]).str();
  for (std::int64_t next = from; next <= head; next += 1'000) {
    for (auto& event : reader.read_all(GlobalPosition(next), 1'000)) {
      event.recorded_at_us += 3'600'000'000;
      event.hash = domain::chain_hash(previous, event);
      rewrite.exec_params(
          "UPDATE events SET recorded_at = recorded_at + interval '1 hour', hash = $2 WHERE "
          "position = $1",
          event.position.value(), pqxx::binarystring(event.hash));
      previous = event.hash;
    }
  }
  rewrite.exec_params("UPDATE event_store_head SET hash = $1", pqxx::binarystring(previous));
  rewrite.commit();
}

// Opens the accounts, appends `transfers` random transfers and waits until the relay has
// published every event: the backlog the catch-up tests start from. Returns the store's head.
std::int64_t published_backlog(Engine& engine, const relay::Relay& relay, const std::string& url,
                               int transfers) {
  open_accounts(engine);
  random_workload(engine, transfers);
  const std::int64_t head = test::store_head(url);
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));
  return head;
}

// A store whose backlog of `transfers` random transfers the relay has published to a mock
// cluster of four partitions before any projector runs (the relay keeps running): what the
// catch-up tests start from. Tests take the parts by structured binding:
// auto& [kafka, pool, engine, relay, head].
struct PublishedBacklog {
  PublishedBacklog(const test::TestDatabase& database, int transfers)
      : pool(test::make_pool(database.app_url(), 10)),
        engine(test::engine_settings(database)),
        relay(test::relay_settings(kafka), pool),
        head(started_and_published(engine, relay, database.app_url(), transfers)) {}

  test::MockKafka kafka{1, 4};
  db::ConnectionPool pool;
  Engine engine;
  relay::Relay relay;
  std::int64_t head;

 private:
  static std::int64_t started_and_published(Engine& engine, relay::Relay& relay, const std::string& url,
                                            int transfers) {
    relay.start();
    return published_backlog(engine, relay, url, transfers);
  }
};

// Catch-up in store rounds of 1,000 positions once 500 behind; batches of 400 near the head.
projections::ProjectorSettings rounds_of_a_thousand(const test::MockKafka& kafka) {
  auto settings = test::projector_settings(kafka);
  settings.batch_events_max = 400;
  settings.catch_up_events_min = 500;
  settings.catch_up_batch_events_max = 1'000;
  return settings;
}

// The watermarks split over the partitions first (that writes read.projections too), then a
// backlog of 1,500 transfers published while no projector runs. Returns the store's head.
std::int64_t backlog_behind_split_watermarks(const test::TestDatabase& database,
                                             const test::MockKafka& kafka, db::ConnectionPool& pool,
                                             const projections::ProjectorSettings& settings) {
  {
    test::Projectors projectors(pool, settings);
    REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), 0, 4); }));
  }
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  const std::int64_t head = published_backlog(engine, relay, database.app_url(), 1'500);
  REQUIRE(head > 2'000);
  return head;
}

// One projector per read model, started: what one `ledger project all` process runs.
std::vector<std::unique_ptr<projections::Projector>> start_projectors(
    const projections::ProjectorSettings& settings, db::ConnectionPool& pool) {
  std::vector<std::unique_ptr<projections::Projector>> projectors;
  for (const auto kind : projections::all_projections()) {
    projectors.push_back(std::make_unique<projections::Projector>(kind, settings, pool));
    projectors.back()->start();
  }
  return projectors;
}

}  // namespace

TEST_CASE("every projection keeps one watermark per partition; their minimum is read.projections'") {
  test::TestDatabase database;
  test::ReadSideStack stack(database);
  auto& [kafka, pool, engine, relay, projectors] = stack;
  open_accounts(engine);
  random_workload(engine, 1'000);
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, kafka.partitions()); }, 60s));
  CHECK(test::read_models_caught_up(database.app_url()));
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM read.projections WHERE partitions = 4") == 3);
  for (const auto& projector : projectors.running) {
    CHECK(projector->status().partitions == 4);
    CHECK(projector->status().assigned.size() == 4);
  }
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("two projectors of one projection split the partitions, and a rebalance loses and doubles nothing") {
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url(), 10);
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  const auto settings = fast_group_settings(kafka);
  auto first = start_projectors(settings, pool);
  open_accounts(engine);
  auto second = start_projectors(settings, pool);
  // Both members of each group get partitions, disjoint, together all four.
  REQUIRE(test::eventually([&] {
    for (std::size_t i = 0; i < first.size(); ++i) {
      const auto a = first[i]->status().assigned;
      const auto b = second[i]->status().assigned;
      std::set<std::int32_t> all(a.begin(), a.end());
      all.insert(b.begin(), b.end());
      if (a.empty() || b.empty() || all.size() != 4 || a.size() + b.size() != 4) return false;
    }
    return true;
  }, 60s));
  random_workload(engine, 1'500);
  // A member leaves mid-stream: the other takes its partitions from the stored offsets.
  second[0]->stop();
  random_workload(engine, 1'500, 4, 11);
  const std::int64_t head = test::store_head(database.app_url());
  const bool caught_up = test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 120s);
  if (!caught_up) {
    for (const auto* projection : {"balance", "audit", "loan"}) {
      for (const auto& [partition, mark] : partition_watermarks(database.app_url(), projection)) {
        MESSAGE(std::string(projection) << " partition " << partition << " at " << mark << " of " << head);
      }
    }
    for (const auto& projector : first) {
      const auto status = projector->status();
      MESSAGE("assigned " << status.assigned.size() << " error " << status.last_error << " stalled "
                          << status.stalled_position.value());
    }
  }
  REQUIRE(caught_up);
  CHECK(first[0]->status().assigned.size() == 4);
  test::check_read_models_equal_fold(database.app_url());
  // Each event applied exactly once over both members (a double would count twice).
  CHECK(test::scalar(database.app_url(), "SELECT applied FROM read.projections WHERE name = 'audit'") == head);
}

TEST_CASE(
    "a balance projector forgets the accounts it kept when another process moved their partition") {
  // The balance projector keeps the accounts it folded from round to round
  // (ProjectorSettings::states_kept). Here the first process folds every account, a second
  // one takes some partitions and moves their accounts on, then leaves. Given those
  // partitions back, the first must read their accounts again rather than fold onto what it
  // kept: that would miss the second's events (a version gap: an error, then a retry one
  // position at a time), or write them over.
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url(), 10);
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  const auto settings = fast_group_settings(kafka);
  const auto caught_up = [&] {
    const std::int64_t head = test::store_head(database.app_url());
    return test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 120s);
  };
  auto first = start_projectors(settings, pool);
  open_accounts(engine);
  random_workload(engine, 500);
  REQUIRE(caught_up());
  REQUIRE(first[0]->status().assigned.size() == 4);

  auto second = start_projectors(settings, pool);
  REQUIRE(test::eventually(
      [&] {
        const auto a = first[0]->status().assigned;
        const auto b = second[0]->status().assigned;
        return !a.empty() && !b.empty() && a.size() + b.size() == 4;
      },
      60s));
  random_workload(engine, 500, 4, 11);
  REQUIRE(caught_up());
  CHECK(second[0]->status().events_applied > 0);
  for (auto& projector : second) projector->stop();

  REQUIRE(test::eventually([&] { return first[0]->status().assigned.size() == 4; }, 60s));
  random_workload(engine, 500, 4, 13);
  REQUIRE(caught_up());
  const auto status = first[0]->status();
  CHECK(status.last_error == "");
  CHECK(status.stalled_position.value() == 0);
  test::check_read_models_equal_fold(database.app_url());
  CHECK(test::scalar(database.app_url(),
                     "SELECT applied FROM read.projections WHERE name = 'balance'") ==
        test::store_head(database.app_url()));
}

TEST_CASE("a gap within one partition is healed from the store for that partition") {
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  open_accounts(engine);
  random_workload(engine, 500);
  const std::int64_t published = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == published; }));
  // Partition 2's first messages never reach the projectors: they start past them.
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    for (const auto* projection : {"balance", "audit", "loan"}) {
      work.exec_params("INSERT INTO read.kafka_offsets (projection, topic, partition, next_offset) "
                       "VALUES ($1, $2, 2, 50)",
                       projection, std::string(test::events_topic));
    }
    work.commit();
  }
  auto settings = test::projector_settings(kafka);
  settings.gap_wait = std::chrono::hours(1);  // healed because of the gap, not because Kafka went quiet
  test::Projectors projectors(pool, settings);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }, 60s));
  // Counted after each round commits, and the loan projector is not among those waited for.
  const auto gaps_detected = [&] {
    std::int64_t gaps = 0;
    for (const auto& projector : projectors.running) gaps += projector->status().gaps_detected;
    return gaps;
  };
  CHECK(test::eventually([&] { return gaps_detected() >= 3; }, 10s));
  // Only the skipped messages' events came from the store: the other partitions' came from Kafka.
  CHECK(projectors.events_from_store() > 0);
  CHECK(projectors.events_from_store() < 3 * published / 2);
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("progress markers move idle partitions; garbled and forged markers change nothing") {
  test::TestDatabase database;
  // No healing from the store while Kafka is quiet: only markers can move idle partitions.
  test::ReadSideStack stack(database, 6, [](auto& settings) { settings.gap_wait = std::chrono::hours(1); });
  auto& [kafka, pool, engine, relay, projectors] = stack;
  open_accounts(engine);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }, 60s));
  // One deposit: two streams (the account and the currency's cash account), at most two partitions.
  REQUIRE(engine.execute(test::command(Deposit{test::account_name(5), Amount(7)})).accepted());
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 10s));
  std::int64_t markers = 0;
  for (const auto& projector : projectors.running) markers += projector->status().markers_seen;
  CHECK(markers > 0);

  const std::string digest = test::read_model_digest(database.app_url());
  std::int64_t rejected_before = 0;
  for (const auto& projector : projectors.running) rejected_before += projector->status().messages_rejected;
  // Garbage with the marker header, and a well-formed marker beyond the store's head.
  produce_marker_bytes(kafka, 1, "99", "not a flatbuffer");
  produce_marker_bytes(kafka, 3, std::to_string(head + 1'000),
                       encode_progress_marker({GlobalPosition(head + 1'000), GlobalPosition(0), std::nullopt}));
  REQUIRE(test::eventually([&] {
    std::int64_t rejected = 0;
    for (const auto& projector : projectors.running) rejected += projector->status().messages_rejected;
    return rejected >= rejected_before + 6;  // two messages, three projections
  }, 20s));
  CHECK(every_partition_at(database.app_url(), head, 4));
  CHECK(test::read_model_digest(database.app_url()) == digest);
  // And the projectors go on applying.
  random_workload(engine, 200);
  const std::int64_t later = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), later, 4); }, 30s));
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("min_position on a stream waits for that stream's partition, other queries for the minimum") {
  test::TestDatabase database;
  auto pool = test::make_pool(database.app_url());
  // Watermarks as a projector leaves them: partition 0 ahead, the others behind.
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec("UPDATE read.projections SET partitions = 4, watermark = 5 WHERE name = 'balance'");
    work.exec("UPDATE read.projections SET watermark = 7 WHERE name = 'audit'");  // not split yet
    work.exec("INSERT INTO read.partition_watermarks (projection, partition, position) "
              "VALUES ('balance', 0, 100), ('balance', 1, 5), ('balance', 2, 5), ('balance', 3, 5)");
    work.commit();
  }
  auto stream_in = [](std::int32_t partition) {
    for (int i = 0;; ++i) {
      const std::string id = "a" + std::to_string(i);
      if (partition_for_stream(account_stream(id), 4) == partition) return id;
    }
  };
  const std::string ahead = stream_in(0);
  const std::string behind = stream_in(1);
  projections::ReadModels read_models(pool);
  auto wait = [&](std::optional<std::string> stream, std::int64_t position) {
    std::promise<std::pair<bool, std::int64_t>> answer;
    read_models.wait_for(
        projections::ProjectionKind::balance, position, 300ms,
        [&](bool reached, std::int64_t watermark) { answer.set_value({reached, watermark}); }, std::move(stream));
    return answer.get_future().get();
  };
  CHECK(wait(account_stream(ahead), 50) == std::pair<bool, std::int64_t>{true, 100});
  CHECK(wait(account_stream(behind), 50) == std::pair<bool, std::int64_t>{false, 5});
  CHECK(wait(std::nullopt, 50) == std::pair<bool, std::int64_t>{false, 5});
  // A query reports the watermark it can vouch for: its stream's partition's.
  CHECK(read_models.account(ahead).watermark == 100);
  CHECK(read_models.account(behind).watermark == 5);
  CHECK(read_models.audit({}).watermark == 7);
}

TEST_CASE("catching up from a backlog, the partitions move together: each stored row is read once") {
  // A backlog far beyond catch_up_events_min: the projectors read the store in rounds. Their
  // partitions, assigned while they first poll, must not run ahead on the first messages Kafka
  // delivers: a partition far ahead made every later round read the store's rows of that
  // partition again for nothing, and split the rounds (issue 18).
  test::TestDatabase database;
  PublishedBacklog backlog(database, 2'000);
  auto& [kafka, pool, engine, relay, head] = backlog;
  auto settings = rounds_of_a_thousand(kafka);
  test::Projectors projectors(pool, settings);
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
  for (const auto& projector : projectors.running) {
    const auto status = projector->status();
    MESSAGE("head " << head << ", rows read " << status.store_rows_read << ", rounds " << status.batches);
    // Each position once: one read of a round's range gives its partition list and its events
    // (two reads before, the list and then the events), plus the row before each round's range
    // (the hash it chains from) and the positions applied near the head.
    CHECK(status.store_rows_read <=
          head + status.batches + 2 * static_cast<std::int64_t>(settings.batch_events_max));
    // Every position came from the store's rounds, none from the messages of the first poll.
    CHECK(status.events_from_store == head);
    CHECK(status.events_applied == head);
  }
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a projector that caught up, freed its ranges at the head and falls behind again catches up "
          "again, counting each position once") {
  // Near the head a projector frees the ranges its catch-up read and trims the heap
  // (release_catch_up_readers): the next catch-up of the same projector starts from empty
  // buffers and new readers. The relay is stopped before the second backlog, so every position
  // of both comes from the store's rounds.
  test::TestDatabase database;
  PublishedBacklog backlog(database, 1'000);
  auto& [kafka, pool, engine, relay, head] = backlog;
  auto settings = rounds_of_a_thousand(kafka);
  test::Projectors projectors(pool, settings);
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
  std::this_thread::sleep_for(500ms);  // a few rounds at the head: the catch-up's ranges freed

  relay.stop();
  random_workload(engine, 1'000);
  const std::int64_t later_head = test::store_head(database.app_url());
  REQUIRE(later_head - head > settings.catch_up_events_min);
  REQUIRE(
      test::eventually([&] { return every_partition_at(database.app_url(), later_head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(later_head); }, 10s));
  for (const auto& projector : projectors.running) {
    const auto status = projector->status();
    CHECK(status.events_from_store == later_head);
    CHECK(status.events_applied == later_head);
  }
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a partition far ahead of the others does not stretch the store reads of the catch-up's rounds") {
  test::TestDatabase database;
  PublishedBacklog backlog(database, 2'000);
  auto& [kafka, pool, engine, relay, published_head] = backlog;
  std::int64_t head = published_head;
  relay.stop();
  // Partition 0 applied to the head from Kafka; the others' messages never arrive (their
  // offsets start at the end of each partition) and nothing heals them from the store yet.
  std::map<std::int32_t, std::int64_t> ends;
  test::for_each_topic_message(kafka, [&](std::int32_t partition, std::string_view) { ++ends[partition]; });
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    for (const auto* projection : {"balance", "audit", "loan"}) {
      for (std::int32_t partition = 1; partition < 4; ++partition) {
        work.exec_params("INSERT INTO read.kafka_offsets (projection, topic, partition, next_offset) "
                         "VALUES ($1, $2, $3, $4)",
                         projection, std::string(test::events_topic), partition, ends[partition]);
      }
    }
    work.commit();
  }
  auto settings = test::projector_settings(kafka);
  settings.gap_wait = std::chrono::hours(1);
  settings.catch_up_events_min = 1'000'000;
  {
    test::Projectors ahead(pool, settings);
    REQUIRE(test::eventually([&] {
      for (const auto* projection : {"balance", "audit", "loan"}) {
        const auto marks = partition_watermarks(database.app_url(), projection);
        if (marks.count(0) == 0 || marks.at(0) != head) return false;
      }
      return true;
    }, 60s));
  }
  REQUIRE(partition_watermarks(database.app_url(), "balance").at(1) < head / 2);
  // More events while the relay is down: partition 0 is ahead of the others, behind the head.
  random_workload(engine, 500, 4, 7);
  const std::int64_t ahead_at = head;
  head = test::store_head(database.app_url());
  REQUIRE(head > ahead_at);
  // Now the catch-up from the store in rounds of 1,000 positions: partition 0 waits for the
  // others, its watermark above the rounds' targets. (Every round from the store, up to the
  // head: gap_wait's healing, which moves every partition, stays out of the way.)
  settings.batch_events_max = 200;
  settings.catch_up_events_min = 0;
  settings.catch_up_batch_events_max = 1'000;
  test::Projectors projectors(pool, settings);
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
  for (const auto& projector : projectors.running) {
    const auto status = projector->status();
    MESSAGE("head " << head << ", rows read " << status.store_rows_read << ", rounds " << status.batches);
    // Each round reads its own positions (once: the list and the events in one read), not the
    // whole range up to partition 0's watermark.
    CHECK(status.store_rows_read <= head + status.batches + 4'000);
  }
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a catch-up whose store reads are cut off mid-COPY retries them and converges") {
  // The one read of a catch-up round runs on a connection of its own (a binary COPY). A
  // database that drops it mid-read (a restart, a failover, an operator's kill) must cost a
  // retry, not a projector stuck on a dead connection or a position skipped.
  test::TestDatabase database;
  PublishedBacklog backlog(database, 2'000);
  auto& [kafka, pool, engine, relay, head] = backlog;
  auto settings = test::projector_settings(kafka);
  settings.batch_events_max = 200;
  settings.catch_up_events_min = 200;
  settings.catch_up_batch_events_max = 500;
  bool share_reads = false;
  SUBCASE("each projector on readers of its own") {}
  SUBCASE("the projectors sharing their reads, as in ledger project all") { share_reads = true; }
  // Ends every COPY out of the events table it sees, for at most 20 s or 5 kills.
  std::atomic<bool> stop{false};
  std::atomic<int> killed{0};
  std::thread killer([&] {
    pqxx::connection admin(database.admin_url());
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (!stop && killed < 5 && std::chrono::steady_clock::now() < until) {
      pqxx::nontransaction work(admin);
      killed += static_cast<int>(
          work.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE 'COPY (SELECT%FROM events%' AND pid <> pg_backend_pid()")
              .size());
      std::this_thread::sleep_for(1ms);
    }
  });
  {
    test::Projectors projectors(pool, settings, share_reads);
    const bool caught_up = test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s);
    stop = true;
    killer.join();
    REQUIRE(caught_up);
    REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
    MESSAGE("store reads cut off: " << killed.load());
    CHECK(killed.load() > 0);
    for (const auto& projector : projectors.running) {
      const auto status = projector->status();
      CHECK(status.events_applied == head);
      CHECK(status.stalled_position.value() == 0);
    }
  }
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE(
    "a catch-up round's range read ahead is checked against the store: one that changed, or whose "
    "connection was cut, is read again") {
  // Catching up, each projector reads its next round's range while the round before writes
  // and commits: in another snapshot, so a store that changed in between (a point-in-time
  // restore onto another timeline) must not be applied from memory. Here the balance and audit
  // projectors are held in their first round, with the second round's range read ahead, while the
  // store's events from inside that range on are rewritten into another valid chain (other
  // recorded_at, hashes recomputed): the read models must come out equal to the fold of the
  // store as it now is.
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url(), 10);
  const auto settings = catch_up_in_rounds_of_500(kafka);
  const std::int64_t head = backlog_behind_split_watermarks(database, kafka, pool, settings);

  // The first round of the balance and audit projectors waits to write its rows (the workload
  // has no loan events: the loan projector writes none and is not held).
  pqxx::connection holder(database.admin_url());
  auto hold = std::make_unique<pqxx::work>(holder);
  hold->exec("LOCK TABLE read.audit, read.balances, read.entries IN SHARE MODE");
  test::Projectors projectors(pool, settings);
  // Held: the two rounds wait on the lock, the loan projector (not held) is done, and the two
  // reads ahead of (500, 1000] have run their COPY to the end, so they saw the store as it was.
  const bool held = test::eventually(
      [&] {
        if (test::watermark(database.app_url(), "loan") != head) return false;
        pqxx::connection admin(database.admin_url());
        pqxx::nontransaction look(admin);
        const auto waiting = look.exec(
            "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), "
            "count(*) FILTER (WHERE state = 'idle' AND query LIKE 'COPY (SELECT%BETWEEN 500 AND "
            "1000 %'), count(*) FILTER (WHERE state <> 'idle' AND query LIKE 'COPY (SELECT%') "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
        return waiting[0][0].as<int>() == 2 && waiting[0][1].as<int>() == 2 &&
               waiting[0][2].as<int>() == 0;
      },
      30s);
  REQUIRE(held);

  SUBCASE("the store changed meanwhile (a restore onto another timeline)") {
    // Another timeline from position 701 on, inside the second round's range (500, 1000].
    rewrite_timeline_from(database, pool, 701, head);
    hold->commit();
    hold.reset();

    REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
    REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
    for (const auto& projector : projectors.running) {
      const auto status = projector->status();
      MESSAGE("rounds " << status.batches << ", read ahead " << status.ranges_read_ahead
                        << ", read again " << status.read_ahead_stale);
      if (projector.get() != projectors.running.back().get()) {  // balance and audit: held
        CHECK(status.read_ahead_stale == 1);  // the second round's range, read before the rewrite
      }
      CHECK(status.ranges_read_ahead >= 1);  // the rounds after it
      CHECK(status.events_applied == head);
      CHECK(status.stalled_position.value() == 0);
    }
    test::check_read_models_equal_fold(database.app_url());
    // Near the head the catch-up's readers close their connections.
    CHECK(test::eventually([&] {
      return test::scalar(database.admin_url(),
                          "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND query LIKE 'COPY (SELECT%'") == 0;
    }));
  }
  SUBCASE("the connection of the read ahead is cut once it has read (a restart, an operator's kill)") {
    // The range read ahead is whole and the round takes it; the next read ahead, on the dead
    // connection, fails, and the round after reads its range on its own reader: no round fails.
    CHECK(test::scalar(database.admin_url(),
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname "
                       "= current_database() AND state = 'idle' AND query LIKE 'COPY (SELECT%BETWEEN "
                       "500 AND 1000 %'") == 2);
    hold->commit();
    hold.reset();
    REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
    REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
    for (const auto& projector : projectors.running) {
      const auto status = projector->status();
      CHECK_MESSAGE(status.last_error.empty(), status.last_error);
      CHECK(status.events_applied == head);
      CHECK(status.stalled_position.value() == 0);
    }
    test::check_read_models_equal_fold(database.app_url());
  }
}

TEST_CASE("projectors of one process share their catch-up reads: each stored row is read once between them") {
  // `ledger project all` runs every projection in one process. Each read the whole backlog
  // from the store on its own: three COPYs of every range, 40 % of PostgreSQL's CPU in a
  // catch-up (issue 18). Shared, each range is read once and the read models are the same.
  test::TestDatabase database;
  PublishedBacklog backlog(database, 2'000);
  auto& [kafka, pool, engine, relay, head] = backlog;
  auto settings = rounds_of_a_thousand(kafka);
  test::Projectors projectors(pool, settings, true);
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
  std::int64_t rows_read = 0;
  std::int64_t rounds = 0;
  int sharing = 0;
  for (const auto& projector : projectors.running) {
    const auto status = projector->status();
    MESSAGE("head " << head << ", rows read " << status.store_rows_read << ", rounds "
                    << status.batches << ", ranges another read " << status.ranges_shared
                    << ", applied whole " << status.ranges_applied_whole);
    rows_read += status.store_rows_read;
    rounds += status.batches;
    // Holding every partition, it applies shared ranges as read, without copying them (the row
    // at a range's low end, there for its hash, left out): more than its first round's (from
    // position 0, no such row). The always-on order and count assertions and the folds below
    // check what was applied.
    CHECK(status.ranges_applied_whole >= 2);
    if (status.ranges_shared > 0) ++sharing;
    CHECK(status.events_applied == head);
    CHECK(status.stalled_position.value() == 0);
  }
  // About once between the three when they keep pace (each on its own: three times). A
  // projector whose first round starts after the others' first ranges were read and taken, or
  // that falls behind on a loaded machine, reads those alone: under CI's load one read 2.3
  // times the head between them (2026-12-02), so the bound is that of no sharing at all.
  MESSAGE("rows read by the three: " << rows_read << " in " << rounds << " rounds");
  CHECK(rows_read < head * 3);
  CHECK(sharing >= 1);
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a projector held in its round does not hold up the others' shared catch-up for long") {
  // Sharing reads, a projector ahead of another waits for it before reading further (so the
  // ranges it read stay until the other takes them), but only for a bounded time: one that
  // takes nothing (stalled on a position, its tables locked) stops counting.
  test::TestDatabase database;
  PublishedBacklog backlog(database, 2'000);
  auto& [kafka, pool, engine, relay, head] = backlog;
  auto settings = test::projector_settings(kafka);
  settings.batch_events_max = 200;
  settings.catch_up_events_min = 200;
  settings.catch_up_batch_events_max = 500;
  pqxx::connection holder(database.admin_url());
  auto hold = std::make_unique<pqxx::work>(holder);
  hold->exec("LOCK TABLE read.balances, read.entries IN SHARE MODE");
  const auto started = std::chrono::steady_clock::now();
  test::Projectors projectors(pool, settings, true);
  // Audit and loan reach the head while balance waits in its round: after balance has taken
  // nothing for 10 s, no longer waiting for it (5 s for each range beyond the 4 kept, about
  // 14 ranges: over a minute, if every range waited).
  CHECK(test::eventually([&] {
    return test::watermark(database.app_url(), "audit") == head &&
           test::watermark(database.app_url(), "loan") == head;
  }, 90s));
  const auto took = std::chrono::steady_clock::now() - started;
  MESSAGE("audit and loan at the head after " << std::chrono::duration<double>(took).count() << " s");
  CHECK(took < 40s);
  CHECK(test::watermark(database.app_url(), "balance") == 0);
  hold->commit();
  hold.reset();
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
  for (const auto& projector : projectors.running) {
    const auto status = projector->status();
    CHECK(status.events_applied == head);
    CHECK(status.stalled_position.value() == 0);
  }
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a shared catch-up range the store no longer ends as read is read again, not applied") {
  // A range read for all projectors is read in a snapshot of its own, maybe before a restore
  // onto another timeline. Each round checks the store still ends it with the hash read; one
  // that does not is dropped from the shared reads and read again. Here every projector is
  // held while the second range (500, 1000] is read ahead for balance and audit, and then the
  // store is rewritten from position 701 into another valid chain.
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url(), 10);
  const auto settings = catch_up_in_rounds_of_500(kafka);
  const std::int64_t head = backlog_behind_split_watermarks(database, kafka, pool, settings);
  // Balance and audit wait to write their first round; loan waits for its watermark rows.
  pqxx::connection holder(database.admin_url());
  auto hold = std::make_unique<pqxx::work>(holder);
  hold->exec("LOCK TABLE read.audit, read.balances, read.entries IN SHARE MODE");
  hold->exec("SELECT 1 FROM read.partition_watermarks WHERE projection = 'loan' FOR UPDATE");
  test::Projectors projectors(pool, settings, true);
  // Held, once (500, 1000] is read: the three wait on the locks, no COPY runs (on two looks in
  // a row: a reader between two reads shows none), and a reader connection's last read was
  // (500, 1000] or, when the loan's read of (0, 500] came after it on the same connection,
  // both last read (0, 500] (a reader takes new work only when its read is done). Under load
  // one reader may do all three reads, (0, 500] again last, while the other never wakes (CI,
  // 2026-12-02): then 3 s of that quiet tell it. Balance and audit wait on the tables' lock
  // only once their round has asked for (500, 1000] ahead, and an idle reader takes a queued
  // range at once; a reader still connecting shows its COPY within those 3 s.
  std::string seen;
  int settled = 0;
  auto quiet_since = std::chrono::steady_clock::time_point::max();
  const bool held = test::eventually(
      [&] {
        pqxx::connection admin(database.admin_url());
        pqxx::nontransaction look(admin);
        const auto waiting = look.exec(
            "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), "
            "count(*) FILTER (WHERE state = 'idle' AND query LIKE 'COPY (SELECT%BETWEEN 500 AND "
            "1000 %'), count(*) FILTER (WHERE state = 'idle' AND query LIKE 'COPY (SELECT%BETWEEN 1 "
            "AND 500 %'), count(*) FILTER (WHERE state <> 'idle' AND query LIKE 'COPY (SELECT%'), "
            "string_agg(concat_ws(' ', state, wait_event_type, left(query, 60), "
            "substring(query from 'BETWEEN [0-9]+ AND [0-9]+')), '; ') "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
        seen = waiting[0][4].c_str();
        const bool read = waiting[0][1].as<int>() >= 1 || waiting[0][2].as<int>() == 2;
        const bool quiet = waiting[0][0].as<int>() == 3 && waiting[0][3].as<int>() == 0;
        settled = quiet && read ? settled + 1 : 0;
        const auto now = std::chrono::steady_clock::now();
        quiet_since = quiet ? std::min(quiet_since, now) : std::chrono::steady_clock::time_point::max();
        return settled >= 2 || (quiet && now - quiet_since >= 3s);
      },
      30s);
  REQUIRE_MESSAGE(held, seen);
  MESSAGE((settled >= 2 ? "held, a reader's last read told: " : "held, 3 s quiet told: ") << seen);
  rewrite_timeline_from(database, pool, 701, head);
  hold->commit();
  hold.reset();
  REQUIRE(test::eventually([&] { return every_partition_at(database.app_url(), head, 4); }, 60s));
  REQUIRE(test::eventually([&] { return projectors.counted_through(head); }, 10s));
  std::int64_t stale = 0;
  for (const auto& projector : projectors.running) {
    const auto status = projector->status();
    MESSAGE("rounds " << status.batches << ", shared " << status.ranges_shared << ", read again "
                      << status.read_ahead_stale);
    stale += status.read_ahead_stale;
    CHECK(status.events_applied == head);
    CHECK(status.stalled_position.value() == 0);
  }
  CHECK(stale >= 1);  // (500, 1000], read before the rewrite: the first to take it read it again
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("catching up over an altered stored event stalls at that position, reading alone or shared") {
  // A shared range's chain is checked whole when it is read, before the round knows which
  // positions it applies: that failure must not become an endless retry of the whole range
  // (no stall reported), but the stall of the position itself, as reading alone gives.
  test::TestDatabase database;
  test::MockKafka kafka(1, 4);
  auto pool = test::make_pool(database.app_url(), 10);
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  const std::int64_t head = published_backlog(engine, relay, database.app_url(), 600);
  constexpr std::int64_t altered = 1'234;
  REQUIRE(head > altered + 500);
  {
    pqxx::connection owner(database.admin_url());
    pqxx::work work(owner);
    work.exec("SET session_replication_role = replica");  // superuser bypass of the trigger
    work.exec_params("UPDATE events SET recorded_at = recorded_at + interval '1 second' WHERE position = $1",
                     altered);
    work.commit();
  }
  bool share_reads = false;
  SUBCASE("each projector on readers of its own") {}
  SUBCASE("the projectors sharing their reads, as in ledger project all") { share_reads = true; }
  auto settings = test::projector_settings(kafka);
  settings.batch_events_max = 200;
  settings.catch_up_events_min = 200;
  settings.catch_up_batch_events_max = 500;
  test::Projectors projectors(pool, settings, share_reads);
  projections::Projector& audit = *projectors.running[1];  // every position is an audit row
  REQUIRE(test::eventually([&] { return audit.status().stalled_position.value() == altered; }, 60s));
  CHECK(test::watermark(database.app_url(), "audit") == altered - 1);
  // The process shows the stall in its status before its row in read.projections commits.
  CHECK(test::eventually(
      [&] {
        return test::scalar(database.app_url(),
                            "SELECT coalesce(stalled_position, 0) FROM read.projections WHERE name = "
                            "'audit'") == altered;
      },
      10s));
}
