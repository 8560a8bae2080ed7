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
  INFO(outcome.output);
  CHECK(outcome.status.exited);
  CHECK(outcome.status.code == 2);
  CHECK(outcome.output.find("ledger: error: ") == 0);
  CHECK(outcome.output.find(setting) != std::string::npos);
  CHECK(std::count(outcome.output.begin(), outcome.output.end(), '\n') == 1);
}

const std::string development_secret = "ledger-development-secret-never-use-in-production";
const std::string strong_secret = "settings-test-secret-of-at-least-32-bytes";

// A file in a fresh temporary directory holding `content`.
std::string write_temporary_file(const std::string& name, const std::string& content) {
  const auto directory = std::filesystem::temp_directory_path() / "ledger-settings-test-files";
  std::filesystem::create_directories(directory);
  const auto path = directory / name;
  std::ofstream(path, std::ios::trunc) << content;
  // Private, as a secret file should be (serve warns about one that others can read).
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
      std::filesystem::perm_options::replace);
  return path.string();
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

TEST_CASE("a Kafka property that is malformed, unknown, badly valued or one ledger's guarantees rest on") {
  for (const std::string property : {"no-equals-sign", "=value", "no.such.property=1", "socket.timeout.ms=soon",
                                     "acks=1", "enable.idempotence=false", "enable.auto.commit=true", "group.id=x"}) {
    INFO(property);
    check_one_line_error(run_ledger({"--kafka-property", property, "migrate", "status"}), "--kafka-property");
  }
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_KAFKA_PROPERTIES=socket.timeout.ms=5000;acks=0"}),
                       "--kafka-property");
  // Accepted ones pass: what fails then is the next setting, the missing database.
  check_one_line_error(run_ledger({"--kafka-property", "socket.timeout.ms=5000", "--kafka-property",
                                   "client.id=ledger-test", "migrate", "status"}),
                       "--database-url");
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

TEST_CASE("--version prints the version on one line and exits 0, without a subcommand") {
  // The container image check (ops/image.sh) runs it first: the binary starts in the image.
  const auto outcome = run_ledger({"--version"});
  INFO(outcome.output);
  CHECK(outcome.status.success());
  CHECK(outcome.output == "ledger " LEDGER_VERSION "\n");
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

TEST_CASE("LEDGER_DEV_MODE does not let serve accept the development secret") {
  check_one_line_error(
      run_ledger({"serve"}, {"LEDGER_JWT_SECRET=" + development_secret, "LEDGER_DEV_MODE=1"}),
      "development secret");
  const auto file = write_temporary_file("development-secret", development_secret + "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", file}, {"LEDGER_DEV_MODE=1"}),
                       "development secret");
}

TEST_CASE("serve reads the JWT secret from --jwt-secret-file, trailing newline trimmed") {
  // A readable, strong secret passes the secret checks: start-up goes on to the database URL,
  // which this empty home does not have.
  const auto file = write_temporary_file("strong-secret", strong_secret + "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", file}), "--database-url");
  check_one_line_error(run_ledger({"serve"}, {"LEDGER_JWT_SECRET_FILE=" + file}), "--database-url");
  // Trimming only the newline: 31 bytes and a newline are too short.
  const auto short_file = write_temporary_file("short-secret", strong_secret.substr(0, 31) + "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", short_file}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): must be at least 32 bytes");
}

TEST_CASE("a missing, empty or unreadable secret file, or both secret settings, stop serve") {
  const auto missing = (std::filesystem::temp_directory_path() / "ledger-no-such-secret").string();
  std::filesystem::remove(missing);
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", missing}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): cannot read " + missing);
  const auto empty = write_temporary_file("empty-secret", "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", empty}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): " + empty + " is empty");
  // A directory cannot be read as a file, even by root.
  const auto directory = std::filesystem::temp_directory_path().string();
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", directory}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): cannot read " + directory);
  const auto file = write_temporary_file("strong-secret", strong_secret + "\n");
  check_one_line_error(
      run_ledger({"serve", "--jwt-secret-file", file, "--jwt-secret", strong_secret}),
      "give --jwt-secret or --jwt-secret-file, not both");
  check_one_line_error(
      run_ledger({"serve", "--jwt-secret-file", file}, {"LEDGER_JWT_SECRET=" + strong_secret}),
      "give --jwt-secret or --jwt-secret-file, not both");
}

TEST_CASE("serve --migrate=auto needs the owner's URL and never uses the application role's") {
  const auto file = write_temporary_file("strong-secret", strong_secret + "\n");
  check_one_line_error(
      run_ledger({"--database-url", "postgresql://ledger_app@127.0.0.1:1/ledger", "serve",
                  "--jwt-secret-file", file, "--migrate", "auto"},
                 {"LEDGER_DATABASE_CONNECT_TIMEOUT_MS=100"}),
      "--admin-database-url (LEDGER_ADMIN_DATABASE_URL): required by --migrate=auto");
}
