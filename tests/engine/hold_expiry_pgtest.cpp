// Hold expiry against a real PostgreSQL: the engine's sweeper voids a hold once the engine's
// clock passes its timeout, and a post after the timeout is refused before the sweeper runs.
// Several engines on one database elect one sweeper (an advisory lock): each hold expires once,
// and when the leader stops or loses its session another engine takes over.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "engine_fixture.hpp"
#include "open_and_fund.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
using test::open_and_fund;

TEST_CASE("the expiry sweeper voids a hold once the engine's clock passes its timeout") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  std::atomic<std::int64_t> now_us{1'800'000'000'000'000};  // an injected clock
  settings.clock_us = [&now_us] { return now_us.load(); };
  settings.expiry_sweep_interval = std::chrono::milliseconds(50);
  Engine engine(settings);
  open_and_fund(engine, "alice", 1'000);
  open_and_fund(engine, "bob", 0);
  domain::PlaceHold hold{"h-expiring", "alice", "bob", Amount(400), eur()};
  hold.timeout_seconds = 60;
  REQUIRE(engine.execute(command(hold)).accepted());
  CHECK(engine.read_account("alice")->available() == Amount(600));
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 1);

  // Before the timeout nothing happens, even with the sweeper running.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(engine.read_transfer("h-expiring")->status == TransferStatus::pending);

  now_us += 61'000'000;
  // Posting after the timeout is refused even before the sweeper gets to it.
  CHECK(engine.execute(command(domain::PostHold{"h-expiring", std::nullopt})).code ==
        RejectionCode::pending_transfer_expired);
  domain::TransferStatus status = TransferStatus::pending;
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


namespace {

constexpr auto election_wait_max = std::chrono::seconds(20);
constexpr auto sweeper_tick = std::chrono::milliseconds(50);

// Polls `done` until it holds or `bound` passes; whether it held.
template <typename Predicate>
bool eventually(Predicate done, std::chrono::milliseconds bound = election_wait_max) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

long long expiry_events(const test::TestDatabase& database) {
  return test::scalar(database.app_url(),
                      "SELECT count(*) FROM events WHERE type = 'pending_transfer_ended' "
                      "AND metadata->>'actor' = 'engine:expiry'");
}

long long expired_holds(const test::TestDatabase& database) {
  return test::scalar(database.app_url(),
                      "SELECT count(DISTINCT stream_id) FROM events WHERE type = 'pending_transfer_ended' "
                      "AND metadata->>'actor' = 'engine:expiry'");
}

void place_holds(Engine& engine, const std::string& prefix, int count, std::int64_t timeout_seconds) {
  for (int i = 0; i < count; ++i) {
    domain::PlaceHold hold{prefix + std::to_string(i), "alice", "bob", Amount(10), eur()};
    hold.timeout_seconds = timeout_seconds;
    REQUIRE(engine.execute(command(hold)).accepted());
  }
}

// Two engines on one database with an injected clock; `engines[i]` may be reset to stop one.
struct TwoEngines {
  test::TestDatabase database;
  std::atomic<std::int64_t> now_us{1'800'000'000'000'000};
  EngineSettings settings;
  std::array<std::optional<Engine>, 2> engines;

  TwoEngines() : settings(test::engine_settings(database)) {
    settings.clock_us = [this] { return now_us.load(); };
    settings.expiry_sweep_interval = sweeper_tick;
    for (auto& engine : engines) engine.emplace(settings);
  }

  [[nodiscard]] HoldExpiryStats expiry(std::size_t index) const {
    return engines[index] ? engines[index]->stats().hold_expiry : HoldExpiryStats{};
  }
  [[nodiscard]] int leaders() const { return int(expiry(0).leader) + int(expiry(1).leader); }
  // The one engine leading; waits (bounded) for one to.
  [[nodiscard]] std::size_t leader() const {
    REQUIRE(eventually([&] { return leaders() == 1; }));
    return expiry(0).leader ? 0 : 1;
  }
};

}  // namespace

TEST_CASE("two engines on one database: one sweeps, each hold expires once, the standby takes over when it stops") {
  TwoEngines stack;
  const std::size_t leader = stack.leader();
  const std::size_t standby = 1 - leader;
  // A few ticks later the standby still stands by: the lock is taken.
  std::this_thread::sleep_for(sweeper_tick * 6);
  CHECK(stack.leaders() == 1);
  CHECK(stack.expiry(leader).leader);
  CHECK(stack.expiry(standby).enabled);
  CHECK(stack.expiry(standby).sweeps == 0);
  CHECK(stack.expiry(leader).sweeps > 0);

  Engine& clients = *stack.engines[standby];  // the commands may come in through any engine
  open_and_fund(clients, "alice", 10'000);
  open_and_fund(clients, "bob", 0);
  place_holds(clients, "early-", 10, 60);
  place_holds(clients, "late-", 10, 120);

  stack.now_us += 61'000'000;
  REQUIRE(eventually([&] { return expiry_events(stack.database) == 10; }));
  std::this_thread::sleep_for(sweeper_tick * 6);  // more sweeps find nothing more to do
  CHECK(expiry_events(stack.database) == 10);
  CHECK(expired_holds(stack.database) == 10);
  CHECK(stack.expiry(leader).holds_expired == 10);
  CHECK(stack.expiry(standby).holds_expired == 0);
  CHECK(stack.expiry(standby).sweeps == 0);
  CHECK(stack.leaders() == 1);

  // The leader stops: closing its lock's session releases the lock, and the standby sweeps.
  stack.engines[leader].reset();
  REQUIRE(eventually([&] { return stack.expiry(standby).leader; }));
  CHECK(stack.expiry(standby).leadership_acquired == 1);
  stack.now_us += 60'000'000;
  REQUIRE(eventually([&] { return expiry_events(stack.database) == 20; }));
  CHECK(eventually([&] {
    return test::scalar(stack.database.app_url(), "SELECT count(*) FROM pending_expiries") == 0;
  }));
  CHECK(expiry_events(stack.database) == 20);
  CHECK(expired_holds(stack.database) == 20);
  CHECK(stack.expiry(standby).holds_expired == 10);
  const auto alice = *stack.engines[standby]->read_account("alice");
  CHECK(alice.debits_pending == Amount(0));
  CHECK(alice.available() == Amount(10'000));
}

TEST_CASE("a leader whose lock session the server ends stands down; the lock is taken again and holds expire once") {
  TwoEngines stack;
  const std::size_t leader = stack.leader();
  Engine& clients = *stack.engines[1 - leader];
  open_and_fund(clients, "alice", 10'000);
  open_and_fund(clients, "bob", 0);
  place_holds(clients, "h-", 10, 60);

  // The server ends the leader's lock session (a failover, an operator, a network cut).
  pqxx::connection admin(stack.database.admin_url());
  pqxx::nontransaction query(admin);
  const auto holders = query.exec_params(
      "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
      "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
      "AND ((classid::text::bigint << 32) | objid::text::bigint) = $1",
      stack.settings.expiry_sweep_lock_key);
  REQUIRE(holders.size() == 1);
  CHECK(holders[0][0].as<bool>());

  // It notices at its next check, and some engine (either may win the race) leads again.
  REQUIRE(eventually([&] { return stack.expiry(leader).leadership_lost == 1; }));
  const std::size_t next_leader = stack.leader();
  stack.now_us += 61'000'000;
  REQUIRE(eventually([&] { return expiry_events(stack.database) == 10; }));
  std::this_thread::sleep_for(sweeper_tick * 6);
  CHECK(expiry_events(stack.database) == 10);
  CHECK(expired_holds(stack.database) == 10);
  CHECK(stack.expiry(0).holds_expired + stack.expiry(1).holds_expired == 10);
  CHECK(stack.expiry(next_leader).holds_expired == 10);
  CHECK(stack.leaders() == 1);
}
