// The Grafana dashboard and the alert rules of ops/ name metrics: every one must be something
// the binary exports. The stack runs as deployed (`ledger broker` standing in for Kafka,
// `ledger serve` with its relay and a snapshot directory, `ledger project all`), takes a few
// commands so that labelled series exist, and its /metrics is scraped together with the
// periodic jobs' --metrics-file output; tests/ops/check_deployment.py then compares the names
// used in ops/grafana/ledger-dashboard.json and ops/prometheus/alerts.yml with those scraped.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "child_processes.hpp"
#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using test::read_file;
using test::wait_for_file;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

TEST_CASE("every metric the dashboard and the alerts use is exported by serve or the jobs") {
  test::TestDatabase database;
  const fs::path directory = fs::temp_directory_path() / ("ledger-ops-dashboard-" + std::to_string(getpid()));
  fs::remove_all(directory);
  fs::create_directories(directory);
  const std::string secret = "ops-dashboard-secret-of-at-least-32-bytes";
  const fs::path secret_file = directory / "jwt-secret";
  std::ofstream(secret_file) << secret << "\n";
  fs::permissions(secret_file, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  const std::vector<std::string> settings = {test::ledger_binary(), "--home", directory.string(), "--log-level",
                                             "warn", "--database-url", database.app_url()};
  auto with = [&](std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), settings.begin(), settings.end());
    return arguments;
  };
  test::ChildStopper running;

  process::SpawnOptions broker_output;
  broker_output.output_file = (directory / "broker.log").string();
  running.pids.push_back(process::spawn(
      with({"broker", "--address-file", (directory / "broker").string()}), broker_output));
  const std::string brokers = wait_for_file(directory / "broker", running.pids.back());
  REQUIRE_MESSAGE(!brokers.empty(), read_file(broker_output.output_file));

  process::SpawnOptions serve_output;
  serve_output.output_file = (directory / "serve.log").string();
  running.pids.push_back(process::spawn(
      with({"--kafka-brokers", brokers, "serve", "--http-port", "0", "--port-file", (directory / "port").string(),
            "--jwt-secret-file", secret_file.string(), "--snapshot-directory", (directory / "snapshots").string()}),
      serve_output));
  const std::string port_text = wait_for_file(directory / "port", running.pids.back());
  REQUIRE_MESSAGE(!port_text.empty(), read_file(serve_output.output_file));
  const int port = std::stoi(port_text);

  process::SpawnOptions project_output;
  project_output.output_file = (directory / "project.log").string();
  running.pids.push_back(process::spawn(with({"--kafka-brokers", brokers, "project", "all"}), project_output));

  // A few commands: command counters, latency buckets, engine batches get their series.
  test::HttpClient client(port);
  const auto token = api::issue_token(secret, "ops", {"teller"}, std::chrono::hours(1));
  const std::map<std::string, std::string> auth = {{"Authorization", "Bearer " + token}};
  REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"a","currency":"EUR"})", auth).status == 201);
  REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"b","currency":"EUR"})", auth).status == 201);
  REQUIRE(client.request("POST", "/v1/accounts/a/deposits", R"({"amount":1000})", auth).status == 201);
  CHECK(client.request("POST", "/v1/transfers", R"({"id":"t-1","from":"a","to":"b","amount":10,"currency":"EUR"})", auth)
            .status == 201);

  // The read side reports once the projectors have checkpointed what the relay published.
  std::string scrape;
  for (int attempt = 0; attempt < 200; ++attempt) {
    scrape = client.request("GET", "/metrics").body;
    if (scrape.find("ledger_projection_watermark{projection=\"audit\"}") != std::string::npos &&
        scrape.find("ledger_relay_leader 1") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  CHECK_MESSAGE(scrape.find("ledger_relay_leader 1") != std::string::npos, read_file(serve_output.output_file));
  CHECK_MESSAGE(scrape.find("ledger_projection_watermark{projection=\"audit\"}") != std::string::npos,
                read_file(project_output.output_file));
  std::ofstream(directory / "serve.prom") << scrape;

  // The periodic jobs, as ops/ runs them.
  std::string output;
  CHECK_MESSAGE(process::run(with({"replay", "verify", "--metrics-file", (directory / "verify.prom").string()}),
                             output)
                    .success(),
                output);
  CHECK_MESSAGE(process::run(with({"migrate", "status", "--metrics-file", (directory / "migrations.prom").string()}),
                             output)
                    .success(),
                output);

  const auto checked = process::run({"python3", std::string(LEDGER_SOURCE_DIR) + "/tests/ops/check_deployment.py",
                                     "metrics", LEDGER_SOURCE_DIR, (directory / "serve.prom").string(),
                                     (directory / "verify.prom").string(), (directory / "migrations.prom").string()},
                                    output);
  CHECK_MESSAGE(checked.success(), output);
  MESSAGE(output);
  if (checked.success()) fs::remove_all(directory);
}
