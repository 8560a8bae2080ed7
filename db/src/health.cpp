#include "ledger/db/health.hpp"

#include <fmt/format.h>
#include <pqxx/pqxx>

#include <chrono>
#include <set>

#include "ledger/db/migrations.hpp"
#include "ledger/db/pool.hpp"

namespace ledger::db {

DatabaseHealth check_database(ConnectionPool& pool) {
  DatabaseHealth health;
  const auto stats = pool.stats();
  health.pool_open = stats.open;
  health.pool_in_use = stats.in_use;
  health.pool_max = stats.connections_max;
  const auto started = std::chrono::steady_clock::now();
  try {
    auto lease = pool.acquire();
    try {
      pqxx::read_transaction work(*lease);
      std::set<int> applied;
      for (const auto& row : work.exec("SELECT version FROM schema_migrations")) {
        applied.insert(row[0].as<int>());
      }
      for (const auto& migration : embedded_migrations()) {
        if (!applied.contains(migration.version)) {
          health.pending_migrations.push_back(fmt::format("{:04}_{}", migration.version, migration.name));
        }
      }
    } catch (const std::exception&) {
      lease.discard();
      throw;
    }
    health.reachable = true;
  } catch (const std::exception& error) {
    health.error = error.what();
    while (!health.error.empty() && health.error.back() == '\n') health.error.pop_back();
  }
  health.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  return health;
}

StandbyHealth check_standby(ConnectionPool& pool) {
  StandbyHealth health;
  try {
    auto lease = pool.acquire();
    try {
      pqxx::read_transaction work(*lease);
      // The replay functions answer NULL on a primary (pg_is_wal_replay_paused raises there).
      const auto row = work.exec1(
          "SELECT pg_is_in_recovery(), "
          "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END, "
          "CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn() "
          "THEN coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 ELSE 0 END");
      health.in_recovery = row[0].as<bool>();
      health.replay_paused = row[1].as<bool>();
      health.replay_lag_seconds = row[2].as<double>();
    } catch (const std::exception&) {
      lease.discard();
      throw;
    }
    health.reachable = true;
  } catch (const std::exception& error) {
    health.error = error.what();
    while (!health.error.empty() && health.error.back() == '\n') health.error.pop_back();
  }
  return health;
}

}  // namespace ledger::db
