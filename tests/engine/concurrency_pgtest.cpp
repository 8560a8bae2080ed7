// Two engine instances (own connections, own caches) and 8 client threads run at least 20,000
// random transfers, holds, posts, voids, deposits and withdrawals over 100 accounts. Afterwards
// the log is checked as an auditor would: positions exactly 1..N, every stream's versions
// dense, no customer account below its limit at any command boundary, and balances per
// currency summing to zero.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <thread>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/domain/events.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;

namespace {

constexpr int account_count = 100;
constexpr int thread_count = 8;
constexpr int operations_per_thread = 2'600;  // 20,800 commands in all
constexpr std::size_t window_commands = 16;   // in flight per thread, so batches really form

std::string account_name(int i) { return "acct-" + std::to_string(i); }

}  // namespace

TEST_CASE("two engines and eight threads keep every invariant over 20,000 random commands") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.database_connections = 2;
  SUBCASE("deciding while committing") { settings.decide_while_committing = true; }
  SUBCASE("one batch at a time") { settings.decide_while_committing = false; }
  Engine first(settings);
  Engine second(settings);

  for (int i = 0; i < account_count; ++i) {
    domain::OpenAccount open{account_name(i), eur()};
    open.overdraft_limit = Amount(i % 10 == 0 ? 5'000 : 0);
    REQUIRE(first.execute(command(open)).accepted());
    REQUIRE(second.execute(command(domain::Deposit{account_name(i), Amount(10'000 + i * 100)})).accepted());
  }

  std::atomic<int> accepted{0};
  std::atomic<int> rejected{0};
  std::atomic<int> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(1234 + t);
      std::vector<std::string> open_holds;
      std::vector<std::pair<std::future<domain::CommandOutcome>, bool>> in_flight;  // (outcome, is hold)
      auto settle = [&](std::size_t keep) {
        while (in_flight.size() > keep) {
          auto [future, is_hold] = std::move(in_flight.front());
          in_flight.erase(in_flight.begin());
          const auto outcome = future.get();
          if (outcome.accepted()) {
            ++accepted;
            if (is_hold) open_holds.push_back(outcome.resource_ids.front());
          } else {
            ++rejected;
            if (outcome.code == RejectionCode::version_conflict) ++conflicts;
          }
        }
      };
      for (int n = 0; n < operations_per_thread; ++n) {
        Engine& engine = (random() % 2 == 0) ? first : second;
        const int from = static_cast<int>(random() % account_count);
        int to = static_cast<int>(random() % account_count);
        if (to == from) to = (to + 1) % account_count;
        const Amount amount(1 + static_cast<std::int64_t>(random() % 3'000));
        const int kind = static_cast<int>(random() % 12);
        if (kind == 10) {
          // Deposits and withdrawals all meet on the currency's cash account.
          in_flight.emplace_back(engine.submit(command(domain::Deposit{account_name(from), amount})), false);
        } else if (kind == 11) {
          in_flight.emplace_back(engine.submit(command(domain::Withdrawal{account_name(from), amount})), false);
        } else if (kind < 6 || (kind >= 8 && open_holds.empty())) {
          in_flight.emplace_back(
              engine.submit(command(domain::Transfer{"", account_name(from), account_name(to), amount, eur()})),
              false);
        } else if (kind < 8) {
          in_flight.emplace_back(
              engine.submit(command(domain::PlaceHold{"", account_name(from), account_name(to), amount, eur()})),
              true);
        } else {
          const std::string hold = open_holds.back();
          open_holds.pop_back();
          if (kind == 8) {
            in_flight.emplace_back(engine.submit(command(domain::PostHold{hold, Amount(amount.minor_units() % 50 + 1)})), false);
          } else {
            in_flight.emplace_back(engine.submit(command(domain::VoidHold{hold})), false);
          }
        }
        settle(window_commands);
      }
      settle(0);
    });
  }
  for (auto& thread : threads) thread.join();
  first.stop();
  second.stop();
  // The two instances really raced: each lost some appends and redid them.
  MESSAGE("conflicts: " << first.stats().conflicts << " and " << second.stats().conflicts
                        << "; commands decided again: " << first.stats().commands_redecided << " and "
                        << second.stats().commands_redecided);
  CHECK(first.stats().conflicts + second.stats().conflicts > 0);
  CHECK(accepted + rejected == thread_count * operations_per_thread);
  CHECK(accepted > thread_count * operations_per_thread / 2);
  MESSAGE("accepted " << accepted.load() << ", rejected " << rejected.load() << ", conflicts answered "
                      << conflicts.load());

  // Audit the whole log.
  db::PoolSettings pool_settings;
  pool_settings.url = database.app_url();
  db::ConnectionPool pool(pool_settings);
  EventStore store(pool);
  std::map<std::string, std::int64_t> stream_versions;
  std::map<std::string, domain::AccountState> accounts;
  std::int64_t expected_position = 1;
  std::string current_command;
  std::int64_t limit_violations = 0;
  std::int64_t unbalanced_boundaries = 0;
  std::int64_t version_gaps = 0;
  auto check_boundary = [&] {
    std::int64_t sum = 0;
    for (const auto& [id, account] : accounts) {
      sum += account.credits_posted.minor_units() - account.debits_posted.minor_units();
      if (account.kind == AccountKind::customer &&
          (account.flags & AccountFlags::debits_must_not_exceed_credits) != 0 &&
          account.debits_posted.minor_units() + account.debits_pending.minor_units() >
              account.credits_posted.minor_units() + account.overdraft_limit.minor_units()) {
        ++limit_violations;
      }
    }
    if (sum != 0) ++unbalanced_boundaries;
  };
  while (true) {
    const auto batch = store.read_all(GlobalPosition(expected_position), 5'000);
    if (batch.empty()) break;
    for (const auto& event : batch) {
      REQUIRE(event.position.value() == expected_position);
      ++expected_position;
      // Every command's events are contiguous; invariants hold between commands.
      if (event.metadata.command_id != current_command) {
        if (!current_command.empty()) check_boundary();
        current_command = event.metadata.command_id;
      }
      auto& version = stream_versions[event.stream_id];
      if (event.version.value() != version + 1) ++version_gaps;
      version = event.version.value();
      if (event.stream_id.starts_with("account-")) {
        auto decoded = domain::decode_event(event.type, event.payload);
        REQUIRE(decoded.has_value());
        domain::apply(accounts[event.stream_id], *decoded);
      }
    }
  }
  check_boundary();
  CHECK(expected_position - 1 == test::scalar(database.app_url(), "SELECT count(*) FROM events"));
  CHECK(expected_position - 1 == store.head().position.value());
  CHECK(version_gaps == 0);
  CHECK(limit_violations == 0);
  CHECK(unbalanced_boundaries == 0);
  CHECK(store.verify_chain().ok);
}
