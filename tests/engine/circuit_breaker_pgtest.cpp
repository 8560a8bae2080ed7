// The circuit breaker in front of PostgreSQL: while the database is cut off, a batch that
// failed after its retries opens it and later commands fail fast (DatabaseCircuitOpen, nothing
// written) instead of each waiting through retries; when the database is back, the first batch
// after the open interval probes it, commits, and closes the breaker.
#include <doctest/doctest.h>

#include <thread>

#include "engine_fixture.hpp"
#include "pg_fault_proxy.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;

TEST_CASE("a database that stays down opens the breaker: commands fail fast, then a probe closes it") {
  test::TestDatabase database;
  auto& cluster = test::TestCluster::instance();
  test::PgFaultProxy proxy(cluster.directory(), cluster.port());
  EngineSettings settings = test::engine_settings(database);
  settings.database_url = proxy.url("ledger_app", database.name());
  settings.database_connect_timeout = 500ms;
  settings.connection_retries_max = 1;
  settings.circuit_open_initial = 1'500ms;
  Engine engine(settings);
  REQUIRE(engine.execute(command(domain::OpenAccount{"cb", eur()})).accepted());
  CHECK(engine.stats().circuit == CircuitState::closed);

  proxy.cut(20s);  // the database is gone for longer than any retry
  // The first command waits through its retries and fails: nothing written.
  CHECK_THROWS_AS(engine.execute(command(domain::Deposit{"cb", Amount(1)})), EngineUnavailable);
  CHECK(engine.stats().circuit == CircuitState::open);
  CHECK(engine.stats().circuit_opened == 1);
  // The next ones are refused at once, before they queue, with the time the breaker stays open.
  try {
    (void)engine.submit(command(domain::Deposit{"cb", Amount(2)}));
    FAIL("a command was queued while the breaker was open");
  } catch (const DatabaseCircuitOpen& open) {
    CHECK(open.retry_after > 0ms);
    CHECK(open.retry_after <= 1'500ms);
  }
  // Still down after the interval: the probe fails and the breaker opens again, for longer.
  std::this_thread::sleep_for(1'600ms);
  CHECK_THROWS_AS(engine.execute(command(domain::Deposit{"cb", Amount(3)})), EngineUnavailable);
  CHECK(engine.stats().circuit == CircuitState::open);
  try {
    (void)engine.submit(command(domain::Deposit{"cb", Amount(4)}));
    FAIL("a command was queued while the breaker was open");
  } catch (const DatabaseCircuitOpen& open) {
    CHECK(open.retry_after > 1'500ms);  // doubled after a failed probe
  }

  // The database comes back; after the open interval the next command probes it and commits.
  proxy.cut(0ms);
  while (proxy.down()) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(3'100ms);
  const auto probe = engine.execute(command(domain::Deposit{"cb", Amount(5)}));
  CHECK(probe.accepted());
  CHECK(engine.stats().circuit == CircuitState::closed);
  CHECK(engine.execute(command(domain::Deposit{"cb", Amount(6)})).accepted());
  // Only the deposits that were answered accepted were written.
  const auto account = engine.read_account("cb");
  REQUIRE(account.has_value());
  CHECK(account->credits_posted.minor_units() == 11);
}

TEST_CASE("a keyed command refused while the breaker is open, retried with its key when the database is back, "
          "is applied exactly once") {
  test::TestDatabase database;
  auto& cluster = test::TestCluster::instance();
  test::PgFaultProxy proxy(cluster.directory(), cluster.port());
  EngineSettings settings = test::engine_settings(database);
  settings.database_url = proxy.url("ledger_app", database.name());
  settings.database_connect_timeout = 500ms;
  settings.connection_retries_max = 1;
  settings.circuit_open_initial = 1'000ms;
  Engine engine(settings);
  REQUIRE(engine.execute(command(domain::OpenAccount{"retry", eur()})).accepted());

  proxy.cut(20s);
  // Failed after its retries (this opens the breaker), then refused at once: the client saw
  // 503 both times and keeps its key.
  CHECK_THROWS_AS(engine.execute(command(domain::Deposit{"retry", Amount(7)}, "key-7", "deposit 7")), EngineUnavailable);
  CHECK_THROWS_AS((void)engine.submit(command(domain::Deposit{"retry", Amount(7)}, "key-7", "deposit 7")),
                  DatabaseCircuitOpen);

  proxy.cut(0ms);
  while (proxy.down()) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(1'100ms);  // past the open interval: the next batch probes
  const auto first = engine.execute(command(domain::Deposit{"retry", Amount(7)}, "key-7", "deposit 7"));
  REQUIRE(first.accepted());
  CHECK_FALSE(first.replayed);
  const auto again = engine.execute(command(domain::Deposit{"retry", Amount(7)}, "key-7", "deposit 7"));
  REQUIRE(again.accepted());
  CHECK(again.replayed);
  CHECK(again.position == first.position);
  const auto account = engine.read_account("retry");
  REQUIRE(account.has_value());
  CHECK(account->credits_posted.minor_units() == 7);
}
