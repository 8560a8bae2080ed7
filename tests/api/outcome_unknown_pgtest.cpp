// What a client is told when the commit of its command is lost (DESIGN.md invariant 9,
// API.md `outcome_unknown`): never "nothing was written" when something may have been, and a
// retry with the same Idempotency-Key settles it, exactly once.
#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <thread>

#include "../engine/engine_fixture.hpp"
#include "pg_fault_proxy.hpp"
#include "server_fixture.hpp"

using namespace ledger;
using namespace std::chrono_literals;
using test::HttpClient;
using test::PgFaultProxy;
using test::ServerFixture;

namespace {

// Well longer than the in-doubt check of the fixture's engine (one retry: about 3.3 s), which
// a loaded machine stretches: a check outliving the outage would resolve the outcome.
constexpr auto outage = 10'000ms;

std::string code_of(const test::HttpResponse& response) {
  rapidjson::Document document;
  document.Parse(response.body.c_str());
  REQUIRE_MESSAGE((!document.HasParseError() && document.HasMember("code")), response.body);
  return document["code"].GetString();
}

void check_told_unknown_then_settled_once(PgFaultProxy::CommitFault fault, int settled_status) {
  test::TestDatabase database;
  auto& cluster = test::TestCluster::instance();
  PgFaultProxy proxy(cluster.directory(), cluster.port());
  ServerFixture server(proxy.url("ledger_app", database.name()));
  auto headers = ServerFixture::auth({"teller"});
  HttpClient client = server.client();
  REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"alice","currency":"EUR"})", headers).status == 201);

  headers["Idempotency-Key"] = "deposit-1";
  proxy.fault_next_commit(fault, outage);
  const auto lost = client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":1250})", headers);
  CHECK(proxy.commits_faulted() == 1);
  CHECK(lost.status == 503);
  CHECK(code_of(lost) == "outcome_unknown");
  CHECK(!lost.header("Retry-After").empty());
  CHECK(lost.body.find("nothing was written") == std::string::npos);

  while (proxy.down()) std::this_thread::sleep_for(20ms);
  const auto retried = client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":1250})", headers);
  CHECK_MESSAGE(retried.status == settled_status, retried.body);
  const auto again = client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":1250})", headers);
  CHECK(again.status == 200);
  CHECK(test::scalar(database.admin_url(),
                     "SELECT count(*) FROM events WHERE type = 'transfer_posted'") == 1);
  CHECK(test::scalar(database.admin_url(),
                     "SELECT count(*) FROM events WHERE stream_id = 'account-alice'") == 2);
}

}  // namespace

TEST_CASE("a lost COMMIT is answered outcome_unknown; the keyed retry applies it once") {
  check_told_unknown_then_settled_once(PgFaultProxy::CommitFault::lose_commit, 201);
}

TEST_CASE("a COMMIT whose reply is lost is answered outcome_unknown; the keyed retry replays it") {
  check_told_unknown_then_settled_once(PgFaultProxy::CommitFault::lose_reply, 200);
}
