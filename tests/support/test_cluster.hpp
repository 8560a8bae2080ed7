#pragma once

#include <filesystem>
#include <memory>
#include <string>

namespace ledger::test {

// The private PostgreSQL cluster of this test run. Under ctest it is the one the pg_cluster
// fixture started (LEDGER_TEST_CLUSTER_DIR); run alone, a test binary starts its own and
// stops it at exit. Throws (failing the test with the reason) when neither works.
class TestCluster {
 public:
  static TestCluster& instance();

  [[nodiscard]] std::string superuser_url(const std::string& database) const;
  [[nodiscard]] std::string url(const std::string& role, const std::string& database) const;
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] const std::filesystem::path& directory() const { return directory_; }

  // Name of the template database that holds every migration.
  static constexpr const char* template_database = "ledger_template";

  TestCluster(std::filesystem::path directory, int port);

 private:
  std::filesystem::path directory_;
  int port_ = 0;
};

// Starts a cluster in `directory` (fsync off) with a migrated template; returns its port.
int start_test_cluster(const std::filesystem::path& directory);
void stop_test_cluster(const std::filesystem::path& directory);

// A fresh database for one test, cloned from the migrated template and dropped afterwards.
class TestDatabase {
 public:
  // `migrated` false gives an empty database (for migration tests).
  explicit TestDatabase(bool migrated = true);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  // The schema owner (a superuser inside the private cluster).
  [[nodiscard]] std::string admin_url() const;
  // The application role, which cannot change events.
  [[nodiscard]] std::string app_url() const;

 private:
  std::string name_;
};

// Path of the `ledger` binary under test (LEDGER_BINARY, set by CMake).
[[nodiscard]] std::string ledger_binary();

}  // namespace ledger::test
