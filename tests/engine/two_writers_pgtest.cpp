// Two engines on one store (two `serve` processes behind a balancer): a version conflict costs
// only the commands whose streams the other engine moved, and the currency's system accounts,
// which every deposit touches, never conflict at all.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "open_and_fund.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
using test::open_and_fund;

namespace {

const std::string cash_stream = account_stream(system_account_id(SystemAccount::cash, "EUR"));

// Every stream's versions run 1..n, and positions 1..head.
void check_dense(const test::TestDatabase& database) {
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                     "HAVING max(version) <> count(*) OR min(version) <> 1) s") == 0);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") ==
        test::scalar(database.app_url(), "SELECT position FROM event_store_head"));
  CHECK(test::scalar(database.app_url(), "SELECT coalesce(max(position), 0) FROM events") ==
        test::scalar(database.app_url(), "SELECT count(*) FROM events"));
}

// `clients` threads on `engine`, each submitting `rounds` rounds of `in_flight` commands at once
// (`make(client, round, k)`) and handing every answer to `check(client, round, k, outcome)`, on
// the client's thread.
void load_at_once(Engine& engine, int clients, int rounds, int in_flight,
                  const std::function<Command(int, int, int)>& make,
                  const std::function<void(int, int, int, const CommandOutcome&)>& check) {
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int round = 0; round < rounds; ++round) {
        std::vector<std::future<CommandOutcome>> outcomes;
        for (int k = 0; k < in_flight; ++k) outcomes.push_back(engine.submit(make(c, round, k)));
        for (int k = 0; k < in_flight; ++k) check(c, round, k, outcomes[static_cast<std::size_t>(k)].get());
      }
    });
  }
  for (auto& thread : threads) thread.join();
}

// Sessions of `database` waiting for a lock (an engine's committer behind a held head row).
long long lock_waiters(const test::TestDatabase& database) {
  return test::scalar(database.app_url(),
                      "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock'");
}

// Waits (5 s at most) until `count` sessions of `database` wait for a lock.
void wait_for_lock_waiters(const test::TestDatabase& database, long long count) {
  for (int attempt = 0; attempt < 500 && lock_waiters(database) != count; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

EngineSettings settings_for(const test::TestDatabase& database, bool pipelined) {
  auto settings = test::engine_settings(database);
  settings.decide_while_committing = pipelined;
  return settings;
}

}  // namespace

TEST_CASE("deposits on two engines never conflict on the currency's cash account") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    const auto settings = settings_for(database, pipelined);
    Engine mine(settings);
    Engine theirs(settings);
    open_and_fund(mine, "a", 0);
    open_and_fund(theirs, "b", 0);
    std::int64_t deposited = 0;
    // Each engine's cached cash account is behind the store every time: the other deposited.
    for (int round = 0; round < 20; ++round) {
      const auto amount = Amount(100 + round);
      const auto on_mine = mine.execute(command(Deposit{"a", amount}));
      REQUIRE_MESSAGE(on_mine.accepted(), to_string(on_mine.code));
      const auto on_theirs = theirs.execute(command(Withdrawal{"b", Amount(1'000'000)}));
      CHECK(on_theirs.code == RejectionCode::insufficient_funds);
      const auto deposit_theirs = theirs.execute(command(Deposit{"b", amount}));
      REQUIRE_MESSAGE(deposit_theirs.accepted(), to_string(deposit_theirs.code));
      deposited += 2 * amount.minor_units();
      // The outcome names the cash account's version the deposit really got.
      const auto cash_version = std::find_if(deposit_theirs.versions.begin(), deposit_theirs.versions.end(),
                                             [](const auto& pair) { return pair.first == cash_stream; });
      REQUIRE(cash_version != deposit_theirs.versions.end());
      CHECK(cash_version->second.value() ==
            test::scalar(database.app_url(), "SELECT max(version) FROM events WHERE stream_id = '" + cash_stream + "'"));
    }
    CHECK(mine.stats().conflicts == 0);
    CHECK(theirs.stats().conflicts == 0);
    CHECK(mine.stats().commands_redecided + theirs.stats().commands_redecided == 0);
    check_dense(database);
    // Both engines read the cash account as stored: every deposit on it.
    const auto cash_id = system_account_id(SystemAccount::cash, "EUR");
    CHECK(mine.read_account(cash_id)->balance()->minor_units() == -deposited);
    CHECK(theirs.read_account(cash_id)->balance()->minor_units() == -deposited);
  }
}

TEST_CASE("a conflict sends back only the commands whose streams the other engine moved") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    auto settings = settings_for(database, pipelined);
    constexpr int accounts = 10;
    // The ten withdrawals below are appended as one batch.
    settings.append_batch_commands_max = accounts;
    settings.commit_wait_max = std::chrono::milliseconds(100);
    Engine mine(settings);
    Engine theirs(settings);
    for (int i = 0; i < accounts; ++i) open_and_fund(mine, "acct-" + std::to_string(i), 1'000);
    // Mine caches acct-0 at 1,000; theirs takes 950 of it.
    REQUIRE(theirs.execute(command(Withdrawal{"acct-0", Amount(950)})).accepted());
    const auto before = mine.stats();

    std::vector<std::future<CommandOutcome>> outcomes;
    for (int i = 0; i < accounts; ++i) {
      outcomes.push_back(mine.submit(command(Withdrawal{"acct-" + std::to_string(i), Amount(100)})));
    }
    std::vector<RejectionCode> codes;
    for (auto& outcome : outcomes) codes.push_back(outcome.get().code);
    // acct-0 was decided again on the stored state: 50 left, so the 100 is refused.
    CHECK(codes[0] == RejectionCode::insufficient_funds);
    for (int i = 1; i < accounts; ++i) CHECK(codes[static_cast<std::size_t>(i)] == RejectionCode::none);
    // A command is answered before its batch is counted.
    const auto after = test::stats_once_counted(mine, before.commands + accounts);
    CHECK(after.conflicts == 1);
    CHECK(after.commands_redecided == 1);
    // The nine others went in with the batch that found the conflict.
    CHECK(after.batches - before.batches == 1);
    CHECK(mine.read_account("acct-0")->balance() == Amount(50));
    CHECK(mine.read_account("acct-9")->balance() == Amount(900));
    check_dense(database);
  }
}

TEST_CASE("a pipelined engine meeting another's commits on streams it is not writing keeps pipelining") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine mine(settings);
  Engine theirs(settings);
  constexpr int accounts = 8;
  for (int i = 0; i < accounts; ++i) {
    open_and_fund(mine, "mine-" + std::to_string(i), 0);
    open_and_fund(theirs, "theirs-" + std::to_string(i), 0);
  }
  // The cash account exists before the load (two engines creating it at once is a real race).
  REQUIRE(mine.execute(command(Deposit{"mine-0", Amount(1)})).accepted());
  const auto stalls_before = mine.stats().pipeline_stalls;
  const auto batches_before = mine.stats().batches;

  // Both deposit at once, unkeyed, from several clients each with many in flight: every append
  // of each meets the other's commits, which moved the shared cash account and accounts the
  // other never writes.
  constexpr int clients = 4;
  constexpr int rounds = 25;
  constexpr int in_flight = 16;
  std::atomic<int> refused{0};
  auto load = [&](Engine& engine, const std::string& prefix) {
    load_at_once(
        engine, clients, rounds, in_flight,
        [&](int c, int, int k) {
          const int account = (c + k) % accounts;
          return command(Deposit{prefix + std::to_string(account), Amount(1 + account)});
        },
        [&](int, int, int, const CommandOutcome& outcome) { refused += outcome.accepted() ? 0 : 1; });
  };
  auto theirs_done = std::async(std::launch::async, load, std::ref(theirs), std::string("theirs-"));
  load(mine, "mine-");
  theirs_done.get();
  CHECK(refused == 0);

  const auto batches = mine.stats().batches - batches_before;
  const auto stalls = mine.stats().pipeline_stalls - stalls_before;
  MESSAGE("mine: " << batches << " batches, " << stalls << " stalls; conflicts " << mine.stats().conflicts
                   << " and " << theirs.stats().conflicts);
  // Nothing it decided on moved: it never stopped deciding ahead.
  CHECK(stalls == 0);
  CHECK(mine.stats().commands_redecided + theirs.stats().commands_redecided == 0);
  check_dense(database);
  std::int64_t per_client = 0;
  std::map<int, std::int64_t> per_account;
  for (int c = 0; c < clients; ++c) {
    for (int k = 0; k < in_flight; ++k) {
      const int account = (c + k) % accounts;
      per_account[account] += rounds * (1 + account);
      per_client += rounds * (1 + account);
    }
  }
  const auto cash_id = system_account_id(SystemAccount::cash, "EUR");
  CHECK(mine.read_account(cash_id)->balance()->minor_units() == -2 * per_client - 1);
  for (int i = 0; i < accounts; ++i) {
    CHECK(mine.read_account("mine-" + std::to_string(i))->balance()->minor_units() == per_account[i] + (i == 0 ? 1 : 0));
    CHECK(theirs.read_account("theirs-" + std::to_string(i))->balance()->minor_units() == per_account[i]);
  }
}

TEST_CASE("a pipelined engine whose commands lose to another's commits decides them again in the same commit") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine mine(settings);
  Engine theirs(settings);
  // Few accounts, both engines moving money between them at once: appends of each keep finding
  // accounts the other moved since it cached them.
  constexpr int accounts = 6;
  constexpr std::int64_t funded = 500;
  // Each engine appends before the load: an engine's first append knows nothing of the store,
  // and drops its whole cache once (a stall the race below does not cause).
  for (int i = 0; i < accounts; ++i) open_and_fund(i % 2 == 0 ? mine : theirs, "shared-" + std::to_string(i), funded);
  const auto mine_before = mine.stats();
  const auto theirs_before = theirs.stats();

  constexpr int clients = 3;
  constexpr int rounds = 20;
  constexpr int in_flight = 12;
  std::mutex oracle_mutex;
  std::map<int, std::int64_t> oracle;  // net change per account, from the accepted outcomes
  std::atomic<int> answered{0};
  struct Move {
    int from, to;
    std::int64_t amount;
  };
  auto move_of = [&](int seed, int c, int round, int k) {
    const int from = (seed + c * 7 + round * 3 + k) % accounts;
    return Move{from, (from + 1 + (k + seed) % (accounts - 1)) % accounts, 20 + (k * 13 + round) % 90};
  };
  auto load = [&](Engine& engine, int seed) {
    load_at_once(
        engine, clients, rounds, in_flight,
        [&](int c, int round, int k) {
          const Move move = move_of(seed, c, round, k);
          return command(Transfer{"", "shared-" + std::to_string(move.from), "shared-" + std::to_string(move.to),
                                  Amount(move.amount), eur(), ""});
        },
        [&](int c, int round, int k, const CommandOutcome& outcome) {
          ++answered;
          REQUIRE_MESSAGE((outcome.accepted() || outcome.code == RejectionCode::insufficient_funds),
                          to_string(outcome.code));
          if (!outcome.accepted()) return;
          const Move move = move_of(seed, c, round, k);
          std::lock_guard lock(oracle_mutex);
          oracle[move.from] -= move.amount;
          oracle[move.to] += move.amount;
        });
  };
  auto theirs_done = std::async(std::launch::async, load, std::ref(theirs), 1);
  load(mine, 0);
  theirs_done.get();
  CHECK(answered == 2 * clients * rounds * in_flight);

  const auto redecided = mine.stats().commands_redecided - mine_before.commands_redecided +
                         theirs.stats().commands_redecided - theirs_before.commands_redecided;
  const auto stalls = mine.stats().pipeline_stalls - mine_before.pipeline_stalls +
                      theirs.stats().pipeline_stalls - theirs_before.pipeline_stalls;
  const auto run_again = mine.stats().batches_run_again - mine_before.batches_run_again +
                         theirs.stats().batches_run_again - theirs_before.batches_run_again;
  MESSAGE(redecided << " commands decided again, " << stalls << " pipeline stalls, " << run_again
                    << " batches run again");
  // The race really happened, and no loser went back to its writer to be run the serial way.
  CHECK(redecided > 0);
  CHECK(run_again == 0);
  check_dense(database);
  // Every accepted transfer is stored once: the balances are the oracle's.
  Engine reader(settings);
  for (int i = 0; i < accounts; ++i) {
    INFO("shared-" << i);
    CHECK(reader.read_account("shared-" + std::to_string(i))->balance()->minor_units() == funded + oracle[i]);
  }
}

TEST_CASE("deposits that lose to another engine's commits are decided again on the cash account as stored") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine mine(settings);
  Engine theirs(settings);
  constexpr int accounts = 4;
  for (int i = 0; i < accounts; ++i) open_and_fund(i % 2 == 0 ? mine : theirs, "dep-" + std::to_string(i), 0);
  const auto cash_id = system_account_id(SystemAccount::cash, "EUR");
  const auto mine_before = mine.stats();
  const auto theirs_before = theirs.stats();
  // Both deposit on the same few accounts: a deposit decided on an account the other moved
  // loses and is decided again in the appending transaction, where its cash account row must
  // take the version the store holds after both engines' deposits.
  constexpr int clients = 3;
  constexpr int rounds = 15;
  constexpr int in_flight = 12;
  std::atomic<std::int64_t> deposited{0};
  std::array<std::atomic<std::int64_t>, accounts> per_account{};
  auto account_of = [&](int seed, int c, int round, int k) { return (seed + c + round + k) % accounts; };
  auto amount_of = [&](int seed, int round, int k) { return std::int64_t{1 + (k * 7 + round + seed) % 50}; };
  auto load = [&](Engine& engine, int seed) {
    load_at_once(
        engine, clients, rounds, in_flight,
        [&](int c, int round, int k) {
          return command(Deposit{"dep-" + std::to_string(account_of(seed, c, round, k)), Amount(amount_of(seed, round, k))});
        },
        [&](int c, int round, int k, const CommandOutcome& outcome) {
          REQUIRE_MESSAGE(outcome.accepted(), to_string(outcome.code));
          per_account[static_cast<std::size_t>(account_of(seed, c, round, k))] += amount_of(seed, round, k);
          deposited += amount_of(seed, round, k);
        });
  };
  auto theirs_done = std::async(std::launch::async, load, std::ref(theirs), 1);
  load(mine, 0);
  theirs_done.get();
  const auto redecided = mine.stats().commands_redecided - mine_before.commands_redecided +
                         theirs.stats().commands_redecided - theirs_before.commands_redecided;
  MESSAGE(redecided << " deposits decided again");
  CHECK(redecided > 0);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account(cash_id)->balance()->minor_units() == -deposited.load());
  for (int i = 0; i < accounts; ++i) {
    CHECK(reader.read_account("dep-" + std::to_string(i))->balance()->minor_units() ==
          per_account[static_cast<std::size_t>(i)].load());
  }
}

TEST_CASE("an engine folds another's commits into the states it caches instead of reading them again") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    const auto settings = settings_for(database, pipelined);
    Engine mine(settings);
    Engine theirs(settings);
    open_and_fund(theirs, "fold-c", 1'000);
    open_and_fund(mine, "fold-a", 1'000);
    open_and_fund(mine, "fold-b", 1'000);
    // Theirs moves fold-a, which mine caches (a transfer: the cash account, which a renumbered
    // deposit drops from the cache, stays out of it); mine's next append meets that commit and
    // folds it in.
    REQUIRE(theirs.execute(command(Transfer{"", "fold-a", "fold-c", Amount(300), eur(), ""})).accepted());
    REQUIRE(mine.execute(command(Deposit{"fold-b", Amount(1)})).accepted());
    const auto before = mine.stats();
    // Decided on the folded state (700): refused at once, with no store read and no conflict.
    const auto refused = mine.execute(command(Withdrawal{"fold-a", Amount(701)}));
    CHECK(refused.code == RejectionCode::insufficient_funds);
    const auto accepted = mine.execute(command(Withdrawal{"fold-a", Amount(700)}));
    CHECK_MESSAGE(accepted.accepted(), to_string(accepted.code));
    CHECK(mine.stats().cache_misses == before.cache_misses);
    CHECK(mine.stats().conflicts == before.conflicts);
    check_dense(database);
    Engine reader(settings);
    CHECK(reader.read_account("fold-a")->balance() == Amount(0));
    CHECK(*mine.read_account("fold-a") == *reader.read_account("fold-a"));
  }
}

TEST_CASE("after a loser is decided again in the commit, the engine's cache holds its streams as committed") {
  test::TestDatabase database;
  const auto settings = settings_for(database, true);
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(theirs, "z", 0);
  open_and_fund(mine, "x", 1'000);
  open_and_fund(mine, "y", 1'000);
  // Mine caches x at 1,000; theirs takes 900 of it (a transfer: no system account moves).
  REQUIRE(theirs.execute(command(Transfer{"", "x", "z", Amount(900), eur(), ""})).accepted());
  const auto redecided_before = mine.stats().commands_redecided;
  // Decided on the cached 1,000, lost at the append, decided again in the commit on 100.
  const auto lost = mine.execute(command(Transfer{"", "y", "x", Amount(50), eur(), ""}));
  REQUIRE_MESSAGE(lost.accepted(), to_string(lost.code));
  CHECK(mine.stats().commands_redecided == redecided_before + 1);
  // Answered before its commit is done with: once a later command is answered, it is.
  REQUIRE(mine.execute(command(OpenAccount{"w", eur()})).accepted());
  // x (150) and y (950) as committed are in the cache: no store read, no conflict.
  const auto before = mine.stats();
  CHECK(mine.execute(command(Transfer{"", "x", "y", Amount(151), eur(), ""})).code == RejectionCode::insufficient_funds);
  const auto emptied = mine.execute(command(Transfer{"", "x", "y", Amount(150), eur(), ""}));
  CHECK_MESSAGE(emptied.accepted(), to_string(emptied.code));
  CHECK(mine.stats().cache_misses == before.cache_misses);
  CHECK(mine.stats().conflicts == before.conflicts);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account("x")->balance() == Amount(0));
  CHECK(reader.read_account("y")->balance() == Amount(1'100));
  CHECK(*mine.read_account("y") == *reader.read_account("y"));
}

TEST_CASE("a client retrying a keyed command that lost to another engine gets its one outcome, stored once") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(theirs, "r-z", 0);
  open_and_fund(mine, "r-x", 1'000);
  open_and_fund(mine, "r-y", 0);
  // Mine caches r-x at 1,000; theirs takes 900. Mine's transfer of 500 is decided on the cached
  // 1,000, loses at the append and is decided again in that commit on 100: refused. The client
  // retries with the same key while the first try is in flight, and once more after it.
  REQUIRE(theirs.execute(command(Transfer{"", "r-x", "r-z", Amount(900), eur(), ""})).accepted());
  const auto redecided_before = mine.stats().commands_redecided;
  const auto retry = [] {
    return command(Transfer{"t-retried", "r-x", "r-y", Amount(500), eur(), ""}, "key-retried", "transfer 500");
  };
  auto first = mine.submit(retry());
  auto second = mine.submit(retry());
  const auto first_outcome = first.get();
  const auto second_outcome = second.get();
  const auto third_outcome = mine.execute(retry());
  CHECK(mine.stats().commands_redecided > redecided_before);
  CHECK(first_outcome.code == RejectionCode::insufficient_funds);
  for (const auto* outcome : {&second_outcome, &third_outcome}) {
    CHECK(outcome->code == first_outcome.code);
    CHECK(outcome->command_id == first_outcome.command_id);
    CHECK(outcome->replayed);
  }
  // Then it succeeds with a new key, once.
  const auto smaller = mine.execute(command(Transfer{"t-smaller", "r-x", "r-y", Amount(100), eur(), ""}, "key-smaller", "transfer 100"));
  CHECK_MESSAGE(smaller.accepted(), to_string(smaller.code));
  CHECK(mine.execute(command(Transfer{"t-smaller", "r-x", "r-y", Amount(100), eur(), ""}, "key-smaller", "transfer 100")).replayed);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account("r-x")->balance() == Amount(0));
  CHECK(reader.read_account("r-y")->balance() == Amount(100));
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys WHERE key IN ('key-retried', 'key-smaller')") == 2);
}

TEST_CASE("commands decided while another writer holds the head row join the commit waiting for it") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(theirs, "join-theirs", 0);
  constexpr int accounts = 6;
  for (int i = 0; i < accounts; ++i) open_and_fund(mine, "join-" + std::to_string(i), 100);
  // Mine's last commits found the head where mine had left it: its next append goes on that
  // head in one statement, which waits for the row inside that statement.
  REQUIRE(mine.stats().appends_on_own_head > 0);
  // Another writer's commit holds the head row (a transaction of the test's, then theirs, which
  // moves the head once it gets the row) ...
  pqxx::connection holder(database.app_url());
  pqxx::work held(holder);
  held.exec("SELECT position FROM event_store_head FOR UPDATE");
  auto their_deposit = theirs.submit(command(Deposit{"join-theirs", Amount(1)}));
  wait_for_lock_waiters(database, 1);
  const auto before = mine.stats();
  std::vector<std::future<CommandOutcome>> outcomes;
  outcomes.push_back(mine.submit(command(Deposit{"join-0", Amount(1)})));
  // ... mine's committer waits for the row for the first deposit ...
  wait_for_lock_waiters(database, 2);
  REQUIRE(lock_waiters(database) == 2);
  // ... while the writer decides the others, one by one, behind it.
  for (int i = 1; i < accounts; ++i) {
    outcomes.push_back(mine.submit(command(Deposit{"join-" + std::to_string(i), Amount(1)})));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The writer has taken every one from the queue (a loaded machine may wake it late), and
  // had time to decide the last.
  const auto taken_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (mine.stats().queued != 0 && std::chrono::steady_clock::now() < taken_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(mine.stats().queued == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  held.abort();
  CHECK(their_deposit.get().accepted());
  for (auto& outcome : outcomes) {
    const auto answered = outcome.get();
    CHECK_MESSAGE(answered.accepted(), to_string(answered.code));
  }
  const auto after = test::stats_once_counted(mine, before.commands + accounts);
  REQUIRE(after.commands == before.commands + accounts);
  // The append on mine's head found theirs first and wrote nothing; then one commit for all of
  // them: the decisions made during the wait joined it once it held the row.
  CHECK(after.appends_on_own_head_missed == before.appends_on_own_head_missed + 1);
  CHECK(after.appends_on_own_head == before.appends_on_own_head);
  CHECK(after.batches == before.batches + 1);
  CHECK(after.head_lock_held_seconds.count() == before.head_lock_held_seconds.count() + 1);
  CHECK(after.head_lock_wait_seconds.sum() - before.head_lock_wait_seconds.sum() >= 0.2);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account("join-theirs")->balance() == Amount(1));
  for (int i = 0; i < accounts; ++i) {
    CHECK(reader.read_account("join-" + std::to_string(i))->balance() == Amount(101));
  }
}

TEST_CASE("a stream another engine moved far is snapshotted when loaded, and the next load starts there") {
  test::TestDatabase database;
  const auto directory = std::filesystem::temp_directory_path() / ("ledger-snapshots-far-" + database.name());
  std::filesystem::remove_all(directory);
  struct RemovedAtExit {
    std::filesystem::path directory;
    ~RemovedAtExit() { std::filesystem::remove_all(directory); }
  } removed{directory};
  const auto theirs_settings = settings_for(database, true);
  auto mine_settings = settings_for(database, true);
  mine_settings.snapshot_directory = directory.string();
  mine_settings.snapshot_every_events = 64;  // of its own appends
  Engine theirs(theirs_settings);
  open_and_fund(theirs, "far", 0);
  // Theirs moves far to version 71; mine never wrote it, so no append of mine snapshots it.
  for (int i = 0; i < 70; ++i) REQUIRE(theirs.execute(command(Deposit{"far", Amount(1)})).accepted());
  const auto stored_version = test::scalar(
      database.app_url(), "SELECT max(version) FROM events WHERE stream_id = '" + account_stream("far") + "'");
  {
    Engine mine(mine_settings);
    // Mine folds far from its first event, then appends version 72 (no multiple of 64 passed).
    REQUIRE(mine.execute(command(Withdrawal{"far", Amount(1)})).accepted());
  }
  {
    SnapshotStore snapshots(directory.string());
    const auto snapshot = snapshots.get(account_stream("far"));
    REQUIRE(snapshot.has_value());
    CHECK(snapshot->version.value() == stored_version);
  }
  for (int i = 0; i < 5; ++i) REQUIRE(theirs.execute(command(Deposit{"far", Amount(1)})).accepted());
  Engine mine(mine_settings);
  const auto hits_before = mine.stats().snapshots.hits;
  // Refused on the snapshot with the tail folded on top (70 - 1 + 5 = 74): the state is right.
  CHECK(mine.execute(command(Withdrawal{"far", Amount(75)})).code == RejectionCode::insufficient_funds);
  CHECK(mine.stats().snapshots.hits > hits_before);
  REQUIRE(mine.execute(command(Withdrawal{"far", Amount(74)})).accepted());
  Engine reader(theirs_settings);
  CHECK(reader.read_account("far")->balance() == Amount(0));
}

TEST_CASE("a loser decided again in the commit sees what the commit's winners wrote before it") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(mine, "wl-x", 100);
  open_and_fund(mine, "wl-y", 100);
  open_and_fund(mine, "wl-z", 0);
  open_and_fund(mine, "wl-hold", 0);
  // Theirs moves wl-z, which mine caches: mine's next decision on it loses at the append.
  REQUIRE(theirs.execute(command(Deposit{"wl-z", Amount(7)})).accepted());
  pqxx::connection holder(database.app_url());
  pqxx::work held(holder);
  held.exec("SELECT position FROM event_store_head FOR UPDATE");
  std::vector<std::future<CommandOutcome>> outcomes;
  outcomes.push_back(mine.submit(command(Deposit{"wl-hold", Amount(1)})));
  wait_for_lock_waiters(database, 1);
  // Decided behind the waiting commit on the cached states: the winner brings wl-x to 150, and
  // the loser (wl-z moved) takes 120 of it; decided again, it must see the winner's 50.
  const auto redecided_before = mine.stats().commands_redecided;
  outcomes.push_back(mine.submit(command(Transfer{"", "wl-y", "wl-x", Amount(50), eur(), ""})));
  outcomes.push_back(mine.submit(command(Transfer{"", "wl-x", "wl-z", Amount(120), eur(), ""})));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  held.abort();
  for (auto& outcome : outcomes) {
    const auto answered = outcome.get();
    CHECK_MESSAGE(answered.accepted(), to_string(answered.code));
  }
  for (int attempt = 0; attempt < 500 && mine.stats().commands_redecided == redecided_before; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(mine.stats().commands_redecided == redecided_before + 1);
  CHECK(mine.stats().batches_run_again == 0);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account("wl-x")->balance() == Amount(30));
  CHECK(reader.read_account("wl-y")->balance() == Amount(50));
  CHECK(reader.read_account("wl-z")->balance() == Amount(127));
  // One commit: the winners' and the loser's rows, then the cache as committed.
  CHECK(*mine.read_account("wl-x") == *reader.read_account("wl-x"));
  CHECK(mine.execute(command(Withdrawal{"wl-x", Amount(31)})).code == RejectionCode::insufficient_funds);
  CHECK(mine.execute(command(Withdrawal{"wl-x", Amount(30)})).accepted());
}

TEST_CASE("after more of another engine's commits than an append reads, every stream of a batch is checked") {
  test::TestDatabase database;
  const auto settings = settings_for(database, true);
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(mine, "far-x", 1'000);
  open_and_fund(mine, "far-y", 0);
  open_and_fund(theirs, "far-z", 0);
  open_and_fund(theirs, "far-busy", 0);
  // Theirs takes 900 from far-x (which mine caches at 1,000), then appends more events than an
  // append lists (20,000: WriterCoherence drops the whole cache instead of reading them).
  REQUIRE(theirs.execute(command(Transfer{"", "far-x", "far-z", Amount(900), eur(), ""})).accepted());
  std::vector<std::future<CommandOutcome>> deposits;
  for (int i = 0; i < 10'001; ++i) deposits.push_back(theirs.submit(command(Deposit{"far-busy", Amount(1)})));
  for (auto& deposit : deposits) REQUIRE(deposit.get().accepted());
  const auto before = mine.stats();
  // Decided on the cached 1,000; at the append, far-x is found moved though no event of it was
  // read: decided again on the stored 100 and refused, in the same commit.
  const auto refused = mine.execute(command(Transfer{"", "far-x", "far-y", Amount(500), eur(), ""}));
  CHECK(refused.code == RejectionCode::insufficient_funds);
  for (int attempt = 0; attempt < 500 && mine.stats().commands == before.commands; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(mine.stats().commands_redecided == before.commands_redecided + 1);
  CHECK(mine.stats().batches_run_again == before.batches_run_again);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account("far-x")->balance() == Amount(100));
  CHECK(reader.read_account("far-y")->balance() == Amount(0));
}

TEST_CASE("a stream a batch in flight wrote, gone from a small cache, is not decided on the store's older state") {
  test::TestDatabase database;
  auto settings = settings_for(database, true);
  settings.commit_wait_max = std::chrono::milliseconds(0);
  settings.state_cache_streams_max = 4;  // far fewer than the streams in flight
  Engine mine(settings);
  open_and_fund(mine, "small-x", 1'000);
  for (int i = 0; i < 6; ++i) open_and_fund(mine, "small-" + std::to_string(i), 0);
  pqxx::connection holder(database.app_url());
  pqxx::work held(holder);
  held.exec("SELECT position FROM event_store_head FOR UPDATE");
  std::vector<std::future<CommandOutcome>> outcomes;
  // The committer holds the first withdrawal, waiting for the head row ...
  outcomes.push_back(mine.submit(command(Withdrawal{"small-x", Amount(600)})));
  wait_for_lock_waiters(database, 1);
  // ... while deposits elsewhere push small-x out of the cache, and a second withdrawal of 600
  // follows: the store still shows 1,000, but only 400 will be left.
  for (int i = 0; i < 6; ++i) {
    outcomes.push_back(mine.submit(command(Deposit{"small-" + std::to_string(i), Amount(1)})));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto second = mine.submit(command(Withdrawal{"small-x", Amount(600)}));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  held.abort();
  for (auto& outcome : outcomes) {
    const auto answered = outcome.get();
    CHECK_MESSAGE(answered.accepted(), to_string(answered.code));
  }
  CHECK(second.get().code == RejectionCode::insufficient_funds);
  check_dense(database);
  Engine reader(settings);
  CHECK(reader.read_account("small-x")->balance() == Amount(400));
}
