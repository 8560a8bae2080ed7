// /health and /health/ready follow PostgreSQL going away and coming back, without a restart.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <filesystem>
#include <thread>

#include "ledger/db/embedded_postgres.hpp"
#include "ledger/db/migrations.hpp"
#include "server_fixture.hpp"

using namespace ledger;

namespace {

// A cluster of the test's own (the shared test cluster must not be stopped), migrated.
db::EmbeddedPostgresOptions private_cluster_options(const std::string& name) {
  db::EmbeddedPostgresOptions options;
  options.directory = "/tmp/ledger-health-test-" + name + "-" + std::to_string(getpid());
  options.fsync = false;
  // Restarted on its port after an outage: over the unix socket alone, another test's cluster
  // or connection cannot have taken that port meanwhile (CI saw "Address already in use").
  options.listen_on_loopback = false;
  std::filesystem::remove_all(options.directory);
  return options;
}

void start_migrated(db::EmbeddedPostgres& postgres) {
  postgres.start();
  postgres.ensure_database("ledger");
  db::MigrationRunner(postgres.superuser_url("ledger")).up();
}

}  // namespace

TEST_CASE("readiness turns 503 while PostgreSQL is stopped and 200 when it returns") {
  const auto options = private_cluster_options("ready");
  db::EmbeddedPostgres postgres(options);
  start_migrated(postgres);
  const int port = postgres.port();

  {
    test::ServerFixture server(postgres.url("ledger_app", "ledger"));
    auto client = server.client();
    CHECK(client.request("GET", "/health/ready").status == 200);

    postgres.stop();
    // /health answers from a snapshot at most a second old: the outage shows within that (or
    // a little later on a loaded machine: polls for up to 20 s).
    int down = 0;
    for (int attempt = 0; attempt < 200 && down != 503; ++attempt) {
      down = client.request("GET", "/health/ready").status;
      if (down != 503) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(down == 503);
    const auto health = client.request("GET", "/health");
    CHECK(health.status == 503);
    CHECK(health.body.find("\"unhealthy\"") != std::string::npos);
    CHECK(client.request("GET", "/health/live").status == 200);
    // A command while the database is down is refused with 503, not lost or hung.
    const auto refused = client.request("POST", "/v1/accounts", R"({"currency":"EUR"})",
                                        test::ServerFixture::auth({"teller"}));
    CHECK(refused.status == 503);

    db::EmbeddedPostgresOptions again = options;
    again.port = port;
    db::EmbeddedPostgres restarted(again);
    restarted.start();
    int status = 0;
    for (int attempt = 0; attempt < 200 && status != 200; ++attempt) {
      status = client.request("GET", "/health/ready").status;
      if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(status == 200);
    const auto recovered = client.request("GET", "/health");
    CHECK(recovered.status == 200);
    CHECK(recovered.body.find("\"status\":\"healthy\"") != std::string::npos);
    // The refused command opened the database circuit breaker: until its interval (1 s) has
    // passed, commands are answered 503 database_unavailable with Retry-After at once; the
    // client retries after it and the probe commits.
    int created = 0;
    for (int attempt = 0; attempt < 30 && created != 201; ++attempt) {
      const auto answer = client.request("POST", "/v1/accounts", R"({"currency":"EUR"})",
                                         test::ServerFixture::auth({"teller"}));
      created = answer.status;
      if (created == 201) break;
      CHECK(answer.status == 503);
      CHECK(answer.body.find("\"database_unavailable\"") != std::string::npos);
      CHECK(answer.header("Retry-After") == "1");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    CHECK(created == 201);
    restarted.stop();
  }
  std::filesystem::remove_all(options.directory);
}

TEST_CASE("read-model queries survive a PostgreSQL restart: stale pooled connections are replaced") {
  const auto options = private_cluster_options("reads");
  db::EmbeddedPostgres postgres(options);
  start_migrated(postgres);
  {
    db::PoolSettings settings;
    settings.url = postgres.url("ledger_app", "ledger");
    settings.connections_max = 3;
    db::ConnectionPool pool(settings);
    projections::ReadModels read_models(pool);
    {
      // Fill the pool: after the restart every pooled connection is stale.
      auto first = pool.acquire();
      auto second = pool.acquire();
      auto third = pool.acquire();
    }
    CHECK(pool.stats().open == 3);
    CHECK_FALSE(read_models.account("nobody").value.has_value());

    postgres.stop();
    db::EmbeddedPostgresOptions again = options;
    again.port = postgres.port();
    db::EmbeddedPostgres restarted(again);
    restarted.start();
    projections::AtWatermark<std::optional<projections::AccountView>> answer;
    CHECK_NOTHROW(answer = read_models.account("nobody"));
    CHECK_FALSE(answer.value.has_value());
    CHECK_NOTHROW((void)read_models.audit({}));
    restarted.stop();
  }
  std::filesystem::remove_all(options.directory);
}


TEST_CASE("a flood of /health and /metrics probes runs at most one database check a second; queries keep answering") {
  test::TestDatabase database;
  test::ServerFixture server(database.app_url());
  const auto teller = test::ServerFixture::auth({"teller"});
  const auto auditor = test::ServerFixture::auth({"auditor"});
  auto client = server.client();
  REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"alice","currency":"EUR"})", teller).status == 201);

  const int checks_before = server.database_checks();
  const auto began = std::chrono::steady_clock::now();
  const auto flood_until = began + std::chrono::milliseconds(2'500);
  std::atomic<int> probes{0};
  std::atomic<int> probe_failures{0};
  std::vector<std::thread> flood;
  for (int t = 0; t < 6; ++t) {
    flood.emplace_back([&, t] {
      test::HttpClient own(server.port());
      const char* targets[] = {"/health", "/health/ready", "/metrics"};
      for (int i = 0; std::chrono::steady_clock::now() < flood_until; ++i) {
        if (own.request("GET", targets[(t + i) % 3]).status != 200) ++probe_failures;
        ++probes;
      }
    });
  }
  // Meanwhile reads that use the same blocking pool and connection pool keep answering fast.
  int reads = 0;
  auto slowest = std::chrono::steady_clock::duration::zero();
  while (std::chrono::steady_clock::now() < flood_until) {
    const auto started = std::chrono::steady_clock::now();
    const auto read = client.request("GET", "/v1/streams/account-alice/events", "", auditor);
    slowest = std::max(slowest, std::chrono::steady_clock::now() - started);
    CHECK(read.status == 200);
    ++reads;
  }
  for (auto& thread : flood) thread.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  const int checks = server.database_checks() - checks_before;
  INFO("probes " << probes.load() << ", database checks " << checks << " in " << seconds << " s, reads " << reads);
  CHECK(probes > 100);
  CHECK(probe_failures == 0);
  CHECK(checks <= static_cast<int>(seconds) + 2);
  CHECK(reads > 10);
  // A bound on starvation, not a latency target: a starved pool answers 503 after its 1 s
  // acquire timeout, and a busy two-core machine can take half a second on its own.
  CHECK(slowest < std::chrono::milliseconds(3'000));
  const auto metrics = client.request("GET", "/metrics");
  CHECK(metrics.body.find("ledger_health_refreshes_total ") != std::string::npos);
}

TEST_CASE("/health shows no password and no connection text to anyone") {
  // A database that cannot be reached, named with a password in each form libpq accepts.
  for (const std::string& url : {std::string("host=127.0.0.1 port=1 user=nobody password=hunter2-kv dbname=none"),
                                std::string("host=127.0.0.1 port=1 user=nobody password='hunter2 quoted' dbname=none"),
                                std::string("postgresql://nobody:hunter2-url@127.0.0.1:1/none"),
                                std::string("postgresql://nobody@127.0.0.1:1/none?password=hunter2-query")}) {
    INFO(url);
    db::PoolSettings pool_settings;
    pool_settings.url = url;
    pool_settings.connect_attempts_max = 1;
    pool_settings.connect_timeout = std::chrono::milliseconds(1'000);
    db::ConnectionPool pool(pool_settings);
    api::Services services;
    services.check_database = [&pool] { return db::check_database(pool); };
    api::ServerSettings settings;
    settings.port = 0;
    settings.tokens = std::make_shared<const api::TokenVerifier>(api::TokenSettings{.hs256_secret = test::test_jwt_secret});
    api::Server server(settings, services);
    server.start();
    test::HttpClient client(server.port());
    for (const char* target : {"/health", "/health/ready", "/metrics"}) {
      INFO(target);
      const auto response = client.request("GET", target);
      CHECK(response.status == (std::string(target) == "/metrics" ? 200 : 503));
      for (const char* secret : {"hunter2", "127.0.0.1", "nobody", "port=", "host=", "postgresql://", "password"}) {
        CHECK_MESSAGE(response.body.find(secret) == std::string::npos, std::string(secret) << " in " << response.body);
      }
    }
    server.shutdown(std::chrono::milliseconds(1'000));
  }
}

TEST_CASE("a database check that gets no answer (PostgreSQL stopped or blackholed) is reported within a bound") {
  // A stopped postmaster or a partition keeps pooled connections open and never answers: the
  // check blocks in libpq, which has no read timeout. /health must still say so, not hang.
  std::atomic<bool> answering{true};
  std::atomic<bool> release{false};
  api::Services services;
  services.check_database = [&] {
    while (!answering && !release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    db::DatabaseHealth health;
    health.reachable = true;
    return health;
  };
  api::ServerSettings settings;
  settings.port = 0;
  settings.tokens = std::make_shared<const api::TokenVerifier>(api::TokenSettings{.hs256_secret = test::test_jwt_secret});
  settings.health_refresh_interval = std::chrono::milliseconds(200);
  api::Server server(settings, services);
  server.start();
  auto probe = [&](const char* target) {
    return std::async(std::launch::async, [&, target] { return test::HttpClient(server.port()).request("GET", target); });
  };
  CHECK(probe("/health").get().status == 200);

  answering = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the last snapshot is stale
  const auto asked = std::chrono::steady_clock::now();
  auto health = probe("/health");
  auto ready = probe("/health/ready");
  // The check hangs until released: any bound tells an answer without it from none. Nominally
  // 2 s (the check's timeout); the bounds leave room for a loaded machine.
  const bool answered = health.wait_for(std::chrono::seconds(15)) == std::future_status::ready &&
                        ready.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  CHECK_MESSAGE(answered, "/health did not answer while the database check hung");
  if (answered) {
    const auto response = health.get();
    CHECK(response.status == 503);
    CHECK(response.body.find("\"status\":\"unhealthy\"") != std::string::npos);
    CHECK(response.body.find("\"database\":{\"status\":\"down\"") != std::string::npos);
    CHECK(ready.get().status == 503);
    CHECK(std::chrono::steady_clock::now() - asked < std::chrono::seconds(10));
    // While the check still hangs, later probes answer at once.
    const auto again = std::chrono::steady_clock::now();
    CHECK(probe("/health").get().status == 503);
    CHECK(std::chrono::steady_clock::now() - again < std::chrono::seconds(2));
  }
  release = true;
  answering = true;
  int status = 0;
  for (int attempt = 0; attempt < 200 && status != 200; ++attempt) {
    status = probe("/health").get().status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(status == 200);
  server.shutdown(std::chrono::milliseconds(1'000));
}
