// `ledger serve` as an operator runs it: it refuses pending migrations by name, and SIGTERM
// finishes in-flight work and exits 0.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <pqxx/pqxx>

#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
namespace fs = std::filesystem;

namespace {
const std::string secret = "serve-e2e-secret-of-at-least-32-bytes!";
}

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
  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret};
  const pid_t pid = process::spawn({test::ledger_binary(), "--home", directory.string(),
                                    "--database-url", database.app_url(), "serve", "--http-port",
                                    "0", "--port-file", (directory / "port").string(),
                                    "--relay", "false"},
                                   options);
  int port = 0;
  for (int attempt = 0; attempt < 300 && port == 0; ++attempt) {
    std::ifstream in(directory / "port");
    if (!(in >> port)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << options.output_file);
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
