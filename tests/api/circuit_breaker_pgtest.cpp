// The database circuit breaker as clients and operators see it: while open, commands are
// answered 503 database_unavailable with Retry-After at once, /health names the breaker's
// state and /metrics has it as a gauge.
#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include "pg_fault_proxy.hpp"
#include "server_fixture.hpp"

using namespace ledger;
using namespace std::chrono_literals;
using test::ServerFixture;

TEST_CASE("with the database cut off, the breaker opens and shows in the answer, /health and /metrics") {
  test::TestDatabase database;
  auto& cluster = test::TestCluster::instance();
  test::PgFaultProxy proxy(cluster.directory(), cluster.port());
  ServerFixture server(proxy.url("ledger_app", database.name()));
  auto client = server.client();
  const auto auth = ServerFixture::auth({"teller"});
  REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"cb","currency":"EUR"})", auth).status == 201);

  proxy.cut(30s);
  // The first command waits through its retries: 503, nothing written.
  CHECK(client.request("POST", "/v1/accounts/cb/deposits", R"({"amount":1})", auth).status == 503);
  // The breaker is open: answered at once, with when to retry.
  const auto refused = client.request("POST", "/v1/accounts/cb/deposits", R"({"amount":2})", auth);
  CHECK(refused.status == 503);
  CHECK(refused.header("Retry-After") == "1");
  rapidjson::Document problem;
  problem.Parse(refused.body.c_str());
  REQUIRE(problem.IsObject());
  CHECK(std::string(problem["code"].GetString()) == "database_unavailable");
  CHECK(std::string(problem["detail"].GetString()).find("circuit breaker open") != std::string::npos);

  const std::string metrics = client.request("GET", "/metrics").body;
  CHECK(metrics.find("ledger_engine_circuit_open 1") != std::string::npos);
  CHECK(metrics.find("ledger_engine_circuit_opened_total 1") != std::string::npos);
  rapidjson::Document health;
  const auto health_answer = client.request("GET", "/health");
  health.Parse(health_answer.body.c_str());
  REQUIRE(health.IsObject());
  const auto& engine = health["components"]["engine"];
  CHECK(std::string(engine["circuit"].GetString()) != "closed");
  CHECK(std::string(engine["status"].GetString()) == "failing_fast");
}
