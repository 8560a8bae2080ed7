// The as-of fold against a real PostgreSQL (engine::balance_as_of): an account's state at an
// instant or a position equals a fold of the stored log up to there, done by hand.
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <stdexcept>

#include "engine_fixture.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/engine/event_store.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;

namespace {

std::vector<RecordedEvent> whole_log(db::ConnectionPool& pool) {
  return EventStore(pool).read_all(GlobalPosition(1), 1'000'000);
}

}  // namespace

TEST_CASE("as-of balances equal a fold of the log at 100 random instants and 100 random positions") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  std::atomic<std::int64_t> now_us{1'800'000'000'000'000};
  settings.clock_us = [&] { return now_us += 1'000; };  // every batch a later time
  Engine engine(settings);
  for (int i = 0; i < 8; ++i) REQUIRE(engine.execute(command(domain::OpenAccount{"a" + std::to_string(i), eur()})).accepted());
  std::mt19937 random(11);
  for (int n = 0; n < 600; ++n) {
    const int from = static_cast<int>(random() % 8), to = (from + 1 + static_cast<int>(random() % 7)) % 8;
    const Amount amount(1 + static_cast<std::int64_t>(random() % 900));
    if (n % 3 == 0) {
      (void)engine.execute(command(domain::Deposit{"a" + std::to_string(from), amount}));
    } else {
      (void)engine.execute(command(domain::Transfer{"", "a" + std::to_string(from), "a" + std::to_string(to), amount, eur()}));
    }
  }
  auto pool = test::make_pool(database.app_url(), 3);
  const auto stored = whole_log(pool);
  const EventStore store(pool);
  for (int sample = 0; sample < 200; ++sample) {
    const std::string account = "a" + std::to_string(random() % 8);
    const auto& pivot = stored[random() % stored.size()];
    // The expected state: the account's events at or before the pivot, folded by hand (by
    // time, that includes the rest of the pivot's command: its events share one time).
    const bool by_time = sample < 100;
    domain::AccountState expected;
    GlobalPosition last{0};
    for (const auto& event : stored) {
      if (by_time ? event.recorded_at_us > pivot.recorded_at_us : event.position > pivot.position) break;
      last = event.position;
      if (event.stream_id == "account-" + account) domain::apply(expected, *domain::decode_event(event.type, event.payload));
    }
    const auto found = engine::balance_as_of(store, account, by_time ? std::optional(pivot.recorded_at_us) : std::nullopt,
                                             by_time ? std::nullopt : std::optional(pivot.position));
    REQUIRE(found);
    CHECK(found->state == expected);
    CHECK(found->position <= last);
  }
  CHECK_FALSE(engine::balance_as_of(store, "nobody", std::nullopt, GlobalPosition(5)));
  const auto before = engine::balance_as_of(store, "a7", std::nullopt, GlobalPosition(1));
  REQUIRE(before);
  CHECK_FALSE(before->state.exists);  // a7 was opened later
  CHECK_THROWS_AS((void)engine::balance_as_of(store, "a1", std::nullopt, std::nullopt), std::invalid_argument);
}

