// The restore drill of docs/operations.md, on a private cluster of its own: WAL archiving on,
// load, a base backup with ops/backup.sh, more load, a moment T, load after it, the primary
// lost; ops/restore.sh to T on a new data directory, the stack started on it. Every command
// acknowledged before T is there and none after; `replay verify` is clean; new commands
// succeed; the read models, rebuilt by the projectors from the restored store, reconcile.
// The broker keeps the lost timeline: a relay published every event before the primary was
// lost, and the restored store's new incarnation (ops/restore.sh --finish) keeps the
// projectors from applying those messages to the positions new events take.
#include <doctest/doctest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>

#include <pqxx/pqxx>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "../engine/engine_fixture.hpp"
#include "child_processes.hpp"
#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "ledger/db/embedded_postgres.hpp"
#include "ledger/db/migrations.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/relay/relay.hpp"

using namespace ledger;
using test::read_file;
using test::wait_for_file;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::command;
using test::eur;

namespace {

using Clock = std::chrono::steady_clock;

std::string owner_of(const fs::path& path) {
  struct stat info {};
  REQUIRE(stat(path.c_str(), &info) == 0);
  const passwd* user = getpwuid(info.st_uid);
  REQUIRE(user != nullptr);
  return user->pw_name;
}

std::int64_t scalar(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::nontransaction work(connection);
  const auto row = work.exec1(sql);
  return row[0].is_null() ? 0 : row[0].as<std::int64_t>();
}

// Random transfers among the drill's accounts, each acknowledged before the next.
void transfers(Engine& engine, int count, std::mt19937& random) {
  for (int n = 0; n < count; ++n) {
    const int from = static_cast<int>(random() % 8);
    const int to = (from + 1 + static_cast<int>(random() % 7)) % 8;
    REQUIRE(engine.execute(command(Transfer{"", "d" + std::to_string(from), "d" + std::to_string(to),
                                            Amount(1 + random() % 100), eur()}))
                .accepted());
  }
}

}  // namespace

TEST_CASE("restore drill: a point-in-time restore keeps every command acknowledged before T and none after") {
  const fs::path directory = fs::temp_directory_path() / ("ledger-restore-drill-" + std::to_string(getpid()));
  fs::remove_all(directory);
  fs::create_directories(directory);
  const fs::path archive = directory / "wal-archive";
  const fs::path backups = directory / "backups";
  fs::create_directories(archive);

  db::EmbeddedPostgresOptions primary_options;
  primary_options.directory = directory / "primary";
  primary_options.fsync = false;
  db::EmbeddedPostgres primary(primary_options);
  primary.start();
  const std::string cluster_user = owner_of(primary_options.directory / "data");
  std::string output;
  REQUIRE(process::run({"chown", cluster_user, archive.string()}, output).success());
  {
    // What `ops/backup.sh --archive-settings` prints, applied with ALTER SYSTEM.
    REQUIRE(process::run({"bash", LEDGER_SOURCE_DIR "/ops/backup.sh", "--archive-settings", archive.string()}, output)
                .success());
    pqxx::connection admin(primary.superuser_url("postgres"));
    pqxx::nontransaction work(admin);
    std::istringstream lines(output);
    std::string line;
    while (std::getline(lines, line)) {
      const auto equals = line.find(" = ");
      work.exec("ALTER SYSTEM SET " + line.substr(0, equals) + " = " + line.substr(equals + 3));
    }
  }
  primary.stop();  // archive_mode needs a restart
  primary.start();
  primary.ensure_database("ledger");
  db::MigrationRunner(primary.superuser_url("ledger")).up();
  const std::string primary_app = primary.url("ledger_app", "ledger");

  // One broker for the whole drill: it outlives the primary, as Kafka outlives a lost database.
  test::ChildStopper broker_process;
  process::SpawnOptions broker_output;
  broker_output.output_file = (directory / "broker.log").string();
  broker_process.pids.push_back(process::spawn({test::ledger_binary(), "--home", directory.string(), "--log-level",
                                                "warn", "broker", "--address-file", (directory / "broker").string()},
                                               broker_output));
  const std::string brokers = wait_for_file(directory / "broker", broker_process.pids.back());
  REQUIRE_MESSAGE(!brokers.empty(), read_file(broker_output.output_file));

  std::mt19937 random(2026);
  std::int64_t head_at_target = 0;
  std::string target_time;
  {
    db::PoolSettings pool_settings;
    pool_settings.url = primary_app;
    pool_settings.connections_max = 2;
    db::ConnectionPool relay_pool(pool_settings);
    relay::RelaySettings relay_settings;
    relay_settings.brokers = brokers;
    relay_settings.poll_interval = 100ms;
    relay::Relay relay(relay_settings, relay_pool);
    relay.start();
    EngineSettings settings;
    settings.database_url = primary_app;
    settings.expiry_sweep_interval = 0ms;
    Engine engine(settings);
    for (int i = 0; i < 8; ++i) {
      REQUIRE(engine.execute(command(OpenAccount{"d" + std::to_string(i), eur()})).accepted());
      REQUIRE(engine.execute(command(Deposit{"d" + std::to_string(i), Amount(100'000)})).accepted());
    }
    transfers(engine, 100, random);

    process::SpawnOptions libpq_environment;
    libpq_environment.extra_environment = {"PGHOST=" + primary.socket_directory().string(),
                                           "PGPORT=" + std::to_string(primary.port()), "PGUSER=postgres"};
    const auto backup = process::run({"bash", LEDGER_SOURCE_DIR "/ops/backup.sh", "--target", backups.string(),
                                      "--archive", archive.string(), "--keep", "2"},
                                     output, libpq_environment);
    REQUIRE_MESSAGE(backup.success(), output);
    MESSAGE(output);

    transfers(engine, 100, random);
    // T: everything acknowledged so far committed before it.
    head_at_target = scalar(primary_app, "SELECT max(position) FROM events");
    {
      pqxx::connection connection(primary_app);
      pqxx::nontransaction work(connection);
      target_time = work.exec1("SELECT clock_timestamp()::text")[0].as<std::string>();
    }
    std::this_thread::sleep_for(100ms);
    transfers(engine, 100, random);
    // The lost timeline is on the topic: every event up to the primary's last.
    const std::int64_t last = scalar(primary_app, "SELECT max(position) FROM events");
    for (int attempt = 0; attempt < 600 && relay.status().acknowledged.value() < last; ++attempt) {
      std::this_thread::sleep_for(100ms);
    }
    REQUIRE(relay.status().acknowledged.value() == last);
  }
  const std::int64_t head_lost = scalar(primary_app, "SELECT max(position) FROM events");
  REQUIRE(head_lost > head_at_target);
  {
    // The segment holding the last commits goes to the archive (archive_timeout would, later).
    pqxx::connection admin(primary.superuser_url("postgres"));
    pqxx::nontransaction work(admin);
    const std::string segment = work.exec1("SELECT pg_walfile_name(pg_switch_wal())")[0].as<std::string>();
    bool archived = false;
    for (int attempt = 0; attempt < 300 && !archived; ++attempt) {
      archived = fs::exists(archive / segment);
      if (!archived) std::this_thread::sleep_for(100ms);
    }
    REQUIRE_MESSAGE(archived, "segment " << segment << " was not archived");
  }
  primary.stop();  // the primary is lost

  // Restore to T on a new data directory and start the cluster on it.
  const auto restore_started = Clock::now();
  const fs::path base = *fs::directory_iterator(backups / "base");
  db::EmbeddedPostgresOptions restored_options;
  restored_options.directory = directory / "restored";
  restored_options.fsync = false;
  const auto restore = process::run({"bash", LEDGER_SOURCE_DIR "/ops/restore.sh", "--backup", base.string(),
                                     "--archive", archive.string(), "--data",
                                     (restored_options.directory / "data").string(), "--time", target_time,
                                     "--owner", cluster_user},
                                    output);
  REQUIRE_MESSAGE(restore.success(), output);
  db::EmbeddedPostgres restored(restored_options);
  restored.start();
  const std::string restored_app = restored.url("ledger_app", "ledger");
  bool promoted = false;
  for (int attempt = 0; attempt < 600 && !promoted; ++attempt) {
    try {
      promoted = scalar(restored.superuser_url("postgres"), "SELECT (NOT pg_is_in_recovery())::int") == 1;
    } catch (const std::exception&) {
      // still starting up
    }
    if (!promoted) std::this_thread::sleep_for(100ms);
  }
  REQUIRE_MESSAGE(promoted, read_file(restored_options.directory / "postgres.log"));
  const double recovery_seconds = std::chrono::duration<double>(Clock::now() - restore_started).count();
  MESSAGE("restore to T and recovery took " << recovery_seconds << " s (base backup, "
                                           << head_lost - head_at_target << " events after T dropped)");

  // Before anything appends: the new incarnation.
  const auto finished = process::run({"bash", LEDGER_SOURCE_DIR "/ops/restore.sh", "--finish", "--admin-database-url",
                                      restored.superuser_url("ledger"), "--ledger", test::ledger_binary()},
                                     output);
  REQUIRE_MESSAGE(finished.success(), output);
  CHECK(output.find("new incarnation") != std::string::npos);
  CHECK(scalar(restored_app, "SELECT since_position FROM store_incarnation") == head_at_target);

  // Everything acknowledged before T, nothing after; the log verifies.
  CHECK(scalar(restored_app, "SELECT max(position) FROM events") == head_at_target);
  CHECK(scalar(restored_app, "SELECT count(*) FROM events") == head_at_target);
  const std::vector<std::string> settings = {test::ledger_binary(), "--home", directory.string(), "--log-level",
                                             "warn", "--database-url", restored_app};
  auto with = [&](std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), settings.begin(), settings.end());
    return arguments;
  };
  const auto verified = process::run(with({"replay", "verify", "--from", "1"}), output);
  CHECK_MESSAGE(verified.success(), output);

  // The stack on the restored cluster: the same broker, serve with its relay, the projectors.
  const std::string secret = "restore-drill-secret-of-at-least-32-bytes";
  const fs::path secret_file = directory / "jwt-secret";
  std::ofstream(secret_file) << secret << "\n";
  fs::permissions(secret_file, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  test::ChildStopper running;
  process::SpawnOptions serve_output;
  serve_output.output_file = (directory / "serve.log").string();
  running.pids.push_back(process::spawn(
      with({"--kafka-brokers", brokers, "serve", "--http-port", "0", "--port-file", (directory / "port").string(),
            "--jwt-secret-file", secret_file.string(), "--snapshot-directory", (directory / "snapshots").string()}),
      serve_output));
  const std::string port = wait_for_file(directory / "port", running.pids.back());
  REQUIRE_MESSAGE(!port.empty(), read_file(serve_output.output_file));
  process::SpawnOptions project_output;
  project_output.output_file = (directory / "project.log").string();
  running.pids.push_back(process::spawn(with({"--kafka-brokers", brokers, "project", "all"}), project_output));

  test::HttpClient client(std::stoi(port));
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "drill", {"teller"}, std::chrono::hours(1))}};
  const auto after_restore =
      client.request("POST", "/v1/transfers", R"({"from":"d0","to":"d1","amount":5,"currency":"EUR"})", auth);
  CHECK_MESSAGE(after_restore.status == 201, after_restore.body);
  const std::int64_t head = scalar(restored_app, "SELECT max(position) FROM events");
  CHECK(head > head_at_target);
  bool caught_up = false;
  for (int attempt = 0; attempt < 600 && !caught_up; ++attempt) {
    caught_up = scalar(restored_app, "SELECT min(watermark) FROM read.projections") >= head;
    if (!caught_up) std::this_thread::sleep_for(100ms);
  }
  CHECK_MESSAGE(caught_up, read_file(project_output.output_file));
  // They meet the lost timeline's messages (from the start of the topic, once Kafka assigned
  // them their partitions; the store filled the gaps meanwhile) and skip them.
  bool skipped = false;
  for (int attempt = 0; attempt < 600 && !skipped; ++attempt) {
    skipped = read_file(project_output.output_file).find("skipping messages of incarnation") != std::string::npos;
    if (!skipped) std::this_thread::sleep_for(100ms);
  }
  CHECK_MESSAGE(skipped, read_file(project_output.output_file));
  const auto reconciled = process::run(with({"replay", "reconcile"}), output);
  CHECK_MESSAGE(reconciled.success(), output);

  running.stop_all();  // before the cluster they use
  broker_process.stop_all();
  restored.stop();
  if (verified.success() && reconciled.success()) fs::remove_all(directory);
}
