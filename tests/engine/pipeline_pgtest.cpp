// The engine's pipeline against a real PostgreSQL: dense positions, dense versions and the hash
// chain, batching, a crash before commit, tamper evidence, and version conflicts with other
// writers (re-decided a bounded number of times, never refused on a stale cached state).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/event_store.hpp"
#include "open_and_fund.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
using test::open_and_fund;

namespace {

db::PoolSettings pool_settings(const std::string& url) {
  db::PoolSettings settings;
  settings.url = url;
  settings.connections_max = 2;
  return settings;
}

}  // namespace

TEST_CASE("appends get dense positions, dense versions and a verifiable hash chain") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 10'000);
  open_and_fund(engine, "bob", 0);
  const auto outcome = engine.execute(command(domain::Transfer{"t1", "alice", "bob", Amount(2'500), eur()}));
  REQUIRE(outcome.accepted());
  // Transfer stream, alice, bob: three events, the last one at the command's position.
  CHECK(outcome.versions.size() == 3);
  CHECK(outcome.position.value() ==
        test::scalar(database.app_url(), "SELECT max(position) FROM events"));

  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  const auto all = store.read_all(GlobalPosition(1), 1000);
  REQUIRE(!all.empty());
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].position.value() == static_cast<std::int64_t>(i + 1));
  const auto alice = store.read_stream("account-alice", StreamVersion(1), 100);
  for (std::size_t i = 0; i < alice.size(); ++i) CHECK(alice[i].version.value() == static_cast<std::int64_t>(i + 1));
  CHECK(alice.front().metadata.actor == "test");
  CHECK(!alice.front().metadata.command_id.empty());
  CHECK(store.head().position == all.back().position);
  CHECK(store.head().hash == all.back().hash);
  const auto verification = store.verify_chain();
  CHECK(verification.ok);
  CHECK(verification.events_checked == static_cast<std::int64_t>(all.size()));

  const auto state = engine.read_account("bob");
  REQUIRE(state.has_value());
  CHECK(state->credits_posted == Amount(2'500));
  CHECK(engine.read_account("alice")->balance() == Amount(7'500));
}

TEST_CASE(
    "an engine alone appends on its own head in one statement: deposits and transfers, the chain "
    "verifies") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.decide_while_committing = true;
  Engine engine(settings);
  constexpr int accounts = 20;
  for (int i = 0; i < accounts; ++i) open_and_fund(engine, fmt::format("own-{}", i), 1'000);
  for (const bool deposits : {true, false}) {
    INFO(std::string(deposits ? "deposits" : "transfers"));
    const auto before = engine.stats();
    std::vector<std::future<CommandOutcome>> outcomes;
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < accounts; ++i) {
        const std::string account = fmt::format("own-{}", i);
        outcomes.push_back(engine.submit(
            deposits
                ? command(domain::Deposit{account, Amount(1)})
                : command(domain::Transfer{"", account, fmt::format("own-{}", (i + 1) % accounts),
                                           Amount(1), eur()})));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& outcome : outcomes) REQUIRE(outcome.get().accepted());
    const auto after = test::stats_once_counted(engine, before.commands + outcomes.size());
    MESSAGE(std::string(deposits ? "deposits: " : "transfers: ")
            << after.batches - before.batches << " commits, "
            << after.appends_on_own_head - before.appends_on_own_head
            << " on the engine's own head");
    // Every commit but the first after a transaction's went on the head in one statement; none
    // found the head moved (no other writer).
    CHECK(after.appends_on_own_head - before.appends_on_own_head + 1 >=
          after.batches - before.batches);
    CHECK(after.appends_on_own_head_missed == 0);
  }
  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  CHECK(store.verify_chain().ok);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                     "HAVING max(version) <> count(*)) gaps") == 0);
}

TEST_CASE("commit_wait_max gathers what is submitted at once into one large batch; the chain verifies") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  // Let the writer gather what is submitted at once into one batch.
  settings.commit_wait_max = std::chrono::milliseconds(300);
  Engine engine(settings);
  open_and_fund(engine, "alice", 1'000'000);
  open_and_fund(engine, "bob", 0);
  // 400 transfers at once: one batch of 1,200 events.
  std::vector<std::future<domain::CommandOutcome>> outcomes;
  for (int i = 0; i < 400; ++i) {
    outcomes.push_back(engine.submit(command(domain::Transfer{"", "alice", "bob", Amount(1 + i), eur()})));
  }
  for (auto& outcome : outcomes) REQUIRE(outcome.get().accepted());
  // Then one transfer on its own: a batch of three events.
  REQUIRE(engine.execute(command(domain::Transfer{"", "bob", "alice", Amount(7), eur()})).accepted());

  const auto stats = engine.stats();
  const auto& bounds = stats.batch_commands.upper_bounds();
  const auto at_most_100 = stats.batch_commands.cumulative_counts()[static_cast<std::size_t>(
      std::find(bounds.begin(), bounds.end(), 100.0) - bounds.begin())];
  CHECK(stats.batch_commands.count() - at_most_100 >= 1);  // a batch of more than 100 commands
  CHECK(at_most_100 >= 1);                                 // and small ones

  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  const auto verification = store.verify_chain();
  CHECK(verification.ok);
  CHECK(verification.events_checked == test::scalar(database.app_url(), "SELECT count(*) FROM events"));
  const auto all = store.read_all(GlobalPosition(1), 10'000);
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].position.value() == static_cast<std::int64_t>(i + 1));
  CHECK(all.back().metadata.actor == "test");
  CHECK(all.back().recorded_at_us > all.front().recorded_at_us);
  CHECK(engine.read_account("bob")->balance() == Amount(400 * 401 / 2 - 7));
}

TEST_CASE("a batch whose connection dies before commit leaves nothing behind; the engine goes on") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 1'000);
  open_and_fund(engine, "bob", 0);
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");

  // Make the next append hang inside its transaction, then kill its connection there.
  {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$");
    work.exec(
        "CREATE TRIGGER slow_insert BEFORE INSERT ON events FOR EACH ROW "
        "EXECUTE FUNCTION slow_insert()");
    work.commit();
  }
  auto pending = engine.submit(command(domain::Transfer{"t-crash", "alice", "bob", Amount(100), eur()}));
  {
    pqxx::connection admin(database.admin_url());
    int killed = 0;
    for (int attempt = 0; attempt < 200 && killed == 0; ++attempt) {
      pqxx::work work(admin);
      killed = work.exec1(
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND usename = 'ledger_app' "
                       "AND wait_event = 'PgSleep'")[0]
                   .as<int>();
      // In the same transaction: the DROP queues for the table lock before the engine's retry
      // can, so the retry never meets the sleeping trigger (it waits for this commit instead).
      if (killed == 1) work.exec("DROP TRIGGER slow_insert ON events");
      work.commit();
      if (killed == 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    REQUIRE(killed == 1);
  }
  // Nothing of the killed transaction is visible; the engine retries on a new connection.
  const auto outcome = pending.get();
  CHECK(outcome.accepted());
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before + 3);
  CHECK(test::scalar(database.app_url(), "SELECT max(position) FROM events") == events_before + 3);
  CHECK(engine.execute(command(domain::Transfer{"t-after", "alice", "bob", Amount(100), eur()})).accepted());
  CHECK(engine.read_account("bob")->balance() == Amount(200));
}

TEST_CASE("tampering with a stored event is found by re-verifying the chain") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    open_and_fund(engine, "alice", 1'000);
    open_and_fund(engine, "bob", 500);
    REQUIRE(engine.execute(command(domain::Transfer{"t1", "alice", "bob", Amount(10), eur()})).accepted());
  }
  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  REQUIRE(store.verify_chain().ok);
  const auto total = store.head().position.value();
  REQUIRE(total > 6);

  SUBCASE("an altered payload") {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("SET session_replication_role = replica");  // superuser bypass of the trigger
    work.exec("UPDATE events SET payload = payload || '\\x00'::bytea WHERE position = 5");
    work.commit();
    const auto verification = store.verify_chain();
    CHECK_FALSE(verification.ok);
    CHECK(verification.first_bad_position.value() == 5);
  }
  SUBCASE("altered metadata") {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("SET session_replication_role = replica");
    work.exec("UPDATE events SET metadata = jsonb_set(metadata, '{actor}', '\"mallory\"') WHERE position = 3");
    work.commit();
    const auto verification = store.verify_chain();
    CHECK_FALSE(verification.ok);
    CHECK(verification.first_bad_position.value() == 3);
  }
  SUBCASE("a deleted event") {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("SET session_replication_role = replica");
    work.exec("DELETE FROM events WHERE position = 4");
    work.commit();
    const auto verification = store.verify_chain();
    CHECK_FALSE(verification.ok);
    CHECK(verification.first_bad_position.value() == 4);
    CHECK(verification.problem == "event missing");
  }
}

namespace {

// Plays another writer that slips a row in behind the engine's back: a trigger inserts, just
// before the engine's own row, an event with the same stream and version into the engine's
// transaction, for the first `collisions` appends to `stream_id`. The engine's insert then
// fails on unique (stream_id, version) exactly as it does when another instance won the race.
// The sequence `appends_tried` counts every append to the stream (it is not rolled back).
void collide_with_appends(const test::TestDatabase& database, const std::string& stream_id,
                          int collisions) {
  pqxx::connection admin(database.admin_url());
  pqxx::work work(admin);
  work.exec("CREATE SEQUENCE IF NOT EXISTS appends_tried");
  work.exec("ALTER SEQUENCE appends_tried RESTART");
  work.exec(fmt::format(R"sql(
CREATE OR REPLACE FUNCTION collide() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF pg_trigger_depth() = 1 AND NEW.stream_id = {} THEN
    IF nextval('appends_tried') <= {} THEN
      INSERT INTO events (position, stream_id, version, event_id, type, schema_version, payload,
                          metadata, recorded_at, hash)
      VALUES (NEW.position + 1000000, NEW.stream_id, NEW.version, gen_random_uuid(), NEW.type,
              NEW.schema_version, NEW.payload, NEW.metadata, NEW.recorded_at, NEW.hash);
    END IF;
  END IF;
  RETURN NEW;
END $$)sql",
                        work.quote(stream_id), collisions));
  work.exec("DROP TRIGGER IF EXISTS collide ON events");
  work.exec(
      "CREATE TRIGGER collide BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION collide()");
  work.commit();
}

long long appends_tried(const test::TestDatabase& database) {
  return test::scalar(database.admin_url(),
                      "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM appends_tried");
}

void stop_colliding(const test::TestDatabase& database) {
  pqxx::connection admin(database.admin_url());
  pqxx::work work(admin);
  work.exec("DROP TRIGGER collide ON events");
  work.commit();
}

}  // namespace

TEST_CASE("a conflicting command is re-decided a bounded number of times, then answers conflict") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.conflict_retries_max = 2;
  // With pipelining, a command (keyed or not) is first decided ahead on the cache and appended
  // by the committer; that failed append sends it to the serial path, which counts its
  // conflicts against the bound. One extra try, still bounded.
  SUBCASE("deciding while committing") {
    settings.decide_while_committing = true;
  }
  SUBCASE("one batch at a time") {
    settings.decide_while_committing = false;
  }
  const long long decided_ahead = settings.decide_while_committing ? 1 : 0;
  Engine engine(settings);
  open_and_fund(engine, "victim", 1'000);
  const auto stream = domain::account_stream("victim");
  const auto before = engine.read_account("victim");
  REQUIRE(before.has_value());
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  const auto head_before =
      test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  const auto nothing_written = [&] {
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before);
    CHECK(test::scalar(database.app_url(), "SELECT position FROM event_store_head") == head_before);
    CHECK(engine.read_account("victim") == before);
  };

  SUBCASE("every try conflicts") {
    collide_with_appends(database, stream, 1'000'000);
    const auto conflicts_before = engine.stats().conflicts;

    const auto keyed =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-1", "withdraw 100"));
    CHECK(keyed.code == RejectionCode::version_conflict);
    CHECK(keyed.position.value() == 0);
    CHECK(keyed.versions.empty());
    // The first try and conflict_retries_max re-decisions, each on the stream reloaded.
    CHECK(appends_tried(database) == decided_ahead + settings.conflict_retries_max + 1);
    CHECK(engine.stats().conflicts - conflicts_before == decided_ahead + settings.conflict_retries_max + 1);
    nothing_written();
    // The conflict is not remembered under the key: the client may retry it.
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 0);

    collide_with_appends(database, stream, 1'000'000);
    const auto unkeyed = engine.execute(command(domain::Withdrawal{"victim", Amount(100)}));
    CHECK(unkeyed.code == RejectionCode::version_conflict);
    CHECK(appends_tried(database) == decided_ahead + settings.conflict_retries_max + 1);
    nothing_written();

    // Once the other writer is gone, the same request under the same key goes through.
    stop_colliding(database);
    const auto retried =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-1", "withdraw 100"));
    CHECK(retried.accepted());
    CHECK_FALSE(retried.replayed);
    CHECK(engine.read_account("victim")->balance() == Amount(900));
  }

  SUBCASE("conflicting as often as the bound allows") {
    // conflict_retries_max conflicts: the last re-decision is accepted.
    collide_with_appends(database, stream, settings.conflict_retries_max);
    const auto outcome =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-2", "withdraw 100"));
    CHECK(outcome.accepted());
    CHECK(appends_tried(database) == settings.conflict_retries_max + 1);
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before + 3);
    CHECK(test::scalar(database.app_url(),
                       "SELECT count(*) FROM events WHERE metadata->>'command_id' = '" +
                           outcome.command_id + "'") == 3);
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 1);
    const auto after = engine.read_account("victim");
    CHECK(after->balance() == Amount(900));
    CHECK(after->version.value() == before->version.value() + 1);
    CHECK(std::find(outcome.versions.begin(), outcome.versions.end(),
                    std::pair{stream, after->version}) != outcome.versions.end());

    // One conflict more than the bound allows: version_conflict, nothing written.
    collide_with_appends(database, stream, decided_ahead + settings.conflict_retries_max + 1);
    const auto events_now = test::scalar(database.app_url(), "SELECT count(*) FROM events");
    const auto refused =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-3", "withdraw 100"));
    CHECK(refused.code == RejectionCode::version_conflict);
    CHECK(appends_tried(database) == decided_ahead + settings.conflict_retries_max + 1);
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_now);
    CHECK(engine.read_account("victim") == after);
  }
}

TEST_CASE("a command that lost the race to another instance is re-decided on the winner's state") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.conflict_retries_max = 1;
  SUBCASE("deciding while committing") {
    settings.decide_while_committing = true;
  }
  SUBCASE("one batch at a time") {
    settings.decide_while_committing = false;
  }
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(mine, "shared", 1'000);  // mine now caches the account with 1,000 on it
  const auto stream = domain::account_stream("shared");

  REQUIRE(theirs.execute(command(domain::Withdrawal{"shared", Amount(800)})).accepted());
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  auto conflicts_before = mine.stats().conflicts;
  // On mine's cached state 500 would pass; on the stream as stored it must not.
  const auto refused = mine.execute(command(domain::Withdrawal{"shared", Amount(500)}));
  CHECK(refused.code == RejectionCode::insufficient_funds);
  CHECK(mine.stats().conflicts == conflicts_before + 1);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before);

  REQUIRE(theirs.execute(command(domain::Withdrawal{"shared", Amount(50)})).accepted());
  const auto winner = theirs.read_account("shared");
  conflicts_before = mine.stats().conflicts;
  const auto accepted = mine.execute(command(domain::Withdrawal{"shared", Amount(100)}));
  CHECK(accepted.accepted());
  if (settings.decide_while_committing) {
    // The committer decided the refusal again from the store and left the stream out of the
    // cache: this one may be decided on the stored state, without a conflict.
    CHECK(mine.stats().conflicts <= conflicts_before + 1);
  } else {
    CHECK(mine.stats().conflicts == conflicts_before + 1);
  }
  const auto after = mine.read_account("shared");
  CHECK(after->balance() == Amount(50));
  CHECK(after->version.value() == winner->version.value() + 1);
  CHECK(std::find(accepted.versions.begin(), accepted.versions.end(),
                  std::pair{stream, after->version}) != accepted.versions.end());
  CHECK(test::scalar(
            database.app_url(),
            "SELECT max(version) - count(*) FROM events WHERE stream_id = '" + stream + "'") == 0);
}

TEST_CASE("with no retries, losing the race to another instance answers version_conflict") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.conflict_retries_max = 0;
  // The serial path: its first try is the one the bound counts (see above for pipelining).
  settings.decide_while_committing = false;
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(mine, "shared", 1'000);
  REQUIRE(theirs.execute(command(domain::Withdrawal{"shared", Amount(800)})).accepted());
  const auto state = theirs.read_account("shared");
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  const auto conflicts_before = mine.stats().conflicts;

  const auto outcome = mine.execute(command(domain::Withdrawal{"shared", Amount(100)}));
  CHECK(outcome.code == RejectionCode::version_conflict);
  CHECK(mine.stats().conflicts == conflicts_before + 1);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before);
  CHECK(mine.read_account("shared") == state);

  // The conflict dropped the stale state: the next command is decided on the stored stream.
  CHECK(mine.execute(command(domain::Withdrawal{"shared", Amount(201)})).code ==
        RejectionCode::insufficient_funds);
  CHECK(mine.execute(command(domain::Withdrawal{"shared", Amount(200)})).accepted());
  CHECK(mine.read_account("shared")->balance() == Amount(0));
}

TEST_CASE("a refusal is never decided on a state another engine has changed since it was cached") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    EngineSettings settings = test::engine_settings(database);
    settings.decide_while_committing = pipelined;
    Engine a(settings);
    Engine b(settings);
    open_and_fund(a, "alice", 100);
    // b caches bob as missing and alice at her balance of 100.
    CHECK(b.execute(command(domain::Transfer{"t1", "alice", "bob", Amount(10), eur()})).code ==
          RejectionCode::unknown_account);
    CHECK(b.execute(command(domain::Withdrawal{"alice", Amount(150)})).code == RejectionCode::insufficient_funds);
    // a opens bob and funds alice; b must see both, not refuse from its cache.
    REQUIRE(a.execute(command(domain::OpenAccount{"bob", eur()})).accepted());
    REQUIRE(a.execute(command(domain::Deposit{"alice", Amount(100)})).accepted());
    const auto withdrawal = b.execute(command(domain::Withdrawal{"alice", Amount(150)}));
    CHECK_MESSAGE(withdrawal.accepted(), to_string(withdrawal.code));
    const auto transfer = b.execute(command(domain::Transfer{"t2", "alice", "bob", Amount(10), eur()}));
    CHECK_MESSAGE(transfer.accepted(), to_string(transfer.code));
    CHECK(b.read_account("alice")->balance() == Amount(40));
  }
}

TEST_CASE("a cold engine decides a batch of many uncached streams, read on several connections") {
  // After a restart every account a batch names is read from the store; the pipelined path
  // reads them in ranges on the engine's free connections at once (a cold store is read one
  // heap page at a time per statement). The answers must be those of a warm engine: each
  // refusal decided on the account's stored state, each transfer on its balance.
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.database_connections = 6;
  settings.commit_wait_max = std::chrono::milliseconds(300);  // all of it in one batch
  constexpr int accounts = 100;
  auto id = [](int i) { return fmt::format("cold-{:03}", i); };
  {
    auto one_by_one = settings;
    one_by_one.commit_wait_max = {};
    Engine warm(one_by_one);
    for (int i = 0; i < accounts; ++i) open_and_fund(warm, id(i), 1'000);
  }
  // The warm engine's sessions end a moment after it closes them: none left to count below.
  const std::string sessions =
      "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = "
      "current_user AND pid <> pg_backend_pid()";
  long long left = test::scalar(database.app_url(), sessions);
  for (int wait = 0; wait < 100 && left > 0; ++wait) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = test::scalar(database.app_url(), sessions);
  }
  REQUIRE(left == 0);
  Engine cold(settings);
  std::vector<std::future<CommandOutcome>> moves, overdraws;
  for (int i = 0; i < accounts; ++i) {
    moves.push_back(
        cold.submit(command(Transfer{"", id(i), id((i + 1) % accounts), Amount(i + 1), eur()})));
    if (i % 10 == 0) {
      overdraws.push_back(
          cold.submit(command(Transfer{"", id(i), id(i + 1), Amount(2'000), eur()})));
    }
  }
  for (auto& outcome : moves) CHECK(outcome.get().accepted());
  for (auto& outcome : overdraws) CHECK(outcome.get().code == RejectionCode::insufficient_funds);
  for (int i = 0; i < accounts; ++i) {
    const std::int64_t received = (i + accounts - 1) % accounts + 1;
    CHECK(cold.read_account(id(i))->balance() == Amount(1'000 - (i + 1) + received));
  }
  // Decided ahead, not on the serial path a failed decision falls back to; and on more
  // connections than the decider's and the committer's: the ranges' (the pool keeps them).
  CHECK(cold.stats().pipeline_stalls == 0);
  CHECK(test::scalar(database.app_url(), sessions) >= 4);
  db::ConnectionPool pool(pool_settings(database.app_url()));
  CHECK(EventStore(pool).verify_chain().ok);
}

TEST_CASE("a spread load on connections the server cut answers every command once, decided afresh") {
  // The server ends the engine's sessions while they sit idle in its pool (a failover, an
  // operator's pg_terminate_backend): the next cold batch's ranges read on dead connections.
  // The failed decision falls back to the serial path, which reconnects: every command is
  // answered once, on the stored states.
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.database_connections = 6;
  settings.commit_wait_max = std::chrono::milliseconds(300);  // each round in one batch
  constexpr int accounts = 100;
  auto id = [](int round, int i) { return fmt::format("cut-{}-{:03}", round, i); };
  {
    auto one_by_one = settings;
    one_by_one.commit_wait_max = {};
    Engine warm(one_by_one);
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < accounts; ++i) open_and_fund(warm, id(round, i), 1'000);
    }
  }
  const long long events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  Engine cold(settings);
  auto run_round = [&](int round) {
    std::vector<std::future<CommandOutcome>> moves;
    for (int i = 0; i < accounts; ++i) {
      const Transfer move{"", id(round, i), id(round, (i + 1) % accounts), Amount(i + 1), eur()};
      moves.push_back(cold.submit(command(move)));
    }
    for (auto& outcome : moves) CHECK(outcome.get().accepted());
  };
  run_round(0);  // spread: the pool now holds several idle connections
  const std::string terminate =
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
      "current_database() AND usename = current_user AND pid <> pg_backend_pid()";
  REQUIRE(test::scalar(database.app_url(), terminate) >= 4);
  run_round(1);  // its accounts uncached: read on the cut connections first
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < accounts; ++i) {
      const std::int64_t received = (i + accounts - 1) % accounts + 1;
      CHECK(cold.read_account(id(round, i))->balance() == Amount(1'000 - (i + 1) + received));
    }
  }
  // Each transfer once: 2 rounds of 100, three events each.
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before + 600);
  db::ConnectionPool pool(pool_settings(database.app_url()));
  CHECK(EventStore(pool).verify_chain().ok);
}
