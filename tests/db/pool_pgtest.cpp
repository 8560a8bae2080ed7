#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include "ledger/db/database_url.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/db/retry.hpp"
#include "test_cluster.hpp"

using namespace ledger;

TEST_CASE("the pool bounds its connections and reuses them") {
  test::TestDatabase database;
  db::PoolSettings settings;
  settings.url = database.app_url();
  settings.connections_max = 2;
  settings.acquire_timeout = std::chrono::milliseconds(200);
  db::ConnectionPool pool(settings);
  {
    auto first = pool.acquire();
    auto second = pool.acquire();
    CHECK(pool.stats().in_use == 2);
    CHECK_THROWS_WITH_AS((void)pool.acquire(), doctest::Contains("no PostgreSQL connection free"),
                         db::DatabaseUnavailable);
  }
  CHECK(pool.stats().in_use == 0);
  CHECK(pool.stats().open == 2);
  auto lease = pool.acquire();
  pqxx::read_transaction work(*lease);
  CHECK(work.exec1("SELECT current_user")[0].as<std::string>() == "ledger_app");
  CHECK(work.exec1("SHOW statement_timeout")[0].as<std::string>() == "30s");
}

TEST_CASE("connecting to a dead server fails with a clear error after the retries") {
  db::PoolSettings settings;
  settings.url = "postgresql://nobody@127.0.0.1:1/none";
  settings.connect_attempts_max = 3;
  settings.backoff_initial = std::chrono::milliseconds(10);
  db::ConnectionPool pool(settings);
  CHECK_THROWS_WITH_AS((void)pool.acquire(), doctest::Contains("after 3 attempts"),
                       db::DatabaseUnavailable);
  CHECK(pool.stats().open == 0);
}

TEST_CASE("database URLs are validated by libpq's parser and passwords are redacted") {
  CHECK_FALSE(db::validate_database_url("postgresql://user@localhost:5432/ledger").has_value());
  CHECK_FALSE(db::validate_database_url("host=localhost dbname=ledger").has_value());
  CHECK(db::validate_database_url("postgresql://%zz").has_value());
  CHECK(db::validate_database_url("nonsense without equals").has_value());
  CHECK(db::validate_database_url("").has_value());
  CHECK(db::redact_database_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db");
  const auto conninfo = db::connection_string("postgresql://u@h/db?sslmode=require",
                                              std::chrono::milliseconds(2500),
                                              std::chrono::milliseconds(1000));
  CHECK(conninfo.find("sslmode='require'") != std::string::npos);
  CHECK(conninfo.find("connect_timeout='3'") != std::string::npos);
  CHECK(conninfo.find("statement_timeout=1000") != std::string::npos);
}

TEST_CASE("with_retry retries transient errors and stops at the bound") {
  int calls = 0;
  db::RetryPolicy policy{3, std::chrono::milliseconds(1), std::chrono::milliseconds(2)};
  CHECK_THROWS_AS(db::with_retry(policy,
                                 [&]() -> int {
                                   ++calls;
                                   throw pqxx::broken_connection("gone");
                                 }),
                  pqxx::broken_connection);
  CHECK(calls == 3);
  calls = 0;
  CHECK(db::with_retry(policy, [&] {
          if (++calls < 2) throw pqxx::deadlock_detected("deadlock");
          return 7;
        }) == 7);
  calls = 0;
  CHECK_THROWS_AS(db::with_retry(policy,
                                 [&]() -> int {
                                   ++calls;
                                   throw pqxx::sql_error("syntax", "");
                                 }),
                  pqxx::sql_error);
  CHECK(calls == 1);
  // By SQLSTATE: the server shutting down (57P01) and a lost connection (08006) are transient.
  for (const char* state : {"57P01", "08006", "40001", "40P01"}) {
    calls = 0;
    CHECK(db::with_retry(policy, [&] {
            if (++calls < 2) throw pqxx::sql_error("failed", "", state);
            return 1;
          }) == 1);
    CHECK(calls == 2);
  }
  CHECK_FALSE(db::is_transient(pqxx::sql_error("unique", "", "23505")));
  CHECK_FALSE(db::is_transient(pqxx::in_doubt_error("commit outcome unknown")));
}
