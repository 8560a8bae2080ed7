#pragma once
// An in-process HTTP front on a loopback port over a real engine and PostgreSQL database.

#include <pqxx/pqxx>

#include <atomic>
#include <memory>
#include <set>

#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/api/server.hpp"
#include "ledger/db/migrations.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/projections/read_models.hpp"
#include "test_cluster.hpp"

namespace ledger::test {

inline const std::string test_jwt_secret = "test-secret-that-is-at-least-32-bytes-long";

class ServerFixture {
 public:
  explicit ServerFixture(const std::string& database_url, api::ServerSettings settings = {},
                         projections::ReadModels* read_models = nullptr,
                         std::function<api::RelayHealth()> check_relay = {},
                         const std::function<void(api::Services&)>& configure_services = {}) {
    engine::EngineSettings engine_settings;
    engine_settings.database_url = database_url;
    engine_settings.expiry_sweep_interval = std::chrono::milliseconds(0);
    engine_settings.connection_retries_max = 1;
    engine_ = std::make_unique<engine::Engine>(engine_settings);
    db::PoolSettings pool_settings;
    pool_settings.url = database_url;
    pool_settings.connections_max = 2;
    pool_settings.connect_attempts_max = 1;
    pool_settings.acquire_timeout = std::chrono::milliseconds(1'000);
    pool_settings.connect_timeout = std::chrono::milliseconds(1'000);
    pool_ = std::make_unique<db::ConnectionPool>(pool_settings);
    store_ = std::make_unique<engine::EventStore>(*pool_);
    api::Services services;
    services.engine = engine_.get();
    services.event_store = store_.get();
    services.read_models = read_models;
    services.check_relay = std::move(check_relay);
    services.check_database = [this] {
      ++database_checks_;
      return db::check_database(*pool_);
    };
    if (configure_services) configure_services(services);
    settings.port = 0;
    settings.tokens = std::make_shared<const api::TokenVerifier>(api::TokenSettings{.hs256_secret = test_jwt_secret});
    server_ = std::make_unique<api::Server>(settings, services);
    server_->start();
  }
  ~ServerFixture() {
    server_->shutdown(std::chrono::milliseconds(2'000));
    engine_->stop();
  }

  [[nodiscard]] int port() const { return server_->port(); }
  [[nodiscard]] HttpClient client() const { return HttpClient(port()); }
  api::Server& server() { return *server_; }
  // How often the server asked for the database's health (each ask runs several queries).
  [[nodiscard]] int database_checks() const { return database_checks_.load(); }

  static std::string token(const std::vector<std::string>& roles, const std::string& subject = "tester") {
    return api::issue_token(test_jwt_secret, subject, roles, std::chrono::hours(1));
  }
  static std::map<std::string, std::string> auth(const std::vector<std::string>& roles) {
    return {{"Authorization", "Bearer " + token(roles)}};
  }

 private:
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<db::ConnectionPool> pool_;
  std::unique_ptr<engine::EventStore> store_;
  std::unique_ptr<api::Server> server_;
  std::atomic<int> database_checks_{0};
};

inline long long event_count(const std::string& url) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return work.exec1("SELECT count(*) FROM events")[0].as<long long>();
}

}  // namespace ledger::test
