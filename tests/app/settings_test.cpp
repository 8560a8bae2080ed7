// Every invalid setting stops start-up with one line naming the setting, exit code 2.
#include <doctest/doctest.h>

#include <filesystem>
#include <algorithm>
#include <fstream>

#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;

namespace {

struct Outcome {
  process::ExitStatus status;
  std::string output;
};

Outcome run_ledger(std::vector<std::string> arguments, std::vector<std::string> environment = {}) {
  arguments.insert(arguments.begin(), test::ledger_binary());
  process::SpawnOptions options;
  options.extra_environment = std::move(environment);
  options.extra_environment.push_back("LEDGER_HOME=/tmp/ledger-settings-test-empty-home");
  Outcome outcome;
  outcome.status = process::run(arguments, outcome.output, options);
  return outcome;
}

void check_one_line_error(const Outcome& outcome, const std::string& setting) {
  CHECK(outcome.status.exited);
  CHECK(outcome.status.code == 2);
  CHECK(outcome.output.find("ledger: error: ") == 0);
  CHECK(outcome.output.find(setting) != std::string::npos);
  CHECK(std::count(outcome.output.begin(), outcome.output.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("an unknown log level, as a flag or an environment variable") {
  check_one_line_error(run_ledger({"--log-level", "loud", "migrate", "status"}), "--log-level");
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_LOG_LEVEL=loud"}),
                       "--log-level");
  check_one_line_error(run_ledger({"migrate", "status", "--log-format", "xml"}), "--log-format");
}

TEST_CASE("a bad database URL") {
  check_one_line_error(run_ledger({"--database-url", "postgresql://%zz", "migrate", "status"}),
                       "--database-url");
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_DATABASE_URL=nonsense words"}),
                       "--database-url");
}

TEST_CASE("a port out of range and a malformed broker list") {
  check_one_line_error(run_ledger({"dev", "--postgres-port", "70000"}), "--postgres-port");
  check_one_line_error(run_ledger({"--kafka-brokers", "localhost", "migrate", "status"}),
                       "--kafka-brokers");
  check_one_line_error(run_ledger({"--kafka-brokers", "localhost:0", "migrate", "status"}),
                       "--kafka-brokers");
}

TEST_CASE("a bad value in the config file") {
  const auto path = std::filesystem::temp_directory_path() / "ledger-settings-test.toml";
  std::ofstream(path) << "log-level = \"chatty\"\n";
  check_one_line_error(run_ledger({"--config", path.string(), "migrate", "status"}), "--log-level");
  std::filesystem::remove(path);
}

TEST_CASE("a missing required setting outside the embedded stack") {
  check_one_line_error(run_ledger({"migrate", "status"}), "--database-url");
}

TEST_CASE("help exits 0") {
  const auto outcome = run_ledger({"--help"});
  CHECK(outcome.status.success());
  CHECK(outcome.output.find("migrate") != std::string::npos);
}

TEST_CASE("serve needs a strong JWT secret and refuses the development one outside ledger dev") {
  check_one_line_error(run_ledger({"serve"}), "--jwt-secret");
  check_one_line_error(run_ledger({"serve", "--jwt-secret", "short"}), "--jwt-secret");
  check_one_line_error(
      run_ledger({"serve"}, {"LEDGER_JWT_SECRET=ledger-development-secret-never-use-in-production"}),
      "development secret");
  check_one_line_error(run_ledger({"serve", "--http-port", "70000"}), "--http-port");
  check_one_line_error(run_ledger({"serve", "--migrate", "sometimes"}), "--migrate");
}
