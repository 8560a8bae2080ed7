#pragma once
// Shared helpers for engine tests against a real PostgreSQL.

#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"
#include "test_cluster.hpp"

namespace ledger::test {

inline engine::EngineSettings engine_settings(const TestDatabase& database) {
  engine::EngineSettings settings;
  settings.database_url = database.app_url();
  settings.expiry_sweep_interval = std::chrono::milliseconds(0);
  return settings;
}

// The engine's stats once it counted `commands` commands, waiting up to 5 s: a command is
// answered before its batch is counted.
inline engine::EngineStats stats_once_counted(engine::Engine& engine, std::uint64_t commands) {
  for (int attempt = 0; attempt < 500 && engine.stats().commands < commands; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return engine.stats();
}

inline Currency eur() { return *Currency::parse("EUR"); }

inline domain::Command command(domain::SingleCommand body, std::string idempotency_key = {},
                               std::string fingerprint = {}) {
  domain::Command command{domain::CommandBody{std::move(body)}, {}};
  command.context.actor = "test";
  command.context.idempotency_key = std::move(idempotency_key);
  command.context.request_fingerprint = std::move(fingerprint);
  return command;
}

inline long long scalar(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return work.exec1(sql)[0].as<long long>();
}

inline db::ConnectionPool make_pool(const std::string& url, std::size_t connections = 6) {
  db::PoolSettings settings;
  settings.url = url;
  settings.connections_max = connections;
  return db::ConnectionPool(settings);
}

}  // namespace ledger::test
