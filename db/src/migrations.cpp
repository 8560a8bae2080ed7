#include "ledger/db/migrations.hpp"

#include <openssl/evp.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "ledger/core/hex.hpp"
#include "ledger/db/pool.hpp"

namespace ledger::db {
namespace {

// Arbitrary constant that identifies the migration lock among advisory locks.
constexpr long long migration_advisory_lock_key = 0x4c45444745524d49;  // "LEDGERMI"

constexpr const char* create_table_sql = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms bigint      NOT NULL
))sql";

std::string format_version(int version) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "%04d", version);
  return buffer;
}

std::string label(int version, const std::string& name) {
  return format_version(version) + "_" + name;
}

std::unique_ptr<pqxx::connection> connect(const std::string& url) {
  PoolSettings settings;
  settings.url = url;
  settings.statement_timeout = std::chrono::milliseconds(0);  // migrations may be long
  return connect_with_retry(url, settings);
}

class AdvisoryLock {
 public:
  explicit AdvisoryLock(pqxx::connection& connection) : connection_(connection) {
    pqxx::nontransaction work(connection_);
    work.exec("SELECT pg_advisory_lock(" + std::to_string(migration_advisory_lock_key) + ")");
  }
  ~AdvisoryLock() {
    try {
      pqxx::nontransaction work(connection_);
      work.exec("SELECT pg_advisory_unlock(" + std::to_string(migration_advisory_lock_key) + ")");
    } catch (const std::exception& error) {
      spdlog::warn("releasing the migration lock failed (the session end releases it): {}",
                   error.what());
    }
  }

 private:
  pqxx::connection& connection_;
};

// Reads what is applied. `create` makes the table when missing (runners, under the lock);
// status readers (possibly the application role) only look.
MigrationStatus read_status(pqxx::connection& connection, const std::vector<Migration>& known,
                            bool create) {
  MigrationStatus status;
  if (create) {
    pqxx::work work(connection);
    work.exec(create_table_sql);
    work.commit();
  } else {
    pqxx::read_transaction work(connection);
    if (work.exec1("SELECT to_regclass('schema_migrations') IS NULL")[0].as<bool>()) {
      status.pending = known;
      return status;
    }
  }
  pqxx::read_transaction work(connection);
  const auto rows = work.exec(
      "SELECT version, name, checksum, to_char(applied_at AT TIME ZONE 'UTC', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), duration_ms FROM schema_migrations ORDER BY version");
  std::map<int, const Migration*> by_version;
  for (const auto& migration : known) by_version[migration.version] = &migration;
  std::map<int, bool> applied_versions;
  for (const auto& row : rows) {
    AppliedMigration applied{row[0].as<int>(), row[1].as<std::string>(), row[2].as<std::string>(),
                             row[3].as<std::string>(), row[4].as<long long>()};
    applied_versions[applied.version] = true;
    const auto found = by_version.find(applied.version);
    if (found == by_version.end()) {
      status.problems.push_back("applied migration " + label(applied.version, applied.name) +
                                " is unknown to this binary (database is newer)");
    } else if (migration_checksum(*found->second) != applied.checksum) {
      status.problems.push_back("applied migration " + label(applied.version, applied.name) +
                                " was edited after it was applied (checksum " +
                                applied.checksum.substr(0, 12) + "… in the database, " +
                                migration_checksum(*found->second).substr(0, 12) +
                                "… in the file)");
    }
    status.applied.push_back(std::move(applied));
  }
  for (const auto& migration : known) {
    if (!applied_versions.contains(migration.version)) status.pending.push_back(migration);
  }
  return status;
}

void throw_if_problems(const MigrationStatus& status) {
  if (status.problems.empty()) return;
  std::string message = "migrations do not match the database: ";
  for (std::size_t i = 0; i < status.problems.size(); ++i) {
    if (i > 0) message += "; ";
    message += status.problems[i];
  }
  throw MigrationError(message);
}

}  // namespace

std::string migration_checksum(const Migration& migration) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(migration.up_sql.data(), migration.up_sql.size(), digest, &length, EVP_sha256(),
             nullptr);
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest), length));
}

MigrationRunner::MigrationRunner(std::string url, std::vector<Migration> migrations)
    : url_(std::move(url)), migrations_(std::move(migrations)) {
  std::sort(migrations_.begin(), migrations_.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
}

MigrationStatus MigrationRunner::status() const {
  auto connection = connect(url_);
  return read_status(*connection, migrations_, /*create=*/false);
}

void MigrationRunner::validate() const { throw_if_problems(status()); }

std::vector<int> MigrationRunner::up(std::optional<int> target_version) {
  auto connection = connect(url_);
  AdvisoryLock lock(*connection);
  // Read the status under the lock: a runner that waited sees what the other one applied.
  const MigrationStatus status = read_status(*connection, migrations_, /*create=*/true);
  throw_if_problems(status);
  std::vector<int> applied;
  for (const auto& migration : status.pending) {
    if (target_version && migration.version > *target_version) break;
    const auto started = std::chrono::steady_clock::now();
    try {
      pqxx::work work(*connection);
      work.exec(migration.up_sql);
      const auto duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - started)
                                   .count();
      work.exec_params(
          "INSERT INTO schema_migrations (version, name, checksum, duration_ms) "
          "VALUES ($1, $2, $3, $4)",
          migration.version, migration.name, migration_checksum(migration),
          static_cast<long long>(duration_ms));
      work.commit();
    } catch (const pqxx::sql_error& error) {
      throw MigrationError("migration " + label(migration.version, migration.name) +
                           " failed and was rolled back: " + error.what());
    }
    spdlog::info("applied migration {}", label(migration.version, migration.name));
    applied.push_back(migration.version);
  }
  return applied;
}

std::vector<int> MigrationRunner::down(int count) {
  auto connection = connect(url_);
  AdvisoryLock lock(*connection);
  const MigrationStatus status = read_status(*connection, migrations_, /*create=*/true);
  throw_if_problems(status);
  std::vector<int> reverted;
  for (auto it = status.applied.rbegin(); it != status.applied.rend() && count > 0; ++it, --count) {
    const auto known = std::find_if(migrations_.begin(), migrations_.end(),
                                    [&](const Migration& m) { return m.version == it->version; });
    if (known->down_sql.empty()) {
      throw MigrationError("migration " + label(it->version, it->name) + " has no down script");
    }
    try {
      pqxx::work work(*connection);
      work.exec(known->down_sql);
      work.exec_params("DELETE FROM schema_migrations WHERE version = $1", it->version);
      work.commit();
    } catch (const pqxx::sql_error& error) {
      throw MigrationError("reverting migration " + label(it->version, it->name) +
                           " failed and was rolled back: " + error.what());
    }
    spdlog::info("reverted migration {}", label(it->version, it->name));
    reverted.push_back(it->version);
  }
  return reverted;
}

std::string create_migration_files(const std::string& directory, const std::string& name) {
  static const std::regex valid_name("[a-z0-9_]{1,60}");
  if (!std::regex_match(name, valid_name)) {
    throw MigrationError("migration name must be 1 to 60 of a-z, 0-9 and _: " + name);
  }
  namespace fs = std::filesystem;
  if (!fs::is_directory(directory)) {
    throw MigrationError("migrations directory does not exist: " + directory);
  }
  int highest = 0;
  static const std::regex file_pattern("([0-9]{4})_.*\\.up\\.sql");
  for (const auto& entry : fs::directory_iterator(directory)) {
    std::smatch match;
    const std::string file_name = entry.path().filename().string();
    if (std::regex_match(file_name, match, file_pattern)) {
      highest = std::max(highest, std::stoi(match[1].str()));
    }
  }
  const std::string base = (fs::path(directory) / label(highest + 1, name)).string();
  std::ofstream(base + ".up.sql") << "-- " << label(highest + 1, name) << ": describe the change.\n";
  std::ofstream(base + ".down.sql") << "-- Revert " << label(highest + 1, name) << ".\n";
  return base + ".up.sql";
}

}  // namespace ledger::db
