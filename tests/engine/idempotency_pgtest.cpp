// Idempotency against a real PostgreSQL: a key with the same request answers the first
// outcome, with another request it is refused; refusals replay with their code, also when the
// stored key's request shares a batch with another request under that key.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "open_and_fund.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
using test::open_and_fund;

TEST_CASE("the same idempotency key and request answers the first outcome; another request is refused") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 1'000);
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");

  const auto first = engine.execute(command(domain::Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  REQUIRE(first.accepted());
  CHECK_FALSE(first.replayed);
  const auto events_after_first = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  CHECK(events_after_first == events_before + 3);

  const auto again = engine.execute(command(domain::Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  CHECK(again.accepted());
  CHECK(again.replayed);
  CHECK(again.command_id == first.command_id);
  CHECK(again.position == first.position);
  CHECK(again.versions == first.versions);
  CHECK(again.resource_ids == first.resource_ids);

  const auto other = engine.execute(command(domain::Withdrawal{"alice", Amount(500)}, "key-1", "withdraw 500"));
  CHECK(other.code == RejectionCode::idempotency_key_reused);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_after_first);
  CHECK(engine.read_account("alice")->balance() == Amount(700));

  // A second engine (another instance, empty cache) answers the same from the store.
  Engine other_instance(test::engine_settings(database));
  const auto from_other =
      other_instance.execute(command(domain::Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  CHECK(from_other.replayed);
  CHECK(from_other.position == first.position);

  // A rejection is remembered too: retrying it gives the same answer even after funds arrive.
  const auto refused = engine.execute(command(domain::Withdrawal{"alice", Amount(5'000)}, "key-2", "w 5000"));
  CHECK(refused.code == RejectionCode::insufficient_funds);
  REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(10'000)})).accepted());
  const auto refused_again = engine.execute(command(domain::Withdrawal{"alice", Amount(5'000)}, "key-2", "w 5000"));
  CHECK(refused_again.code == RejectionCode::insufficient_funds);
  CHECK(refused_again.replayed);

  // The same key twice inside one batch: one set of events.
  auto a = engine.submit(command(domain::Withdrawal{"alice", Amount(1)}, "key-3", "w 1"));
  auto b = engine.submit(command(domain::Withdrawal{"alice", Amount(1)}, "key-3", "w 1"));
  const auto outcome_a = a.get();
  const auto outcome_b = b.get();
  CHECK(outcome_a.accepted());
  CHECK(outcome_b.accepted());
  CHECK(outcome_a.position == outcome_b.position);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM events WHERE metadata->>'command_id' = '" +
                         outcome_a.command_id + "'") == 3);
}

TEST_CASE("a command following another with its key in one batch gets the whole first outcome") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.commit_wait_max = std::chrono::milliseconds(100);  // the two below share one batch
  settings.append_batch_commands_max = 2;
  Engine engine(settings);
  open_and_fund(engine, "alice", 1'000);
  auto leader = engine.submit(command(domain::Transfer{"", "alice", "nobody", Amount(1), test::eur()}, "k", "t"));
  auto follower = engine.submit(command(domain::Transfer{"", "alice", "nobody", Amount(1), test::eur()}, "k", "t"));
  const auto first = leader.get();
  const auto second = follower.get();
  CHECK(first.code == RejectionCode::unknown_account);
  CHECK(second.code == first.code);

  auto withdraw = engine.submit(command(domain::Withdrawal{"alice", Amount(1)}, "k2", "w 1"));
  auto again = engine.submit(command(domain::Withdrawal{"alice", Amount(1)}, "k2", "w 1"));
  const auto a = withdraw.get();
  const auto b = again.get();
  REQUIRE(a.accepted());
  REQUIRE(b.accepted());
  CHECK(b.replayed);
  CHECK_FALSE(a.command_id.empty());
  CHECK(b.command_id == a.command_id);
  CHECK(b.position == a.position);
  CHECK_FALSE(a.versions.empty());
  CHECK(b.versions == a.versions);
  CHECK_FALSE(a.resource_ids.empty());
  CHECK(b.resource_ids == a.resource_ids);
  CHECK(engine.read_account("alice")->balance() == Amount(999));
}

TEST_CASE("a keyed refusal replays with its code, whatever the code (none aborts the engine)") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 100);
  const std::string cash = domain::system_account_id(SystemAccount::cash, "EUR");
  const auto first = engine.execute(command(domain::Transfer{"t1", "alice", cash, Amount(1), eur()}, "k1", "same"));
  REQUIRE(first.code == RejectionCode::system_account);
  const auto again = engine.execute(command(domain::Transfer{"t1", "alice", cash, Amount(1), eur()}, "k1", "same"));
  CHECK(again.code == RejectionCode::system_account);
  CHECK(again.replayed);
  const auto loan = engine.execute(command(domain::RepayLoan{"nope", Amount(1), "r1"}, "k2", "repay"));
  REQUIRE(loan.code == RejectionCode::unknown_loan);
  CHECK(engine.execute(command(domain::RepayLoan{"nope", Amount(1), "r1"}, "k2", "repay")).code ==
        RejectionCode::unknown_loan);
}

TEST_CASE("a stored key's request replays even when another request with that key comes first in a batch") {
  test::TestDatabase database;
  EngineSettings settings = test::engine_settings(database);
  settings.commit_wait_max = std::chrono::milliseconds(100);  // both below share one batch
  Engine engine(settings);
  open_and_fund(engine, "alice", 100);
  const auto stored = engine.execute(command(domain::Deposit{"alice", Amount(5)}, "k", "request X"));
  REQUIRE(stored.accepted());
  auto other = engine.submit(command(domain::Deposit{"alice", Amount(7)}, "k", "request Y"));
  auto same = engine.submit(command(domain::Deposit{"alice", Amount(5)}, "k", "request X"));
  CHECK(other.get().code == RejectionCode::idempotency_key_reused);
  const auto replayed = same.get();
  CHECK_MESSAGE(replayed.accepted(), to_string(replayed.code));
  CHECK(replayed.replayed);
  CHECK(replayed.position == stored.position);
}


// Keyed commands are decided while the batch before them commits (the client's usual case:
// every HTTP command carries a key); a key still in flight waits for its first try's commit.
TEST_CASE("keyed batches pipeline, and a retry of a key in flight answers its first outcome") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.decide_while_committing = true;
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine engine(settings);
  constexpr int accounts = 8;
  for (int i = 0; i < accounts; ++i) open_and_fund(engine, "k" + std::to_string(i), 0);

  constexpr int clients = 4;
  constexpr int rounds = 25;
  constexpr int in_flight = 16;
  auto deposit = [](const std::string& key, int account) {
    return command(domain::Deposit{"k" + std::to_string(account), Amount(1 + account)}, key, "deposit " + key);
  };
  // Each client keeps `in_flight` keyed deposits going; `twice`: each key is sent again right
  // after its first try, usually while that one is in flight.
  auto load = [&](const std::string& phase, bool twice) {
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        for (int round = 0; round < rounds; ++round) {
          std::vector<std::future<CommandOutcome>> outcomes;
          for (int k = 0; k < in_flight; ++k) {
            const std::string key = fmt::format("{}-{}-{}-{}", phase, c, round, k);
            outcomes.push_back(engine.submit(deposit(key, (c + k) % accounts)));
            if (twice) outcomes.push_back(engine.submit(deposit(key, (c + k) % accounts)));
          }
          const std::size_t step = twice ? 2 : 1;
          for (std::size_t i = 0; i < outcomes.size(); i += step) {
            const auto first = outcomes[i].get();
            if (!first.accepted()) ++wrong;
            if (!twice) continue;
            const auto second = outcomes[i + 1].get();
            if (!second.accepted() || second.position != first.position || second.command_id != first.command_id ||
                second.versions != first.versions) {
              ++wrong;
            }
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    return wrong.load();
  };

  // Distinct keys: the writer never stops deciding ahead.
  const auto stalls_before = engine.stats().pipeline_stalls;
  const auto batches_before = engine.stats().batches;
  CHECK(load("once", false) == 0);
  const auto batches = engine.stats().batches - batches_before;
  const auto stalls = engine.stats().pipeline_stalls - stalls_before;
  MESSAGE(batches << " keyed batches, " << stalls << " stalls");
  CHECK(batches > 1);
  CHECK(stalls == 0);

  // Each key twice: one effect, and the retry answers the first outcome.
  CHECK(load("twice", true) == 0);
  std::map<int, std::int64_t> expected;
  for (int c = 0; c < clients; ++c) {
    for (int k = 0; k < in_flight; ++k) expected[(c + k) % accounts] += 2 * rounds * (1 + (c + k) % accounts);
  }
  for (int i = 0; i < accounts; ++i) {
    CHECK(engine.read_account("k" + std::to_string(i))->balance()->minor_units() == expected[i]);
  }
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 2 * clients * rounds * in_flight);
}
