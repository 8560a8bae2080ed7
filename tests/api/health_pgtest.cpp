// /health and /health/ready follow PostgreSQL going away and coming back, without a restart.
#include <doctest/doctest.h>
#include <unistd.h>

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
    const auto down = client.request("GET", "/health/ready");
    CHECK(down.status == 503);
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
    for (int attempt = 0; attempt < 50 && status != 200; ++attempt) {
      status = client.request("GET", "/health/ready").status;
      if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(status == 200);
    const auto recovered = client.request("GET", "/health");
    CHECK(recovered.status == 200);
    CHECK(recovered.body.find("\"status\":\"healthy\"") != std::string::npos);
    CHECK(client.request("POST", "/v1/accounts", R"({"currency":"EUR"})",
                         test::ServerFixture::auth({"teller"})).status == 201);
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

