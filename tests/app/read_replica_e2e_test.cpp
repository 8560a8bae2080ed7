// `ledger serve --read-database-url` as an operator runs it: a URL that cannot serve stops
// start-up with one line naming the setting; a streaming replica started by the harness
// answers the queries (its replay paused, history waits for it), and /health reports it.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include <rapidjson/document.h>

#include "child_processes.hpp"
#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"
#include "test_replica.hpp"

using namespace ledger;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const std::string secret = "read-replica-e2e-secret-of-32-bytes!!";

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document document;
  document.Parse(text.c_str());
  REQUIRE_MESSAGE(!document.HasParseError(), text);
  return document;
}

fs::path fresh_directory(const std::string& name) {
  const fs::path directory = "/tmp/ledger-replica-e2e-" + name + "-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  return directory;
}

// Removes a test's directory when the test ends (declare it before the children that use it).
struct RemovedAtEnd {
  fs::path directory;
  ~RemovedAtEnd() {
    std::error_code ignored;
    fs::remove_all(directory, ignored);
  }
};

// Runs `ledger serve` expecting it to refuse to start: its exit status and output, or
// std::nullopt (and it is stopped) when it is still running after 30 s.
std::pair<std::optional<process::ExitStatus>, std::string> serve_once(const std::vector<std::string>& argv,
                                                                      std::vector<std::string> environment) {
  const RemovedAtEnd removed{fresh_directory("refused")};
  const fs::path& directory = removed.directory;
  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  environment.push_back("LEDGER_JWT_SECRET=" + secret);
  environment.push_back("LEDGER_HOME=" + directory.string());
  options.extra_environment = std::move(environment);
  const pid_t pid = process::spawn(argv, options);
  auto status = process::wait_for(pid, std::chrono::seconds(30));
  if (!status) (void)process::stop(pid, SIGTERM, std::chrono::seconds(10));
  return {status, test::read_file(directory / "serve.log")};
}

std::pair<std::optional<process::ExitStatus>, std::string> serve_once(const std::string& database_url,
                                                                      const std::vector<std::string>& arguments) {
  std::vector<std::string> argv = {test::ledger_binary(), "--database-url", database_url, "serve",
                                   "--http-port", "0", "--relay", "false"};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return serve_once(argv, {});
}

// /health's components.read_replica.status, "" when it has none.
std::string replica_status(test::HttpClient& client) {
  const auto health = parse(client.request("GET", "/health").body);
  const auto& components = health["components"];
  if (!components.HasMember("read_replica")) return "";
  return components["read_replica"]["status"].GetString();
}

// /health answers from a snapshot at most 1 s old, and the replica is checked apart from it:
// polls (at most 20 s: a change takes about two refreshes and a check, longer on a loaded
// machine) until it reports `wanted`; returns the last status seen.
std::string wait_for_replica_status(test::HttpClient& client, const std::string& wanted) {
  std::string status = replica_status(client);
  for (int attempt = 0; attempt < 200 && status != wanted; ++attempt) {
    std::this_thread::sleep_for(100ms);
    status = replica_status(client);
  }
  return status;
}

// Alice's history once the replica has replayed the primary's head. serve holds a history read
// at most 2 s for that; the first write to a new database can take longer to reach a replica
// on a loaded machine (ctest -j 4 on two cores), and then the answer is a 504
// read_model_behind, never a stale page: asks again, for at most 30 s.
test::HttpResponse history_once_replayed(test::HttpClient& client, const std::map<std::string, std::string>& auth) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (true) {
    auto answer = client.request("GET", "/v1/streams/account-alice/events", "", auth);
    if (answer.status == 200 || std::chrono::steady_clock::now() >= deadline) return answer;
    REQUIRE_MESSAGE(answer.status == 504, answer.body);
    REQUIRE_MESSAGE(answer.body.find("read_model_behind") != std::string::npos, answer.body);
  }
}

}  // namespace

TEST_CASE("serve refuses a --read-database-url that cannot serve, with one line naming the setting") {
  test::TestDatabase database;
  const std::string setting = "--read-database-url (LEDGER_READ_DATABASE_URL): ";

  SUBCASE("nothing listens there") {
    const auto [status, output] =
        serve_once(database.app_url(), {"--read-database-url", "postgresql://ledger_app@127.0.0.1:1/ledger"});
    REQUIRE_MESSAGE(status, "serve started instead of refusing: " << output);
    CHECK(status->exited);
    CHECK(status->code == 2);
    CHECK_MESSAGE(output.find("ledger: error: " + setting + "cannot connect") != std::string::npos, output);
  }
  SUBCASE("a database without the ledger's schema") {
    test::TestDatabase empty(/*migrated=*/false);
    const auto [status, output] = serve_once(database.app_url(), {"--read-database-url", empty.admin_url()});
    REQUIRE_MESSAGE(status, "serve started instead of refusing: " << output);
    CHECK(status->code == 2);
    CHECK_MESSAGE(output.find(setting) != std::string::npos, output);
    CHECK(output.find("has no ledger schema") != std::string::npos);
  }
  SUBCASE("text libpq cannot parse, from the environment") {
    const auto [status, output] =
        serve_once({test::ledger_binary(), "--database-url", database.app_url(), "serve", "--http-port", "0"},
                   {"LEDGER_READ_DATABASE_URL=postgresql://[::1"});
    REQUIRE_MESSAGE(status, "serve started instead of refusing: " << output);
    CHECK(status->code == 2);
    CHECK_MESSAGE(output.find("--read-database-url") != std::string::npos, output);
    CHECK(output.find("invalid URL") != std::string::npos);
  }
}

TEST_CASE("serve --read-database-url answers history from the replica once it has replayed the primary's head") {
  test::TestDatabase database;
  test::TestReplica replica;
  const RemovedAtEnd removed{fresh_directory("serve")};
  const fs::path& directory = removed.directory;
  test::ChildStopper children;
  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret};
  children.pids.push_back(process::spawn(
      {test::ledger_binary(), "--home", directory.string(), "--database-url", database.app_url(), "serve",
       "--http-port", "0", "--port-file", (directory / "port").string(), "--relay", "false", "--read-database-url",
       replica.url("ledger_app", database.name())},
      options));
  const std::string port = test::wait_for_file(directory / "port", children.pids.back());
  REQUIRE_MESSAGE(!port.empty(), test::read_file(directory / "serve.log"));
  test::HttpClient client(std::stoi(port));
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "e2e", {"teller", "auditor"}, std::chrono::hours(1))}};

  REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"alice","currency":"EUR"})", auth).status == 201);
  REQUIRE(history_once_replayed(client, auth).status == 200);
  CHECK(wait_for_replica_status(client, "up") == "up");

  replica.pause_replay();
  REQUIRE(client.request("POST", "/v1/accounts/alice/deposits", R"({"amount":250})", auth).status == 201);
  // The primary has two events for alice; the paused replica one: no stale page, a 504.
  const auto held = client.request("GET", "/v1/streams/account-alice/events", "", auth);
  CHECK(held.status == 504);
  const auto problem = parse(held.body);
  CHECK((problem.HasMember("code") && problem["code"].GetString() == std::string("read_model_behind")));
  CHECK(wait_for_replica_status(client, "replay_paused") == "replay_paused");

  // The replica holds the WAL already: the read waits for its replay and is answered.
  replica.resume_replay();
  const auto events = client.request("GET", "/v1/streams/account-alice/events", "", auth);
  REQUIRE_MESSAGE(events.status == 200, events.body);
  CHECK(parse(events.body)["events"].Size() == 2);
}
