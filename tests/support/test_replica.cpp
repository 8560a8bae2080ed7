#include "test_replica.hpp"

#include <unistd.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "ledger/core/process.hpp"
#include "ledger/db/embedded_postgres.hpp"
#include "test_cluster.hpp"

namespace ledger::test {
namespace fs = std::filesystem;

namespace {

constexpr auto catch_up_timeout = std::chrono::seconds(30);
constexpr auto catch_up_poll_interval = std::chrono::milliseconds(10);

db::EmbeddedPostgresOptions replica_options(const fs::path& directory, int port) {
  db::EmbeddedPostgresOptions options;
  options.directory = directory;
  options.port = port;
  options.fsync = false;
  // A hot standby needs at least the primary's max_connections (test_cluster.cpp).
  options.max_connections = 300;
  // Every client reaches it through its unix socket, in the test's own directory: start()
  // after stop() keeps the port, and a TCP port could be taken by then (health_pgtest's case).
  options.listen_on_loopback = false;
  return options;
}

// The newest server binaries, as EmbeddedPostgres picks them.
fs::path postgres_binaries() {
  const fs::path root = "/usr/lib/postgresql";
  int newest = 0;
  if (fs::is_directory(root)) {
    for (const auto& entry : fs::directory_iterator(root)) {
      const std::string name = entry.path().filename().string();
      if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit) &&
          fs::exists(entry.path() / "bin" / "pg_basebackup")) {
        newest = std::max(newest, std::stoi(name));
      }
    }
  }
  if (newest == 0) throw std::runtime_error("no pg_basebackup under /usr/lib/postgresql (run ops/setup.sh)");
  return root / std::to_string(newest) / "bin";
}

fs::path next_replica_directory() {
  static std::atomic<int> counter{0};
  return TestCluster::instance().directory() / "replicas" /
         (std::to_string(getpid()) + "-" + std::to_string(counter++));
}

}  // namespace

TestReplica::TestReplica() : directory_(next_replica_directory()) {
  auto& cluster = TestCluster::instance();
  fs::remove_all(directory_);
  fs::create_directories(directory_);
  fs::permissions(directory_, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec,
                  fs::perm_options::replace);
  // -R writes standby.signal and primary_conninfo (the primary's socket and port, user
  // postgres: initdb's pg_hba.conf trusts local replication connections); -X stream copies the
  // WAL written during the backup; -c fast does not wait for a spread checkpoint.
  const std::string primary = "host=" + cluster.directory().string() + " port=" + std::to_string(cluster.port()) +
                              " user=postgres";
  std::string output;
  const auto status = process::run({(postgres_binaries() / "pg_basebackup").string(), "-d", primary, "-D",
                                    (directory_ / "data").string(), "-R", "-X", "stream", "-c", "fast",
                                    "--no-sync"},
                                   output);
  if (!status.success()) {
    fs::remove_all(directory_);
    throw std::runtime_error("pg_basebackup failed (exit " + std::to_string(status.code) + "): " + output);
  }
  // EmbeddedPostgres finds data/PG_VERSION, skips initdb, hands the files to the cluster's user
  // (the backup ran as this process's) and starts the standby.
  postgres_ = std::make_unique<db::EmbeddedPostgres>(replica_options(directory_, 0));
  postgres_->start();
}

TestReplica::~TestReplica() {
  try {
    postgres_->stop();
  } catch (...) {
    // stop_test_cluster stops it with the cluster.
  }
  std::error_code ignored;
  fs::remove_all(directory_, ignored);
}

std::string TestReplica::url(const std::string& role, const std::string& database) const {
  return postgres_->url(role, database);
}

int TestReplica::port() const { return postgres_->port(); }

void TestReplica::catch_up() const {
  std::string target;
  {
    pqxx::connection connection(TestCluster::instance().superuser_url("postgres"));
    pqxx::nontransaction work(connection);
    target = work.exec1("SELECT pg_current_wal_lsn()::text")[0].as<std::string>();
  }
  pqxx::connection connection(url("postgres", "postgres"));
  const auto deadline = std::chrono::steady_clock::now() + catch_up_timeout;
  while (true) {
    pqxx::nontransaction work(connection);
    const auto row = work.exec_params1("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn, pg_last_wal_replay_lsn()::text",
                                       target);
    if (row[0].as<bool>()) return;
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("the replica replayed only to " + row[1].as<std::string>("none") + ", not to " +
                               target + ", within 30 s");
    }
    std::this_thread::sleep_for(catch_up_poll_interval);
  }
}

void TestReplica::pause_replay() const {
  pqxx::connection connection(url("postgres", "postgres"));
  pqxx::nontransaction(connection).exec("SELECT pg_wal_replay_pause()");
}

void TestReplica::resume_replay() const {
  pqxx::connection connection(url("postgres", "postgres"));
  pqxx::nontransaction(connection).exec("SELECT pg_wal_replay_resume()");
}

void TestReplica::stop() { postgres_->stop(); }

void TestReplica::start() {
  const int port = postgres_->port();
  postgres_ = std::make_unique<db::EmbeddedPostgres>(replica_options(directory_, port));
  postgres_->start();
}

void stop_test_replicas(const fs::path& cluster_directory) {
  const fs::path replicas = cluster_directory / "replicas";
  if (!fs::is_directory(replicas)) return;
  for (const auto& entry : fs::directory_iterator(replicas)) {
    try {
      db::EmbeddedPostgres(replica_options(entry.path(), 0)).stop();
    } catch (...) {
      // Removing its files below leaves a postmaster without a data directory; it exits.
    }
  }
  std::error_code ignored;
  fs::remove_all(replicas, ignored);
}

}  // namespace ledger::test
