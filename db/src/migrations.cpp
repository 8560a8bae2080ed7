#include "ledger/db/migrations.hpp"

#include <openssl/evp.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string_view>

#include "ledger/core/assert.hpp"
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

std::string sha256_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest), length));
}

// What versions before the down script was checksummed recorded.
std::string up_only_checksum(const Migration& migration) {
  return sha256_hex(migration.up_sql);
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
    } else if (applied.checksum == migration_checksum(*found->second)) {
      // Matches the up and down scripts of this binary.
    } else if (applied.checksum == up_only_checksum(*found->second)) {
      applied.checksum_is_up_only = true;  // recorded by an earlier version; `up` rewrites it
    } else {
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

const Migration& find_known(const std::vector<Migration>& known, int version) {
  const auto found = std::find_if(known.begin(), known.end(),
                                  [&](const Migration& m) { return m.version == version; });
  // read_status reports an applied version this binary does not know as a problem, and every
  // caller refuses problems before it gets here.
  LEDGER_ASSERT(found != known.end(), "an applied migration this binary does not know");
  return *found;
}

// Replaces the up-only checksums of earlier versions with the up-and-down ones, so that from
// now on an edited down script is refused too.
void rewrite_up_only_checksums(pqxx::connection& connection, const MigrationStatus& status,
                               const std::vector<Migration>& known) {
  pqxx::work work(connection);
  int rewritten = 0;
  for (const auto& applied : status.applied) {
    if (!applied.checksum_is_up_only) continue;
    work.exec_params("UPDATE schema_migrations SET checksum = $1 WHERE version = $2",
                     migration_checksum(find_known(known, applied.version)), applied.version);
    ++rewritten;
  }
  work.commit();
  if (rewritten > 0) {
    spdlog::info(
        "recorded the up-and-down checksums of {} migration(s) an earlier version "
        "checksummed by their up script only",
        rewritten);
  }
}

struct Table {
  long long oid = 0;
  std::string schema;
  std::string name;
  long long rows = 0;
};

std::map<long long, Table> user_tables(pqxx::transaction_base& work) {
  std::map<long long, Table> tables;
  // Ordinary and partitioned tables outside PostgreSQL's own schemas.
  const auto rows = work.exec(
      "SELECT c.oid::bigint, n.nspname, c.relname FROM pg_class c "
      "JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' "
      "AND n.nspname NOT LIKE 'pg\\_%'");
  for (const auto& row : rows) {
    Table table{row[0].as<long long>(), row[1].as<std::string>(), row[2].as<std::string>()};
    tables.emplace(table.oid, std::move(table));
  }
  return tables;
}

// The tables that running `down_scripts` in order would drop, with their row counts. Asks
// PostgreSQL rather than parsing the scripts: they run in a savepoint that is rolled back,
// and the tables before and after are compared by oid (so a table dropped through DROP
// SCHEMA … CASCADE, or dropped and created again empty, counts). With `lock`, each dropped
// table is locked as DROP TABLE would lock it before its rows are counted, so that no row
// can arrive between the count and the drop.
std::vector<Table> tables_dropped_by(pqxx::work& work, const std::vector<std::string>& down_scripts,
                                     bool lock) {
  const auto before = user_tables(work);
  std::map<long long, Table> after;
  {
    pqxx::subtransaction trial(work, "ledger_down_trial");
    for (const auto& script : down_scripts) trial.exec(script);
    after = user_tables(trial);
    trial.abort();
  }
  std::vector<Table> dropped;
  for (const auto& [oid, table] : before) {
    if (!after.contains(oid)) dropped.push_back(table);
  }
  std::sort(dropped.begin(), dropped.end(), [](const Table& a, const Table& b) {
    return std::tie(a.schema, a.name) < std::tie(b.schema, b.name);
  });
  for (auto& table : dropped) {
    const std::string qualified = work.quote_name(table.schema) + "." + work.quote_name(table.name);
    if (lock) work.exec("LOCK TABLE " + qualified + " IN ACCESS EXCLUSIVE MODE");
    table.rows = work.exec1("SELECT count(*) FROM " + qualified)[0].as<long long>();
  }
  return dropped;
}

std::vector<Table> holding_rows(std::vector<Table> tables) {
  std::erase_if(tables, [](const Table& table) { return table.rows == 0; });
  return tables;
}

std::string describe(const std::vector<Table>& tables) {
  std::string text;
  for (const auto& table : tables) {
    if (!text.empty()) text += ", ";
    text += table.schema + "." + table.name + " (" + std::to_string(table.rows) +
            (table.rows == 1 ? " row)" : " rows)");
  }
  return text;
}

MigrationError refusal(const std::string& what, const std::vector<Table>& tables) {
  return MigrationError("reverting " + what +
                        " would drop tables that hold rows: " + describe(tables) +
                        "; nothing was reverted (`ledger migrate down --force` drops them)");
}

}  // namespace

std::string migration_checksum(const Migration& migration) {
  // The up script's length first, so that no text moved from one script to the other keeps
  // the checksum.
  return sha256_hex(std::to_string(migration.up_sql.size()) + "\n" + migration.up_sql +
                    migration.down_sql);
}

MigrationRunner::MigrationRunner(std::string url, std::vector<Migration> migrations)
    : url_(std::move(url)), migrations_(std::move(migrations)) {
  std::sort(migrations_.begin(), migrations_.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
}

std::optional<std::string> collation_warning(const std::string& url) {
  auto connection = connect(url);
  pqxx::read_transaction work(*connection);
  // Through to_jsonb: the provider column exists from PostgreSQL 15 on, and the ICU locale's
  // column is daticulocale in 15 and 16, datlocale from 17 on.
  const auto row = work.exec1(
      "SELECT current_database(), d.datcollate, coalesce(j->>'datlocprovider', 'c'), "
      "coalesce(j->>'daticulocale', j->>'datlocale', '') "
      "FROM pg_database d CROSS JOIN LATERAL to_jsonb(d) AS j WHERE d.datname = "
      "current_database()");
  const std::string provider = row[2].as<std::string>();
  const std::string collate = row[1].as<std::string>();
  // 'b': PostgreSQL 17's builtin provider, code-point order that no library upgrade changes.
  if (provider == "b" || (provider == "c" && (collate == "C" || collate == "POSIX")))
    return std::nullopt;
  const std::string locale =
      provider == "i" ? "the ICU locale \"" + row[3].as<std::string>() + "\"" : "the locale \"" + collate + "\"";
  return "database " + row[0].as<std::string>() + " orders text by " + locale +
         ", not C: every index on the ledger's ids (stream ids, account ids, actors, idempotency keys) "
         "compares through it on each append and projection, and an operating-system upgrade that "
         "changes its order leaves those indexes corrupt until REINDEX. Create the ledger's database "
         "with LC_COLLATE 'C' (docs/operations.md, \"The database\")";
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
  rewrite_up_only_checksums(*connection, status, migrations_);
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
  // Advice only: a check that fails must not fail a migration that succeeded.
  try {
    if (const auto warning = collation_warning(url_)) spdlog::warn("{}", *warning);
  } catch (const std::exception& error) {
    spdlog::warn("could not check the database's collation: {}", error.what());
  }
  return applied;
}

std::vector<int> MigrationRunner::down(int count, DroppingRows dropping_rows) {
  auto connection = connect(url_);
  AdvisoryLock lock(*connection);
  const MigrationStatus status = read_status(*connection, migrations_, /*create=*/true);
  throw_if_problems(status);
  // The migrations to revert, newest first.
  std::vector<const Migration*> to_revert;
  for (auto it = status.applied.rbegin(); it != status.applied.rend() && count > 0; ++it, --count) {
    const Migration& known = find_known(migrations_, it->version);
    if (known.down_sql.empty()) {
      throw MigrationError("migration " + label(it->version, it->name) + " has no down script");
    }
    to_revert.push_back(&known);
  }
  if (to_revert.empty()) return {};

  if (dropping_rows == DroppingRows::refuse) {
    // All of them are checked before the first is reverted, so a refusal changes nothing.
    std::vector<std::string> scripts;
    for (const Migration* migration : to_revert) scripts.push_back(migration->down_sql);
    const std::string what = to_revert.size() == 1
                                 ? label(to_revert.front()->version, to_revert.front()->name)
                                 : label(to_revert.front()->version, to_revert.front()->name) +
                                       " down to " +
                                       label(to_revert.back()->version, to_revert.back()->name);
    std::vector<Table> holding;
    try {
      pqxx::work work(*connection);
      holding = holding_rows(tables_dropped_by(work, scripts, /*lock=*/false));
    } catch (const pqxx::sql_error& error) {
      throw MigrationError("reverting " + what + " failed and was rolled back: " + error.what());
    }
    if (!holding.empty()) throw refusal(what, holding);
  }

  std::vector<int> reverted;
  for (const Migration* migration : to_revert) {
    const std::string name = label(migration->version, migration->name);
    try {
      pqxx::work work(*connection);
      // Checked again inside the transaction that drops them, with the tables locked: rows
      // may have arrived since the check above.
      const auto holding =
          holding_rows(tables_dropped_by(work, {migration->down_sql}, /*lock=*/true));
      if (!holding.empty()) {
        if (dropping_rows == DroppingRows::refuse) throw refusal(name, holding);
        spdlog::warn("reverting migration {} drops tables that hold rows (--force): {}", name,
                     describe(holding));
      }
      work.exec(migration->down_sql);
      work.exec_params("DELETE FROM schema_migrations WHERE version = $1", migration->version);
      work.commit();
    } catch (const pqxx::sql_error& error) {
      throw MigrationError("reverting migration " + name +
                           " failed and was rolled back: " + error.what());
    }
    spdlog::info("reverted migration {}", name);
    reverted.push_back(migration->version);
  }
  return reverted;
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A new migration's name: 1 to 60 of a-z, 0-9 and _ (checked by hand: std::regex cost this file
// about 9 s of its compile time).
bool valid_migration_name(std::string_view name) {
  return !name.empty() && name.size() <= 60 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || is_digit(c) || c == '_';
  });
}

// The version of a file named NNNN_<anything>.up.sql; nullopt for any other name.
std::optional<int> up_file_version(std::string_view file_name) {
  constexpr std::string_view suffix = ".up.sql";
  if (file_name.size() < 5 + suffix.size() || file_name[4] != '_' || !file_name.ends_with(suffix)) {
    return std::nullopt;
  }
  int version = 0;
  for (const char c : file_name.substr(0, 4)) {
    if (!is_digit(c)) return std::nullopt;
    version = version * 10 + (c - '0');
  }
  return version;
}

}  // namespace

std::string create_migration_files(const std::string& directory, const std::string& name) {
  if (!valid_migration_name(name)) {
    throw MigrationError("migration name must be 1 to 60 of a-z, 0-9 and _: " + name);
  }
  namespace fs = std::filesystem;
  if (!fs::is_directory(directory)) {
    throw MigrationError("migrations directory does not exist: " + directory);
  }
  int highest = 0;
  for (const auto& entry : fs::directory_iterator(directory)) {
    if (const auto version = up_file_version(entry.path().filename().string())) {
      highest = std::max(highest, *version);
    }
  }
  const std::string base = (fs::path(directory) / label(highest + 1, name)).string();
  std::ofstream(base + ".up.sql") << "-- " << label(highest + 1, name) << ": describe the change.\n";
  std::ofstream(base + ".down.sql") << "-- Revert " << label(highest + 1, name) << ".\n";
  return base + ".up.sql";
}

}  // namespace ledger::db
