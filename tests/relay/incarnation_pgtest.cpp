// Restore-aware positions (issue 16, item 7): after a point-in-time restore the store reuses
// positions whose old events Kafka still holds. The store gets a new incarnation; the relay
// publishes again from the restore point under it, and projectors and consumers refuse the
// lost timeline's messages.
//
// The restore is simulated in the test's cluster: a copy of the database taken at position K
// (CREATE DATABASE ... TEMPLATE, everything stopped, as a base backup would hold it) replaces
// the database after it went on to N; the topic keeps every message of 1..N.

#include "../projections/read_side_fixture.hpp"

namespace ledger::test {
namespace {

void run_sql(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::nontransaction work(connection);
  work.exec(sql);
}

// Relay, projectors and engine on one database, started as a deployment starts them.
struct Stack {
  Stack(const TestDatabase& database, const MockKafka& kafka)
      : pool(make_pool(database.app_url())), relay(relay_settings(kafka), pool) {
    relay.start();
    projectors = std::make_unique<Projectors>(pool, projector_settings(kafka));
    engine = std::make_unique<engine::Engine>(engine_settings(database));
  }
  ~Stack() {
    engine.reset();
    projectors.reset();
    relay.stop();
  }
  void wait_caught_up(const std::string& url) {
    REQUIRE(eventually([&] {
      const auto head = store_head(url);
      return relay.status().acknowledged.value() == head && read_models_caught_up(url) &&
             watermark(url, "loan") == head;
    }));
  }
  db::ConnectionPool pool;
  relay::Relay relay;
  std::unique_ptr<Projectors> projectors;
  std::unique_ptr<engine::Engine> engine;
};

std::string store_hash_at(const std::string& url, std::int64_t position) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return pqxx::binarystring(
             work.exec_params1("SELECT hash FROM events WHERE position = $1", position)[0])
      .str();
}

}  // namespace

TEST_CASE("the envelope carries the incarnation; an envelope without one still decodes") {
  domain::RecordedEvent event;
  event.position = GlobalPosition(7);
  event.stream_id = "account-a";
  event.version = StreamVersion(1);
  event.event_id = "00000000-0000-0000-0000-000000000007";
  event.type = "AccountOpened";
  event.payload = "payload";
  event.hash = std::string(32, 'h');
  const domain::Incarnation incarnation{"4f6c2d1e-0000-4000-8000-000000000001", 41, 1'700'000'000'000'000};

  const auto decoded = domain::decode_envelope_with_incarnation(domain::encode_envelope(event, incarnation));
  REQUIRE(decoded);
  CHECK(decoded->event.position == event.position);
  CHECK(decoded->event.hash == event.hash);
  REQUIRE(decoded->incarnation);
  CHECK(*decoded->incarnation == incarnation);

  const auto old = domain::decode_envelope_with_incarnation(domain::encode_envelope(event));
  REQUIRE(old);
  CHECK_FALSE(old->incarnation.has_value());
  CHECK(old->event.stream_id == "account-a");
}

TEST_CASE("after a restore to position K, read models equal the fold while the topic holds the lost timeline") {
  TestDatabase database;
  MockKafka kafka;
  const std::string snapshot = database.name() + "_at_k";
  const auto first_incarnation = [&] {
    pqxx::connection connection(database.app_url());
    pqxx::read_transaction work(connection);
    return relay::read_store_incarnation(work);
  }();

  // 1..K, published and projected; then the "base backup" at K with everything stopped.
  {
    Stack stack(database, kafka);
    open_accounts(*stack.engine);
    CHECK(random_workload(*stack.engine, 400, 4, 11) > 0);
    stack.wait_caught_up(database.app_url());
  }
  const std::int64_t k = store_head(database.app_url());
  run_sql(TestCluster::instance().superuser_url("postgres"),
          "CREATE DATABASE " + snapshot + " TEMPLATE " + database.name());

  // K+1..N of the timeline the restore will lose.
  {
    Stack stack(database, kafka);
    CHECK(random_workload(*stack.engine, 600, 4, 12) > 0);
    stack.wait_caught_up(database.app_url());
  }
  const std::int64_t n = store_head(database.app_url());
  REQUIRE(n > k + 100);
  const std::string lost_hash = store_hash_at(database.app_url(), k + 1);

  // The restore: the database as it was at K (read models, checkpoints and Kafka offsets too).
  run_sql(TestCluster::instance().superuser_url("postgres"),
          "DROP DATABASE " + database.name() + " WITH (FORCE)");
  run_sql(TestCluster::instance().superuser_url("postgres"),
          "CREATE DATABASE " + database.name() + " TEMPLATE " + snapshot);
  run_sql(TestCluster::instance().superuser_url("postgres"), "DROP DATABASE " + snapshot);
  REQUIRE(store_head(database.app_url()) == k);
  CHECK(scalar(database.app_url(), "SELECT position FROM checkpoints WHERE name = 'relay'") <= k);

  // What ops/restore.sh --finish runs before the stack starts: `ledger migrate new-incarnation`.
  const auto second_incarnation = [&] {
    pqxx::connection connection(database.admin_url());
    return relay::begin_store_incarnation(connection);
  }();
  CHECK(second_incarnation.id != first_incarnation.id);
  CHECK(second_incarnation.since_position == k);
  CHECK(second_incarnation.started_us > first_incarnation.started_us);

  // New events K+1.. with other content, while the topic still holds the old K+1..N.
  {
    Stack stack(database, kafka);
    auto other_incarnation = [&] {
      std::int64_t total = 0;
      for (const auto& projector : stack.projectors->running) total += projector->status().messages_other_incarnation;
      return total;
    };
    // Their restored offsets point at the lost timeline's K+1..N: met before anything appends,
    // those messages name positions above the watermark and are skipped, not applied.
    REQUIRE(eventually([&] { return other_incarnation() >= 3 * (n - k); }, std::chrono::seconds(90)));
    CHECK(watermark(database.app_url(), "audit") == k);
    CHECK(random_workload(*stack.engine, 700, 4, 13) > 0);
    stack.wait_caught_up(database.app_url());
    CHECK(stack.relay.status().incarnation == second_incarnation.id);
    CHECK(stack.relay.status().republishes >= 1);
    for (const auto& projector : stack.projectors->running) {
      CHECK(projector->status().incarnation == second_incarnation.id);
    }
  }
  REQUIRE(store_head(database.app_url()) > k + 1);
  CHECK(store_hash_at(database.app_url(), k + 1) != lost_hash);
  check_read_models_equal_fold(database.app_url());
  CHECK(scalar(database.app_url(),
               "SELECT count(*) FROM read.projections WHERE incarnation = '" + second_incarnation.id + "'") == 3);
  CHECK(scalar(database.app_url(), "SELECT count(*) FROM checkpoints WHERE name = 'relay' AND incarnation = '" +
                                       second_incarnation.id + "'") == 1);

  // A downstream consumer reading the whole topic. Deduplicated by position alone, it keeps
  // the lost timeline's events above K; by (incarnation, position), adopting the latest
  // incarnation, dropping what an older one published above its restore point and taking an
  // older one's messages only at or below it, it holds exactly the store.
  std::map<std::int64_t, std::string> by_position;
  std::map<std::int64_t, std::string> by_incarnation;
  std::optional<domain::Incarnation> adopted;
  for_each_topic_message(kafka, [&](std::int32_t, std::string_view payload) {
    if (domain::decode_progress_marker(payload)) return;  // a progress marker carries no event
    const auto decoded = domain::decode_envelope_with_incarnation(payload);
    REQUIRE(decoded);
    REQUIRE(decoded->incarnation);
    const auto position = decoded->event.position.value();
    by_position.try_emplace(position, decoded->event.hash);
    const auto& incarnation = *decoded->incarnation;
    if (!adopted || incarnation.started_us > adopted->started_us) {
      if (adopted) by_incarnation.erase(by_incarnation.upper_bound(incarnation.since_position), by_incarnation.end());
      adopted = incarnation;
    }
    if (incarnation.id == adopted->id || position <= adopted->since_position) {
      by_incarnation.try_emplace(position, decoded->event.hash);
    }
  });
  const std::int64_t head = store_head(database.app_url());
  int by_position_wrong = 0;
  int by_incarnation_wrong = 0;
  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  for (const auto& row : work.exec("SELECT position, hash FROM events ORDER BY position")) {
    const auto position = row[0].as<std::int64_t>();
    const auto hash = pqxx::binarystring(row[1]).str();
    const auto plain = by_position.find(position);
    if (plain == by_position.end() || plain->second != hash) ++by_position_wrong;
    const auto aware = by_incarnation.find(position);
    if (aware == by_incarnation.end() || aware->second != hash) ++by_incarnation_wrong;
  }
  CHECK(by_position_wrong > 0);  // the failure a position-only consumer has
  CHECK(by_incarnation_wrong == 0);
  CHECK(static_cast<std::int64_t>(by_incarnation.size()) == head);
}

}  // namespace ledger::test
