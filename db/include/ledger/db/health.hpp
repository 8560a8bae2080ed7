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

// Takes a connection from `pool` and compares schema_migrations with the embedded migrations.
// Never throws: an unreachable database is reported in the result. Blocking.
[[nodiscard]] DatabaseHealth check_database(ConnectionPool& pool);

}  // namespace ledger::db
