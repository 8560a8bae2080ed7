#pragma once
// A PostgreSQL streaming replica of the test cluster, for the tests of `serve
// --read-database-url`.

#include <filesystem>
#include <memory>
#include <string>

namespace ledger::db {
class EmbeddedPostgres;
}

namespace ledger::test {

// A hot standby of TestCluster::instance(), started on demand by the tests that need one: a
// base backup (pg_basebackup -R -X stream, so it follows the primary by streaming replication)
// into a directory of its own under the cluster's `replicas/`, started on its own free port with
// its own socket, as the cluster's user. The destructor stops and removes it; a replica left by a
// killed test goes with the cluster (stop_test_cluster stops every replica under it first).
// Databases created on the primary after the backup appear once replayed (catch_up). One owner;
// not thread-safe.
class TestReplica {
 public:
  TestReplica();
  ~TestReplica();
  TestReplica(const TestReplica&) = delete;
  TestReplica& operator=(const TestReplica&) = delete;

  [[nodiscard]] std::string url(const std::string& role, const std::string& database) const;
  [[nodiscard]] int port() const;
  [[nodiscard]] const std::filesystem::path& directory() const { return directory_; }

  // Waits (at most catch_up_timeout) until the replica has replayed everything the primary had
  // written when called; throws when it does not.
  void catch_up() const;
  // pg_wal_replay_pause() / pg_wal_replay_resume(): WAL still arrives, but nothing new becomes
  // visible on the replica while paused.
  void pause_replay() const;
  void resume_replay() const;
  // Stops the replica (fast shutdown) and starts it again on the same port.
  void stop();
  void start();

 private:
  std::filesystem::path directory_;
  std::unique_ptr<db::EmbeddedPostgres> postgres_;
};

// Stops and removes every replica under the cluster `directory` (from stop_test_cluster, and at
// start for replicas an interrupted run left behind).
void stop_test_replicas(const std::filesystem::path& cluster_directory);

}  // namespace ledger::test
