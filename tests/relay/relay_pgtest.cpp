// The relay against a mock Kafka cluster (DESIGN.md invariants 8 and 9): it republishes from
// an older checkpoint without changing a read model, lags while the broker is down and catches
// up, detects a broker that lost its data, hands over to a standby, and recreates a producer
// that hit a fatal error, losing and reordering nothing. Projectors consume what it publishes,
// so each case also checks the read models still equal the fold of the event store.
#include <doctest/doctest.h>

#include <map>
#include <set>

#include "../engine/engine_fixture.hpp"
#include "../projections/read_side_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;

using test::open_accounts;
using test::Projectors;
using test::random_workload;

// Each projection reads or skips every event on its own.
const auto projection_count = static_cast<std::int64_t>(projections::all_projections().size());

namespace {

// Every position from 1 to `head` is on the topic, each exactly once.
void check_each_position_once(const test::MockKafka& kafka, std::int64_t head) {
  std::int64_t messages = 0;
  std::set<std::int64_t> positions;
  for (const auto& [partition, events] : test::read_topic(kafka)) {
    for (const auto& event : events) {
      positions.insert(event.position.value());
      ++messages;
    }
  }
  CHECK(static_cast<std::int64_t>(positions.size()) == head);
  CHECK(messages == head);
}

}  // namespace

TEST_CASE("a relay restarted from an older checkpoint republishes, and no read model changes") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  auto relay = std::make_unique<relay::Relay>(test::relay_settings(kafka), pool);
  relay->start();
  Projectors projectors(pool, test::projector_settings(kafka));
  open_accounts(engine);
  random_workload(engine, 2'000);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  const std::string before = test::read_model_digest(database.app_url());
  const std::int64_t head = test::store_head(database.app_url());

  relay->stop();
  relay.reset();
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec("UPDATE checkpoints SET position = 0 WHERE name = 'relay'");
    work.commit();
  }
  relay::Relay again(test::relay_settings(kafka), pool);
  again.start();
  // Every event is delivered a second time and skipped by both projections.
  REQUIRE(test::eventually([&] { return projectors.duplicates_skipped() >= projection_count * head; }));
  CHECK(test::read_model_digest(database.app_url()) == before);
  CHECK(test::watermark(database.app_url(), "balance") == head);
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("with the broker down commands succeed and the relay lags; then everything converges") {
  test::TestDatabase database;
  // No healing from the store while Kafka is quiet.
  test::ReadSideStack stack(database, 6, [](auto& settings) { settings.gap_wait = std::chrono::hours(1); });
  auto& [kafka, pool, engine, relay, projectors] = stack;
  open_accounts(engine);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));

  kafka.set_down(true);
  const int accepted = random_workload(engine, 3'000);
  CHECK(accepted > 1'500);  // commands do not wait for Kafka
  const std::int64_t head = test::store_head(database.app_url());
  std::this_thread::sleep_for(1s);
  const auto during = relay.status();
  CHECK(during.acknowledged.value() < head);
  CHECK(test::watermark(database.app_url(), "balance") < head);

  kafka.set_down(false);
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a broker that lost its data is detected and the relay publishes again what read models need") {
  test::TestDatabase database;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  open_accounts(engine);
  const std::int64_t head = test::store_head(database.app_url());
  {
    test::MockKafka first(1, 1);
    relay::Relay relay(test::relay_settings(first), pool);
    relay.start();
    REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));
    relay.stop();
  }
  CHECK(test::scalar(database.app_url(), "SELECT position FROM checkpoints WHERE name = 'relay'") == head);

  // The development broker restarted: same address book, no data. No read model has applied
  // anything yet, so everything must be published again.
  test::MockKafka second(1, 1);
  relay::Relay relay(test::relay_settings(second), pool);
  relay.start();
  REQUIRE(test::eventually([&] { return relay.status().republishes >= 1; }, 30s));
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));
  auto settings = test::projector_settings(second);
  settings.gap_wait = std::chrono::hours(1);  // everything must come through Kafka
  Projectors projectors(pool, settings);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  CHECK(projectors.events_from_store() == 0);
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("one relay publishes at a time; a standby takes over within seconds when the leader stops") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  auto first = std::make_unique<relay::Relay>(test::relay_settings(kafka), pool);
  first->start();
  REQUIRE(test::eventually([&] { return first->status().leader; }, 10s));
  relay::Relay second(test::relay_settings(kafka), pool);
  second.start();
  std::this_thread::sleep_for(1s);
  CHECK_FALSE(second.status().leader);  // the advisory lock is taken

  open_accounts(engine);
  const std::int64_t before = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return first->status().acknowledged.value() == before; }));
  CHECK(second.status().events_acknowledged == 0);

  const auto stopped = std::chrono::steady_clock::now();
  first->stop();
  first.reset();
  REQUIRE(test::eventually([&] { return second.status().leader; }, 20s));
  const auto took = std::chrono::steady_clock::now() - stopped;
  MESSAGE("standby took over after " << std::chrono::duration<double>(took).count() << " s");
  CHECK(took < 10s);  // within seconds: the stop's flush, the lock, a producer; a loaded machine
  random_workload(engine, 500);
  const std::int64_t after = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return second.status().acknowledged.value() == after; }));
  CHECK(test::scalar(database.app_url(), "SELECT position FROM checkpoints WHERE name = 'relay'") <= after);
}

TEST_CASE("a relay whose producer hit a fatal error recreates it and publishes on, losing and reordering nothing") {
  test::TestDatabase database;
  // Everything must come through Kafka: no healing from the store while it is quiet.
  test::ReadSideStack stack(database, 6, [](auto& settings) { settings.gap_wait = std::chrono::hours(1); });
  auto& [kafka, pool, engine, relay, projectors] = stack;
  open_accounts(engine);
  const std::int64_t before = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == before; }));

  // The next Produce request fails with a sequence error at the head of its partition's
  // queue: for an idempotent producer that is fatal (librdkafka refuses every later produce).
  kafka.fail_produce_requests(RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, 1);
  random_workload(engine, 1'000);
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }, 60s));
  CHECK(relay.status().producer_recreations >= 1);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }, 60s));
  test::check_read_models_equal_fold(database.app_url());

  // On the topic: every position, and per stream every version in order once repeats (the
  // republished tail) are dropped, as a consumer deduplicating by version sees them.
  std::set<std::int64_t> positions;
  std::map<std::string, std::int64_t> last_version;
  int out_of_order = 0;
  for (const auto& [partition, events] : test::read_topic(kafka)) {
    for (const auto& event : events) {
      positions.insert(event.position.value());
      auto& last = last_version[event.stream_id];
      if (event.version.value() <= last) continue;
      if (event.version.value() != last + 1) ++out_of_order;
      last = event.version.value();
    }
  }
  CHECK(out_of_order == 0);
  CHECK(static_cast<std::int64_t>(positions.size()) == head);
  CHECK(*positions.rbegin() == head);
}

TEST_CASE(
    "a position missing from the store stops the relay at the gap, not the process; it goes on "
    "once the event is back") {
  // One position inside a read, or a run of positions wider than a whole read (a read then
  // finds nothing at all, as at the head).
  std::int64_t width = 1;
  std::size_t read_batch = relay::RelaySettings{}.read_batch_events;
  SUBCASE("one position") {}
  SUBCASE("a run wider than a read") {
    width = 40;
    read_batch = 16;
  }
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  open_accounts(engine);
  random_workload(engine, 200);
  const std::int64_t stored_head = test::store_head(database.app_url());
  const std::int64_t missing = stored_head / 2;
  REQUIRE(missing > 1);
  // A damaged store (a restore gone wrong, a hand edit): positions taken out, kept aside.
  const std::string superuser = test::TestCluster::instance().superuser_url(database.name());
  auto as_superuser = [&](const std::string& sql) {
    pqxx::connection connection(superuser);
    pqxx::work work(connection);
    work.exec("SET session_replication_role = replica");  // past the store's own triggers
    work.exec(sql);
    work.commit();
  };
  const std::string range =
      "position BETWEEN " + std::to_string(missing) + " AND " + std::to_string(missing + width - 1);
  as_superuser("CREATE TABLE taken_out AS SELECT * FROM events WHERE " + range +
               "; DELETE FROM events WHERE " + range);

  // The relay publishes everything before the hole and nothing past it (a later event would
  // name an envelope's previous position Kafka never got), and the process lives on.
  auto settings = test::relay_settings(kafka);
  settings.read_batch_events = read_batch;
  relay::Relay relay(settings, pool);
  relay.start();
  REQUIRE(test::eventually([&] { return relay.status().missing_position.value() == missing; }));
  // Appends go on meanwhile (they wake no read past the hole).
  random_workload(engine, 20);
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(head > stored_head);
  std::this_thread::sleep_for(1s);
  CHECK(relay.status().acknowledged.value() == missing - 1);
  CHECK(relay.status().published.value() == missing - 1);
  CHECK(relay.status().missing_position.value() == missing);
  CHECK(relay.status().leader);
  CHECK(relay.status().republishes == 0);  // nothing rewound while it waits at the hole

  as_superuser("INSERT INTO events SELECT * FROM taken_out; DROP TABLE taken_out");
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));
  CHECK(relay.status().missing_position.value() == 0);
  // Each position once (nothing was published twice while it waited).
  check_each_position_once(kafka, head);
}

TEST_CASE("the relay's connection for reading the log cut again and again: it reconnects, keeps leading, publishes each position once") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  open_accounts(engine);
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  REQUIRE(test::eventually([&] { return relay.status().leader; }, 10s));

  // A database that drops the reader's session (a restarted pooler, an administrator, a
  // network cut) between and during its COPYs, while commands keep appending.
  pqxx::connection superuser(test::TestCluster::instance().superuser_url(database.name()));
  int cut = 0;
  for (int round = 0; round < 10; ++round) {
    random_workload(engine, 60);
    pqxx::nontransaction work(superuser);
    cut += work.exec1("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                      "AND query LIKE 'COPY (SELECT position%'")[0]
               .as<int>();
    // Caught up again before the next cut: each cut finds a reader connected.
    const std::int64_t appended = test::store_head(database.app_url());
    REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == appended; }));
  }
  MESSAGE("cut the reader's connection " << cut << " times");
  CHECK(cut >= 3);
  const std::int64_t head = test::store_head(database.app_url());
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() == head; }));
  // The leader never let go (a read that fails is read again, not a new leadership that
  // republishes from the checkpoint), so each position reached Kafka exactly once.
  CHECK(relay.status().leader);
  CHECK(relay.status().republishes == 0);
  check_each_position_once(kafka, head);
}
