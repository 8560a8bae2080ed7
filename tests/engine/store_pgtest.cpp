// The event store and the engine against a real PostgreSQL: dense positions, dense versions,
// idempotency, crash before commit, tamper evidence, and the snapshot cache.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/engine/snapshot_store.hpp"

using namespace ledger;
using namespace ledger::engine;
using test::command;
using test::eur;

namespace {

void open_and_fund(Engine& engine, const std::string& id, std::int64_t amount) {
  REQUIRE(engine.execute(command(OpenAccount{id, eur()})).accepted());
  if (amount > 0) REQUIRE(engine.execute(command(Deposit{id, Amount(amount)})).accepted());
}

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
  const auto outcome = engine.execute(command(Transfer{"t1", "alice", "bob", Amount(2'500), eur()}));
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

TEST_CASE("the same idempotency key and request answers the first outcome; another request is refused") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 1'000);
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");

  const auto first = engine.execute(command(Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  REQUIRE(first.accepted());
  CHECK_FALSE(first.replayed);
  const auto events_after_first = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  CHECK(events_after_first == events_before + 3);

  const auto again = engine.execute(command(Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  CHECK(again.accepted());
  CHECK(again.replayed);
  CHECK(again.command_id == first.command_id);
  CHECK(again.position == first.position);
  CHECK(again.versions == first.versions);
  CHECK(again.resource_ids == first.resource_ids);

  const auto other = engine.execute(command(Withdrawal{"alice", Amount(500)}, "key-1", "withdraw 500"));
  CHECK(other.code == RejectionCode::idempotency_key_reused);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_after_first);
  CHECK(engine.read_account("alice")->balance() == Amount(700));

  // A second engine (another instance, empty cache) answers the same from the store.
  Engine other_instance(test::engine_settings(database));
  const auto from_other =
      other_instance.execute(command(Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  CHECK(from_other.replayed);
  CHECK(from_other.position == first.position);

  // A rejection is remembered too: retrying it gives the same answer even after funds arrive.
  const auto refused = engine.execute(command(Withdrawal{"alice", Amount(5'000)}, "key-2", "w 5000"));
  CHECK(refused.code == RejectionCode::insufficient_funds);
  REQUIRE(engine.execute(command(Deposit{"alice", Amount(10'000)})).accepted());
  const auto refused_again = engine.execute(command(Withdrawal{"alice", Amount(5'000)}, "key-2", "w 5000"));
  CHECK(refused_again.code == RejectionCode::insufficient_funds);
  CHECK(refused_again.replayed);

  // The same key twice inside one batch: one set of events.
  auto a = engine.submit(command(Withdrawal{"alice", Amount(1)}, "key-3", "w 1"));
  auto b = engine.submit(command(Withdrawal{"alice", Amount(1)}, "key-3", "w 1"));
  const auto outcome_a = a.get();
  const auto outcome_b = b.get();
  CHECK(outcome_a.accepted());
  CHECK(outcome_b.accepted());
  CHECK(outcome_a.position == outcome_b.position);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM events WHERE metadata->>'command_id' = '" +
                         outcome_a.command_id + "'") == 3);
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
  auto pending = engine.submit(command(Transfer{"t-crash", "alice", "bob", Amount(100), eur()}));
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
      work.commit();
      if (killed == 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    REQUIRE(killed == 1);
    pqxx::work work(admin);
    work.exec("DROP TRIGGER slow_insert ON events");
    work.commit();
  }
  // Nothing of the killed transaction is visible; the engine retries on a new connection.
  const auto outcome = pending.get();
  CHECK(outcome.accepted());
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before + 3);
  CHECK(test::scalar(database.app_url(), "SELECT max(position) FROM events") == events_before + 3);
  CHECK(engine.execute(command(Transfer{"t-after", "alice", "bob", Amount(100), eur()})).accepted());
  CHECK(engine.read_account("bob")->balance() == Amount(200));
}

TEST_CASE("tampering with a stored event is found by re-verifying the chain") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    open_and_fund(engine, "alice", 1'000);
    open_and_fund(engine, "bob", 500);
    REQUIRE(engine.execute(command(Transfer{"t1", "alice", "bob", Amount(10), eur()})).accepted());
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

TEST_CASE("a stale, a missing or a corrupt snapshot changes no answer") {
  test::TestDatabase database;
  const auto directory = std::filesystem::temp_directory_path() /
                         ("ledger-snapshots-" + database.name());
  std::filesystem::remove_all(directory);
  auto settings = test::engine_settings(database);
  settings.snapshot_directory = directory.string();
  settings.snapshot_every_events = 2;

  {
    Engine engine(settings);
    for (const char* id : {"stale", "missing", "corrupt", "ahead"}) open_and_fund(engine, id, 1'000);
    open_and_fund(engine, "sink", 0);
    for (int i = 0; i < 5; ++i) {
      for (const char* id : {"stale", "missing", "corrupt", "ahead"}) {
        REQUIRE(engine.execute(command(Transfer{"", id, "sink", Amount(10), eur()})).accepted());
      }
    }
  }
  // Each account now holds 950 and has a snapshot. Spoil them.
  {
    SnapshotStore snapshots(directory.string());
    for (const char* id : {"stale", "missing", "corrupt", "ahead"}) {
      REQUIRE(snapshots.get(account_stream(id)).has_value());
    }
    // Stale: the right version but a hash the store does not have, and a richer balance.
    auto stale = *snapshots.get(account_stream("stale"));
    std::get<AccountState>(stale.aggregate).credits_posted = Amount(1'000'000);
    stale.last_hash = std::string(32, 'x');
    snapshots.put(account_stream("stale"), stale);
    // Ahead: a version the event store has never reached.
    auto ahead = *snapshots.get(account_stream("ahead"));
    ahead.version = StreamVersion(ahead.version.value() + 100);
    std::get<AccountState>(ahead.aggregate).credits_posted = Amount(1'000'000);
    snapshots.put(account_stream("ahead"), ahead);
    snapshots.remove(account_stream("missing"));
    snapshots.put_raw(account_stream("corrupt"), "not a snapshot at all");
  }
  // A new engine (empty in-memory cache) must decide from the event store's truth.
  Engine engine(settings);
  for (const char* id : {"stale", "missing", "corrupt", "ahead"}) {
    INFO(id);
    const auto too_much = engine.execute(command(Withdrawal{id, Amount(951)}));
    CHECK(too_much.code == RejectionCode::insufficient_funds);
    const auto exact = engine.execute(command(Withdrawal{id, Amount(950)}));
    CHECK(exact.accepted());
    CHECK(engine.read_account(id)->balance() == Amount(0));
  }
  engine.stop();

  // Deleting the whole directory changes nothing either; a corrupt directory is rebuilt.
  std::filesystem::remove_all(directory);
  {
    Engine fresh(settings);
    CHECK(fresh.execute(command(Withdrawal{"stale", Amount(1)})).code ==
          RejectionCode::insufficient_funds);
    CHECK(fresh.execute(command(Deposit{"stale", Amount(5)})).accepted());
  }
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    if (entry.path().filename().string().starts_with("MANIFEST") ||
        entry.path().filename() == "CURRENT") {
      std::ofstream(entry.path(), std::ios::trunc) << "garbage";
    }
  }
  {
    Engine rebuilt(settings);
    CHECK(rebuilt.execute(command(Withdrawal{"stale", Amount(6)})).code ==
          RejectionCode::insufficient_funds);
    CHECK(rebuilt.execute(command(Withdrawal{"stale", Amount(5)})).accepted());
  }
  std::filesystem::remove_all(directory);
}

TEST_CASE("the expiry sweeper voids a hold once the engine's clock passes its timeout") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  std::atomic<std::int64_t> now_us{1'800'000'000'000'000};  // an injected clock
  settings.clock_us = [&now_us] { return now_us.load(); };
  settings.expiry_sweep_interval = std::chrono::milliseconds(50);
  Engine engine(settings);
  open_and_fund(engine, "alice", 1'000);
  open_and_fund(engine, "bob", 0);
  PlaceHold hold{"h-expiring", "alice", "bob", Amount(400), eur()};
  hold.timeout_seconds = 60;
  REQUIRE(engine.execute(command(hold)).accepted());
  CHECK(engine.read_account("alice")->available() == Amount(600));
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 1);

  // Before the timeout nothing happens, even with the sweeper running.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(engine.read_transfer("h-expiring")->status == TransferStatus::pending);

  now_us += 61'000'000;
  // Posting after the timeout is refused even before the sweeper gets to it.
  CHECK(engine.execute(command(PostHold{"h-expiring", std::nullopt})).code ==
        RejectionCode::pending_transfer_expired);
  TransferStatus status = TransferStatus::pending;
  for (int attempt = 0; attempt < 100 && status == TransferStatus::pending; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    status = engine.read_transfer("h-expiring")->status;
  }
  CHECK(status == TransferStatus::expired);
  const auto alice = *engine.read_account("alice");
  CHECK(alice.debits_pending == Amount(0));
  CHECK(alice.available() == Amount(1'000));
  CHECK(engine.read_account("bob")->credits_pending == Amount(0));
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 0);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM events WHERE type = 'pending_transfer_ended' "
                     "AND metadata->>'actor' = 'engine:expiry'") == 1);
}
