// The statements a batch runs on the append path (engine/src/store_sql.hpp) against a real
// PostgreSQL: each is prepared once per session and prepared again on a new session after a
// reconnect; a batch goes in by one statement that writes all of it or nothing (a key stored
// first or a version gap: AppendConflict), so the command answers the first outcome.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <pqxx/pqxx>

#include <chrono>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "appender.hpp"
#include "engine_fixture.hpp"
#include "idempotency_store.hpp"
#include "ledger/engine/event_store.hpp"
#include "open_and_fund.hpp"
#include "store_sql.hpp"
#include "stream_loader.hpp"

using namespace ledger;
using namespace ledger::engine;
namespace sql = ledger::domain::sql;

namespace {

std::set<std::string> prepared_statements(pqxx::connection& connection) {
  pqxx::read_transaction work(connection);
  std::set<std::string> names;
  for (const auto& row : work.exec("SELECT name FROM pg_prepared_statements")) names.insert(row[0].c_str());
  return names;
}

// Every read of a batch's transaction, as the decider and the appender run them.
void run_batch_reads(pqxx::connection& connection) {
  prepare_append(connection);
  pqxx::work work(connection);
  const LockedHead head = lock_head(work);
  (void)read_stored_versions(work, {"account-a", "account-b"});
  (void)events_between(work, 0, head.position);
  (void)load_streams(work, {"account-a"}, nullptr);
  (void)find_idempotency_keys(work, {{"test", "k"}});
  work.commit();
}

const std::set<std::string>& hot_path_statements() {
  static const std::set<std::string> names = {
      sql::lock_head_statement.name, sql::stored_versions_statement.name, sql::events_between_statement.name,
      sql::stream_tails_statement.name, sql::idempotency_keys_statement.name};
  return names;
}

IdempotencyRecord record(const std::string& key, std::int64_t position) {
  return {"test", key, std::string(32, 'h'), R"({"code":"ok"})", position};
}

// Appends a batch of no events (a keyed refusal's) holding `records`, as the pipeline does.
void append_records(pqxx::connection& connection, const std::vector<IdempotencyRecord>& records) {
  prepare_append(connection);
  pqxx::work work(connection);
  const LockedHead head = lock_head(work);
  std::vector<domain::RecordedEvent> events;
  (void)append_batch(work, head, events, [&](GlobalPosition) { return records; }, {});
}

}  // namespace

TEST_CASE("every statement of a batch runs prepared, once per session") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  run_batch_reads(connection);
  const auto names = prepared_statements(connection);
  for (const auto& name : hot_path_statements()) CHECK_MESSAGE(names.count(name) == 1, name);
  // A second batch on the same session uses them as they are (no second PREPARE, no error).
  run_batch_reads(connection);
  CHECK(prepared_statements(connection) == names);
}

TEST_CASE("prepared statements are prepared again on the session a reconnect opens") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  run_batch_reads(connection);
  const int first_backend = connection.backendpid();
  {
    pqxx::connection admin(database.admin_url());
    pqxx::nontransaction kill(admin);
    kill.exec_params("SELECT pg_terminate_backend($1)", first_backend);
  }
  // pqxx reopens the connection on the next use after it saw the session end; the reads must
  // then run on the new session, whose statements are prepared anew.
  bool ran = false;
  for (int attempt = 0; attempt < 3 && !ran; ++attempt) {
    try {
      run_batch_reads(connection);
      ran = true;
    } catch (const pqxx::broken_connection&) {
    }
  }
  REQUIRE(ran);
  CHECK(connection.backendpid() != first_backend);
  const auto names = prepared_statements(connection);
  for (const auto& name : hot_path_statements()) CHECK_MESSAGE(names.count(name) == 1, name);

  // A new connection of the pool's (what a discarded lease gets) prepares them itself.
  pqxx::connection fresh(database.app_url());
  run_batch_reads(fresh);
  CHECK(prepared_statements(fresh).count(sql::lock_head_statement.name) == 1);
}

TEST_CASE(
    "a store read whose prepared statement a migration made unusable fails once; the next read "
    "works") {
  // A prepared SELECT keeps its result's column types: after a migration changes one, every
  // execution on that session fails ("cached plan must not change result type", 0A000). The
  // store drops a session whose read failed instead of returning it to the pool.
  test::TestDatabase database;
  auto pool = test::make_pool(database.app_url(), 1);  // one session: a kept one is reused
  EventStore store(pool);
  Engine engine(test::engine_settings(database));
  test::open_and_fund(engine, "migrated", 100);
  const auto before = store.read_all(GlobalPosition(1), 10);
  REQUIRE_FALSE(before.empty());
  const auto head = store.head();
  {
    pqxx::connection admin(database.admin_url());
    pqxx::work migrate(admin);
    migrate.exec("ALTER TABLE events ALTER COLUMN schema_version TYPE integer");
    migrate.commit();
  }
  CHECK_THROWS(store.read_all(GlobalPosition(1), 10));
  // New sessions, whose statements are prepared for the new column types.
  const auto after = store.read_all(GlobalPosition(1), 10);
  REQUIRE(after.size() == before.size());
  CHECK(after.back().hash == before.back().hash);
  CHECK(store.head().position == head.position);
}

TEST_CASE("an idempotency key stored first refuses the batch that repeats it, which writes nothing") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  append_records(connection, {record("k1", 0), record("k2", 0)});
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 2);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM idempotency_keys WHERE actor = 'test' AND key = 'k2' "
                     "AND outcome = convert_to('{\"code\":\"ok\"}', 'UTF8') AND length(request_hash) = 32") == 1);

  // Stored by another writer first: the whole batch is refused (the new key k3 too).
  CHECK_THROWS_AS(append_records(connection, {record("k3", 0), record("k1", 0)}), AppendConflict);
  // The same key twice inside one batch.
  CHECK_THROWS_AS(append_records(connection, {record("k4", 0), record("k4", 0)}), AppendConflict);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 2);
  CHECK(test::scalar(database.app_url(), "SELECT position FROM event_store_head") == 0);
  // The connection serves the next batch.
  append_records(connection, {record("k3", 0)});
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 3);
}

namespace {

// An event of `stream` at `version`, as the decider leaves it for the appender (the append path
// reads no payload but an account entry's).
domain::RecordedEvent event_of(const std::string& stream, std::int64_t version, const std::string& event_id) {
  domain::RecordedEvent event;
  event.stream_id = stream;
  event.version = StreamVersion(version);
  event.event_id = event_id;
  event.type = "account_opened";
  event.payload = std::string("pay\0load\t\\", 10);
  event.metadata.actor = "teller \"one\"";
  event.metadata.request_id = "req\\1";
  event.recorded_at_us = 1'764'720'000'123'456;
  return event;
}

// Appends `events` with `records` and `expiries` in one transaction, as the pipeline does.
AppendOutcome append_rows(pqxx::connection& connection, std::vector<domain::RecordedEvent> events,
                          const std::vector<IdempotencyRecord>& records,
                          const std::vector<ExpiryRecord>& expiries) {
  prepare_append(connection);
  pqxx::work work(connection);
  const LockedHead head = lock_head(work);
  return append_batch(work, head, events, [&](GlobalPosition) { return records; }, expiries);
}

}  // namespace

TEST_CASE("the append statement writes a whole batch or nothing, and stores each column as given") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  const auto rows = [&] {
    return test::scalar(database.app_url(),
                        "SELECT (SELECT count(*) FROM events) * 10000 + (SELECT count(*) FROM "
                        "idempotency_keys) * 100 + (SELECT count(*) FROM pending_expiries)");
  };
  const auto head = [&] { return test::scalar(database.app_url(), "SELECT position FROM event_store_head"); };
  const std::string first_id = "0189f7a2-4c1e-7d3b-9a5f-0123456789ab";
  const auto appended = append_rows(connection, {event_of("s", 1, first_id)}, {record("k1", 1)},
                                    {{"t1", 1'764'720'999'000'001, 0}});
  CHECK(appended.last_position.value() == 1);
  CHECK(rows() == 10101);

  // Each refused batch leaves every table and the head as they were; the connection goes on.
  SUBCASE("a version gap") {
    CHECK_THROWS_AS(append_rows(connection, {event_of("u", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000000a"),
                                             event_of("s", 3, "0189f7a2-4c1e-7d3b-9a5f-00000000000b")},
                                {record("k2", 2)}, {{"t2", 1, 0}}),
                    AppendConflict);
  }
  SUBCASE("a stream version stored first") {
    CHECK_THROWS_AS(append_rows(connection, {event_of("s", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000000c")},
                                {record("k2", 2)}, {{"t2", 1, 0}}),
                    AppendConflict);
  }
  SUBCASE("an idempotency key stored first") {
    CHECK_THROWS_AS(append_rows(connection, {event_of("s", 2, "0189f7a2-4c1e-7d3b-9a5f-00000000000d")},
                                {record("k2", 2), record("k1", 2)}, {{"t2", 1, 0}}),
                    AppendConflict);
  }
  SUBCASE("an expiry stored first") {
    CHECK_THROWS_AS(append_rows(connection, {event_of("s", 2, "0189f7a2-4c1e-7d3b-9a5f-00000000000e")},
                                {record("k2", 2)}, {{"t1", 1, 0}}),
                    AppendConflict);
  }
  CHECK(rows() == 10101);
  CHECK(head() == 1);
  (void)append_rows(connection, {event_of("s", 2, "0189f7a2-4c1e-7d3b-9a5f-00000000000f")}, {record("k2", 2)}, {});
  CHECK(rows() == 20201);
  CHECK(head() == 2);

  // The first batch's rows read back exactly, and its hash chains from the genesis hash.
  auto pool = test::make_pool(database.app_url(), 1);
  EventStore store(pool);
  const auto stored = store.read_all(GlobalPosition(1), 1);
  REQUIRE(stored.size() == 1);
  domain::RecordedEvent expected = event_of("s", 1, first_id);
  // What was stored is what was hashed: every column the chain covers reads back as hashed.
  CHECK(domain::chains_from(domain::genesis_hash(), stored[0]));
  CHECK(stored[0].position.value() == 1);
  CHECK(stored[0].version.value() == 1);
  CHECK(stored[0].schema_version == expected.schema_version);
  CHECK(stored[0].stream_id == expected.stream_id);
  CHECK(stored[0].event_id == expected.event_id);
  CHECK(stored[0].type == expected.type);
  CHECK(stored[0].payload == expected.payload);
  CHECK(stored[0].metadata == expected.metadata);
  CHECK(stored[0].recorded_at_us == expected.recorded_at_us);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM idempotency_keys WHERE actor = 'test' AND key = 'k1' AND position = 1 "
                     "AND outcome = convert_to('{\"code\":\"ok\"}', 'UTF8') AND request_hash = "
                     "decode(repeat('68', 32), 'hex')") == 1);
  CHECK(test::scalar(database.app_url(),
                     "SELECT (extract(epoch FROM expires_at) * 1000000)::bigint FROM pending_expiries "
                     "WHERE transfer_id = 't1'") == 1'764'720'999'000'001);
}

TEST_CASE("an append on the head writes only while the head is where the writer left it") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  prepare_append(connection);
  const auto rows = [&] {
    return test::scalar(database.app_url(),
                        "SELECT (SELECT count(*) FROM events) * 10000 + (SELECT count(*) FROM "
                        "idempotency_keys) * 100 + (SELECT count(*) FROM pending_expiries)");
  };
  const auto stored_head = [&] {
    pqxx::connection reader(database.app_url());
    pqxx::read_transaction work(reader);
    const auto row = work.exec1("SELECT position, hash FROM event_store_head");
    return LockedHead{row[0].as<std::int64_t>(), pqxx::binarystring(row[1]).str()};
  };
  const auto append = [&](const LockedHead& head, std::vector<domain::RecordedEvent> events,
                          std::vector<IdempotencyRecord> records,
                          std::vector<ExpiryRecord> expiries) {
    return append_on_head(
        connection, head, events, [&](GlobalPosition) { return records; }, expiries);
  };
  const LockedHead genesis = stored_head();
  const auto first = append(genesis,
                            {event_of("h", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000002a"),
                             event_of("h", 2, "0189f7a2-4c1e-7d3b-9a5f-00000000002b")},
                            {record("h1", 2)}, {{"th1", 1, 0}});
  REQUIRE(first.has_value());
  CHECK(first->position == 2);
  CHECK(rows() == 20101);
  const LockedHead after_first = stored_head();
  CHECK(after_first.position == first->position);
  CHECK(after_first.hash == first->hash);

  // A writer that believes the head is still at the genesis: nothing of its batch is written.
  CHECK_FALSE(append(genesis, {event_of("g", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000002c")},
                     {record("g1", 1)}, {{"tg1", 1, 0}})
                  .has_value());
  // Nor with the right position and another hash (a head moved and moved back cannot pass).
  CHECK_FALSE(append(LockedHead{after_first.position, genesis.hash},
                     {event_of("g", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000002d")}, {record("g1", 1)},
                     {})
                  .has_value());
  // On the right head, a key stored first refuses the whole batch (the head stays).
  CHECK_THROWS_AS(append(after_first, {event_of("g", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000002e")},
                         {record("g1", 3), record("h1", 3)}, {}),
                  AppendConflict);
  // So does a version gap.
  CHECK_THROWS_AS(
      append(after_first, {event_of("h", 4, "0189f7a2-4c1e-7d3b-9a5f-00000000002f")}, {}, {}),
      AppendConflict);
  CHECK(rows() == 20101);
  CHECK(stored_head().position == 2);

  // While another writer's transaction holds the head row, the append waits for it; once that
  // writer moved the head, it writes nothing.
  pqxx::connection other(database.app_url());
  prepare_append(other);
  pqxx::work held(other);
  const LockedHead locked = lock_head(held);
  auto waiting = std::async(std::launch::async, [&] {
    return append(after_first, {event_of("w", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000003a")}, {}, {});
  });
  CHECK(waiting.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout);
  std::vector<domain::RecordedEvent> theirs = {
      event_of("o", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000003b")};
  (void)append_batch(held, locked, theirs,
                     [](GlobalPosition) { return std::vector<IdempotencyRecord>{}; }, {});
  CHECK_FALSE(waiting.get().has_value());
  CHECK(rows() == 30101);
  CHECK(stored_head().position == 3);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE stream_id = 'w'") == 0);

  // On the head as stored, it goes on, chained after the other writer's event.
  const LockedHead now = stored_head();
  const auto last = append(now, {event_of("w", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000003c")}, {}, {});
  REQUIRE(last.has_value());
  CHECK(last->position == 4);
  auto pool = test::make_pool(database.app_url(), 1);
  EventStore store(pool);
  const auto stored = store.read_all(GlobalPosition(1), 10);
  REQUIRE(stored.size() == 4);
  std::string previous = genesis.hash;
  for (const auto& event : stored) {
    CHECK(domain::chains_from(previous, event));
    previous = event.hash;
  }
  CHECK(previous == stored_head().hash);
}

TEST_CASE("a check the store fails that is not a version gap is an error, not a conflict to retry") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  prepare_append(connection);
  pqxx::work work(connection);
  (void)lock_head(work);
  // A head hash of 31 bytes breaks event_store_head's CHECK (length(hash) = 32).
  std::vector<domain::RecordedEvent> none;
  CHECK_THROWS_AS(append_batch(work, LockedHead{0, std::string(31, 'x')}, none,
                               [](GlobalPosition) { return std::vector<IdempotencyRecord>{record("k", 0)}; }, {}),
                  pqxx::check_violation);
}

// The relay's wake-up (migration 0004) is a statement trigger on events: a commit of keyed
// refusals only, which appends no event, must not wake it.
TEST_CASE("a commit of idempotency records alone does not wake the relay; one with events does") {
  test::TestDatabase database;
  struct Receiver : pqxx::notification_receiver {
    using pqxx::notification_receiver::notification_receiver;
    int received = 0;
    void operator()(const std::string&, int) override { ++received; }
  };
  pqxx::connection listening(database.app_url());
  Receiver receiver(listening, "ledger_events_appended");
  pqxx::connection connection(database.app_url());
  append_records(connection, {record("alone", 0)});
  for (int i = 0; i < 5; ++i) (void)listening.await_notification(0, 100'000);
  CHECK(receiver.received == 0);
  (void)append_rows(connection, {event_of("woken", 1, "0189f7a2-4c1e-7d3b-9a5f-00000000001a")}, {}, {});
  for (int i = 0; i < 50 && receiver.received == 0; ++i) (void)listening.await_notification(0, 100'000);
  CHECK(receiver.received == 1);
}

TEST_CASE("two writers storing the same keys at once: every command answers the first outcome") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.commit_wait_max = std::chrono::milliseconds(20);
  Engine first(settings);
  Engine second(settings);
  test::open_and_fund(first, "alice", 1'000);
  constexpr int keys = 300;
  // A keyed refusal writes its key and no event, so the second writer's batch meets the key
  // itself (not a stream version) stored first.
  std::vector<std::future<domain::CommandOutcome>> a, b;
  for (int i = 0; i < keys; ++i) {
    const std::string key = "k" + std::to_string(i);
    a.push_back(first.submit(test::command(domain::Withdrawal{"nobody", Amount(1)}, key, "w")));
    b.push_back(second.submit(test::command(domain::Withdrawal{"nobody", Amount(1)}, key, "w")));
  }
  int replayed = 0;
  for (int i = 0; i < keys; ++i) {
    const auto one = a[static_cast<std::size_t>(i)].get();
    const auto other = b[static_cast<std::size_t>(i)].get();
    CHECK(one.code == domain::RejectionCode::unknown_account);
    CHECK(other.code == domain::RejectionCode::unknown_account);
    CHECK(one.command_id == other.command_id);
    CHECK(one.replayed != other.replayed);
    replayed += (one.replayed ? 1 : 0) + (other.replayed ? 1 : 0);
  }
  CHECK(replayed == keys);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'k%'") == keys);
  MESSAGE("append conflicts: " << first.stats().conflicts + second.stats().conflicts);
}

TEST_CASE("the tables the append path writes carry only the indexes engine/README.md justifies") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  std::set<std::string> indexes;
  for (const auto& row : work.exec("SELECT tablename || '.' || indexname FROM pg_indexes "
                                   "WHERE schemaname = 'public' AND tablename IN ('events', 'idempotency_keys')")) {
    indexes.insert(row[0].c_str());
  }
  // Each one is paid for by every append: a new one needs a query and a line in the README's table.
  CHECK(indexes == std::set<std::string>{"events.events_pkey", "events.events_event_id_key",
                                         "events.events_stream_version_key", "events.events_loan_disbursed_idx",
                                         "idempotency_keys.idempotency_keys_pkey"});
}

namespace {

long long events_sequential_scans(const test::TestDatabase& database) {
  // The cumulative statistics reach the view within a second of a backend going idle.
  std::this_thread::sleep_for(std::chrono::milliseconds(1'500));
  return test::scalar(database.admin_url(),
                      "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'events'");
}

}  // namespace

// The statement trigger of migration 0006 checks that each appended stream continues where it
// ended. Its plan is made once per session, at the session's first append, from that append's
// row count and the log's size then: a large first batch on a small log planned a scan of the
// whole events table, kept for the session's life, so every later append read the whole log
// (in the bench one serve fell from about 5,000 transfers/s to 400 as the log grew).
TEST_CASE("the dense-versions check probes the index, whatever the session's first append planned") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.database_connections = 1;  // every append on one session
  settings.decide_while_committing = false;
  settings.commit_wait_max = std::chrono::milliseconds(200);
  Engine engine(settings);
  // The session's first append: 3,000 streams at once into an empty log.
  constexpr int accounts = 3'000;
  std::vector<std::future<domain::CommandOutcome>> opened;
  for (int i = 0; i < accounts; ++i) {
    opened.push_back(engine.submit(test::command(domain::OpenAccount{"scan-" + std::to_string(i), test::eur()})));
  }
  for (auto& outcome : opened) REQUIRE(outcome.get().accepted());

  // Then small appends that continue existing streams, as a serve's traffic does.
  const auto scans_before = events_sequential_scans(database);
  constexpr int deposits = 50;
  for (int i = 0; i < deposits; ++i) {
    REQUIRE(engine.execute(test::command(domain::Deposit{"scan-" + std::to_string(i), Amount(1)})).accepted());
  }
  const auto scans = events_sequential_scans(database) - scans_before;
  MESSAGE(deposits << " appends scanned the events table " << scans << " times");
  CHECK(scans == 0);
}

// The idempotency lookup is prepared: after five runs PostgreSQL may keep a generic plan for
// the session. Planned while the table was small, a lookup of a large batch's keys joined them
// by hashing after a scan of the whole table, and every later lookup of the session scanned it
// (the bench saw thousands of such scans a minute).
TEST_CASE("the idempotency lookup probes the key index, whatever the session planned first") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  auto keys = [](int count, int offset) {
    std::vector<IdempotencyKey> keys;
    for (int i = 0; i < count; ++i) keys.emplace_back("test", "k-" + std::to_string(offset + i));
    return keys;
  };
  // Early in the session: lookups of large batches on an almost empty table.
  for (int round = 0; round < 10; ++round) {
    pqxx::read_transaction work(connection);
    (void)find_idempotency_keys(work, keys(2'000, round * 2'000));
    work.commit();
  }
  // The table grows (another writer's keys).
  {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("INSERT INTO idempotency_keys (actor, key, request_hash, outcome, position) "
              "SELECT 'other', 'o-' || i, '\\x00'::bytea, '\\x00'::bytea, 0 FROM generate_series(1, 50000) i");
    work.commit();
  }
  const auto scans_before = test::scalar(database.admin_url(),
                                         "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'idempotency_keys'");
  for (int round = 0; round < 20; ++round) {
    pqxx::read_transaction work(connection);
    (void)find_idempotency_keys(work, keys(16, round * 16));
    work.commit();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1'500));
  const auto scans = test::scalar(database.admin_url(),
                                  "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'idempotency_keys'") -
                     scans_before;
  MESSAGE("20 lookups of 16 keys scanned the whole table " << scans << " times");
  CHECK(scans == 0);
}

namespace {

// Slows an append by a delay (seconds) in each of its writes: the events' insert, the
// idempotency records' insert (both in the append's one statement), and the COMMIT (a deferred
// trigger on the head row runs there).
void slow_append_steps(const test::TestDatabase& database, double events, double keys,
                       double commit) {
  pqxx::connection admin(database.admin_url());
  pqxx::work work(admin);
  work.exec(fmt::format(R"sql(
    CREATE FUNCTION slow_step() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NULL; END $$;
    CREATE TRIGGER slow_events AFTER INSERT ON events
      FOR EACH STATEMENT EXECUTE FUNCTION slow_step('{}');
    CREATE TRIGGER slow_keys AFTER INSERT ON idempotency_keys
      FOR EACH STATEMENT EXECUTE FUNCTION slow_step('{}');
    CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON event_store_head
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_step('{}');
  )sql",
                        events, keys, commit));
  work.commit();
}

// The step times one committed append added, against slow_append_steps(0.6, 2.0, 5.0): the
// write holds both inserts' delays once, the commit its own, encoding the rows none (any step
// counted twice passes its bound: margins of 0.6 s and more for a loaded machine, e.g. ctest
// -j 4 on two cores).
void check_one_append_by_step(const EngineStats& before, const EngineStats& after) {
  CHECK(after.head_lock_held_seconds.count() == before.head_lock_held_seconds.count() + 1);
  const double rows = after.append_step_seconds.rows - before.append_step_seconds.rows;
  const double write = after.append_step_seconds.write - before.append_step_seconds.write;
  const double commit = after.append_step_seconds.commit - before.append_step_seconds.commit;
  const double held = after.head_lock_held_seconds.sum() - before.head_lock_held_seconds.sum();
  INFO("rows " << rows << " s, write " << write << " s, commit " << commit << " s, held " << held
               << " s");
  CHECK(rows < 0.6);
  CHECK(write >= 2.6);
  CHECK(write < 4.6);
  CHECK(commit >= 5.0);
  CHECK(commit < 8.0);
  CHECK(rows + write + commit <= held);
}

}  // namespace

TEST_CASE(
    "an append's hold of the head row is told apart by step: encoding the rows, the statement "
    "writing them, the commit") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  REQUIRE(engine.execute(test::command(domain::OpenAccount{"alice", test::eur()})).accepted());
  slow_append_steps(database, 0.6, 2.0, 5.0);
  const auto before = engine.stats();
  REQUIRE(
      engine.execute(test::command(domain::Deposit{"alice", Amount(5)}, "step-key")).accepted());
  check_one_append_by_step(before, test::stats_once_counted(engine, before.commands + 1));
}

TEST_CASE("a commit whose loser is decided again in it counts each step of its hold once") {
  test::TestDatabase database;
  EngineSettings settings = test::engine_settings(database);
  settings.decide_while_committing = true;
  settings.append_batch_commands_max = 2;
  // Both withdrawals in one batch: the writer takes it once the second is queued.
  settings.commit_wait_max = std::chrono::seconds(2);
  Engine mine(settings);
  Engine theirs(settings);
  test::open_and_fund(mine, "x", 1'000);
  test::open_and_fund(mine, "y", 1'000);
  // Mine caches x at 1,000; theirs moves it, so mine's withdrawal from x loses at the append
  // and is decided again inside that append's transaction (write_and_commit with two parts).
  REQUIRE(theirs.execute(test::command(domain::Withdrawal{"x", Amount(900)})).accepted());
  slow_append_steps(database, 0.6, 2.0, 5.0);
  const auto before = mine.stats();
  auto on_x = mine.submit(test::command(domain::Withdrawal{"x", Amount(50)}, "loser-x"));
  auto on_y = mine.submit(test::command(domain::Withdrawal{"y", Amount(50)}, "winner-y"));
  CHECK(on_x.get().accepted());
  CHECK(on_y.get().accepted());
  const auto after = test::stats_once_counted(mine, before.commands + 2);
  REQUIRE(after.commands_redecided == before.commands_redecided + 1);
  CHECK(after.batches == before.batches + 1);
  check_one_append_by_step(before, after);
}
