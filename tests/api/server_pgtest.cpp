// The HTTP front through a real HTTP client on loopback, over a real engine and PostgreSQL.
#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "../engine/engine_fixture.hpp"
#include "server_fixture.hpp"

using namespace ledger;
using test::HttpClient;
using test::ServerFixture;

namespace {

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document document;
  document.Parse(body.c_str());
  REQUIRE_MESSAGE(!document.HasParseError(), "not JSON: " << body);
  return document;
}

std::string code_of(const test::HttpResponse& response) {
  auto document = parse(response.body);
  REQUIRE_MESSAGE(document.HasMember("code"), response.body);
  return document["code"].GetString();
}

const auto teller = ServerFixture::auth({"teller"});

void post_ok(HttpClient& client, const std::string& target, const std::string& body) {
  const auto response = client.request("POST", target, body, teller);
  REQUIRE_MESSAGE(response.status == 201, target << " " << body << " -> " << response.status << " " << response.body);
}

}  // namespace

TEST_CASE("every command route succeeds and answers command id, position and versions") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();

  auto opened = client.request("POST", "/v1/accounts", R"({"id":"alice","currency":"EUR","owner":"Alice"})", teller);
  REQUIRE(opened.status == 201);
  auto body = parse(opened.body);
  CHECK(body["account"]["id"].GetString() == std::string("alice"));
  CHECK(body["position"].GetInt64() == 1);
  CHECK(body["versions"]["account-alice"].GetInt64() == 1);
  CHECK(!std::string(body["command_id"].GetString()).empty());
  CHECK(opened.header("Content-Type") == "application/json");
  CHECK(!opened.header("X-Request-Id").empty());

  post_ok(client, "/v1/accounts", R"({"id":"bob","currency":"EUR","kind":"customer","overdraft_limit":100,"ledger_code":7})");
  post_ok(client, "/v1/accounts/alice/deposits", R"({"amount":10000,"reference":"salary"})");
  post_ok(client, "/v1/accounts/alice/withdrawals", R"({"amount":500,"transfer_id":"w-1"})");
  const auto transfer = client.request("POST", "/v1/transfers",
                                       R"({"id":"t-1","from":"alice","to":"bob","amount":1250,"currency":"EUR"})", teller);
  REQUIRE(transfer.status == 201);
  body = parse(transfer.body);
  CHECK(body["transfer"]["id"].GetString() == std::string("t-1"));
  CHECK(body["versions"].HasMember("transfer-t-1"));
  CHECK(body["versions"].HasMember("account-alice"));
  CHECK(body["versions"].HasMember("account-bob"));

  post_ok(client, "/v1/holds", R"({"id":"h-1","from":"alice","to":"bob","amount":300,"currency":"EUR","timeout_seconds":3600})");
  post_ok(client, "/v1/holds/h-1/post", R"({"amount":200})");
  post_ok(client, "/v1/holds", R"({"id":"h-2","from":"alice","to":"bob","amount":300,"currency":"EUR"})");
  post_ok(client, "/v1/holds/h-2/void", "");
  post_ok(client, "/v1/accounts/bob/freeze", "");
  post_ok(client, "/v1/accounts/bob/unfreeze", "");
  post_ok(client, "/v1/accounts", R"({"id":"empty","currency":"EUR"})");
  post_ok(client, "/v1/accounts/empty/close", "");
  const auto batch = client.request(
      "POST", "/v1/batch",
      R"({"commands":[{"type":"open_account","id":"carol","currency":"EUR"},{"type":"deposit","account_id":"carol","amount":50},{"type":"transfer","from":"carol","to":"bob","amount":20,"currency":"EUR"}]})",
      teller);
  REQUIRE_MESSAGE(batch.status == 201, batch.body);
  CHECK(parse(batch.body)["ids"].Size() == 3);

  // History, for the auditor.
  const auto history = client.request("GET", "/v1/streams/account-alice/events?from_version=1&limit=2", "",
                                      ServerFixture::auth({"auditor"}));
  REQUIRE(history.status == 200);
  body = parse(history.body);
  REQUIRE(body["events"].Size() == 2);
  CHECK(body["events"][0]["type"].GetString() == std::string("account_opened"));
  CHECK(body["events"][0]["data"]["currency"].GetString() == std::string("EUR"));
  CHECK(body["events"][0]["metadata"]["actor"].GetString() == std::string("tester"));
  CHECK(body["next_from_version"].GetInt64() == 3);
  CHECK(client.request("GET", "/v1/streams/account-nobody/events", "", ServerFixture::auth({"auditor"})).status == 404);

  // Health and metrics need no token.
  CHECK(client.request("GET", "/health/live").status == 200);
  CHECK(client.request("GET", "/health/ready").status == 200);
  const auto health = client.request("GET", "/health");
  CHECK(health.status == 200);
  const auto health_json = parse(health.body);
  CHECK(health_json["status"].GetString() == std::string("healthy"));
  CHECK(health_json["components"]["database"]["status"].GetString() == std::string("up"));
  // This engine has no snapshot directory: the in-memory state cache still reports itself.
  const auto& cache = health_json["components"]["snapshot_cache"];
  CHECK(cache["status"].GetString() == std::string("disabled"));
  CHECK(cache["state_cache"]["streams"].GetUint64() > 0);
  CHECK(cache["state_cache"]["hits"].GetUint64() + cache["state_cache"]["misses"].GetUint64() > 0);
  const auto metrics = client.request("GET", "/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("ledger_http_requests_total{route=\"/v1/transfers\",method=\"POST\",status=\"201\"} 1") != std::string::npos);
  CHECK(metrics.body.find("ledger_commands_total{type=\"transfer\",outcome=\"accepted\"}") != std::string::npos);
  CHECK(metrics.body.find("ledger_http_request_duration_seconds_bucket") != std::string::npos);
  CHECK(metrics.body.find("ledger_engine_batches_total") != std::string::npos);
  // Every committed batch is in the commit latency and batch size histograms.
  auto metric = [&](const std::string& name) {
    const auto at = metrics.body.find("\n" + name + " ");
    REQUIRE_MESSAGE(at != std::string::npos, name);
    return std::stoll(metrics.body.substr(at + name.size() + 2));
  };
  const auto batches = metric("ledger_engine_batches_total");
  CHECK(batches > 0);
  CHECK(metric("ledger_engine_commit_latency_seconds_count") == batches);
  CHECK(metric("ledger_engine_batch_commands_bucket{le=\"+Inf\"}") == batches);
  CHECK(metric("ledger_engine_batch_commands_sum") >= batches);
  // Every committed append waited for and held the store's head row (one with no event too).
  CHECK(metric("ledger_engine_head_lock_wait_seconds_count") >= batches);
  CHECK(metric("ledger_engine_head_lock_held_seconds_count") ==
        metric("ledger_engine_head_lock_wait_seconds_count"));
  // Where the hold went, by step (the engine's tests check each step's share).
  for (const std::string step : {"rows", "write", "commit"}) {
    const std::string series = "ledger_engine_append_step_seconds_total{step=\"" + step + "\"} ";
    CHECK_MESSAGE(metrics.body.find(series) != std::string::npos, series);
  }
  CHECK(metrics.body.find("ledger_state_cache_streams ") != std::string::npos);
  // The state cache's lookups per stream kind, next to the totals.
  for (const std::string kind : {"account", "transfer", "loan", "other"}) {
    for (const std::string result : {"hit", "miss"}) {
      const std::string series =
          "ledger_state_cache_kind_lookups_total{kind=\"" + kind + "\",result=\"" + result + "\"} ";
      CHECK_MESSAGE(metrics.body.find(series) != std::string::npos, series);
    }
  }
  CHECK(metrics.body.find("\nledger_state_cache_settled_transfer_streams ") != std::string::npos);
  // The client sent one token on every request: verified once, then taken from the cache.
  CHECK(metric("ledger_jwt_cache_lookups_total{result=\"hit\"}") > 0);
  CHECK(metric("ledger_jwt_cache_lookups_total{result=\"miss\"}") >= 1);
  CHECK(metric("ledger_jwt_cache_tokens") >= 1);
}

TEST_CASE("business rejections are problem+json with the engine's code and write nothing") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post_ok(client, "/v1/accounts", R"({"id":"usd","currency":"USD"})");
  const auto before = test::event_count(database.app_url());
  struct Case {
    std::string target, body;
    int status;
    std::string code;
  };
  for (const auto& c : std::vector<Case>{
           {"/v1/accounts/alice/withdrawals", R"({"amount":1})", 422, "insufficient_funds"},
           {"/v1/accounts/nobody/deposits", R"({"amount":1})", 404, "unknown_account"},
           {"/v1/transfers", R"({"from":"alice","to":"usd","amount":1,"currency":"EUR"})", 422, "currency_mismatch"},
           {"/v1/transfers", R"({"from":"alice","to":"alice","amount":1,"currency":"EUR"})", 422, "same_account"},
           {"/v1/accounts", R"({"id":"alice","currency":"EUR"})", 409, "duplicate_id"},
           {"/v1/holds/none/post", "", 404, "unknown_transfer"},
           {"/v1/accounts/alice/unfreeze", "", 422, "account_not_frozen"},
       }) {
    INFO(c.target << " " << c.body);
    const auto response = client.request("POST", c.target, c.body, teller);
    CHECK(response.status == c.status);
    CHECK(response.header("Content-Type") == "application/problem+json");
    CHECK(code_of(response) == c.code);
    auto problem = parse(response.body);
    CHECK(problem["status"].GetInt() == c.status);
    CHECK(problem.HasMember("title"));
    CHECK(problem.HasMember("detail"));
    CHECK(problem.HasMember("type"));
    CHECK(problem["request_id"].GetString() == response.header("X-Request-Id"));
  }
  CHECK(test::event_count(database.app_url()) == before);
}

TEST_CASE("each class of bad input gets its status and code and changes nothing") {
  test::TestDatabase database;
  api::ServerSettings settings;
  settings.body_bytes_max = 4'096;
  settings.header_bytes_max = 2'048;
  ServerFixture server(database.app_url(), settings);
  auto client = server.client();
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post_ok(client, "/v1/accounts/alice/deposits", R"({"amount":1000})");
  const auto before = test::event_count(database.app_url());

  struct Case {
    std::string name, target, body;
    int status;
    std::string code;
  };
  const std::string long_id(65, 'x');
  for (const auto& c : std::vector<Case>{
           {"malformed JSON", "/v1/transfers", R"({"from":"alice",)", 400, "malformed_json"},
           {"truncated JSON", "/v1/transfers", R"({"from":"alice","to":"b)", 400, "malformed_json"},
           {"wrong type", "/v1/transfers", R"({"from":"alice","to":"bob","amount":1,"currency":"EUR","reference":5})", 400, "invalid_field"},
           {"unknown field", "/v1/accounts/alice/deposits", R"({"amount":1,"colour":"red"})", 400, "unknown_field"},
           {"missing field", "/v1/accounts/alice/deposits", R"({})", 400, "missing_field"},
           {"negative amount", "/v1/accounts/alice/deposits", R"({"amount":-5})", 400, "invalid_amount"},
           {"zero amount", "/v1/accounts/alice/deposits", R"({"amount":0})", 400, "invalid_amount"},
           {"fractional amount", "/v1/accounts/alice/deposits", R"({"amount":12.5})", 400, "invalid_amount"},
           {"string amount", "/v1/accounts/alice/deposits", R"({"amount":"100"})", 400, "invalid_amount"},
           {"amount beyond int64", "/v1/accounts/alice/deposits", R"({"amount":9223372036854775808})", 400, "invalid_amount"},
           {"lowercase currency", "/v1/accounts", R"({"currency":"eur"})", 400, "invalid_currency"},
           {"four-letter currency", "/v1/accounts", R"({"currency":"EURO"})", 400, "invalid_currency"},
           {"id too long", "/v1/accounts", R"({"id":")" + long_id + R"(","currency":"EUR"})", 400, "invalid_id"},
           {"id with a control character", "/v1/accounts", "{\"id\":\"a\\u0001b\",\"currency\":\"EUR\"}", 400, "invalid_id"},
           {"invalid UTF-8", "/v1/accounts", "{\"id\":\"a\",\"currency\":\"EUR\",\"owner\":\"\xff\xfe\"}", 400, "invalid_utf8"},
           {"duplicate keys", "/v1/accounts/alice/deposits", R"({"amount":1,"amount":2})", 400, "duplicate_key"},
       }) {
    INFO(c.name);
    const auto response = client.request("POST", c.target, c.body, teller);
    CHECK(response.status == c.status);
    CHECK(code_of(response) == c.code);
  }

  SUBCASE("not JSON") {
    const auto response = client.request("POST", "/v1/accounts/alice/deposits", "amount=1",
                                         {{"Authorization", teller.at("Authorization")}, {"Content-Type", "text/plain"}}, false);
    CHECK(response.status == 415);
    CHECK(code_of(response) == "unsupported_media_type");
  }
  SUBCASE("unknown route and wrong method") {
    CHECK(client.request("POST", "/v1/nothing", "{}", teller).status == 404);
    const auto wrong = client.request("GET", "/v1/transfers", "", teller);
    CHECK(wrong.status == 405);
    CHECK(wrong.header("Allow") == "POST");
    CHECK(code_of(wrong) == "method_not_allowed");
  }
  SUBCASE("body over the limit") {
    const auto response = client.request("POST", "/v1/accounts", R"({"owner":")" + std::string(8'000, 'o') + R"("})", teller);
    CHECK(response.status == 413);
    CHECK(code_of(response) == "body_too_large");
  }
  SUBCASE("headers over the limit") {
    auto headers = teller;
    headers["X-Padding"] = std::string(4'000, 'p');
    const auto response = client.request("POST", "/v1/accounts", R"({"currency":"EUR"})", headers);
    CHECK(response.status == 431);
    CHECK(code_of(response) == "headers_too_large");
  }
  SUBCASE("an invalid idempotency key") {
    auto headers = teller;
    headers["Idempotency-Key"] = std::string(129, 'k');
    CHECK(code_of(client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":1})", headers)) ==
          "invalid_header");
  }
  CHECK(test::event_count(database.app_url()) == before);
}

TEST_CASE("slow and stalled clients time out; connections beyond the limit are refused") {
  test::TestDatabase database;
  api::ServerSettings settings;
  settings.header_timeout = std::chrono::milliseconds(300);
  settings.body_timeout = std::chrono::milliseconds(300);
  settings.connections_max = 4;
  ServerFixture server(database.app_url(), settings);
  const auto before = test::event_count(database.app_url());

  SUBCASE("headers that never finish") {
    HttpClient client(server.port());
    client.send_raw("POST /v1/accounts HTTP/1.1\r\nHost: x\r\n");
    const auto response = client.read();
    CHECK(response.status == 408);
    CHECK(code_of(response) == "request_timeout");
    CHECK(client.closed_by_server());
  }
  SUBCASE("a body that never finishes") {
    HttpClient client(server.port());
    client.send_raw("POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: " + teller.at("Authorization") +
                    "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"currency\"");
    const auto response = client.read();
    CHECK(response.status == 408);
    CHECK(code_of(response) == "request_timeout");
  }
  SUBCASE("more connections than the limit") {
    std::vector<std::unique_ptr<HttpClient>> held;
    for (int i = 0; i < 4; ++i) {
      held.push_back(std::make_unique<HttpClient>(server.port()));
      CHECK(held.back()->request("GET", "/health/live").status == 200);
    }
    HttpClient extra(server.port());
    const auto refused = extra.read();
    CHECK(refused.status == 503);
    CHECK(code_of(refused) == "too_many_connections");
  }
  CHECK(test::event_count(database.app_url()) == before);
}

TEST_CASE("keep-alive and pipelined requests are answered in order; request ids are echoed") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  const std::string auth = teller.at("Authorization");
  auto request = [&](const std::string& id, const std::string& body) {
    return "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
           "\r\nContent-Type: application/json\r\nX-Request-Id: " + id +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  client.send_raw(request("first", R"({"id":"p1","currency":"EUR"})") +
                  request("second", R"({"id":"p2","currency":"EUR"})") +
                  request("third", R"({"id":"p1","currency":"EUR"})"));
  const auto first = client.read();
  const auto second = client.read();
  const auto third = client.read();
  CHECK(first.status == 201);
  CHECK(first.header("X-Request-Id") == "first");
  CHECK(second.status == 201);
  CHECK(second.header("X-Request-Id") == "second");
  CHECK(third.status == 409);
  CHECK(third.header("X-Request-Id") == "third");
  CHECK(parse(third.body)["request_id"].GetString() == std::string("third"));
  // The connection stays open.
  CHECK(client.request("GET", "/health/live").status == 200);
}

TEST_CASE("Idempotency-Key: the same request replays its answer, another request is refused") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  auto headers = teller;
  headers["Idempotency-Key"] = "deposit-0001";
  const auto first = client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":700})", headers);
  CHECK(first.status == 201);
  const auto count = test::event_count(database.app_url());
  const auto again = client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":700})", headers);
  CHECK(again.status == 200);
  CHECK(parse(again.body)["command_id"].GetString() == std::string(parse(first.body)["command_id"].GetString()));
  CHECK(parse(again.body)["replayed"].GetBool());
  const auto other = client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":900})", headers);
  CHECK(other.status == 409);
  CHECK(code_of(other) == "idempotency_key_reused");
  CHECK(test::event_count(database.app_url()) == count);
}

TEST_CASE("the auth matrix: every route against every role, no role and no token") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");

  // Every route of the router: teller, auditor and admin as API.md names them; queries of
  // balances, statements and loans need any of the three roles.
  enum class Needs { teller, auditor, admin, any_role };
  struct Route {
    std::string method, target, body;
    Needs needs;
  };
  const std::vector<Route> routes = {
      {"POST", "/v1/accounts", R"({"currency":"EUR"})", Needs::teller},
      {"POST", "/v1/accounts/alice/deposits", R"({"amount":10})", Needs::teller},
      {"POST", "/v1/accounts/alice/withdrawals", R"({"amount":1})", Needs::teller},
      {"POST", "/v1/transfers", R"({"from":"alice","to":"alice","amount":1,"currency":"EUR"})", Needs::teller},
      {"POST", "/v1/holds", R"({"from":"alice","to":"alice","amount":1,"currency":"EUR"})", Needs::teller},
      {"POST", "/v1/holds/h/post", "", Needs::teller},
      {"POST", "/v1/holds/h/void", "", Needs::teller},
      {"POST", "/v1/accounts/alice/freeze", "", Needs::teller},
      {"POST", "/v1/accounts/alice/unfreeze", "", Needs::teller},
      {"POST", "/v1/accounts/zed/close", "", Needs::teller},
      {"POST", "/v1/batch", R"({"commands":[{"type":"deposit","account_id":"alice","amount":1}]})", Needs::teller},
      {"GET", "/v1/streams/account-alice/events", "", Needs::auditor},
      {"GET", "/v1/accounts/alice/balance?at_position=1", "", Needs::auditor},
      {"POST", "/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":100,"rate_bps":0,"installments":1,"schedule":"annuity","first_due_date":"2999-01-01"})", Needs::teller},
      {"POST", "/v1/loans/l/disburse", "", Needs::teller},
      {"POST", "/v1/loans/l/repayments", R"({"amount":1})", Needs::teller},
      {"POST", "/v1/loans/l/write-off", "", Needs::teller},
      {"POST", "/v1/loans/close-of-business", R"({"date":"2999-01-01"})", Needs::admin},
      // Queries (this fixture has no read models: an allowed query answers 503, not 401/403).
      {"GET", "/v1/accounts/alice", "", Needs::any_role},
      {"GET", "/v1/accounts/alice/entries", "", Needs::any_role},
      {"GET", "/v1/accounts/alice/loans", "", Needs::any_role},
      {"GET", "/v1/loans/l", "", Needs::any_role},
      {"GET", "/v1/loans/l/schedule", "", Needs::any_role},
      {"GET", "/v1/audit", "", Needs::auditor},
  };
  struct Caller {
    std::string name;
    std::map<std::string, std::string> headers;
    bool authenticated, teller, auditor, admin;
  };
  const std::vector<Caller> callers = {
      {"no token", {}, false, false, false, false},
      {"malformed token", {{"Authorization", "Bearer not.a.jwt"}}, false, false, false, false},
      {"wrong scheme", {{"Authorization", "Basic dXNlcjpwYXNz"}}, false, false, false, false},
      {"bad signature", {{"Authorization", "Bearer " + api::issue_token("another-secret-of-32-bytes-or-more!!", "x", {"admin"}, std::chrono::hours(1))}}, false, false, false, false},
      {"expired", {{"Authorization", "Bearer " + api::issue_token(test::test_jwt_secret, "x", {"admin"}, std::chrono::seconds(-120))}}, false, false, false, false},
      {"no role", ServerFixture::auth({}), true, false, false, false},
      {"only unknown roles", ServerFixture::auth({"superuser", "Admin", "reader"}), true, false, false, false},
      {"teller", ServerFixture::auth({"teller"}), true, true, false, false},
      {"auditor", ServerFixture::auth({"auditor"}), true, false, true, false},
      {"admin", ServerFixture::auth({"admin"}), true, true, true, true},
  };
  for (const auto& caller : callers) {
    for (const auto& route : routes) {
      INFO(caller.name << " " << route.method << " " << route.target);
      const auto response = client.request(route.method, route.target, route.body, caller.headers);
      const bool allowed = route.needs == Needs::teller    ? caller.teller
                           : route.needs == Needs::auditor ? caller.auditor
                           : route.needs == Needs::admin   ? caller.admin
                                                           : caller.teller || caller.auditor || caller.admin;
      if (!caller.authenticated) {
        CHECK(response.status == 401);
        CHECK(code_of(response) == "unauthorized");
      } else if (!allowed) {
        CHECK(response.status == 403);
        CHECK(code_of(response) == "forbidden");
      } else {
        CHECK(response.status != 401);
        CHECK(response.status != 403);
      }
    }
    // The open routes answer every caller, with or without a token.
    for (const char* open : {"/health", "/health/live", "/health/ready", "/metrics"}) {
      INFO(caller.name << " GET " << open);
      CHECK(client.request("GET", open, "", caller.headers).status == 200);
    }
  }
}

TEST_CASE("GET /v1/accounts/{id}/balance answers the balances at a past position or instant") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  const auto auditor = ServerFixture::auth({"auditor"});
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post_ok(client, "/v1/accounts/alice/deposits", R"({"amount":1000})");
  const auto after_deposit = test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  post_ok(client, "/v1/accounts/alice/withdrawals", R"({"amount":300})");
  const auto now = client.request("GET", "/v1/accounts/alice/balance?as_of=2999-01-01T00:00:00Z", "", auditor);
  REQUIRE_MESSAGE(now.status == 200, now.body);
  CHECK(parse(now.body)["balance"].GetInt64() == 700);

  const auto then = client.request("GET", "/v1/accounts/alice/balance?at_position=" + std::to_string(after_deposit), "", auditor);
  REQUIRE_MESSAGE(then.status == 200, then.body);
  const auto body = parse(then.body);
  CHECK(body["balance"].GetInt64() == 1000);
  CHECK(body["credits_posted"].GetInt64() == 1000);
  CHECK(body["currency"].GetString() == std::string("EUR"));
  CHECK(body["position"].GetInt64() <= after_deposit);

  const auto before = client.request("GET", "/v1/accounts/alice/balance?as_of=2001-01-01T00:00:00Z", "", auditor);
  CHECK(before.status == 404);
  CHECK(code_of(before) == "unknown_account");
  CHECK(client.request("GET", "/v1/accounts/nobody/balance?at_position=1", "", auditor).status == 404);
  for (const std::string query : {"", "?as_of=yesterday", "?at_position=0", "?at_position=x",
                                  "?as_of=2026-01-01T00:00:00Z&at_position=3", "?colour=blue"}) {
    const auto response = client.request("GET", "/v1/accounts/alice/balance" + query, "", auditor);
    CHECK_MESSAGE(response.status == 400, query);
    CHECK(code_of(response) == "invalid_query");
  }
}

TEST_CASE("loan routes: originate, disburse, repay, close of business (admin), write-off; bad input") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  const auto admin = ServerFixture::auth({"admin"});
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post_ok(client, "/v1/accounts/alice/deposits", R"({"amount":50000})");
  const std::string loan = R"({"id":"L1","account_id":"alice","currency":"EUR","principal":120000,"rate_bps":1200,)"
                           R"("installments":12,"schedule":"annuity","origination_date":"2026-01-15",)"
                           R"("first_due_date":"2026-02-15","origination_fee":1000,"late_fee":500,"grace_days":5})";
  const auto originated = client.request("POST", "/v1/loans", loan, teller);
  REQUIRE_MESSAGE(originated.status == 201, originated.body);
  CHECK(parse(originated.body)["loan"]["id"].GetString() == std::string("L1"));
  post_ok(client, "/v1/loans/L1/disburse", "");

  const auto cob = client.request("POST", "/v1/loans/close-of-business", R"({"date":"2026-02-21"})", admin);
  REQUIRE_MESSAGE(cob.status == 200, cob.body);
  CHECK(parse(cob.body)["loans"].GetInt64() == 1);
  CHECK(parse(cob.body)["closed"].GetInt64() == 1);
  const auto again = client.request("POST", "/v1/loans/close-of-business", R"({"date":"2026-02-21"})", admin);
  CHECK(parse(again.body)["closed"].GetInt64() == 0);
  CHECK(client.request("POST", "/v1/loans/close-of-business", R"({"date":"2026-02-21"})", teller).status == 403);
  CHECK(code_of(client.request("POST", "/v1/loans/close-of-business", R"({"date":"21.02.2026"})", admin)) == "invalid_date");

  const auto repaid = client.request("POST", "/v1/loans/L1/repayments", R"({"amount":9385,"repayment_id":"r-1"})", teller);
  REQUIRE_MESSAGE(repaid.status == 201, repaid.body);
  CHECK(parse(repaid.body)["repayment"]["id"].GetString() == std::string("r-1"));

  struct Bad {
    std::string target, body;
    int status;
    std::string code;
  };
  const std::vector<Bad> bad = {
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":"12","installments":1,"schedule":"annuity","first_due_date":"2999-01-01"})", 400, "invalid_field"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":100001,"installments":1,"schedule":"annuity","first_due_date":"2099-01-01"})", 422, "invalid_loan_terms"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":1,"installments":601,"schedule":"annuity","first_due_date":"2099-01-01"})", 422, "invalid_loan_terms"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":0,"rate_bps":1,"installments":1,"schedule":"annuity","first_due_date":"2999-01-01"})", 400, "invalid_amount"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":1,"installments":1,"schedule":"balloon","first_due_date":"2999-01-01"})", 400, "invalid_field"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":1,"installments":1,"schedule":"annuity","first_due_date":"2999-02-30"})", 400, "invalid_date"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":1,"installments":1,"schedule":"annuity","origination_date":"2026-03-01","first_due_date":"2026-02-01"})", 422, "invalid_loan_terms"},
      {"/v1/loans", R"({"account_id":"alice","currency":"EUR","principal":1,"rate_bps":1,"installments":1,"schedule":"annuity","first_due_date":"2999-01-01","colour":"red"})", 400, "unknown_field"},
      {"/v1/loans/L1/disburse", "", 422, "loan_already_disbursed"},
      {"/v1/loans/nope/disburse", "", 404, "unknown_loan"},
      {"/v1/loans/L1/repayments", R"({"amount":999999999})", 422, "overpayment"},
      {"/v1/loans/L1/repayments", R"({"amount":-5})", 400, "invalid_amount"},
      {"/v1/loans/L1/repayments", "", 400, "malformed_json"},
  };
  const auto head = test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  for (const auto& b : bad) {
    const auto response = client.request("POST", b.target, b.body, teller);
    CHECK_MESSAGE(response.status == b.status, b.target << " " << b.body << " -> " << response.body);
    CHECK_MESSAGE(code_of(response) == b.code, b.body);
  }
  CHECK(test::scalar(database.app_url(), "SELECT position FROM event_store_head") == head);  // nothing written

  // Issue 13: the repayment sent again charges nothing; the same id with another amount is
  // duplicate_id; a teller's transfer naming a system account is system_account (422).
  const auto retried = client.request("POST", "/v1/loans/L1/repayments", R"({"amount":9385,"repayment_id":"r-1"})", teller);
  CHECK_MESSAGE(retried.status / 100 == 2, retried.body);
  CHECK(parse(retried.body)["repayment"]["id"].GetString() == std::string("r-1"));
  const auto reused = client.request("POST", "/v1/loans/L1/repayments", R"({"amount":9000,"repayment_id":"r-1"})", teller);
  CHECK(reused.status == 409);
  CHECK(code_of(reused) == "duplicate_id");
  const auto system = client.request("POST", "/v1/transfers",
                                     R"({"from":"system.loan_receivable.EUR","to":"alice","amount":1,"currency":"EUR"})", teller);
  CHECK(system.status == 422);
  CHECK(code_of(system) == "system_account");
  CHECK(test::scalar(database.app_url(), "SELECT position FROM event_store_head") == head);

  post_ok(client, "/v1/loans/L1/write-off", "");
  CHECK(code_of(client.request("POST", "/v1/loans/L1/repayments", R"({"amount":1})", teller)) == "loan_not_active");
}

TEST_CASE("a header that is not 1 to 128 visible ASCII bytes is refused alone; concurrent deposits all commit") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  post_ok(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post_ok(client, "/v1/accounts/alice/deposits", R"({"amount":1})");  // opens the cash account too
  const auto before_one = test::event_count(database.app_url());
  post_ok(client, "/v1/accounts/alice/deposits", R"({"amount":1})");
  const auto events_per_deposit = test::event_count(database.app_url()) - before_one;
  const auto before = test::event_count(database.app_url());

  // Each of these headers is copied into event metadata, the idempotency record, logs or the
  // answer; one bad byte used to fail the whole group-commit batch it landed in.
  struct Bad {
    std::string header, lines;
  };
  const std::vector<Bad> bad = {
      {"X-Correlation-Id", "X-Correlation-Id: corr-\xff\r\n"},
      {"X-Correlation-Id", "X-Correlation-Id: corr-\xc3\x28\r\n"},
      {"X-Correlation-Id", "X-Correlation-Id: has space\r\n"},
      {"X-Correlation-Id", "X-Correlation-Id: has\ttab\r\n"},
      {"X-Correlation-Id", "X-Correlation-Id: " + std::string(129, 'c') + "\r\n"},
      {"X-Correlation-Id", "X-Correlation-Id: one\r\nX-Correlation-Id: two\r\n"},
      {"X-Request-Id", "X-Request-Id: req-\xff\r\n"},
      {"X-Request-Id", "X-Request-Id: " + std::string(129, 'r') + "\r\n"},
      {"Idempotency-Key", "Idempotency-Key: key-\xff\r\n"},
      {"Idempotency-Key", "Idempotency-Key: " + std::string(129, 'k') + "\r\n"},
  };
  const std::string auth = teller.at("Authorization");
  auto raw_deposit = [&](const std::string& extra_lines) {
    const std::string body = R"({"amount":1})";
    return "POST /v1/accounts/alice/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
           "\r\nContent-Type: application/json\r\n" + extra_lines +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };

  constexpr int innocent_threads = 8;
  constexpr int deposits_per_thread = 10;
  std::atomic<int> innocent_ok{0};
  std::atomic<int> bad_refused{0};
  std::vector<std::string> failures;
  std::mutex failures_mutex;
  auto note = [&](const std::string& failure) {
    std::lock_guard lock(failures_mutex);
    failures.push_back(failure);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < innocent_threads; ++t) {
    threads.emplace_back([&, t] {
      HttpClient own(server.port());
      for (int i = 0; i < deposits_per_thread; ++i) {
        // Valid ids of every kind, including the longest allowed, pass.
        const std::string lines = "X-Correlation-Id: " + std::string(128, static_cast<char>('a' + t)) +
                                  "\r\nX-Request-Id: innocent-" + std::to_string(t) + "-" + std::to_string(i) + "\r\n";
        own.send_raw(raw_deposit(lines));
        const auto response = own.read();
        if (response.status == 201) {
          ++innocent_ok;
        } else {
          note("innocent deposit -> " + std::to_string(response.status) + " " + response.body);
        }
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      HttpClient own(server.port());
      for (int round = 0; round < 3; ++round) {
        for (const auto& b : bad) {
          own.send_raw(raw_deposit(b.lines));
          const auto response = own.read();
          const auto document = parse(response.body);
          const std::string code = document.HasMember("code") ? document["code"].GetString() : "";
          const std::string detail = document.HasMember("detail") ? document["detail"].GetString() : "";
          if (response.status == 400 && code == "invalid_header" && detail.find(b.header) != std::string::npos) {
            ++bad_refused;
          } else {
            note(b.header + " -> " + std::to_string(response.status) + " " + response.body);
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& failure : failures) FAIL_CHECK(failure);
  CHECK(innocent_ok == innocent_threads * deposits_per_thread);
  CHECK(bad_refused == 2 * 3 * static_cast<int>(bad.size()));
  // Only the innocent deposits were written.
  CHECK(test::event_count(database.app_url()) == before + innocent_threads * deposits_per_thread * events_per_deposit);
}

TEST_CASE("made-up methods and unknown routes are counted under the fixed label other") {
  test::TestDatabase database;
  ServerFixture server(database.app_url());
  auto client = server.client();
  for (int i = 0; i < 20; ++i) {
    const std::string method = "XMETHOD" + std::to_string(i);
    client.send_raw(method + " /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    CHECK(client.read().status == 405);
    client.send_raw(method + " /v1/nothing-" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    CHECK(client.read().status == 404);
    CHECK(client.request("GET", "/v1/nothing-" + std::to_string(i), "", teller).status == 404);
    CHECK(client.request("GET", "/no/such/path/" + std::to_string(i)).status == 404);
  }
  const auto metrics = client.request("GET", "/metrics");
  REQUIRE(metrics.status == 200);
  CHECK(metrics.body.find("XMETHOD") == std::string::npos);
  CHECK(metrics.body.find("nothing-") == std::string::npos);
  CHECK(metrics.body.find("/no/such") == std::string::npos);
  CHECK(metrics.body.find(R"(ledger_http_requests_total{route="wrong_method",method="other",status="405"} 20)") != std::string::npos);
  CHECK(metrics.body.find(R"(ledger_http_requests_total{route="other",method="other",status="404"} 20)") != std::string::npos);
  CHECK(metrics.body.find(R"(ledger_http_requests_total{route="other",method="GET",status="404"} 40)") != std::string::npos);
  std::size_t series = 0;
  for (std::size_t at = metrics.body.find("\nledger_http_requests_total{"); at != std::string::npos;
       at = metrics.body.find("\nledger_http_requests_total{", at + 1)) {
    ++series;
  }
  CHECK(series <= 4);
}

TEST_CASE("a chunk extension or trailer beyond the buffer cap gets the connection closed at once") {
  test::TestDatabase database;
  api::ServerSettings settings;
  settings.header_timeout = std::chrono::milliseconds(8'000);
  settings.body_timeout = std::chrono::milliseconds(8'000);
  ServerFixture server(database.app_url(), settings);
  const std::string head = "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: " + teller.at("Authorization") +
                           "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string& start : {std::string("1;ext="), std::string("5\r\n{\"a\":\r\n1;"), std::string("0\r\nX-Trailer: ")}) {
    INFO(start);
    HttpClient client(server.port());
    const auto began = std::chrono::steady_clock::now();
    const std::string filler(64 * 1024, 'a');
    std::size_t sent = 0;
    try {
      client.send_raw(head + start);
      // 16 MiB of one chunk line: the server must give up long before, not buffer it all.
      for (int i = 0; i < 256; ++i) {
        client.send_raw(filler);
        sent += filler.size();
      }
    } catch (const std::exception&) {
      // The server closed the connection while we were still sending: what we want.
    }
    bool closed = false;
    try {
      const auto response = client.read();
      CHECK(response.status == 400);
      CHECK(code_of(response) == "malformed_request");
      closed = client.closed_by_server();
    } catch (const std::exception&) {
      closed = true;  // reset: the server closed with our bytes unread
    }
    CHECK(closed);
    const auto elapsed = std::chrono::steady_clock::now() - began;
    CHECK(elapsed < std::chrono::seconds(3));
    CHECK(sent < std::size_t{16} << 20);
  }
  // Chunk extensions that each fit the buffer but together exceed 1 KiB are refused too; a
  // short one is ignored.
  {
    HttpClient client(server.port());
    std::string chunks;
    for (int i = 0; i < 10; ++i) chunks += "1;e=" + std::string(200, 'x') + "\r\n \r\n";
    client.send_raw(head + chunks + "0\r\n\r\n");
    const auto response = client.read();
    CHECK(response.status == 400);
    CHECK(code_of(response) == "malformed_request");
    CHECK(response.body.find("chunk extensions") != std::string::npos);
  }
  {
    HttpClient client(server.port());
    const std::string body = R"({"currency":"EUR"})";
    char size[16];
    std::snprintf(size, sizeof size, "%zx", body.size());
    client.send_raw(head + size + ";note=short\r\n" + body + "\r\n0\r\n\r\n");
    CHECK(client.read().status == 201);
  }
  // The server still answers.
  CHECK(server.client().request("GET", "/health/live").status == 200);
}
