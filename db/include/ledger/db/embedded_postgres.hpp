#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace ledger::db {

struct EmbeddedPostgresOptions {
  // Holds data/ (the cluster), the unix socket and postgres.log.
  std::filesystem::path directory;
  // 0 picks a free loopback port.
  int port = 0;
  // Also listen on 127.0.0.1:port; false: the unix socket only (whose name holds the port, in
  // `directory`), so a cluster restarted on its port cannot find that TCP port taken meanwhile
  // by another process (a test's outage: the port is free while the cluster is down).
  bool listen_on_loopback = true;
  // Off only for tests: a crash of the machine may then lose committed data.
  bool fsync = true;
  // Directory with initdb/pg_ctl/postgres; empty finds the newest under /usr/lib/postgresql.
  std::string binary_directory;
  int max_connections = 200;
};

class EmbeddedPostgresError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A private PostgreSQL cluster for `ledger dev` and the tests: initdb on first use, then
// pg_ctl start on a free port with its socket inside `directory`, listening on loopback
// only. PostgreSQL refuses to run as root, so as root the cluster belongs to the unprivileged
// `postgres` user (or `ledger-postgres`, created when missing). A cluster left running by a
// killed process is found through postmaster.pid and stopped before starting again.
// Not thread-safe; one owner.
class EmbeddedPostgres {
 public:
  explicit EmbeddedPostgres(EmbeddedPostgresOptions options);
  // Stops the cluster if this object started it.
  ~EmbeddedPostgres();
  EmbeddedPostgres(const EmbeddedPostgres&) = delete;
  EmbeddedPostgres& operator=(const EmbeddedPostgres&) = delete;

  // initdb when needed, clean up a stale instance, start, wait until it accepts connections.
  void start();
  // Fast shutdown (rolls back open transactions, then checkpoints).
  void stop();
  [[nodiscard]] bool running() const;
  // Leaves the cluster running when this object is destroyed (another process stops it).
  void detach() noexcept { started_ = false; }
  // Adopts a cluster started earlier (by another process) on `port`.
  void adopt(int port) noexcept { port_ = port; }

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] const std::filesystem::path& socket_directory() const { return options_.directory; }
  // URL for the superuser `postgres` on database `database`, over the unix socket.
  [[nodiscard]] std::string superuser_url(const std::string& database) const;
  // URL for `role` (trust authentication inside the private cluster) on `database`.
  [[nodiscard]] std::string url(const std::string& role, const std::string& database) const;

  // Creates `database` owned by the superuser unless it exists.
  void ensure_database(const std::string& database, const std::string& template_database = "");

 private:
  void initialize();
  void stop_stale_instance();
  void run_as_owner(const std::vector<std::string>& argv, const std::string& what);

  EmbeddedPostgresOptions options_;
  std::filesystem::path data_directory_;
  std::string binary_directory_;
  std::string run_as_user_;
  int port_ = 0;
  bool started_ = false;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
[[nodiscard]] int find_free_port();

}  // namespace ledger::db
