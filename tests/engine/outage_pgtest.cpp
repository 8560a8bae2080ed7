// The engine behind a proxy that loses a COMMIT (or its reply) and then cuts the database off
// for a while (DESIGN.md invariants 2, 3 and 9). Judged by what clients were told: an
// acknowledged deposit is stored, one answered "nothing was written" is not, one whose outcome
// was unknown is stored at most once; every stream stays dense, the log verifies, and every
// answer after the outage agrees with a fold of the store.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/replay/replay.hpp"
#include "pg_fault_proxy.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;

namespace {

constexpr int accounts_count = 8;
constexpr int client_threads = 4;
constexpr int commands_in_flight_per_client = 40;
constexpr auto scenario_time_max = 25s;

enum class Told { accepted, rejected, unknown, nothing_written };

struct Scenario {
  bool keyed = false;
  test::PgFaultProxy::CommitFault fault = test::PgFaultProxy::CommitFault::lose_commit;
  std::chrono::milliseconds outage{0};
};

std::string describe(const Scenario& scenario) {
  return fmt::format("{} load, {}, outage {} ms", scenario.keyed ? "keyed" : "unkeyed",
                     scenario.fault == test::PgFaultProxy::CommitFault::lose_commit ? "COMMIT lost"
                                                                                    : "COMMIT reply lost",
                     scenario.outage.count());
}

std::string account_id(int i) { return "acct" + std::to_string(i); }

// A deposit of 1 + account minor units. `name` is its transfer id when `named`; otherwise the
// engine generates one (then a decision needs no read of the store: the reported scenario).
Command deposit(const std::string& name, bool named, int account, bool keyed) {
  Deposit body{account_id(account), Amount(1 + account), "", named ? name : std::string()};
  if (!keyed) return command(body);
  return command(body, "key-" + name, "deposit " + name);
}

// What clients were told about each deposit they sent, by name.
struct History {
  std::mutex mutex;
  std::map<std::string, Told> told;
  std::map<std::string, int> account_of;
  std::map<std::string, bool> named;

  void record(const std::string& name, bool is_named, int account, Told what) {
    std::lock_guard lock(mutex);
    told[name] = what;
    account_of[name] = account;
    named[name] = is_named;
  }
};

Told classify(std::future<domain::CommandOutcome>& future) {
  try {
    const auto outcome = future.get();
    return outcome.accepted() ? Told::accepted : Told::rejected;
  } catch (const OutcomeUnknown&) {
    return Told::unknown;
  } catch (const EngineUnavailable&) {
    return Told::nothing_written;
  }
}

// After the outage, as a client would on 503: a command refused with nothing written (the
// circuit breaker may stay open for a while after the database is back) is sent again.
Told submit_until_written(Engine& engine, const std::function<Command()>& make) {
  const auto deadline = std::chrono::steady_clock::now() + 40s;
  while (true) {
    Told told = Told::nothing_written;
    try {
      auto future = engine.submit(make());
      told = classify(future);
    } catch (const EngineUnavailable&) {
    }
    if (told != Told::nothing_written || std::chrono::steady_clock::now() > deadline) return told;
    std::this_thread::sleep_for(100ms);
  }
}

long long scalar(pqxx::transaction_base& work, const std::string& sql) {
  return work.exec1(sql)[0].as<long long>();
}

void run_scenario(const Scenario& scenario) {
  INFO(describe(scenario));
  test::TestDatabase database;
  auto& cluster = test::TestCluster::instance();
  test::PgFaultProxy proxy(cluster.directory(), cluster.port());

  EngineSettings settings = test::engine_settings(database);
  settings.database_url = proxy.url("ledger_app", database.name());
  settings.database_connect_timeout = 1'000ms;
  settings.connection_retries_max = 1;
  History history;
  {
    Engine engine(settings);
    for (int i = 0; i < accounts_count; ++i) {
      REQUIRE(engine.execute(command(domain::OpenAccount{account_id(i), eur()})).accepted());
    }

    // Clients keep deposits in flight; once the load runs, the next COMMIT is faulted.
    std::atomic<bool> stop_load{false};
    std::atomic<int> sent{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < client_threads; ++c) {
      clients.emplace_back([&, c] {
        int n = 0;
        // Keyed, half the clients name their transfers. Unkeyed, none do: then the pipelined
        // engine decides on cached states alone, with no read that the outage would fail.
        const bool named = scenario.keyed && c % 2 == 0;
        while (!stop_load) {
          std::vector<std::pair<std::string, int>> ids;
          std::vector<std::future<domain::CommandOutcome>> futures;
          for (int k = 0; k < commands_in_flight_per_client; ++k, ++n) {
            const std::string id = fmt::format("c{}-{}", c, n);
            const int account = (c + n) % accounts_count;
            try {
              futures.push_back(engine.submit(deposit(id, named, account, scenario.keyed)));
              ids.emplace_back(id, account);
            } catch (const EngineUnavailable&) {
              // Refused at submission (the circuit breaker opened after a failed batch).
              history.record(id, named, account, Told::nothing_written);
            }
          }
          for (std::size_t k = 0; k < futures.size(); ++k) {
            history.record(ids[k].first, named, ids[k].second, classify(futures[k]));
          }
          sent += static_cast<int>(futures.size());
          std::this_thread::sleep_for(2ms);
        }
      });
    }
    const auto started = std::chrono::steady_clock::now();
    while (sent < 200 && std::chrono::steady_clock::now() - started < scenario_time_max) {
      std::this_thread::sleep_for(5ms);
    }
    proxy.fault_next_commit(scenario.fault, scenario.outage);
    while (proxy.armed() && std::chrono::steady_clock::now() - started < scenario_time_max) {
      std::this_thread::sleep_for(5ms);
    }
    REQUIRE_MESSAGE(!proxy.armed(), "no COMMIT went through the proxy while the load ran");
    // Load goes on through the outage and for a while after the database is back.
    const auto back = std::chrono::steady_clock::now() + scenario.outage;
    const auto until = back + 1'500ms;
    while (std::chrono::steady_clock::now() < until &&
           std::chrono::steady_clock::now() - started < scenario_time_max) {
      std::this_thread::sleep_for(10ms);
    }
    stop_load = true;
    for (auto& client : clients) client.join();
    while (proxy.down()) std::this_thread::sleep_for(10ms);

    // Keyed clients resolve unknown outcomes by retrying with the same key: exactly once.
    if (scenario.keyed) {
      for (auto& [id, told] : history.told) {
        if (told != Told::unknown) continue;
        const Told retried = submit_until_written(
            engine, [&] { return deposit(id, history.named.at(id), history.account_of.at(id), true); });
        CHECK_MESSAGE(retried == Told::accepted, "retrying " << id << " with its key");
        told = retried;
      }
    }

    // Every answer after the outage agrees with the store: a deposit to every account and a
    // further one to each (cash account included) are accepted at the next versions.
    for (int i = 0; i < accounts_count; ++i) {
      for (int round = 0; round < 2; ++round) {
        const std::string id = fmt::format("after-{}-{}", i, round);
        const Told told = submit_until_written(engine, [&] { return deposit(id, true, i, scenario.keyed); });
        CHECK_MESSAGE(told == Told::accepted, "deposit after the outage to " << account_id(i));
        history.record(id, true, i, told);
      }
    }
  }

  // The store, read directly as the owner.
  pqxx::connection connection(database.admin_url());
  pqxx::read_transaction work(connection);
  CHECK_MESSAGE(scalar(work, "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                             "HAVING max(version) <> count(*)) gaps") == 0,
                "every stream's versions are dense");
  std::set<std::string> stored;
  for (const auto& row : work.exec("SELECT substr(stream_id, 10) FROM events "
                                   "WHERE stream_id LIKE 'transfer-%' AND version = 1")) {
    stored.insert(row[0].as<std::string>());
  }
  // Per account: deposits acknowledged, and those that may have landed (unknown outcome).
  std::map<Told, int> counts;
  std::map<int, std::int64_t> acknowledged;
  std::map<int, std::int64_t> maybe;
  for (const auto& [id, told] : history.told) {
    ++counts[told];
    const int account = history.account_of.at(id);
    if (told == Told::accepted) ++acknowledged[account];
    if (told == Told::unknown) ++maybe[account];
    if (!history.named.at(id)) continue;
    const bool in_store = stored.contains(id);
    if (told == Told::accepted) CHECK_MESSAGE(in_store, "acknowledged deposit " << id << " is stored");
    if (told == Told::nothing_written || told == Told::rejected) {
      CHECK_MESSAGE(!in_store, "deposit " << id << " answered as not written is not stored");
    }
  }
  MESSAGE(describe(scenario) << ": accepted " << counts[Told::accepted] << ", unknown "
                             << counts[Told::unknown] << ", nothing written "
                             << counts[Told::nothing_written] << ", rejected "
                             << counts[Told::rejected] << "; commits faulted "
                             << proxy.commits_faulted());
  CHECK(counts[Told::rejected] == 0);
  work.commit();

  // Each account holds every acknowledged deposit once, and besides them at most those whose
  // outcome was unknown: none answered "nothing written", none twice.
  Engine reader(test::engine_settings(database));
  for (int i = 0; i < accounts_count; ++i) {
    const auto state = reader.read_account(account_id(i));
    REQUIRE(state.has_value());
    const std::int64_t deposits = state->credits_posted.minor_units() / (1 + i);
    CHECK(state->credits_posted.minor_units() % (1 + i) == 0);
    CHECK_MESSAGE(deposits >= acknowledged[i], account_id(i) << " lost an acknowledged deposit");
    CHECK_MESSAGE(deposits <= acknowledged[i] + maybe[i],
                  account_id(i) << " holds deposits no client was told may have landed");
  }

  db::PoolSettings pool_settings;
  pool_settings.url = database.app_url();
  pool_settings.connections_max = 2;
  db::ConnectionPool pool(pool_settings);
  const auto verified = replay::verify(pool, replay::VerifyOptions{});
  CHECK_MESSAGE(verified.ok, "replay verify: " << verified.problem << " at "
                                               << verified.first_bad_position.value());
}

}  // namespace

TEST_CASE("a COMMIT lost or unanswered during an outage around the in-doubt check writes no gap "
          "and no double") {
  // With one retry the in-doubt check gives up after about 3.3 s (the pool's six connection
  // attempts, then a pause), and the next batch's connection attempts go on for 3.1 s more:
  // outages end before the check gives up, inside that window, and after it.
  for (const bool keyed : {false, true}) {
    for (const auto fault : {test::PgFaultProxy::CommitFault::lose_commit,
                             test::PgFaultProxy::CommitFault::lose_reply}) {
      for (const auto outage : {500ms, 2'000ms, 4'500ms, 7'000ms}) {
        run_scenario(Scenario{keyed, fault, outage});
      }
    }
  }
}

TEST_CASE("the store refuses an append that would leave a version gap, whoever writes it") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  const auto insert = [&](std::int64_t position, const std::string& stream, std::int64_t version) {
    return fmt::format(
        "INSERT INTO events (position, stream_id, version, event_id, type, schema_version, "
        "payload, metadata, recorded_at, hash) VALUES ({}, '{}', {}, gen_random_uuid(), "
        "'account_opened', 1, '\\x00', '{{}}', now(), decode(repeat('00', 32), 'hex'))",
        position, stream, version);
  };
  const auto refused = [&](const std::string& sql) {
    pqxx::work work(connection);
    try {
      work.exec(sql);
    } catch (const pqxx::check_violation& error) {
      CHECK(std::string(error.what()).find("version gap") != std::string::npos);
      return true;
    }
    work.commit();
    return false;
  };
  CHECK_MESSAGE(refused(insert(1, "s", 2)), "a stream cannot start at version 2");
  CHECK(!refused(insert(1, "s", 1)));
  CHECK_MESSAGE(refused(insert(2, "s", 3)), "version 3 cannot follow version 1");
  CHECK_MESSAGE(refused(insert(2, "s", 2) + ", (3, 's', 4, gen_random_uuid(), 'account_opened', 1, "
                                            "'\\x00', '{}', now(), decode(repeat('00', 32), 'hex'))"),
                "one statement cannot skip a version either");
  CHECK(!refused(insert(2, "s", 2) + ", (3, 't', 1, gen_random_uuid(), 'account_opened', 1, "
                                     "'\\x00', '{}', now(), decode(repeat('00', 32), 'hex'))"));
  pqxx::read_transaction work(connection);
  CHECK(work.exec1("SELECT count(*) FROM events")[0].as<int>() == 3);
}

TEST_CASE("the in-doubt check ends the committing session before it asks, so a late COMMIT "
          "cannot land after the batch ran again") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    auto& cluster = test::TestCluster::instance();
    test::PgFaultProxy proxy(cluster.directory(), cluster.port());
    EngineSettings settings = test::engine_settings(database);
    settings.database_url = proxy.url("ledger_app", database.name());
    settings.decide_while_committing = pipelined;
    Engine engine(settings);
    REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
    // Every stream the deposit touches is cached, so the COMMIT faulted is the append's.
    REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(1)})).accepted());
    // The COMMIT reaches the session 1.5 s after the engine saw the connection fail.
    proxy.fault_next_commit(test::PgFaultProxy::CommitFault::delay_commit, 1'500ms);
    const auto outcome = engine.execute(command(domain::Deposit{"alice", Amount(100)}));
    CHECK(proxy.commits_faulted() == 1);
    CHECK_MESSAGE(outcome.accepted(), outcome.detail);
    std::this_thread::sleep_for(2'000ms);  // past the late COMMIT
    CHECK_MESSAGE(engine.read_account("alice")->credits_posted == Amount(101),
                  "the deposit is applied exactly once");
    CHECK(test::scalar(database.admin_url(),
                       "SELECT count(*) FROM events WHERE type = 'transfer_posted'") == 2);
  }
}

TEST_CASE("an append on the head whose Sync or reply is lost charges once, and a keyed retry "
          "answers that one charge") {
  using Fault = test::PgFaultProxy::CommitFault;
  for (const auto fault : {Fault::lose_commit, Fault::lose_reply}) {
    for (const bool keyed : {false, true}) {
      INFO(std::string(fault == Fault::lose_commit ? "Sync lost: nothing commits" : "reply lost: it commits")
           << (keyed ? ", keyed" : ", unkeyed (the engine names the transfer)"));
      test::TestDatabase database;
      auto& cluster = test::TestCluster::instance();
      test::PgFaultProxy proxy(cluster.directory(), cluster.port());
      EngineSettings settings = test::engine_settings(database);
      settings.database_url = proxy.url("ledger_app", database.name());
      settings.decide_while_committing = true;
      Engine engine(settings);
      // Two commits in transactions: the second finds the head where the first left it, so the
      // next append goes on the head in one statement.
      REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
      REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(1)})).accepted());
      proxy.fault_next_commit(fault, 300ms);
      const auto make = [keyed] {
        const domain::Deposit body{"alice", Amount(100), "", ""};
        return keyed ? command(body, "key-once", "deposit once") : command(body);
      };
      // As a client does on 503 (the breaker may open after the fault): the same command again.
      const auto until_written = [&] {
        const auto deadline = std::chrono::steady_clock::now() + 40s;
        while (true) {
          try {
            return engine.execute(make());
          } catch (const EngineUnavailable&) {
            REQUIRE(std::chrono::steady_clock::now() < deadline);
            std::this_thread::sleep_for(100ms);
          }
        }
      };
      const auto first = until_written();
      CHECK(proxy.commits_faulted() == 1);
      CHECK(proxy.autocommit_appends_faulted() == 1);
      // The in-doubt check found whether it landed: run again when it did not, answered as
      // committed when it did; either way the deposit is stored once.
      CHECK_MESSAGE(first.accepted(), first.detail);
      CHECK_FALSE(first.replayed);
      CHECK(engine.read_account("alice")->credits_posted == Amount(101));
      if (keyed) {
        // The client retries anyway (it may not have heard): the first outcome, not a second charge.
        const auto again = until_written();
        CHECK(again.replayed);
        CHECK(again.position == first.position);
        CHECK(engine.read_account("alice")->credits_posted == Amount(101));
      }
      CHECK(test::scalar(database.admin_url(),
                         "SELECT count(*) FROM events WHERE type = 'transfer_posted'") == 2);
      // Appends go on, on the head the store holds.
      REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(10)})).accepted());
      CHECK(test::scalar(database.admin_url(),
                         "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                         "HAVING max(version) <> count(*)) gaps") == 0);
      db::PoolSettings pool_settings;
      pool_settings.url = database.app_url();
      pool_settings.connections_max = 2;
      db::ConnectionPool pool(pool_settings);
      CHECK(replay::verify(pool, replay::VerifyOptions{}).ok);
    }
  }
}

TEST_CASE("a session stranded mid-commit, which the in-doubt check could not end, does not block "
          "later appends for good") {
  // Serial, the append is a transaction whose COMMIT is stranded; pipelined, the engine's own
  // head is known, so it is the one statement of an append on the head (PgFaultProxy).
  for (const bool pipelined : {false, true}) {
    INFO(std::string(pipelined ? "pipelined: an append on the head" : "serial: a COMMIT"));
    test::TestDatabase database;
    auto& cluster = test::TestCluster::instance();
    test::PgFaultProxy proxy(cluster.directory(), cluster.port());
    EngineSettings settings = test::engine_settings(database);
    settings.database_url = proxy.url("ledger_app", database.name());
    settings.connection_retries_max = 1;
    settings.decide_while_committing = pipelined;
    Engine engine(settings);
    REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
    REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(1)})).accepted());
    CHECK(engine.stats().appends_on_own_head == 0);
    // The commit never arrives and its session stays open, holding the head row, while the
    // database is unreachable for longer than the in-doubt check tries (about 3.3 s; well
    // longer, as a loaded machine stretches the check).
    proxy.fault_next_commit(test::PgFaultProxy::CommitFault::strand_session, 10'000ms);
    auto lost = engine.submit(command(domain::Deposit{"alice", Amount(100)}));
    CHECK_THROWS_AS(lost.get(), OutcomeUnknown);
    CHECK(proxy.commits_faulted() == 1);
    CHECK(proxy.autocommit_appends_faulted() == (pipelined ? 1 : 0));
    while (proxy.down()) std::this_thread::sleep_for(20ms);
    // The engine ends the stranded session before its next append (the server would end one
    // idle in its transaction after 10 s, but never one left before the Sync of an append on
    // the head) and appends go on; without that they would wait out their statement timeout
    // behind it, again and again.
    const auto after = engine.execute(command(domain::Deposit{"alice", Amount(10)}));
    CHECK_MESSAGE(after.accepted(), after.detail);
    CHECK(engine.read_account("alice")->credits_posted == Amount(11));
    CHECK(test::scalar(database.admin_url(),
                       "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                       "HAVING max(version) <> count(*)) gaps") == 0);
    if (pipelined) {
      // Later appends go on the head again once one in a transaction found it as left.
      for (int i = 0; i < 3; ++i)
        REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(1)})).accepted());
      CHECK(engine.stats().appends_on_own_head > 0);
    }
  }
}

TEST_CASE("a COMMIT lost or unanswered while it held losers decided again answers each command "
          "once and stores it once") {
  using Fault = test::PgFaultProxy::CommitFault;
  for (const auto fault : {Fault::lose_commit, Fault::lose_reply}) {
    for (const bool only_losers : {true, false}) {
      INFO((fault == Fault::lose_commit ? "COMMIT lost" : "reply lost") << (only_losers ? ", losers only" : ", with a winner"));
      test::TestDatabase database;
      auto& cluster = test::TestCluster::instance();
      test::PgFaultProxy proxy(cluster.directory(), cluster.port());
      EngineSettings settings = test::engine_settings(database);
      settings.decide_while_committing = true;
      settings.commit_wait_max = 50ms;  // the commands below go in one batch
      Engine theirs(settings);
      settings.database_url = proxy.url("ledger_app", database.name());
      Engine mine(settings);
      for (const auto* id : {"x", "y"}) {
        REQUIRE(mine.execute(command(domain::OpenAccount{id, eur()})).accepted());
        REQUIRE(mine.execute(command(domain::Deposit{id, Amount(1'000)})).accepted());
      }
      // Mine caches x at 1,000; theirs moves it, so mine's deposit on x loses at the append and
      // is decided again inside that append's transaction, whose COMMIT the proxy faults.
      REQUIRE(theirs.execute(command(domain::Withdrawal{"x", Amount(900)})).accepted());
      const auto events_before = test::scalar(database.admin_url(), "SELECT count(*) FROM events");
      const auto stats_before = mine.stats();
      proxy.fault_next_commit(fault, 300ms);
      auto on_x = mine.submit(command(domain::Deposit{"x", Amount(100)}));
      std::optional<std::future<CommandOutcome>> on_y;
      if (!only_losers) on_y = mine.submit(command(domain::Deposit{"y", Amount(10)}));
      const auto x_outcome = on_x.get();
      CHECK_MESSAGE(x_outcome.accepted(), to_string(x_outcome.code) << ": " << x_outcome.detail);
      if (on_y) {
        const auto y_outcome = on_y->get();
        CHECK_MESSAGE(y_outcome.accepted(), to_string(y_outcome.code) << ": " << y_outcome.detail);
      }
      CHECK(proxy.commits_faulted() == 1);
      CHECK(mine.stats().commands_redecided >= 1);
      if (fault == Fault::lose_reply) {
        // The COMMIT landed: its hold counts, with the time its COMMIT took until in doubt.
        const auto stats_after = mine.stats();
        CHECK(stats_after.head_lock_held_seconds.count() >=
              stats_before.head_lock_held_seconds.count() + 1);
        CHECK(stats_after.append_step_seconds.commit > stats_before.append_step_seconds.commit);
      }
      // Each deposit is three events (an entry on each account and the transfer's posting).
      CHECK(test::scalar(database.admin_url(), "SELECT count(*) FROM events") == events_before + (only_losers ? 3 : 6));
      Engine reader(test::engine_settings(database));
      CHECK(reader.read_account("x")->balance() == Amount(200));
      CHECK(reader.read_account("y")->balance() == Amount(only_losers ? 1'000 : 1'010));
    }
  }
}
