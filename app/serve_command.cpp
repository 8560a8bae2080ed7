// `ledger serve`: the HTTP front, the command engine, the relay to Kafka and the queries.
#include <signal.h>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include "commands.hpp"
#include "jwt_settings.hpp"
#include "kafka_topic.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/api/server.hpp"
#include "ledger/api/trusted_proxies.hpp"
#include "ledger/db/database_url.hpp"
#include "ledger/db/health.hpp"
#include "ledger/db/migrations.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/relay/relay.hpp"
#include "ledger/projections/read_models.hpp"

namespace ledger::app {
namespace {

// How long the start-up check of the events topic waits for Kafka before serve starts anyway
// (Kafka down delays the read side only).
constexpr std::chrono::milliseconds topic_check_timeout{10'000};

struct ServeOptions {
  std::string http_host = "127.0.0.1";
  int http_port = 8080;
  int http_threads = 2;
  std::size_t body_bytes_max = 1 << 20;
  std::size_t connections_max = 1'024;
  int header_timeout_ms = 10'000;
  int body_timeout_ms = 30'000;
  JwtOptions jwt;
  std::string migrate = "check";
  std::string port_file;
  std::string snapshot_directory;
  std::size_t append_batch_commands_max = 2'000;
  int commit_wait_us = 0;
  std::size_t state_cache_streams_max = 500'000;
  int shutdown_grace_ms = 15'000;
  bool relay = true;
  // Create a missing events topic at start (as `ledger kafka ensure-topic`) instead of refusing.
  bool create_topic = false;
  // A streaming replica of the database that answers the read-only query routes; empty: none.
  std::string read_database_url;
  // Per actor; 0 per second: no limit (the default).
  double command_rate = 0;
  int command_burst = 50;
  double query_rate = 0;
  int query_burst = 100;
  // Addresses and CIDR blocks whose X-Forwarded-For is believed; empty: never.
  std::vector<std::string> trusted_proxies;
};

constexpr const char* read_database_url_setting = "--read-database-url (LEDGER_READ_DATABASE_URL)";

// The cluster's identity: a physical replica shares its primary's system identifier, any other
// cluster has its own. std::nullopt when the role may not read it.
std::optional<std::string> system_identifier(pqxx::connection& connection) {
  try {
    pqxx::read_transaction work(connection);
    return work.exec1("SELECT system_identifier::text FROM pg_control_system()")[0].as<std::string>();
  } catch (const pqxx::insufficient_privilege&) {
    return std::nullopt;
  }
}

// Refuses, at start, a --read-database-url that cannot serve: one that does not connect, that
// names another database cluster than --database-url (its read models would answer with
// another ledger's balances), or whose schema is not the primary's (no read models yet).
// A replica that is down later is reported by /health and answered 503
// read_replica_unavailable; this only catches a wrong setting before anything runs.
void check_read_replica(const std::string& read_url, const std::string& primary_url,
                        const db::PoolSettings& settings) {
  db::PoolSettings once = settings;
  once.connect_attempts_max = 1;
  std::unique_ptr<pqxx::connection> replica;
  try {
    replica = db::connect_with_retry(read_url, once);
  } catch (const std::exception& error) {
    throw SettingError(read_database_url_setting, error.what());
  }
  auto primary = db::connect_with_retry(primary_url, settings);
  const auto replica_id = system_identifier(*replica);
  const auto primary_id = system_identifier(*primary);
  if (replica_id && primary_id && *replica_id != *primary_id) {
    throw SettingError(read_database_url_setting,
                       db::redact_database_url(read_url) + " is not a replica of --database-url's cluster "
                       "(system identifier " + *replica_id + ", the primary's " + *primary_id + ")");
  }
  try {
    pqxx::read_transaction work(*replica);
    work.exec("SELECT 1 FROM read.projections LIMIT 1");
    work.exec("SELECT 1 FROM event_store_head");
  } catch (const std::exception& error) {
    throw SettingError(read_database_url_setting, db::redact_database_url(read_url) +
                                                      " has no ledger schema (is it a replica of the ledger's "
                                                      "database?): " + std::string(error.what()));
  }
  pqxx::read_transaction work(*replica);
  if (!work.exec1("SELECT pg_is_in_recovery()")[0].as<bool>()) {
    spdlog::warn("{} is not in recovery (not a streaming replica); queries read it anyway",
                 db::redact_database_url(read_url));
  }
}

std::vector<std::string> pending_migrations(const std::string& url) {
  std::vector<std::string> pending;
  for (const auto& migration : db::MigrationRunner(url).status().pending) {
    char label[16];
    std::snprintf(label, sizeof label, "%04d_", migration.version);
    pending.push_back(label + migration.name);
  }
  return pending;
}

}  // namespace

CommandAction register_serve_command(CLI::App& root, Settings& settings) {
  auto* serve = root.add_subcommand("serve", "Run the HTTP front and the command engine");
  auto options = std::make_shared<ServeOptions>();
  serve->add_option("--http-host", options->http_host, "Listen address")
      ->envname("LEDGER_HTTP_HOST")->capture_default_str();
  serve->add_option("--http-port", options->http_port, "Listen port (0: any free port)")
      ->envname("LEDGER_HTTP_PORT")->check(CLI::Range(0, 65535))->capture_default_str();
  serve->add_option("--http-threads", options->http_threads, "I/O threads")
      ->envname("LEDGER_HTTP_THREADS")->check(CLI::Range(1, 64))->capture_default_str();
  serve->add_option("--http-body-bytes-max", options->body_bytes_max, "Largest request body")
      ->envname("LEDGER_HTTP_BODY_BYTES_MAX")->check(CLI::Range(1'024, 64 << 20))->capture_default_str();
  serve->add_option("--http-connections-max", options->connections_max, "Open connections allowed")
      ->envname("LEDGER_HTTP_CONNECTIONS_MAX")->check(CLI::Range(1, 100'000))->capture_default_str();
  serve->add_option("--rate-limit-commands", options->command_rate,
                    "Commands a second per actor (token subject); 0: no limit; beyond it 429 rate_limited")
      ->envname("LEDGER_RATE_LIMIT_COMMANDS")->check(CLI::Range(0.0, 1'000'000.0))->capture_default_str();
  serve->add_option("--rate-limit-commands-burst", options->command_burst, "Commands an actor may send at once")
      ->envname("LEDGER_RATE_LIMIT_COMMANDS_BURST")->check(CLI::Range(1, 1'000'000))->capture_default_str();
  serve->add_option("--rate-limit-queries", options->query_rate, "Queries a second per actor; 0: no limit")
      ->envname("LEDGER_RATE_LIMIT_QUERIES")->check(CLI::Range(0.0, 1'000'000.0))->capture_default_str();
  serve->add_option("--rate-limit-queries-burst", options->query_burst, "Queries an actor may send at once")
      ->envname("LEDGER_RATE_LIMIT_QUERIES_BURST")->check(CLI::Range(1, 1'000'000))->capture_default_str();
  serve->add_option("--http-trusted-proxies", options->trusted_proxies,
                    "Proxies (addresses or CIDR blocks, IPv4 or IPv6, comma-separated) whose X-Forwarded-For "
                    "names the client for the audit and the logs; default none: the header is ignored")
      ->envname("LEDGER_HTTP_TRUSTED_PROXIES")
      ->delimiter(',')
      ->check(CLI::Validator([](std::string& entry) { return api::trusted_proxy_error(entry); }, "ADDRESS|CIDR"));
  serve->add_option("--http-header-timeout-ms", options->header_timeout_ms, "Time allowed for headers")
      ->envname("LEDGER_HTTP_HEADER_TIMEOUT_MS")->check(CLI::Range(100, 600'000))->capture_default_str();
  serve->add_option("--http-body-timeout-ms", options->body_timeout_ms, "Time allowed for a body")
      ->envname("LEDGER_HTTP_BODY_TIMEOUT_MS")->check(CLI::Range(100, 600'000))->capture_default_str();
  add_jwt_options(*serve, options->jwt, /*with_jwks=*/true);
  serve->add_option("--migrate", options->migrate, "check: refuse to start with pending migrations; auto: apply them")
      ->envname("LEDGER_MIGRATE")->check(CLI::IsMember({"check", "auto"}))->capture_default_str();
  serve->add_option("--port-file", options->port_file, "Write the bound port here once serving")
      ->envname("LEDGER_PORT_FILE");
  serve->add_option("--snapshot-directory", options->snapshot_directory,
                    "RocksDB snapshot cache (default <home>/snapshots)")
      ->envname("LEDGER_SNAPSHOT_DIRECTORY");
  serve->add_option("--append-batch-commands-max", options->append_batch_commands_max,
                    "Group commit: commands per batch")
      ->envname("LEDGER_APPEND_BATCH_COMMANDS_MAX")->check(CLI::Range(1, 100'000))->capture_default_str();
  serve->add_option("--commit-wait-us", options->commit_wait_us, "Group commit: wait for more commands")
      ->envname("LEDGER_COMMIT_WAIT_US")->check(CLI::Range(0, 1'000'000))->capture_default_str();
  serve->add_option("--state-cache-streams-max", options->state_cache_streams_max,
                    "In-memory state cache, in streams")
      ->envname("LEDGER_STATE_CACHE_STREAMS_MAX")->check(CLI::Range(0, 100'000'000))->capture_default_str();

  serve->add_option("--read-database-url", options->read_database_url,
                    "PostgreSQL URL of a streaming replica of --database-url that answers the queries (balances, "
                    "statements, loans, audit, history, as-of); default: none, the primary answers them")
      ->envname("LEDGER_READ_DATABASE_URL")->check(database_url_validator());
  serve->add_option("--relay", options->relay,
                    "Publish events to Kafka (one instance at a time; others stand by)")
      ->envname("LEDGER_RELAY")->capture_default_str();
  serve->add_flag("--create-topic", options->create_topic,
                  "Create the events topic at start when it is missing (else serve refuses: `ledger kafka ensure-topic`)")
      ->envname("LEDGER_CREATE_TOPIC");

  return [options, &settings]() -> int {
    // The stop signals are waited for by the main thread; block them before threads start.
    const sigset_t stop_signals = block_stop_signals();
    configure_logging(settings, "serve");

    const auto token_verifier = make_token_verifier(options->jwt);
    const std::string database_url = resolve_database_url(settings);

    if (options->migrate == "auto") {
      // As the schema owner only: the application role must not be able to change the schema,
      // so falling back to it would either fail half way or mean it is too powerful.
      db::MigrationRunner(resolve_owner_database_url(settings)).up();
    } else {
      const auto pending = pending_migrations(database_url);
      if (!pending.empty()) {
        std::string names;
        for (const auto& name : pending) names += (names.empty() ? "" : ", ") + name;
        throw std::runtime_error("migrations are pending (" + names +
                                 "): run `ledger migrate up` or start with --migrate=auto");
      }
    }

    if (options->relay) {
      // Before anything starts: a topic the relay must not publish into stops serve here.
      check_events_topic_at_start(settings, options->create_topic, topic_check_timeout);
    }

    engine::EngineSettings engine_settings;
    engine_settings.database_url = database_url;
    engine_settings.database_connect_timeout = std::chrono::milliseconds(settings.database_connect_timeout_ms);
    engine_settings.database_statement_timeout = std::chrono::milliseconds(settings.database_statement_timeout_ms);
    engine_settings.database_connections = static_cast<std::size_t>(std::max(2, settings.database_pool_size / 2));
    engine_settings.append_batch_commands_max = options->append_batch_commands_max;
    engine_settings.commit_wait_max = std::chrono::microseconds(options->commit_wait_us);
    engine_settings.state_cache_streams_max = options->state_cache_streams_max;
    engine_settings.snapshot_directory = options->snapshot_directory.empty()
                                             ? (std::filesystem::path(settings.home) / "snapshots").string()
                                             : options->snapshot_directory;
    engine::Engine engine(engine_settings);

    db::PoolSettings read_pool_settings;
    read_pool_settings.url = database_url;
    read_pool_settings.connections_max = static_cast<std::size_t>(std::max(2, settings.database_pool_size / 2));
    read_pool_settings.connect_timeout = std::chrono::milliseconds(settings.database_connect_timeout_ms);
    read_pool_settings.statement_timeout = std::chrono::milliseconds(settings.database_statement_timeout_ms);
    read_pool_settings.connect_attempts_max = 1;  // health answers now, retries are the caller's
    read_pool_settings.acquire_timeout = std::chrono::milliseconds(2'000);
    db::ConnectionPool read_pool(read_pool_settings);
    engine::EventStore event_store(read_pool);

    projections::ReadModels read_models(read_pool);

    // The replica's own pool, read models and event store: queries read there, the primary's
    // read_models above still serve /health's projection progress and the relay.
    std::unique_ptr<db::ConnectionPool> replica_pool;
    std::unique_ptr<engine::EventStore> replica_store;
    std::unique_ptr<projections::ReadModels> replica_models;
    if (!options->read_database_url.empty()) {
      db::PoolSettings replica_settings = read_pool_settings;
      replica_settings.url = options->read_database_url;
      check_read_replica(options->read_database_url, database_url, replica_settings);
      replica_pool = std::make_unique<db::ConnectionPool>(replica_settings);
      replica_store = std::make_unique<engine::EventStore>(*replica_pool);
      replica_models = std::make_unique<projections::ReadModels>(*replica_pool);
      spdlog::info("queries read from the replica at {}", db::redact_database_url(options->read_database_url));
    }
    std::unique_ptr<relay::Relay> relay;
    if (options->relay) {
      relay::RelaySettings relay_settings;
      relay_settings.brokers = resolve_kafka_brokers(settings);
      relay_settings.topic = settings.topic_prefix + ".events";
      relay_settings.kafka_properties = kafka_property_map(settings);
      if (settings.publish_json) relay_settings.json_topic = settings.topic_prefix + ".events.json";
      relay_settings.lowest_position_needed = [&read_models] { return GlobalPosition(read_models.lowest_watermark()); };
      relay = std::make_unique<relay::Relay>(relay_settings, read_pool);
      relay->start();
    }

    api::Services services;
    services.engine = &engine;
    services.event_store = &event_store;
    services.read_models = &read_models;
    services.check_relay = [&relay, &event_store]() {
      api::RelayHealth health;
      if (!relay) return health;
      const auto status = relay->status();
      health.enabled = true;
      health.leader = status.leader;
      health.acknowledged = status.acknowledged.value();
      health.kafka_reachable = status.kafka_reachable;
      health.kafka_error = status.kafka_error;
      health.oldest_unacknowledged_seconds = status.oldest_unacknowledged_seconds;
      health.missing_position = status.missing_position.value();
      try {
        health.head = event_store.head().position.value();
      } catch (const std::exception&) {
        health.head = health.acknowledged;  // the database check reports the outage
      }
      return health;
    };
    services.check_database = [&read_pool] { return db::check_database(read_pool); };
    if (replica_models) {
      services.read_replica.read_models = replica_models.get();
      services.read_replica.event_store = replica_store.get();
      services.read_replica.check = [&replica_pool, &replica_store, &event_store] {
        const db::StandbyHealth standby = db::check_standby(*replica_pool);
        api::ReadReplicaHealth health;
        health.reachable = standby.reachable;
        health.in_recovery = standby.in_recovery;
        health.replay_paused = standby.replay_paused;
        health.replay_lag_seconds = standby.replay_lag_seconds;
        if (!standby.reachable) return health;
        try {
          health.head = replica_store->head().position.value();
          health.lag_events = std::max<std::int64_t>(0, event_store.head().position.value() - health.head);
        } catch (const std::exception&) {
          // The heads are only what the status reports; the reachability above is its verdict.
        }
        return health;
      };
    }

    api::ServerSettings server_settings;
    server_settings.host = options->http_host;
    server_settings.port = options->http_port;
    server_settings.threads = options->http_threads;
    server_settings.body_bytes_max = options->body_bytes_max;
    server_settings.connections_max = options->connections_max;
    server_settings.header_timeout = std::chrono::milliseconds(options->header_timeout_ms);
    server_settings.body_timeout = std::chrono::milliseconds(options->body_timeout_ms);
    server_settings.tokens = token_verifier;
    server_settings.command_rate = {options->command_rate, options->command_burst};
    server_settings.query_rate = {options->query_rate, options->query_burst};
    server_settings.trusted_proxies = api::TrustedProxies(options->trusted_proxies);
    api::Server server(server_settings, services);
    server.start();
    spdlog::info("serving on http://{}:{}", options->http_host, server.port());
    log_token_settings(options->jwt, *token_verifier);
    if (!options->port_file.empty()) {
      const std::string temporary = options->port_file + ".tmp";
      std::ofstream(temporary) << server.port() << "\n";
      std::filesystem::rename(temporary, options->port_file);
    }

    int received = 0;
    sigwait(&stop_signals, &received);
    spdlog::info("shutting down (signal {}): finishing in-flight requests", received);
    server.shutdown(std::chrono::milliseconds(options->shutdown_grace_ms));
    engine.stop();  // flushes the last batch
    if (relay) relay->stop();  // after the engine: publishes what the last batch appended
    spdlog::info("stopped");
    return 0;
  };
}

}  // namespace ledger::app
