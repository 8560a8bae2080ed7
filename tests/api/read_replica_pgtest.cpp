// Queries served by a PostgreSQL streaming replica (serve --read-database-url): the read
// models' watermarks replicate with their rows, so min_position keeps its meaning; history
// waits until the replica has replayed the primary's head; a stopped replica fails the queries
// with 503 read_replica_unavailable while commands are still accepted.
#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <future>
#include <thread>

#include "../projections/read_side_fixture.hpp"
#include "ledger/db/health.hpp"
#include "ledger/projections/read_models.hpp"
#include "pg_fault_proxy.hpp"
#include "server_fixture.hpp"
#include "test_replica.hpp"

using namespace ledger;
using test::HttpClient;
using test::ServerFixture;
using namespace std::chrono_literals;

namespace {

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document document;
  document.Parse(body.c_str());
  REQUIRE_MESSAGE(!document.HasParseError(), "not JSON: " << body);
  return document;
}

const auto teller = ServerFixture::auth({"teller"});
const auto auditor = ServerFixture::auth({"auditor"});

std::int64_t post(HttpClient& client, const std::string& target, const std::string& body) {
  const auto response = client.request("POST", target, body, teller);
  REQUIRE_MESSAGE(response.status == 201, target << " -> " << response.status << " " << response.body);
  return parse(response.body)["position"].GetInt64();
}

std::string code_of(const test::HttpResponse& response) {
  const auto document = parse(response.body);
  return document.HasMember("code") ? document["code"].GetString() : "";
}

// As serve opens its query pools: one connection attempt, so a replica that is down is
// answered at once (the caller retries), not after a backoff.
db::PoolSettings query_pool_settings(const std::string& url) {
  db::PoolSettings settings;
  settings.url = url;
  settings.connections_max = 4;
  settings.connect_attempts_max = 1;
  settings.connect_timeout = std::chrono::milliseconds(2'000);
  settings.acquire_timeout = std::chrono::milliseconds(2'000);
  return settings;
}

// The whole stack in this process, the engine, relay and projectors on the primary, and the
// queries on a streaming replica of it, wired as `serve --read-database-url` wires them.
struct ReplicaStack {
  // through_proxy: the queries reach the replica through a fault proxy (a partition to it).
  explicit ReplicaStack(bool through_proxy = false)
      : proxy(through_proxy ? std::make_unique<test::PgFaultProxy>(replica.directory(), replica.port()) : nullptr),
        primary_pool(test::make_pool(database.app_url())),
        primary_read_models(primary_pool),
        replica_pool(query_pool_settings(proxy ? proxy->url("ledger_app", database.name())
                                               : replica.url("ledger_app", database.name()))),
        replica_read_models(replica_pool),
        replica_store(replica_pool),
        relay(test::relay_settings(kafka), primary_pool),
        server(database.app_url(), {}, &primary_read_models, {}, [this](api::Services& services) {
          services.read_replica.read_models = &replica_read_models;
          services.read_replica.event_store = &replica_store;
          services.read_replica.check = [this] {
            const auto standby = db::check_standby(replica_pool);
            api::ReadReplicaHealth health;
            health.reachable = standby.reachable;
            health.in_recovery = standby.in_recovery;
            health.replay_paused = standby.replay_paused;
            health.replay_lag_seconds = standby.replay_lag_seconds;
            return health;
          };
        }) {
    relay.start();
    for (const auto kind : projections::all_projections()) {
      projectors.push_back(std::make_unique<projections::Projector>(kind, test::projector_settings(kafka), primary_pool));
      projectors.back()->start();
    }
  }
  ~ReplicaStack() {
    // A test that fails while replay is paused must not leave it paused for the destructor's
    // stop (a paused standby still shuts down, but say what is meant).
    try {
      replica.resume_replay();
    } catch (...) {
    }
  }

  // Waits until the primary's read models hold every event and the replica has replayed it.
  void settle() {
    REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
    replica.catch_up();
  }
  [[nodiscard]] std::string health_status() {
    const auto document = parse(server.client().request("GET", "/health").body);
    const auto& components = document["components"];
    return components.HasMember("read_replica") ? components["read_replica"]["status"].GetString() : "";
  }
  // /health answers from a snapshot at most 1 s old: wait for one taken after the change (a
  // change takes about two refreshes and a check, longer on a loaded machine).
  [[nodiscard]] bool health_becomes(const std::string& status) {
    return test::eventually([&] { return health_status() == status; }, std::chrono::seconds(20));
  }

  test::TestDatabase database;  // before the replica: the base backup copies it
  test::TestReplica replica;
  std::unique_ptr<test::PgFaultProxy> proxy;
  test::MockKafka kafka;
  db::ConnectionPool primary_pool;
  projections::ReadModels primary_read_models;
  db::ConnectionPool replica_pool;
  projections::ReadModels replica_read_models;
  engine::EventStore replica_store;
  relay::Relay relay;
  ServerFixture server;
  std::vector<std::unique_ptr<projections::Projector>> projectors;
};

}  // namespace

TEST_CASE("queries read the replica: with its replay paused min_position waits, and answers once replay resumes") {
  ReplicaStack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(client, "/v1/accounts", R"({"id":"bob","currency":"EUR"})");
  post(client, "/v1/accounts/alice/deposits", R"({"amount":1000})");
  stack.settle();
  CHECK(stack.health_becomes("up"));

  stack.replica.pause_replay();
  const std::int64_t position =
      post(client, "/v1/transfers", R"({"from":"alice","to":"bob","amount":30,"currency":"EUR"})");
  // The primary's read model has the transfer; the paused replica has not replayed it.
  REQUIRE(test::eventually([&] { return test::watermark(stack.database.app_url(), "balance") >= position; }));
  const std::string target = "/v1/accounts/bob?min_position=" + std::to_string(position);
  const auto behind = client.request("GET", target + "&wait_ms=300", "", teller);
  CHECK(behind.status == 504);
  CHECK(code_of(behind) == "read_model_behind");
  CHECK(std::stoll(behind.header("X-Ledger-Watermark")) < position);
  // Without min_position the replica answers at once with what it has replayed: bob before
  // the transfer, at a watermark that says so.
  const auto old = parse(client.request("GET", "/v1/accounts/bob", "", teller).body);
  CHECK(old["credits_posted"].GetInt64() == 0);
  CHECK(old["watermark"].GetInt64() < position);
  CHECK(stack.health_becomes("replay_paused"));

  // A query that waits longer is answered when replay resumes, with the transfer.
  auto waiting = std::async(std::launch::async, [&] {
    HttpClient other = stack.server.client();
    const auto started = std::chrono::steady_clock::now();
    auto response = other.request("GET", target + "&wait_ms=10000", "", teller);
    return std::pair{response, std::chrono::steady_clock::now() - started};
  });
  std::this_thread::sleep_for(500ms);
  stack.replica.resume_replay();
  const auto [answer, waited] = waiting.get();
  REQUIRE_MESSAGE(answer.status == 200, answer.body);
  const auto bob = parse(answer.body);
  CHECK(bob["credits_posted"].GetInt64() == 30);
  CHECK(bob["watermark"].GetInt64() >= position);
  CHECK(waited >= 500ms);
}

TEST_CASE("read your writes through the replica: 300 writes each read back at once with min_position, never stale") {
  ReplicaStack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(client, "/v1/accounts", R"({"id":"bob","currency":"EUR"})");
  post(client, "/v1/accounts/alice/deposits", R"({"amount":1000000})");
  stack.settle();
  int stale = 0;
  for (int i = 1; i <= 300; ++i) {
    const std::int64_t position =
        post(client, "/v1/transfers", R"({"from":"alice","to":"bob","amount":3,"currency":"EUR"})");
    const std::string target = i % 2 == 0 ? "/v1/accounts/bob?wait_ms=10000&min_position=" + std::to_string(position)
                                          : "/v1/accounts/bob/entries?limit=1&wait_ms=10000&cursor=" +
                                                std::to_string(position - 1) + "&min_position=" +
                                                std::to_string(position);
    const auto response = client.request("GET", target, "", teller);
    REQUIRE_MESSAGE(response.status == 200, target << " -> " << response.status << " " << response.body);
    const auto document = parse(response.body);
    CHECK(document["watermark"].GetInt64() >= position);
    if (i % 2 == 0) {
      if (document["credits_posted"].GetInt64() != 3 * i) ++stale;
    } else {
      const auto& entries = document["entries"];
      if (entries.Size() != 1 || entries[0]["balance_after"].GetInt64() != 3 * i) ++stale;
    }
  }
  CHECK(stale == 0);
}

TEST_CASE("history on the replica waits until it has replayed the primary's head; as-of below what it has answers at once") {
  ReplicaStack stack;
  auto client = stack.server.client();
  const std::int64_t opened = post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(client, "/v1/accounts/alice/deposits", R"({"amount":100})");
  stack.settle();

  stack.replica.pause_replay();
  const std::int64_t deposit = post(client, "/v1/accounts/alice/deposits", R"({"amount":200})");
  // The primary has the deposit; a history read from the paused replica would miss it, so it
  // is held, then refused rather than answered stale.
  const auto started = std::chrono::steady_clock::now();
  const auto behind = client.request("GET", "/v1/streams/account-alice/events", "", auditor);
  CHECK(behind.status == 504);
  CHECK(code_of(behind) == "read_model_behind");
  CHECK(std::chrono::steady_clock::now() - started >= 2s);
  CHECK(client.request("GET", "/v1/accounts/alice/balance?at_position=" + std::to_string(deposit), "", auditor)
            .status == 504);
  // A position the replica has replayed needs nothing newer.
  const auto early = client.request("GET", "/v1/accounts/alice/balance?at_position=" + std::to_string(opened), "",
                                    auditor);
  REQUIRE_MESSAGE(early.status == 200, early.body);

  // The replica holds the WAL already and replays it on resuming: the read waits for that (at
  // most 2 s) and is answered, the path from waiting to a 200 (no catch_up() before it).
  stack.replica.resume_replay();
  const auto events = client.request("GET", "/v1/streams/account-alice/events", "", auditor);
  REQUIRE_MESSAGE(events.status == 200, events.body);
  CHECK(parse(events.body)["events"].Size() == 3);  // opened and both deposits
  const auto as_of = client.request("GET", "/v1/accounts/alice/balance?at_position=" + std::to_string(deposit), "",
                                    auditor);
  REQUIRE_MESSAGE(as_of.status == 200, as_of.body);
  CHECK(as_of.body.find("300") != std::string::npos);
}

TEST_CASE("a stopped replica fails the queries with 503 read_replica_unavailable; commands are still accepted") {
  ReplicaStack stack;
  auto client = stack.server.client();
  const std::int64_t opened = post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  stack.settle();
  const auto before = client.request(
      "GET", "/v1/accounts/alice?wait_ms=10000&min_position=" + std::to_string(opened), "", teller);
  REQUIRE_MESSAGE(before.status == 200, before.body << " watermark " << before.header("X-Ledger-Watermark"));

  stack.replica.stop();
  const auto query = client.request("GET", "/v1/accounts/alice", "", teller);
  CHECK(query.status == 503);
  CHECK(code_of(query) == "read_replica_unavailable");
  const auto waiting = client.request("GET", "/v1/accounts/alice?min_position=1", "", teller);
  CHECK(waiting.status == 503);
  CHECK(code_of(waiting) == "read_replica_unavailable");
  const auto history = client.request("GET", "/v1/streams/account-alice/events", "", auditor);
  CHECK(history.status == 503);
  CHECK(code_of(history) == "read_replica_unavailable");
  // The write side does not need the replica.
  const std::int64_t deposit = post(client, "/v1/accounts/alice/deposits", R"({"amount":500})");
  CHECK(deposit > 0);
  CHECK(stack.health_becomes("down"));
  const auto health = client.request("GET", "/health");
  CHECK(health.status == 200);
  CHECK(parse(health.body)["status"].GetString() == std::string("degraded"));
  CHECK(client.request("GET", "/health/ready").status == 200);

  // Started again, it catches up and answers, the deposit made while it was down included.
  stack.replica.start();
  const auto back = client.request("GET", "/v1/accounts/alice?wait_ms=10000&min_position=" + std::to_string(deposit),
                                   "", teller);
  REQUIRE_MESSAGE(back.status == 200, back.body);
  CHECK(parse(back.body)["credits_posted"].GetInt64() == 500);
}

TEST_CASE("a partitioned replica is reported down by /health while readiness and commands stay up") {
  ReplicaStack stack(/*through_proxy=*/true);
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  stack.settle();
  REQUIRE(stack.health_becomes("up"));

  // Connections to the replica stay open and nothing answers: its check hangs. It is checked
  // apart from the database, so only the replica is reported down (after the 2 s check
  // timeout), and the instance stays ready for commands.
  // Longer than health_becomes waits: the partition must not heal before it is seen.
  stack.proxy->blackhole(60s);
  CHECK(stack.health_becomes("down"));
  const auto ready = client.request("GET", "/health/ready");
  CHECK_MESSAGE(ready.status == 200, ready.body);
  const auto health = parse(client.request("GET", "/health").body);
  CHECK(health["components"]["database"]["status"].GetString() == std::string("up"));
  CHECK(post(client, "/v1/accounts/alice/deposits", R"({"amount":75})") > 0);
  stack.proxy->blackhole(0ms);  // heals
}
