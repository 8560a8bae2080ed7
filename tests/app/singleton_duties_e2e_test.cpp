// Two `ledger serve` processes on one database, as behind a load balancer: one sweeps expired
// holds at a time (the leader, shown in /health, /metrics and the log), each hold expires once,
// and when the leader is killed (SIGKILL: its lock's session dies with it) the other takes over.
#include <doctest/doctest.h>
#include <signal.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <thread>

#include <pqxx/pqxx>
#include <rapidjson/document.h>

#include "child_processes.hpp"
#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
namespace fs = std::filesystem;

namespace {

const std::string secret = "singleton-duties-e2e-secret-of-32-bytes!";
constexpr auto duty_wait_max = std::chrono::seconds(30);

struct Serve {
  pid_t pid = 0;
  int port = 0;
  fs::path log;
};

Serve start_serve(const fs::path& directory, const std::string& database_url) {
  fs::create_directories(directory);
  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret};
  Serve serve;
  serve.log = options.output_file;
  serve.pid = process::spawn({test::ledger_binary(), "--home", directory.string(), "--database-url", database_url,
                              "serve", "--http-port", "0", "--port-file", (directory / "port").string(), "--relay",
                              "false"},
                             options);
  const std::string port = test::wait_for_file(directory / "port", serve.pid);
  REQUIRE_MESSAGE(!port.empty(), "serve did not start: " << test::read_file(serve.log));
  serve.port = std::stoi(port);
  return serve;
}

template <typename Predicate>
bool eventually(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + duty_wait_max;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

// This instance's hold_expiry component of /health: status, sweeps, holds_expired.
struct Duty {
  std::string status;
  std::int64_t sweeps = 0;
  std::int64_t holds_expired = 0;
};

Duty hold_expiry(const Serve& serve) {
  test::HttpClient client(serve.port);
  const auto response = client.request("GET", "/health");
  rapidjson::Document health;
  health.Parse(response.body.c_str());
  REQUIRE_MESSAGE(!health.HasParseError(), response.body);
  const auto& duty = health["components"]["hold_expiry"];
  Duty result{duty["status"].GetString()};
  if (duty.HasMember("sweeps")) {
    result.sweeps = duty["sweeps"].GetInt64();
    result.holds_expired = duty["holds_expired"].GetInt64();
  }
  return result;
}

long long scalar(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return work.exec1(sql)[0].as<long long>();
}

const char* const expired_events_sql =
    "SELECT count(*) FROM events WHERE type = 'pending_transfer_ended' AND metadata->>'actor' = 'engine:expiry'";
const char* const expired_holds_sql =
    "SELECT count(DISTINCT stream_id) FROM events WHERE type = 'pending_transfer_ended' "
    "AND metadata->>'actor' = 'engine:expiry'";

void post(const Serve& serve, const std::string& target, const std::string& body) {
  test::HttpClient client(serve.port);
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1))}};
  const auto response = client.request("POST", target, body, auth);
  REQUIRE_MESSAGE(response.status == 201, target << " " << body << " -> " << response.status << " " << response.body);
}

void place_holds(const Serve& serve, const std::string& prefix, int count) {
  for (int i = 0; i < count; ++i) {
    post(serve, "/v1/holds",
         R"({"id":")" + prefix + std::to_string(i) +
             R"(","from":"alice","to":"bob","amount":10,"currency":"EUR","timeout_seconds":1})");
  }
}

}  // namespace

TEST_CASE("two serve processes: one sweeps expired holds, and the other takes over when it is killed") {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-singleton-duties-e2e-" + std::to_string(getpid());
  fs::remove_all(directory);
  test::ChildStopper children;
  std::array<Serve, 2> serves{start_serve(directory / "a", database.app_url()),
                              start_serve(directory / "b", database.app_url())};
  children.pids = {serves[0].pid, serves[1].pid};

  REQUIRE(eventually([&] { return hold_expiry(serves[0]).status == "leader" || hold_expiry(serves[1]).status == "leader"; }));
  const std::size_t leader = hold_expiry(serves[0]).status == "leader" ? 0 : 1;
  const Serve& standby = serves[1 - leader];
  CHECK(hold_expiry(standby).status == "standby");
  CHECK(test::read_file(serves[leader].log).find("hold expiry: leading") != std::string::npos);
  CHECK(test::read_file(standby.log).find("hold expiry: leading") == std::string::npos);

  post(standby, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(standby, "/v1/accounts", R"({"id":"bob","currency":"EUR"})");
  post(standby, "/v1/accounts/alice/deposits", R"({"amount":10000})");
  place_holds(serves[0], "a-", 5);
  place_holds(serves[1], "b-", 5);
  REQUIRE(eventually([&] { return scalar(database.app_url(), expired_events_sql) == 10; }));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // later sweeps find nothing more
  CHECK(scalar(database.app_url(), expired_events_sql) == 10);
  CHECK(scalar(database.app_url(), expired_holds_sql) == 10);
  CHECK(hold_expiry(serves[leader]).holds_expired == 10);
  const Duty standing_by = hold_expiry(standby);
  CHECK(standing_by.status == "standby");
  CHECK(standing_by.sweeps == 0);
  CHECK(standing_by.holds_expired == 0);

  // The leader dies without a word: its lock's session ends with its socket, and the standby leads.
  const auto killed_at = std::chrono::steady_clock::now();
  REQUIRE(kill(serves[leader].pid, SIGKILL) == 0);
  CHECK(process::wait_for(serves[leader].pid, std::chrono::seconds(10)).has_value());
  REQUIRE(eventually([&] { return hold_expiry(standby).status == "leader"; }));
  MESSAGE("the standby led "
          << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at).count()
          << " ms after the leader was killed");
  CHECK(test::read_file(standby.log).find("hold expiry: leading") != std::string::npos);
  place_holds(standby, "c-", 5);
  REQUIRE(eventually([&] { return scalar(database.app_url(), expired_events_sql) == 15; }));
  CHECK(scalar(database.app_url(), expired_holds_sql) == 15);
  // The sweeper counts each expiry once the engine answers it, then deletes the rows it swept:
  // once they are gone, its count is final.
  CHECK(eventually([&] { return scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 0; }));
  CHECK(hold_expiry(standby).holds_expired == 5);
  fs::remove_all(directory);
}
