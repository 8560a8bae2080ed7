#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include <thread>

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

TEST_CASE("a session idle inside a transaction past its bound is ended by the server; keepalives are on") {
  // A client that vanished mid-transaction (a commit in doubt) must not hold its locks until
  // the kernel's two-hour keepalive notices.
  const auto conninfo = db::connection_string("postgresql://u@h/db", std::chrono::milliseconds(1'000),
                                              std::chrono::milliseconds(1'000));
  CHECK(conninfo.find("keepalives_idle='10'") != std::string::npos);
  CHECK(conninfo.find("tcp_keepalives_idle=10") != std::string::npos);
  CHECK(conninfo.find("idle_in_transaction_session_timeout") == std::string::npos);

  test::TestDatabase database;
  db::PoolSettings settings;
  settings.url = database.app_url();
  settings.idle_in_transaction_timeout = std::chrono::milliseconds(300);
  db::ConnectionPool pool(settings);
  auto lease = pool.acquire();
  pqxx::work work(*lease);
  CHECK(work.exec1("SHOW idle_in_transaction_session_timeout")[0].as<std::string>() == "300ms");
  work.exec("SELECT 1 FROM event_store_head FOR UPDATE");
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  CHECK_THROWS((void)work.exec("SELECT 1"));
  // The head row is free again.
  pqxx::connection other(database.app_url());
  pqxx::work probe(other);
  CHECK(probe.exec("SELECT 1 FROM event_store_head FOR UPDATE NOWAIT").size() == 1);
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

TEST_CASE("passwords are redacted from every form of database URL and from connection errors") {
  struct Case {
    std::string url, secret;
  };
  for (const auto& c : std::vector<Case>{
           {"postgresql://u:secret1@h/db", "secret1"},
           {"postgresql://u@h/db?password=secret2", "secret2"},
           {"postgresql://u@h:5433/db?sslmode=require&password=secret3&application_name=app", "secret3"},
           {"postgres://u:s%40cret4@h/db", "cret4"},
           {"postgresql://u@h/db?password=secret%205", "secret"},
           {"host=h user=u password=secret6 dbname=db", "secret6"},
           {"host=h password='secret 7 \\' quoted' dbname=db", "secret 7"},
           {"password = secret8 host=h", "secret8"},
           {"host=h password=secret9", "secret9"},
       }) {
    INFO(c.url);
    const std::string redacted = db::redact_database_url(c.url);
    CHECK_MESSAGE(redacted.find(c.secret) == std::string::npos, redacted);
    CHECK_MESSAGE(redacted.find("***") != std::string::npos, redacted);
    CHECK_MESSAGE(redacted.find("h") != std::string::npos, redacted);  // the rest stays readable
  }
  CHECK(db::redact_database_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db");
  CHECK(db::redact_database_url("postgresql://u@h:5433/db?sslmode=require&password=x") ==
        "postgresql://u:***@h:5433/db?sslmode=require");
  // key=value text comes back in libpq's order of options, values quoted.
  CHECK(db::redact_database_url("host=h user=u password=x dbname=db") == "user='u' password='***' dbname='db' host='h'");
  CHECK(db::redact_database_url("postgresql://u@h/db") == "postgresql://u@h/db");
  // Text libpq cannot parse is not echoed, nor is it in the parser's complaint.
  for (const std::string broken : {"host=h password secret10", "host=h password='secret10"}) {
    INFO(broken);
    CHECK(db::redact_database_url(broken).find("secret10") == std::string::npos);
    const auto problem = db::validate_database_url(broken);
    REQUIRE(problem.has_value());
    CHECK_MESSAGE(problem->find("secret10") == std::string::npos, *problem);
    try {
      (void)db::connection_string(broken, std::chrono::milliseconds(1'000), std::chrono::milliseconds(1'000));
      FAIL("an unparseable URL was accepted");
    } catch (const std::exception& error) {
      CHECK_MESSAGE(std::string(error.what()).find("secret10") == std::string::npos, error.what());
    }
  }
  // A connection error names the server without its password.
  for (const std::string& url : {std::string("host=127.0.0.1 port=1 user=nobody password=secret11 dbname=none"),
                                std::string("postgresql://nobody@127.0.0.1:1/none?password=secret11")}) {
    INFO(url);
    db::PoolSettings settings;
    settings.url = url;
    settings.connect_attempts_max = 1;
    db::ConnectionPool pool(settings);
    try {
      (void)pool.acquire();
      FAIL("connected to a dead server");
    } catch (const db::DatabaseUnavailable& error) {
      const std::string what = error.what();
      CHECK_MESSAGE(what.find("secret11") == std::string::npos, what);
      CHECK_MESSAGE(what.find("***") != std::string::npos, what);
      CHECK_MESSAGE(what.find("127.0.0.1") != std::string::npos, what);
    }
  }
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
