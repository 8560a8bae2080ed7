// Hold expiry against a real PostgreSQL: the engine's sweeper voids a hold once the engine's
// clock passes its timeout, and a post after the timeout is refused before the sweeper runs.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
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

