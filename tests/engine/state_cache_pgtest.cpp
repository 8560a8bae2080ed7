// The engine's state cache against a real PostgreSQL (issue 18, item 5): with a small cache,
// many posted transfers over few accounts leave the accounts cached and do not fill the cache;
// a pending hold stays cached and its post decides right; a transfer id of a posted transfer
// that left the cache is still decided right (replay or duplicate_id); and the pipelined
// engine under load with a tiny cache keeps every stream dense without a conflict storm.
#include <doctest/doctest.h>

#include <atomic>
#include <deque>
#include <future>
#include <string>
#include <thread>
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

constexpr std::size_t small_cache_streams = 64;  // settled transfers get an eighth: 8
constexpr int account_count = 40;

std::string account_id(int i) { return "a" + std::to_string(i); }

EngineSettings small_cache_settings(const test::TestDatabase& database, bool pipelined) {
  auto settings = test::engine_settings(database);
  settings.state_cache_streams_max = small_cache_streams;
  settings.decide_while_committing = pipelined;
  return settings;
}

void open_accounts(Engine& engine, int count) {
  for (int i = 0; i < count; ++i) open_and_fund(engine, account_id(i), 1'000'000);
}

struct Lookups {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
};

Lookups lookups_since(const Engine& engine, const EngineStats& before) {
  const auto now = engine.stats();
  return {now.cache_hits - before.cache_hits, now.cache_misses - before.cache_misses};
}

long long stream_gaps(const std::string& url) {
  return test::scalar(url,
                      "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                      "HAVING max(version) <> count(*) OR min(version) <> 1) gaps");
}

}  // namespace

TEST_CASE("many posted transfers over few accounts: the accounts stay cached, settled transfers do not fill it") {
  test::TestDatabase database;
  bool pipelined = false;
  SUBCASE("pipelined") { pipelined = true; }
  SUBCASE("serial") { pipelined = false; }
  Engine engine(small_cache_settings(database, pipelined));
  open_accounts(engine, account_count);
  const auto before = engine.stats();
  // Each account comes back every 40 transfers: 40 new transfer streams and 40 accounts in
  // between, more than an LRU of 64 streams remembers.
  constexpr int transfers = 400;
  for (int i = 0; i < transfers; ++i) {
    const auto outcome = engine.execute(command(domain::Transfer{
        "t" + std::to_string(i), account_id(i % account_count), account_id((i + 1) % account_count), Amount(1), eur()}));
    REQUIRE(outcome.accepted());
  }
  // Per transfer: its own new stream (a miss) and two accounts (hits once all are cached).
  const auto seen = lookups_since(engine, before);
  MESSAGE("hits " << seen.hits << ", misses " << seen.misses);
  CHECK(seen.hits + seen.misses == 3 * transfers);
  CHECK(seen.hits >= 2 * transfers - 2);
  // Accounts (40 customers and the cash account) plus at most the settled share.
  CHECK(engine.stats().cache_streams <= account_count + 1 + small_cache_streams / 8);
  CHECK(engine.read_account(account_id(0))->balance() == Amount(1'000'000));
}

TEST_CASE("a pending hold stays cached among many posted transfers and its post decides right") {
  test::TestDatabase database;
  bool pipelined = false;
  SUBCASE("pipelined") { pipelined = true; }
  SUBCASE("serial") { pipelined = false; }
  Engine engine(small_cache_settings(database, pipelined));
  open_accounts(engine, account_count);
  REQUIRE(engine.execute(command(domain::PlaceHold{"h1", account_id(0), account_id(1), Amount(500), eur()})).accepted());
  for (int i = 0; i < 300; ++i) {
    REQUIRE(engine.execute(command(domain::Transfer{"t" + std::to_string(i), account_id(2 + i % 10),
                                                    account_id(2 + (i + 1) % 10), Amount(1), eur()}))
                .accepted());
  }
  const auto before = engine.stats();
  const auto posted = engine.execute(command(domain::PostHold{"h1", Amount(300)}));
  REQUIRE(posted.accepted());
  // The hold and both its accounts came from the cache.
  const auto seen = lookups_since(engine, before);
  CHECK(seen.misses == 0);
  CHECK(seen.hits == 3);
  CHECK(engine.read_account(account_id(0))->balance() == Amount(1'000'000 - 300));
  CHECK(engine.read_account(account_id(1))->balance() == Amount(1'000'000 + 300));
  // Settled now: the identical post again is a replay, a void is refused.
  const auto again = engine.execute(command(domain::PostHold{"h1", Amount(300)}));
  CHECK(again.accepted());
  CHECK(engine.execute(command(domain::VoidHold{"h1"})).code == RejectionCode::transfer_not_pending);
  CHECK(engine.read_account(account_id(0))->balance() == Amount(1'000'000 - 300));
  CHECK(engine.read_transfer("h1")->status == TransferStatus::pending_posted);
}

TEST_CASE("a transfer id of a posted transfer that left the cache is still decided right") {
  test::TestDatabase database;
  bool pipelined = false;
  SUBCASE("pipelined") { pipelined = true; }
  SUBCASE("serial") { pipelined = false; }
  Engine engine(small_cache_settings(database, pipelined));
  open_accounts(engine, account_count);
  const domain::Transfer first{"first", account_id(0), account_id(1), Amount(700), eur()};
  REQUIRE(engine.execute(command(first)).accepted());
  for (int i = 0; i < 100; ++i) {
    REQUIRE(engine.execute(command(domain::Transfer{"t" + std::to_string(i), account_id(2 + i % 10),
                                                    account_id(2 + (i + 1) % 10), Amount(1), eur()}))
                .accepted());
  }
  const long long events = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  const auto before = engine.stats();
  // A retry without a key: the identical transfer is a replay, nothing written.
  const auto retried = engine.execute(command(first));
  CHECK(retried.accepted());
  CHECK(lookups_since(engine, before).misses == 1);  // its stream came from the store
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events);
  // The same id with other terms is refused.
  auto other = first;
  other.amount = Amount(701);
  CHECK(engine.execute(command(other)).code == RejectionCode::duplicate_id);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events);
  CHECK(engine.read_account(account_id(0))->balance() == Amount(1'000'000 - 700));
  CHECK(engine.read_account(account_id(1))->balance() == Amount(1'000'000 + 700));
}

TEST_CASE("the pipelined engine under load keeps streams dense, without a conflict storm") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.decide_while_committing = true;
  // Retries without a key name a transfer already answered (committed), or one maybe still in
  // flight: the latter must be found in the cache, which holds settled transfers long enough
  // at its usual sizes (a tiny one would reload them stale from the store, and lose).
  bool retry_in_flight = false;
  SUBCASE("a tiny cache (32 streams), retries of answered transfers") {
    settings.state_cache_streams_max = 32;  // settled transfers: 4
  }
  SUBCASE("a cache of 50,000 streams, retries of transfers maybe in flight") {
    settings.state_cache_streams_max = 50'000;
    retry_in_flight = true;
  }
  Engine engine(settings);
  constexpr int accounts = 8;
  open_accounts(engine, accounts);
  const auto before = engine.stats();
  constexpr int clients = 4;
  constexpr int per_client = 1'500;
  constexpr std::size_t window = 64;
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::deque<std::pair<std::future<CommandOutcome>, domain::Transfer>> in_flight;
      std::vector<domain::Transfer> answered;
      auto settle = [&] {
        if (!in_flight.front().first.get().accepted()) ++refused;
        if (!in_flight.front().second.id.empty()) answered.push_back(in_flight.front().second);
        in_flight.pop_front();
      };
      std::vector<domain::Transfer> submitted;
      for (int i = 0; i < per_client; ++i) {
        const std::string id = "c" + std::to_string(c) + "-" + std::to_string(i);
        const int from = (c + i) % accounts;
        const int to = (c + i + 1 + i % 3) % accounts;
        if (i % 10 == 5) {
          // A hold, posted three commands later (maybe while still in flight), then settled.
          in_flight.emplace_back(
              engine.submit(command(domain::PlaceHold{id, account_id(from), account_id(to), Amount(2), eur()})),
              domain::Transfer{});
        } else if (i % 10 == 8) {
          in_flight.emplace_back(
              engine.submit(command(domain::PostHold{"c" + std::to_string(c) + "-" + std::to_string(i - 3), Amount(2)})),
              domain::Transfer{});
        } else if (i % 10 == 9 && (retry_in_flight ? !submitted.empty() : !answered.empty())) {
          // The identical transfer again, without a key: a replay.
          const domain::Transfer again = retry_in_flight ? submitted.back() : answered.back();
          in_flight.emplace_back(engine.submit(command(again)), domain::Transfer{});
        } else {
          const domain::Transfer transfer{id, account_id(from), account_id(to), Amount(1), eur()};
          submitted.push_back(transfer);
          in_flight.emplace_back(engine.submit(command(transfer)), transfer);
        }
        if (in_flight.size() >= window) settle();
      }
      while (!in_flight.empty()) settle();
    });
  }
  for (auto& thread : threads) thread.join();
  const auto after = engine.stats();
  const auto batches = after.batches - before.batches;
  MESSAGE("batches " << batches << ", conflicts " << after.conflicts - before.conflicts << ", redecided "
                     << after.commands_redecided - before.commands_redecided << ", hits "
                     << after.cache_hits - before.cache_hits << ", misses " << after.cache_misses - before.cache_misses);
  CHECK(refused.load() == 0);
  CHECK(stream_gaps(database.app_url()) == 0);
  // No conflict storm: an engine alone on its store would only lose to a stale cache.
  CHECK(after.conflicts - before.conflicts <= batches / 20);
  // Every hold was placed and posted once; money is conserved.
  const long long holds = clients * per_client / 10;
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE type = 'transfer_pending'") == holds);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE type = 'pending_transfer_posted'") ==
        holds);
  std::int64_t total = 0;
  for (int i = 0; i < accounts; ++i) total += engine.read_account(account_id(i))->balance()->minor_units();
  CHECK(total == accounts * 1'000'000LL);
  db::ConnectionPool pool(test::make_pool(database.app_url(), 2));
  CHECK(EventStore(pool).verify_chain().ok);
}
