#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ledger::db {

struct Migration {
  int version = 0;
  std::string name;
  std::string up_sql;
  std::string down_sql;
};

// The migrations compiled into this binary from migrations/*.sql, ordered by version.
[[nodiscard]] const std::vector<Migration>& embedded_migrations();

// SHA-256 (hex) of a migration's up and down scripts: what schema_migrations records. Versions
// before the down script counted recorded SHA-256 of the up script alone; that is accepted for
// an applied migration whose up script matches, and `up` replaces it with this one.
[[nodiscard]] std::string migration_checksum(const Migration& migration);

struct AppliedMigration {
  int version = 0;
  std::string name;
  std::string checksum;
  std::string applied_at;
  long long duration_ms = 0;
  // The up-only checksum of an earlier version (the down script is not yet covered).
  bool checksum_is_up_only = false;
};

struct MigrationStatus {
  std::vector<AppliedMigration> applied;
  std::vector<Migration> pending;
  // Applied migrations whose file changed, or that this binary does not know.
  std::vector<std::string> problems;
};

class MigrationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What `down` does when a down script would drop a table that holds rows.
enum class DroppingRows {
  refuse,  // throw MigrationError naming each such table with its row count; revert nothing
  allow,   // `ledger migrate down --force`: drop them (each is logged)
};

// What is wrong with how the database at `url` orders text, for the operator (nullopt: it
// collates as C, byte order). The ledger's indexes are on text ids (stream ids, account ids,
// actors, idempotency keys): under a locale every comparison goes through it, and an operating
// system upgrade that changes the locale's order leaves those indexes corrupt until REINDEX.
// `MigrationRunner::up` logs it as a warning (docs/operations.md, "The database").
[[nodiscard]] std::optional<std::string> collation_warning(const std::string& url);

// Applies and reverts migrations. Each migration runs in its own transaction; concurrent
// runners are serialized by a PostgreSQL advisory lock, so each migration applies once.
class MigrationRunner {
 public:
  explicit MigrationRunner(std::string url,
                           std::vector<Migration> migrations = embedded_migrations());

  [[nodiscard]] MigrationStatus status() const;
  // Throws MigrationError naming every applied migration whose checksum changed.
  void validate() const;
  // Applies pending migrations up to `target_version` (all when unset); returns the versions
  // applied. Refuses (MigrationError) when validation fails; a failing migration is rolled
  // back, leaving the schema at the previous version, and reported as MigrationError. First
  // replaces up-only checksums of earlier versions with the up-and-down ones.
  std::vector<int> up(std::optional<int> target_version = std::nullopt);
  // Reverts the `count` most recent migrations, each in its own transaction; returns the
  // versions reverted. Which tables a down script drops is asked of PostgreSQL (the script
  // runs in a savepoint that is rolled back, and the tables before and after are compared), so
  // DROP SCHEMA … CASCADE counts too. With DroppingRows::refuse, when any of them holds rows,
  // throws MigrationError naming each with its row count before reverting anything.
  std::vector<int> down(int count = 1, DroppingRows dropping_rows = DroppingRows::refuse);

 private:
  std::string url_;
  std::vector<Migration> migrations_;
};

// Writes NNNN_name.up.sql and .down.sql (next free number) into `directory`; returns the
// path of the up file.
[[nodiscard]] std::string create_migration_files(const std::string& directory,
                                                 const std::string& name);

}  // namespace ledger::db
