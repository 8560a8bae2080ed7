#pragma once
// What /health and /health/ready say of the database.

#include <cstddef>
#include <string>
#include <vector>

namespace ledger::db {

class ConnectionPool;

struct DatabaseHealth {
  bool reachable = false;
  double latency_ms = 0;
  std::size_t pool_open = 0;
  std::size_t pool_in_use = 0;
  std::size_t pool_max = 0;
  std::vector<std::string> pending_migrations;  // "0007_name", not yet applied
  std::string error;                            // why it is unreachable
};

// What a streaming replica says of its replay (serve --read-database-url).
struct StandbyHealth {
  bool reachable = false;
  bool in_recovery = false;    // pg_is_in_recovery(): false on a primary
  bool replay_paused = false;  // pg_is_wal_replay_paused()
  // Age of the last transaction replayed while received WAL waits to be replayed; 0 when
  // everything received is replayed (an idle primary is not lag).
  double replay_lag_seconds = 0;
  std::string error;  // why it is unreachable
};

// Asks the server behind `pool` about its replay. Never throws. Blocking.
[[nodiscard]] StandbyHealth check_standby(ConnectionPool& pool);

// Takes a connection from `pool` and compares schema_migrations with the embedded migrations.
// Never throws: an unreachable database is reported in the result. Blocking.
[[nodiscard]] DatabaseHealth check_database(ConnectionPool& pool);

}  // namespace ledger::db
