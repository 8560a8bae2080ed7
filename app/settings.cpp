#include "settings.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "ledger/core/logging.hpp"
#include "ledger/db/database_url.hpp"
#include "ledger/relay/topic_admin.hpp"

namespace ledger::app {

CLI::Validator database_url_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        if (value.empty()) return {};
        if (auto problem = db::validate_database_url(value)) return "invalid URL: " + *problem;
        return {};
      },
      "URL", "database URL");
}

namespace {

// Kafka's own limits (a broker refuses more), so a typo fails here and not at the broker.
constexpr int topic_partitions_max = 100'000;
constexpr int topic_replication_factor_max = 32'767;

// Properties the ledger's guarantees rest on (an idempotent producer acknowledged by every
// replica; consumers whose offsets live with the read models) or that have a setting of their own.
constexpr std::string_view reserved_kafka_properties[] = {
    "bootstrap.servers", "metadata.broker.list", "enable.idempotence", "acks", "request.required.acks",
    "group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "transactional.id"};

// Empty when `name` may be set to `value`; otherwise why not.
std::string kafka_property_problem(const std::string& name, const std::string& value) {
  for (const auto reserved : reserved_kafka_properties) {
    if (name == reserved) return "the Kafka property " + name + " is set by ledger and cannot be changed";
  }
  // librdkafka itself judges the name and the value, now rather than when a client starts.
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const bool accepted = rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof error) == RD_KAFKA_CONF_OK;
  rd_kafka_conf_destroy(conf);
  if (!accepted) return "Kafka property " + name + ": " + error;
  return {};
}

CLI::Validator kafka_property_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        const auto equals = value.find('=');
        if (equals == std::string::npos || equals == 0) return "expected NAME=VALUE, got '" + value + "'";
        return kafka_property_problem(value.substr(0, equals), value.substr(equals + 1));
      },
      "NAME=VALUE");
}

// NAME=PATH: the value is the file's content (one trailing newline dropped), read once here, so
// that secrets (sasl.password, ssl.key.password) stay out of the command line and environment.
// The setting then holds NAME=VALUE like --kafka-property.
CLI::Validator kafka_property_file_validator() {
  return CLI::Validator(
      [](std::string& setting) -> std::string {
        const auto equals = setting.find('=');
        if (equals == std::string::npos || equals == 0 || equals + 1 == setting.size()) {
          return "expected NAME=PATH, got '" + setting + "'";
        }
        const std::string name = setting.substr(0, equals);
        const std::string path = setting.substr(equals + 1);
        std::ifstream in(path, std::ios::binary);
        if (!in) return "cannot read " + path + " (the value of Kafka property " + name + ")";
        std::string value((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (!value.empty() && value.back() == '\n') value.pop_back();
        if (!value.empty() && value.back() == '\r') value.pop_back();
        if (value.empty()) return path + " is empty (the value of Kafka property " + name + ")";
        if (auto problem = kafka_property_problem(name, value); !problem.empty()) return problem;
        setting = name + "=" + value;
        return {};
      },
      "NAME=PATH");
}

CLI::Validator broker_list_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        if (value.empty()) return {};
        std::size_t start = 0;
        while (start <= value.size()) {
          const auto comma = value.find(',', start);
          const std::string broker =
              value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
          const auto colon = broker.rfind(':');
          if (colon == std::string::npos || colon == 0) {
            return "invalid broker '" + broker + "': expected host:port";
          }
          const std::string port = broker.substr(colon + 1);
          if (port.empty() || port.size() > 5 ||
              port.find_first_not_of("0123456789") != std::string::npos ||
              std::stoi(port) < 1 || std::stoi(port) > 65535) {
            return "invalid broker '" + broker + "': port must be 1 to 65535";
          }
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
        return {};
      },
      "HOST:PORT,...", "broker list");
}

// The owner's URL when one is given: the setting, else (on the embedded stack only) dev.env's.
std::optional<std::string> given_admin_database_url(const Settings& settings) {
  if (!settings.admin_database_url.empty()) return settings.admin_database_url;
  if (settings.database_url.empty()) {
    const auto dev = read_dev_env(settings.home);
    if (auto found = dev.find("LEDGER_ADMIN_DATABASE_URL"); found != dev.end()) {
      return found->second;
    }
  }
  return std::nullopt;
}

// Closes a file descriptor when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

void add_settings(CLI::App& app, Settings& settings) {
  app.set_config("--config", "", "Optional config file (TOML or INI) with any of these settings")
      ->envname("LEDGER_CONFIG");
  app.add_option("--home", settings.home, "Directory of the embedded stack (dev.env, data)")
      ->envname("LEDGER_HOME")
      ->capture_default_str();
  app.add_option("--log-level", settings.log_level, "trace|debug|info|warn|error|critical|off")
      ->envname("LEDGER_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", settings.log_format, "text (human) or json (one object a line)")
      ->envname("LEDGER_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--database-url", settings.database_url,
                 "PostgreSQL URL the services connect with (default: the embedded stack's)")
      ->envname("LEDGER_DATABASE_URL")
      ->check(database_url_validator());
  app.add_option("--admin-database-url", settings.admin_database_url,
                 "PostgreSQL URL of the schema owner, for migrations (default: --database-url)")
      ->envname("LEDGER_ADMIN_DATABASE_URL")
      ->check(database_url_validator());
  app.add_option("--database-pool-size", settings.database_pool_size, "Connections per process")
      ->envname("LEDGER_DATABASE_POOL_SIZE")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--database-connect-timeout-ms", settings.database_connect_timeout_ms,
                 "Timeout of one connection attempt")
      ->envname("LEDGER_DATABASE_CONNECT_TIMEOUT_MS")
      ->check(CLI::Range(100, 600'000))
      ->capture_default_str();
  app.add_option("--database-statement-timeout-ms", settings.database_statement_timeout_ms,
                 "Server-side statement timeout (0: none)")
      ->envname("LEDGER_DATABASE_STATEMENT_TIMEOUT_MS")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  app.add_option("--kafka-brokers", settings.kafka_brokers,
                 "Kafka bootstrap servers host:port,... (default: the embedded stack's)")
      ->envname("LEDGER_KAFKA_BROKERS")
      ->check(broker_list_validator());
  app.add_option("--topic-prefix", settings.topic_prefix, "Kafka topic prefix (<prefix>.events)")
      ->envname("LEDGER_TOPIC_PREFIX")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            // The longest topic made from it is the JSON view's.
            return relay::topic_name_problem(value + ".events.json");
          },
          "PREFIX"));
  app.add_option("--topic-partitions", settings.topic_partitions,
                 "Partitions of the events topic (ensure-topic creates it so; serve refuses another count)")
      ->envname("LEDGER_TOPIC_PARTITIONS")
      ->check(CLI::Range(1, topic_partitions_max))
      ->capture_default_str();
  app.add_option("--topic-replication-factor", settings.topic_replication_factor,
                 "Replicas of each partition of the events topic (fewer on the broker: a warning)")
      ->envname("LEDGER_TOPIC_REPLICATION_FACTOR")
      ->check(CLI::Range(1, topic_replication_factor_max))
      ->capture_default_str();
  app.add_option("--topic-min-insync-replicas", settings.topic_min_insync_replicas,
                 "min.insync.replicas of the events topic: replicas an acknowledged event is on (acks=all)")
      ->envname("LEDGER_TOPIC_MIN_INSYNC_REPLICAS")
      ->check(CLI::Range(1, topic_replication_factor_max))
      ->capture_default_str();
  app.add_option("--topic-retention-ms", settings.topic_retention_ms,
                 "retention.ms of the events topic; -1: forever (the audit trail, see README)")
      ->envname("LEDGER_TOPIC_RETENTION_MS")
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            if (value == "-1") return {};
            std::int64_t ms = 0;
            const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), ms);
            if (error != std::errc() || end != value.data() + value.size() || ms < 1) {
              return "expected -1 (forever) or a positive number of milliseconds, got '" + value + "'";
            }
            return {};
          },
          "MS"))
      ->capture_default_str();
  app.add_option("--kafka-property", settings.kafka_properties,
                 "A librdkafka property for every producer and consumer, NAME=VALUE (repeatable; e.g. "
                 "security.protocol=SASL_SSL); in the environment separated by ';'")
      ->envname("LEDGER_KAFKA_PROPERTIES")
      ->delimiter(';')
      ->check(kafka_property_validator());
  app.add_option("--kafka-property-file", settings.kafka_secret_properties,
                 "A librdkafka property whose value is a file's content, NAME=PATH (repeatable; for "
                 "secrets such as sasl.password); in the environment separated by ';'")
      ->envname("LEDGER_KAFKA_PROPERTY_FILES")
      ->delimiter(';')
      ->check(kafka_property_file_validator());
  app.add_option("--consumer-group-prefix", settings.consumer_group_prefix,
                 "Prefix of the projectors' Kafka consumer groups (<prefix><read model>)")
      ->envname("LEDGER_CONSUMER_GROUP_PREFIX")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& value) -> std::string {
            if (value.empty() || value.size() > 200) return "expected 1 to 200 characters";
            for (const char c : value) {
              if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
                return "only letters, digits, '.', '_' and '-'";
              }
            }
            return {};
          },
          "PREFIX"));
  app.add_flag("--publish-json", settings.publish_json,
               "Also publish every event as JSON to <prefix>.events.json (relay and replay publish)")
      ->envname("LEDGER_PUBLISH_JSON");
}

std::map<std::string, std::string> kafka_property_map(const Settings& settings) {
  std::map<std::string, std::string> properties;
  for (const auto* list : {&settings.kafka_properties, &settings.kafka_secret_properties}) {
    for (const auto& property : *list) {
      const auto equals = property.find('=');
      properties[property.substr(0, equals)] = property.substr(equals + 1);
    }
  }
  return properties;
}

std::map<std::string, std::string> read_dev_env(const std::string& home) {
  std::map<std::string, std::string> values;
  std::ifstream in(std::filesystem::path(home) / "dev.env");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto equals = line.find('=');
    if (equals == std::string::npos) continue;
    std::string value = line.substr(equals + 1);
    if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') {
      value = value.substr(1, value.size() - 2);
    }
    values[line.substr(0, equals)] = value;
  }
  return values;
}

std::string resolve_database_url(const Settings& settings) {
  if (!settings.database_url.empty()) return settings.database_url;
  const auto dev = read_dev_env(settings.home);
  if (auto found = dev.find("LEDGER_DATABASE_URL"); found != dev.end()) return found->second;
  throw SettingError("--database-url (LEDGER_DATABASE_URL)",
                     "not set, and no embedded stack in " + settings.home +
                         " (start `ledger dev` or give the URL)");
}

std::string resolve_kafka_brokers(const Settings& settings) {
  if (!settings.kafka_brokers.empty()) return settings.kafka_brokers;
  const auto dev = read_dev_env(settings.home);
  if (auto found = dev.find("LEDGER_KAFKA_BROKERS"); found != dev.end()) return found->second;
  throw SettingError("--kafka-brokers (LEDGER_KAFKA_BROKERS)",
                     "not set, and no embedded stack in " + settings.home +
                         " (start `ledger dev` or give the brokers)");
}

std::string resolve_admin_database_url(const Settings& settings) {
  if (auto given = given_admin_database_url(settings)) return *given;
  return resolve_database_url(settings);
}

std::string resolve_owner_database_url(const Settings& settings) {
  if (auto given = given_admin_database_url(settings)) return *given;
  throw SettingError("--admin-database-url (LEDGER_ADMIN_DATABASE_URL)",
                     "required by --migrate=auto: migrations run as the schema owner, never as "
                     "the application role of --database-url");
}

std::string read_secret_file(const std::string& path, const std::string& setting) {
  const FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) {
    throw SettingError(setting, "cannot read " + path + ": " + std::strerror(errno));
  }
  struct stat status {};
  if (::fstat(file.get(), &status) != 0) {
    throw SettingError(setting, "cannot read " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(status.st_mode)) {
    throw SettingError(setting, "cannot read " + path + ": not a regular file");
  }
  if (static_cast<std::size_t>(status.st_size) > secret_file_bytes_max) {
    throw SettingError(setting, path + " is larger than " + std::to_string(secret_file_bytes_max) +
                                    " bytes: not a secret file");
  }
  std::string content(secret_file_bytes_max + 1, '\0');
  std::size_t length = 0;
  while (length < content.size()) {
    const ssize_t read = ::read(file.get(), content.data() + length, content.size() - length);
    if (read < 0 && errno == EINTR) continue;
    if (read < 0) throw SettingError(setting, "cannot read " + path + ": " + std::strerror(errno));
    if (read == 0) break;
    length += static_cast<std::size_t>(read);
  }
  if (length > secret_file_bytes_max) {
    throw SettingError(setting, path + " is larger than " + std::to_string(secret_file_bytes_max) +
                                    " bytes: not a secret file");
  }
  content.resize(length);
  // `echo secret > file` ends it with a newline (\r\n when written on Windows).
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r')) {
    content.pop_back();
  }
  if (content.empty()) throw SettingError(setting, path + " is empty");
  if ((status.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("{} ({}) is readable by other users than its owner: chmod 600 it", path, setting);
  }
  return content;
}

void write_private_file(const std::filesystem::path& path, const std::string& content) {
  const std::filesystem::path temporary = path.string() + ".tmp";
  std::filesystem::remove(temporary);  // a killed writer's, with whatever mode it had
  {
    const FileDescriptor file(
        ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR));
    if (file.get() < 0) {
      throw std::runtime_error("cannot create " + temporary.string() + ": " + std::strerror(errno));
    }
    std::size_t written = 0;
    while (written < content.size()) {
      const ssize_t result =
          ::write(file.get(), content.data() + written, content.size() - written);
      if (result < 0 && errno == EINTR) continue;
      if (result < 0) {
        throw std::runtime_error("cannot write " + temporary.string() + ": " +
                                 std::strerror(errno));
      }
      written += static_cast<std::size_t>(result);
    }
    if (::fsync(file.get()) != 0) {
      throw std::runtime_error("cannot write " + temporary.string() + ": " + std::strerror(errno));
    }
  }
  std::filesystem::rename(temporary, path);
}

void configure_logging(const Settings& settings, const std::string& process_name) {
  // Both were validated by CLI11 (IsMember), so the parses cannot fail here.
  logging::configure(logging::parse_format(settings.log_format).value_or(logging::Format::text),
                     logging::parse_level(settings.log_level).value_or(spdlog::level::info),
                     process_name);
}

}  // namespace ledger::app
