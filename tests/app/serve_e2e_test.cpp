// `ledger serve` as an operator runs it: it refuses pending migrations by name, and SIGTERM
// finishes in-flight work and exits 0.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <pqxx/pqxx>
#include <rapidjson/document.h>

#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
namespace fs = std::filesystem;

namespace {
const std::string secret = "serve-e2e-secret-of-at-least-32-bytes!";

struct ServeProcess {
  pid_t pid = 0;
  int port = 0;
  std::string log;
};

// `ledger serve` with its home (and so its snapshot cache) in `directory`, on a free port.
ServeProcess start_serve(const fs::path& directory, const std::string& database_url) {
  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret};
  ServeProcess serve;
  serve.log = options.output_file;
  serve.pid = process::spawn({test::ledger_binary(), "--home", directory.string(), "--database-url",
                              database_url, "serve", "--http-port", "0", "--port-file",
                              (directory / "port").string(), "--relay", "false"},
                             options);
  for (int attempt = 0; attempt < 300 && serve.port == 0; ++attempt) {
    std::ifstream in(directory / "port");
    if (!(in >> serve.port)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return serve;
}

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document document;
  document.Parse(text.c_str());
  REQUIRE_MESSAGE(!document.HasParseError(), text);
  return document;
}
}  // namespace

TEST_CASE("serve refuses to start while migrations are pending, naming them") {
  test::TestDatabase database(/*migrated=*/false);
  std::string output;
  process::SpawnOptions options;
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret, "LEDGER_HOME=/tmp/ledger-serve-e2e-none"};
  const auto status = process::run(
      {test::ledger_binary(), "--database-url", database.admin_url(), "serve", "--http-port", "0"},
      output, options);
  CHECK(status.exited);
  CHECK(status.code == 1);
  CHECK(output.find("migrations are pending (0001_event_store") != std::string::npos);
}

TEST_CASE("serve answers, then stops on SIGTERM with exit code 0 after in-flight commands") {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-serve-e2e-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  const auto [pid, port, log] = start_serve(directory, database.app_url());
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
  test::HttpClient client(port);
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1))}};
  CHECK(client.request("POST", "/v1/accounts", R"({"id":"a","currency":"EUR"})", auth).status == 201);
  // Pipeline a few commands, signal at once, and still get every answer.
  std::string burst;
  for (int i = 0; i < 20; ++i) {
    const std::string body = R"({"amount":1})";
    burst += "POST /v1/accounts/a/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.at("Authorization") +
             "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n\r\n" + body;
  }
  client.send_raw(burst);
  const auto first = client.read();
  kill(pid, SIGTERM);
  int answered = first.status == 201 ? 1 : 0;
  for (int i = 1; i < 20; ++i) {
    try {
      if (client.read().status == 201) ++answered;
    } catch (const std::exception&) {
      break;  // the server closed the connection after finishing what it was doing
    }
  }
  CHECK(answered >= 1);
  const auto status = process::wait_for(pid, std::chrono::seconds(30));
  REQUIRE(status.has_value());
  CHECK(status->success());
  // Every answered deposit is durable.
  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  CHECK(work.exec1("SELECT count(*) FROM events WHERE stream_id = 'account-a'")[0].as<int>() >= 1 + answered);
  fs::remove_all(directory);
}

TEST_CASE("a snapshot cache directory RocksDB cannot open is reported in /health, wiped and rebuilt") {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-serve-e2e-snapshots-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory / "snapshots");
  bool corrupt = false;
  SUBCASE("a healthy (empty) directory") {}
  SUBCASE("garbage where RocksDB keeps its manifest") {
    corrupt = true;
    std::ofstream(directory / "snapshots" / "CURRENT") << "MANIFEST-000009\n";
    std::ofstream(directory / "snapshots" / "MANIFEST-000009") << "not a RocksDB manifest";
    std::ofstream(directory / "snapshots" / "IDENTITY") << "x";
  }
  const auto [pid, port, log] = start_serve(directory, database.app_url());
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
  test::HttpClient client(port);
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1))}};
  CHECK(client.request("POST", "/v1/accounts", R"({"id":"s","currency":"EUR"})", auth).status == 201);
  CHECK(client.request("POST", "/v1/accounts/s/deposits", R"({"amount":5})", auth).status == 201);

  const auto health = parse(client.request("GET", "/health").body);
  CHECK(health["status"].GetString() != std::string("unhealthy"));
  const auto& cache = health["components"]["snapshot_cache"];
  CHECK(cache["status"].GetString() == std::string("up"));
  CHECK(cache["snapshots"]["directory_rebuilt"].GetBool() == corrupt);
  CHECK(cache["state_cache"]["streams"].GetUint64() >= 1);
  CHECK(cache["state_cache"]["streams_max"].GetUint64() > 0);
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK((output.find("cannot be opened") != std::string::npos) == corrupt);

  kill(pid, SIGTERM);
  const auto status = process::wait_for(pid, std::chrono::seconds(30));
  REQUIRE(status.has_value());
  CHECK(status->success());
  fs::remove_all(directory);
}
