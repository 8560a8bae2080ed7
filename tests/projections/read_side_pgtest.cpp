// The read side end to end (DESIGN.md invariants 8 and 9): the relay publishes the event store
// to a mock Kafka cluster, projectors build the read models, and every read model must equal
// the fold of the event store after random load, lost messages, gaps and forged messages. The
// relay's own behaviour (restarts, outages, standby, fatal errors) is tests/relay/.
#include <doctest/doctest.h>

#include <future>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../engine/engine_fixture.hpp"
#include "catch_up_reads.hpp"
#include "read_side_fixture.hpp"
#include "stream_cursor.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;

using test::open_accounts;
using test::Projectors;
using test::random_workload;

// Each projection reads or skips every event on its own.
const auto projection_count = static_cast<std::int64_t>(projections::all_projections().size());

TEST_CASE("after 20,000 random commands every read-model row equals the fold of the event store") {
  test::TestDatabase database;
  // Many batches, so batch boundaries are exercised.
  test::ReadSideStack stack(database, 6, [](auto& settings) { settings.batch_events_max = 700; });
  auto& [kafka, pool, engine, relay, projectors] = stack;

  open_accounts(engine);
  const int accepted = random_workload(engine, 20'000);
  MESSAGE("accepted " << accepted << " of 20,000 commands; " << test::store_head(database.app_url())
                      << " events");
  CHECK(accepted > 10'000);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  test::check_read_models_equal_fold(database.app_url());
  // The events came through Kafka, not from the store behind its back.
  const std::int64_t head = test::store_head(database.app_url());
  CHECK(test::eventually([&] { return relay.status().acknowledged.value() == head; }, 10s));
}

TEST_CASE("messages that never reach the projectors are healed from the event store") {
  test::TestDatabase database;
  test::MockKafka published;  // the relay's cluster
  test::MockKafka empty;      // a new, empty broker the projectors read
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  relay::Relay relay(test::relay_settings(published), pool);
  relay.start();
  auto settings = test::projector_settings(empty);
  settings.gap_wait = std::chrono::milliseconds(300);
  Projectors projectors(pool, settings);
  open_accounts(engine);
  random_workload(engine, 2'000);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  // A projector counts what it applied right after its commit: the last count may follow the
  // watermark by a moment.
  const std::int64_t from_store = projection_count * test::store_head(database.app_url());
  CHECK(test::eventually([&] { return projectors.events_from_store() == from_store; }, 10s));
  CHECK(projectors.events_from_store() == from_store);
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a projector that finds a gap in what Kafka delivers fills it from the store, never skips") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  open_accounts(engine);  // published by no relay: Kafka never sees positions 1..N
  const std::int64_t unpublished = test::store_head(database.app_url());
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec_params("UPDATE checkpoints SET position = $1 WHERE name = 'relay'", unpublished);
    work.commit();
  }
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  auto settings = test::projector_settings(kafka);
  settings.gap_wait = std::chrono::hours(1);  // the gap is found by the first message after it
  Projectors projectors(pool, settings);
  random_workload(engine, 1'000);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  // Every projection read at least the unpublished events from the store (and, with several
  // partitions, whatever another partition had not delivered yet when a later position came).
  // A projector counts a batch after its commit, so the count may trail the watermark briefly.
  CHECK(test::eventually([&] { return projectors.events_from_store() >= projection_count * unpublished; }));
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("forged messages with the right key and position are not applied: the projectors read the store") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  open_accounts(engine);  // no relay yet: the forgeries reach the topic first

  // Two account entries of the store, forged with a larger amount: one keeps the genuine hash,
  // the other carries a made-up one.
  EventStore store(pool);
  std::vector<RecordedEvent> entries;
  for (auto& event : store.read_all(GlobalPosition(1), 10'000)) {
    if (event.stream_id.starts_with("account-acct-") && event.type == "account_entry") entries.push_back(event);
  }
  REQUIRE(entries.size() >= 2);
  auto forge = [](RecordedEvent event) {
    auto decoded = domain::decode_event(event.type, event.payload);
    REQUIRE(decoded);
    std::get<domain::events::AccountEntry>(*decoded).amount += 1'000'000;
    event.payload = domain::encode_event(*decoded);
    return event;
  };
  RecordedEvent same_hash = forge(entries[entries.size() / 2]);
  RecordedEvent other_hash = forge(entries.back());
  other_hash.hash = std::string(domain::event_hash_size, '\x5a');
  for (const auto* forged : {&same_hash, &other_hash}) {
    test::produce_envelope(kafka, *forged, encode_envelope(*forged));
  }

  auto settings = test::projector_settings(kafka);
  settings.gap_wait = std::chrono::hours(1);  // only the forgeries' arrival makes them move
  Projectors projectors(pool, settings);
  // The partition a forgery arrived on moves past it (the others have nothing to apply yet).
  REQUIRE(test::eventually([&] {
    return test::highest_partition_watermark(database.app_url(), "balance") >= other_hash.position.value() &&
           test::highest_partition_watermark(database.app_url(), "audit") >= other_hash.position.value();
  }, 60s));
  // Every projector (the loan one too, which the wait above does not name) meets both and
  // applies neither: it rejects a forgery, or, when reading the store for the first one
  // already took it past the second, drops the second as a repeat. Which depends on how the
  // two arrive in batches; that no forgery was applied is what the fold check below proves.
  for (const auto& projector : projectors.running) {
    CHECK(test::eventually([&] {
      const auto status = projector->status();
      return status.messages_rejected >= 1 && status.messages_rejected + status.duplicates_skipped >= 2;
    }, 60s));
  }

  // The genuine messages follow (and are skipped as repeats); the read models equal the store.
  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  random_workload(engine, 300);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  test::check_read_models_equal_fold(database.app_url());
}

TEST_CASE("a forged message whose hash was recomputed to chain is not applied either: no stall follows") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  Engine engine(test::engine_settings(database));
  open_accounts(engine);

  // The chain is a checksum, not a signature: a forger who knows the previous hash can make a
  // forged event chain. Its hash is not the one the store holds for that position, so the
  // projectors read the store instead and move on.
  EventStore store(pool);
  const auto stored = store.read_all(GlobalPosition(1), 10'000);
  std::size_t index = stored.size() / 2;
  while (stored[index].type != "account_entry") ++index;
  RecordedEvent forged = stored[index];
  auto decoded = domain::decode_event(forged.type, forged.payload);
  REQUIRE(decoded);
  std::get<domain::events::AccountEntry>(*decoded).amount += 1'000'000;
  forged.payload = domain::encode_event(*decoded);
  forged.hash = chain_hash(stored[index - 1].hash, forged);
  test::produce_envelope(kafka, forged, encode_envelope(forged));

  auto settings = test::projector_settings(kafka);
  settings.gap_wait = std::chrono::hours(1);
  Projectors projectors(pool, settings);
  REQUIRE(test::eventually([&] {
    return test::highest_partition_watermark(database.app_url(), "balance") >= forged.position.value() &&
           test::highest_partition_watermark(database.app_url(), "audit") >= forged.position.value();
  }, 60s));
  for (const auto& projector : projectors.running) {
    CHECK(test::eventually([&] { return projector->status().messages_rejected >= 1; }, 60s));
  }

  relay::Relay relay(test::relay_settings(kafka), pool);
  relay.start();
  random_workload(engine, 300);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }, 60s));
  for (const auto& projector : projectors.running) CHECK(projector->status().stalled_position.value() == 0);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM read.projections WHERE stalled_position IS NOT NULL") == 0);
  test::check_read_models_equal_fold(database.app_url());
}

namespace {

// The prepared statements of every session the pool holds (all idle: nothing else runs).
std::set<std::string> prepared_on_pool(db::ConnectionPool& pool) {
  std::vector<db::ConnectionPool::Lease> leases;
  std::set<std::string> names;
  for (std::size_t i = 0; i < pool.settings().connections_max; ++i) {
    leases.push_back(pool.acquire());
    pqxx::read_transaction work(*leases.back());
    for (const auto& row : work.exec("SELECT name FROM pg_prepared_statements")) names.insert(row[0].c_str());
  }
  return names;
}

}  // namespace

TEST_CASE("a projector's round lingers after its first message and takes what arrives meanwhile") {
  test::TestDatabase database;
  // Long enough that a loaded machine still appends the second deposit within it; no healing
  // from the store while Kafka is quiet (it would apply the deposit without a round of Kafka's).
  test::ReadSideStack stack(database, 6, [](auto& settings) {
    settings.batch_linger = 3s;
    settings.gap_wait = 1h;
  });
  auto& [kafka, pool, engine, relay, projectors] = stack;
  const std::string url = database.app_url();
  // Every read model at the head, the loan model's too (read_models_caught_up leaves it out).
  const auto all_at = [&](std::int64_t position) {
    for (const char* projection : {"balance", "audit", "loan"}) {
      if (test::watermark(url, projection) != position) return false;
    }
    return true;
  };
  open_accounts(engine);
  const std::int64_t opened = test::store_head(url);
  REQUIRE(test::eventually([&] { return all_at(opened); }, 60s));
  // A late message (a marker for a partition already there) may have opened a round since: it
  // would end within its linger and take the deposit below with it. Let any such round end.
  std::this_thread::sleep_for(3500ms);
  std::int64_t rounds_before = 0;
  for (const auto& projector : projectors.running) rounds_before += projector->status().batches;

  REQUIRE(engine.execute(command(Deposit{test::account_name(5), Amount(7)})).accepted());
  const std::int64_t first = test::store_head(url);
  // Once the broker has the deposit, a round that ended at its first empty poll (the default,
  // batch_linger 0) applies it within milliseconds. Lingering, it is still open 300 ms later.
  REQUIRE(test::eventually([&] { return relay.status().acknowledged.value() >= first; }, 2s));
  std::this_thread::sleep_for(300ms);
  for (const char* projection : {"balance", "audit", "loan"}) {
    CHECK_MESSAGE(test::highest_partition_watermark(url, projection) < first, projection);
  }
  REQUIRE(engine.execute(command(Deposit{test::account_name(6), Amount(9)})).accepted());
  const std::int64_t second = test::store_head(url);
  REQUIRE(test::eventually([&] { return all_at(second); }, 30s));
  test::check_read_models_equal_fold(url);
  // Both deposits, and the relay's markers for the partitions they did not touch, in one round
  // per projection; at most one more for markers sent after the linger ended.
  std::int64_t rounds = 0;
  for (const auto& projector : projectors.running) rounds += projector->status().batches;
  CHECK(rounds - rounds_before <= 2 * projection_count);
}

TEST_CASE("a projector refuses a linger below 0 or above 60 s") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  for (const auto linger : {-1ms, 60'001ms, std::chrono::milliseconds::max()}) {
    auto settings = test::projector_settings(kafka);
    settings.batch_linger = linger;
    CHECK_THROWS_AS(projections::Projector(projections::ProjectionKind::balance, settings, pool),
                    std::invalid_argument);
  }
  auto settings = test::projector_settings(kafka);
  settings.batch_linger = 60'000ms;
  CHECK_NOTHROW(projections::Projector(projections::ProjectionKind::balance, settings, pool));
}

TEST_CASE("every statement of a projector's round runs prepared, once per session (issue 18)") {
  test::TestDatabase database;
  // Four sessions for the relay and the three projectors, so the rounds share them.
  test::ReadSideStack stack(database, 4, [](auto& settings) { settings.batch_events_max = 200; });
  auto& [kafka, pool, engine, relay, projectors] = stack;
  open_accounts(engine);
  OriginateLoan loan;
  loan.id = "L1";
  loan.borrower = test::account_name(0);
  loan.currency = eur();
  loan.principal = Amount(12'000);
  loan.rate_bps = 1'200;
  loan.installments = 12;
  loan.origination_date = "2026-01-15";
  loan.first_due_date = "2026-02-15";
  REQUIRE(engine.execute(command(loan)).accepted());
  REQUIRE(engine.execute(command(DisburseLoan{"L1"})).accepted());
  REQUIRE(engine.execute(command(RepayLoan{"L1", Amount(1'000), ""})).accepted());
  random_workload(engine, 2'000);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  test::check_read_models_equal_fold(database.app_url());
  relay.stop();
  for (auto& projector : projectors.running) {
    projector->stop();
    // Many rounds ran on each session: preparing a statement again there would have failed one.
    CHECK_MESSAGE(projector->status().last_error.empty(), projector->status().last_error);
    CHECK(projector->status().batches > 2);
  }
  const auto names = prepared_on_pool(pool);
  const std::vector<std::string> expected = {
      // Every round's.
      "ledger_projector_lock_partition_watermarks", "ledger_projector_store_head",
      "ledger_projector_stored_hash", "ledger_projector_stored_range", "ledger_projector_store_offsets",
      "ledger_projector_move_partition_watermarks", "ledger_projector_lock_projection",
      "ledger_projector_raise_watermark",
      // Each read model's, named with its tables.
      "ledger_load_balances read.balances", "ledger_store_balances read.balances",
      "ledger_load_loans read.loans", "ledger_store_loans read.loans",
      "ledger_load_installments read.loan_installments",
      "ledger_delete_installments read.loan_installments",
      "ledger_store_installments read.loan_installments",
      // The relay's read of the log.
      "ledger_read_all"};
  for (const auto& name : expected) CHECK_MESSAGE(names.count(name) == 1, name);
}

TEST_CASE(
    "sessions cut after their statements were prepared: the rounds prepare them again on new "
    "ones") {
  // A failover or a restarted PostgreSQL ends every session, and their prepared statements with
  // them. The projectors' and the relay's next rounds must run on new sessions, not fail on a
  // statement the server no longer knows, and the read models must still equal the fold.
  test::TestDatabase database;
  test::ReadSideStack stack(database, 4, [](auto& settings) { settings.batch_events_max = 200; });
  auto& [kafka, pool, engine, relay, projectors] = stack;
  open_accounts(engine);
  random_workload(engine, 1'000);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  REQUIRE(prepared_on_pool(pool).count("ledger_projector_raise_watermark") == 1);

  std::set<int> cut;
  {
    std::vector<db::ConnectionPool::Lease> leases;
    for (std::size_t i = 0; i < pool.settings().connections_max; ++i) {
      leases.push_back(pool.acquire());
      cut.insert(leases.back()->backendpid());
    }
    pqxx::connection admin(database.admin_url());
    pqxx::nontransaction kill(admin);
    for (const int pid : cut) kill.exec_params("SELECT pg_terminate_backend($1)", pid);
  }  // the pool gets its dead sessions back; the read side finds out on its next rounds
  const std::int64_t head_before = test::store_head(database.app_url());
  random_workload(engine, 1'000, 4, 77);
  REQUIRE(test::store_head(database.app_url()) > head_before);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  test::check_read_models_equal_fold(database.app_url());

  // The sessions the rounds used since are new ones, with the round's statements prepared
  // again. (A pooled session no round has used since the cut is still the dead one: dropped.)
  std::set<std::string> names;
  int live = 0;
  {
    std::vector<db::ConnectionPool::Lease> leases;
    for (std::size_t i = 0; i < pool.settings().connections_max; ++i) {
      leases.push_back(pool.acquire());
      try {
        pqxx::read_transaction work(*leases.back());
        for (const auto& row : work.exec("SELECT name FROM pg_prepared_statements"))
          names.insert(row[0].c_str());
        CHECK(cut.count(leases.back()->backendpid()) == 0);
        ++live;
      } catch (const pqxx::broken_connection&) {
        leases.back().discard();
      }
    }
  }
  CHECK(live > 0);
  for (const char* name :
       {"ledger_projector_lock_partition_watermarks", "ledger_projector_store_offsets",
        "ledger_projector_raise_watermark", "ledger_store_balances read.balances"}) {
    CHECK_MESSAGE(names.count(name) == 1, name);
  }
}

// The audit query by stream starts its walk of the store's (stream_id, version) index at the
// version the cursor stands at (projections/src/stream_cursor.hpp). A start too high loses
// rows; one too low walks the stream from further back on every page: the answer must be
// exact, for every cursor, also over version gaps (a store written before migration 0006).
TEST_CASE("a stream's version at a position is exact for every position, across version gaps") {
  test::TestDatabase database;
  // Stream s at positions 3, 4, 9, 15, 22, 23 with versions 1, 2, 3, 6, 7, 9; other streams in
  // between. Written as the owner with the store's triggers off (they refuse the gaps).
  const std::map<std::int64_t, std::int64_t> version_at_position{{3, 1},  {4, 2},  {9, 3},
                                                                 {15, 6}, {22, 7}, {23, 9}};
  {
    pqxx::connection owner(database.admin_url());
    pqxx::work work(owner);
    work.exec("SET LOCAL session_replication_role = replica");
    for (std::int64_t position = 1; position <= 30; ++position) {
      const auto found = version_at_position.find(position);
      const std::string stream =
          found != version_at_position.end() ? "s" : "other-" + std::to_string(position);
      const std::int64_t version = found != version_at_position.end() ? found->second : 1;
      work.exec_params(
          "INSERT INTO events (position, stream_id, version, event_id, type, schema_version, "
          "payload, metadata, recorded_at, hash) VALUES ($1, $2, $3, gen_random_uuid(), "
          "'account_opened', 1, '\\x00', '{}', now(), decode(repeat('00', 32), 'hex'))",
          position, stream, version);
    }
    work.commit();
  }
  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  for (std::int64_t cursor = -2; cursor <= 32; ++cursor) {
    std::int64_t expected = 0;
    for (const auto& [position, version] : version_at_position) {
      if (position <= cursor) expected = version;
    }
    CAPTURE(cursor);
    CHECK(projections::stream_version_at(work, "s", cursor) == expected);
    CHECK(projections::stream_version_at(work, "no-such-stream", cursor) == 0);
  }
  CHECK(projections::stream_version_at(work, "s", std::numeric_limits<std::int64_t>::max()) == 9);
}

// The projectors of `ledger project all` share their catch-up reads (catch_up_reads.hpp): a
// range one projector took is kept for another still behind it. When a projector finds that
// the store no longer ends a range as it was read (a restore), it forgets the range: the one
// behind must read it again, not take the stale copy.
TEST_CASE("a forgotten catch-up range is read again by the projector behind, not handed out") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_accounts(engine);
  (void)random_workload(engine, 20, 1);
  REQUIRE(test::store_head(database.app_url()) >= 15);
  auto pool = test::make_pool(database.app_url(), 3);
  projections::CatchUpReads reads(pool, {});
  const int ahead = 0;
  const int behind = 0;
  (void)reads.take(&ahead, 0, 5, 1);
  (void)reads.take(&behind, 0, 5, 1);

  // Kept for the projector behind: it takes what the one ahead read.
  const auto first = reads.take(&ahead, 5, 10, 1);
  const auto shared = reads.take(&behind, 5, 10, 1);
  CHECK(shared.read_for_another);
  CHECK(shared.range == first.range);

  const auto stale = reads.take(&ahead, 10, 15, 1);
  reads.forget(10, 15, 1);
  const auto again = reads.take(&behind, 10, 15, 1);
  CHECK_FALSE(again.read_for_another);
  CHECK(again.range != stale.range);
  CHECK(again.rows_read == 6);  // positions 10 to 15, the row at low for its hash
  CHECK(again.range->events.size() == stale.range->events.size());
}
