#include "test_cluster.hpp"

#include <unistd.h>

#include <pqxx/pqxx>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "ledger/db/embedded_postgres.hpp"
#include "ledger/db/migrations.hpp"
#include "test_replica.hpp"

namespace ledger::test {
namespace fs = std::filesystem;

namespace {

db::EmbeddedPostgresOptions options_for(const fs::path& directory) {
  db::EmbeddedPostgresOptions options;
  options.directory = directory;
  options.fsync = false;  // test data need not survive a machine crash
  options.max_connections = 300;
  return options;
}

// A cluster this process started because no fixture cluster was given; stopped at exit.
struct OwnCluster {
  fs::path directory;
  ~OwnCluster() {
    try {
      stop_test_cluster(directory);
      fs::remove_all(directory);
    } catch (...) {
    }
  }
};

}  // namespace

int start_test_cluster(const fs::path& directory) {
  fs::create_directories(directory);
  fs::permissions(directory, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec,
                  fs::perm_options::replace);
  stop_test_replicas(directory);  // left by an interrupted run
  db::EmbeddedPostgres postgres(options_for(directory));
  postgres.start();
  {
    pqxx::connection connection(postgres.superuser_url("postgres"));
    pqxx::nontransaction work(connection);
    work.exec("DROP DATABASE IF EXISTS " + std::string(TestCluster::template_database) +
              " WITH (FORCE)");
    work.exec("CREATE DATABASE " + std::string(TestCluster::template_database));
  }
  db::MigrationRunner(postgres.superuser_url(TestCluster::template_database)).up();
  std::ofstream(directory / "cluster.port") << postgres.port() << "\n";
  postgres.detach();
  return postgres.port();
}

void stop_test_cluster(const fs::path& directory) {
  stop_test_replicas(directory);  // before the primary they stream from
  db::EmbeddedPostgres postgres(options_for(directory));
  postgres.stop();
  fs::remove(directory / "cluster.port");
}

TestCluster::TestCluster(fs::path directory, int port)
    : directory_(std::move(directory)), port_(port) {}

TestCluster& TestCluster::instance() {
  static std::unique_ptr<OwnCluster> own;
  static TestCluster cluster = [] {
    if (const char* shared = std::getenv("LEDGER_TEST_CLUSTER_DIR")) {
      const fs::path directory = shared;
      std::ifstream in(directory / "cluster.port");
      int port = 0;
      if (!(in >> port) || port <= 0) {
        throw std::runtime_error("LEDGER_TEST_CLUSTER_DIR=" + directory.string() +
                                 " holds no running test cluster (cluster.port missing); run the "
                                 "tests through ctest, which starts it, or unset the variable");
      }
      return TestCluster(directory, port);
    }
    const fs::path directory = "/tmp/ledger-test-own-" + std::to_string(getpid());
    own = std::make_unique<OwnCluster>(OwnCluster{directory});
    return TestCluster(directory, start_test_cluster(directory));
  }();
  return cluster;
}

std::string TestCluster::url(const std::string& role, const std::string& database) const {
  return "postgresql://" + role + "@/" + database + "?host=" + directory_.string() +
         "&port=" + std::to_string(port_);
}

std::string TestCluster::superuser_url(const std::string& database) const {
  return url("postgres", database);
}

TestDatabase::TestDatabase(bool migrated) {
  static std::atomic<int> counter{0};
  name_ = "test_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  auto& cluster = TestCluster::instance();
  pqxx::connection connection(cluster.superuser_url("postgres"));
  pqxx::nontransaction work(connection);
  std::string sql = "CREATE DATABASE " + name_;
  if (migrated) sql += " TEMPLATE " + std::string(TestCluster::template_database);
  work.exec(sql);
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection connection(TestCluster::instance().superuser_url("postgres"));
    pqxx::nontransaction work(connection);
    work.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (...) {
    // A database left behind goes with the cluster at the end of the run.
  }
}

std::string TestDatabase::admin_url() const { return TestCluster::instance().superuser_url(name_); }

std::string TestDatabase::app_url() const { return TestCluster::instance().url("ledger_app", name_); }

std::string ledger_binary() {
  if (const char* path = std::getenv("LEDGER_BINARY")) return path;
  throw std::runtime_error("LEDGER_BINARY is not set: run the tests through ctest");
}

}  // namespace ledger::test
