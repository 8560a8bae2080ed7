#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace ledger::app {

// Every setting is a flag, an environment variable LEDGER_<NAME> and a key of the optional
// config file (--config, TOML or INI). Defaults run the embedded stack under --home.
struct Settings {
  std::string home = ".ledger";
  std::string log_level = "info";
  std::string log_format = "text";

  std::string database_url;        // empty: the embedded cluster of `ledger dev` (dev.env)
  std::string admin_database_url;  // owner role for migrations; empty: database_url
  int database_pool_size = 16;
  int database_connect_timeout_ms = 5'000;
  int database_statement_timeout_ms = 30'000;

  std::string kafka_brokers;  // empty: the development broker of `ledger dev` (dev.env)
  std::string topic_prefix = "ledger";
  // The events topic as `ledger kafka ensure-topic` creates it and `serve` expects it
  // (relay/README.md, "The events topic"). The partition default matches `ledger broker`'s.
  int topic_partitions = 4;
  int topic_replication_factor = 3;
  int topic_min_insync_replicas = 2;
  // -1: kept forever. Events are the audit trail; see the README on retention.
  std::int64_t topic_retention_ms = -1;
  // Also publish every event as JSON to <prefix>.events.json (docs/consumers.md).
  bool publish_json = false;
  // librdkafka properties for every producer and consumer (SASL, TLS, timeouts), NAME=VALUE;
  // validated when parsed (kafka_property_validator).
  std::vector<std::string> kafka_properties;
  // The same from files (--kafka-property-file NAME=PATH): NAME=VALUE once parsed.
  std::vector<std::string> kafka_secret_properties;
  // Projectors' consumer groups are <prefix><read model>.
  std::string consumer_group_prefix = "ledger-projection-";
};

// The --kafka-property and --kafka-property-file settings as a map.
[[nodiscard]] std::map<std::string, std::string> kafka_property_map(const Settings& settings);

// Accepts what libpq parses (postgresql:// URI or key=value conninfo) and empty; the error
// quotes none of the text (it may hold a password).
[[nodiscard]] CLI::Validator database_url_validator();

// Registers the shared settings on `app` (inherited by subcommands through fallthrough).
void add_settings(CLI::App& app, Settings& settings);

// Reads KEY=value lines of <home>/dev.env; empty when it does not exist.
[[nodiscard]] std::map<std::string, std::string> read_dev_env(const std::string& home);

// The database URL to use: the setting, else the embedded stack's from dev.env. Throws
// CLI::ValidationError (exit code 2) naming the setting when there is none.
[[nodiscard]] std::string resolve_database_url(const Settings& settings);
// The schema owner's URL: the setting, else the embedded stack's, else the database URL (for
// `ledger migrate`, where the operator's --database-url is the owner's).
[[nodiscard]] std::string resolve_admin_database_url(const Settings& settings);
// The schema owner's URL for `serve --migrate=auto`: the setting or the embedded stack's, never
// the application role's --database-url. Throws SettingError when there is none.
[[nodiscard]] std::string resolve_owner_database_url(const Settings& settings);
// The Kafka bootstrap servers: the setting, else the embedded stack's from dev.env.
[[nodiscard]] std::string resolve_kafka_brokers(const Settings& settings);

// A secret file larger than this is refused (it is not a secret file).
constexpr std::size_t secret_file_bytes_max = 4'096;

// The content of a secret file with its trailing newline trimmed. Throws SettingError naming
// `setting` when the file is missing, unreadable, not a regular file, too large or empty.
[[nodiscard]] std::string read_secret_file(const std::string& path, const std::string& setting);

// Replaces `path` with `content`, readable and writable by the owner only: the file is created
// with mode 0600 (never chmod-ed afterwards, so it is never readable by others, not even for a
// moment) under a temporary name and renamed over `path`.
void write_private_file(const std::filesystem::path& path, const std::string& content);

// Installs logging per --log-format/--log-level for a process called `process_name`.
void configure_logging(const Settings& settings, const std::string& process_name);

// A one-line start-up error: "ledger: error: <setting>: <problem>", exit code 2.
class SettingError : public std::runtime_error {
 public:
  SettingError(const std::string& setting, const std::string& problem)
      : std::runtime_error(setting + ": " + problem) {}
};

}  // namespace ledger::app
