// The periodic jobs of ops/ (a `ledger replay verify` and a `ledger migrate status`) export
// their result for Prometheus through --metrics-file (node_exporter's textfile collector, or a
// Pushgateway): the alerts LedgerHashChainVerificationFailed and LedgerMigrationsPending read
// these files, so their names and values are checked here as the jobs run them.
#include <doctest/doctest.h>

#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <pqxx/pqxx>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "ledger/db/migrations.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
namespace fs = std::filesystem;

namespace {

struct Cli {
  const test::TestDatabase& database;
  process::ExitStatus status;
  std::string output;

  void run(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), {test::ledger_binary(), "--home", "/tmp/ledger-ops-none",
                                         "--database-url", database.app_url(), "--log-level", "warn"});
    output.clear();
    status = process::run(arguments, output);
  }
};

// The samples of a Prometheus text file: name (with labels) -> value. Fails the test on a line
// that is neither a comment nor `name value`.
std::map<std::string, double> samples(const fs::path& file) {
  std::map<std::string, double> out;
  std::ifstream in(file);
  REQUIRE_MESSAGE(in.good(), file << " was not written");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name;
    double value = 0;
    fields >> name >> value;
    REQUIRE_MESSAGE(!fields.fail(), "not a sample: " << line);
    out[name] = value;
  }
  return out;
}

fs::path scratch(const std::string& name) {
  return fs::temp_directory_path() / ("ledger-ops-" + name + "-" + std::to_string(getpid()) + ".prom");
}

}  // namespace

TEST_CASE("replay verify --metrics-file exports ok, the events checked and the first bad position") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    REQUIRE(engine.execute(command(OpenAccount{"alice", eur()})).accepted());
    REQUIRE(engine.execute(command(Deposit{"alice", Amount(1'000)})).accepted());
  }
  const auto head = test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  const fs::path file = scratch("verify");
  fs::remove(file);
  Cli cli{database, {}, {}};
  const auto before = static_cast<double>(std::time(nullptr));

  cli.run({"replay", "verify", "--metrics-file", file.string()});
  CHECK_MESSAGE(cli.status.success(), cli.output);
  auto found = samples(file);
  CHECK(found["ledger_verify_ok"] == 1);
  CHECK(found["ledger_verify_events_checked"] == static_cast<double>(head));
  CHECK(found["ledger_verify_first_bad_position"] == 0);
  CHECK(found["ledger_verify_last_run_timestamp_seconds"] >= before);
  // Readable by a collector running as another user; no temporary file left behind.
  CHECK((fs::status(file).permissions() & fs::perms::others_read) != fs::perms::none);
  CHECK(!fs::exists(file.string() + ".tmp"));

  {
    pqxx::connection connection(test::TestCluster::instance().superuser_url(database.name()));
    pqxx::work work(connection);
    work.exec("SET session_replication_role = replica");
    work.exec("UPDATE events SET metadata = '{\"actor\":\"mallory\"}' WHERE position = 2");
    work.commit();
  }
  cli.run({"replay", "verify", "--metrics-file", file.string()});
  CHECK(cli.status.code == 1);  // the exit code still says it, for whoever runs the job
  found = samples(file);
  CHECK(found["ledger_verify_ok"] == 0);
  CHECK(found["ledger_verify_first_bad_position"] == 2);
  fs::remove(file);
}

TEST_CASE("migrate status --metrics-file exports the pending migrations, as the application role") {
  test::TestDatabase database(/*migrated=*/false);
  const fs::path file = scratch("migrations");
  fs::remove(file);
  Cli cli{database, {}, {}};
  const auto all = static_cast<double>(db::embedded_migrations().size());

  SUBCASE("none applied: all pending") {
    // The unmigrated database cannot be read by the application role yet: the owner's URL.
    std::string output;
    const auto status = process::run({test::ledger_binary(), "--home", "/tmp/ledger-ops-none",
                                      "--database-url", database.admin_url(), "--log-level", "warn",
                                      "migrate", "status", "--metrics-file", file.string()},
                                     output);
    CHECK_MESSAGE(status.success(), output);
    const auto found = samples(file);
    CHECK(found.at("ledger_migrations_pending") == all);
    CHECK(found.at("ledger_migrations_problems") == 0);
  }
  SUBCASE("all applied: none pending") {
    std::string output;
    REQUIRE(process::run({test::ledger_binary(), "--home", "/tmp/ledger-ops-none", "--database-url",
                          database.admin_url(), "migrate", "up"},
                         output)
                .success());
    cli.run({"migrate", "status", "--metrics-file", file.string()});
    CHECK_MESSAGE(cli.status.success(), cli.output);
    const auto found = samples(file);
    CHECK(found.at("ledger_migrations_pending") == 0);
    CHECK(found.at("ledger_migrations_problems") == 0);
    CHECK(found.at("ledger_migrations_status_timestamp_seconds") > 0);
  }
  fs::remove(file);
}
