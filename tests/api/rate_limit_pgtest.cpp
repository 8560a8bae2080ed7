// The rate limit as a client meets it: 429 problem+json `rate_limited` with Retry-After, the
// refused command changes nothing, and another client's commands go through meanwhile.
#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include "server_fixture.hpp"

using namespace ledger;
using test::ServerFixture;

TEST_CASE("beyond its command rate an actor gets 429 rate_limited with Retry-After; others are served") {
  test::TestDatabase database;
  api::ServerSettings settings;
  settings.command_rate = {0.2, 2};  // two at once, then one every 5 s
  settings.query_rate = {0.2, 1};
  ServerFixture server(database.app_url(), settings);
  auto client = server.client();
  const std::map<std::string, std::string> alice = {{"Authorization", "Bearer " + ServerFixture::token({"teller"}, "alice")}};
  const std::map<std::string, std::string> bob = {{"Authorization", "Bearer " + ServerFixture::token({"teller"}, "bob")}};

  CHECK(client.request("POST", "/v1/accounts", R"({"id":"a1","currency":"EUR"})", alice).status == 201);
  CHECK(client.request("POST", "/v1/accounts", R"({"id":"a2","currency":"EUR"})", alice).status == 201);
  const long long events_before = test::event_count(database.app_url());
  const auto refused = client.request("POST", "/v1/accounts", R"({"id":"a3","currency":"EUR"})", alice);
  CHECK(refused.status == 429);
  CHECK(refused.headers.at("Retry-After") == "5");
  CHECK(refused.headers.at("Content-Type") == "application/problem+json");
  rapidjson::Document problem;
  problem.Parse(refused.body.c_str());
  REQUIRE(problem.IsObject());
  CHECK(std::string(problem["code"].GetString()) == "rate_limited");
  CHECK(problem["status"].GetInt() == 429);
  CHECK(test::event_count(database.app_url()) == events_before);  // nothing written

  // Bob's bucket is his own.
  CHECK(client.request("POST", "/v1/accounts", R"({"id":"b1","currency":"EUR"})", bob).status == 201);
  // Queries count apart from commands: alice still has her query token.
  CHECK(client.request("GET", "/v1/streams/account-a1/events", "",
                       {{"Authorization", "Bearer " + ServerFixture::token({"auditor"}, "alice")}})
            .status == 200);
  CHECK(client.request("GET", "/v1/streams/account-a1/events", "",
                       {{"Authorization", "Bearer " + ServerFixture::token({"auditor"}, "alice")}})
            .status == 429);
  // Probes need no token and are never limited.
  for (int i = 0; i < 5; ++i) CHECK(client.request("GET", "/health/live").status == 200);

  const std::string metrics = client.request("GET", "/metrics").body;
  CHECK(metrics.find("ledger_http_rate_limited_total{class=\"command\"} 1") != std::string::npos);
  CHECK(metrics.find("ledger_http_rate_limited_total{class=\"query\"} 1") != std::string::npos);
}
