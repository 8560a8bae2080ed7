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

// SHA-256 (hex) of a migration's up script: what schema_migrations records.
[[nodiscard]] std::string migration_checksum(const Migration& migration);

struct AppliedMigration {
  int version = 0;
  std::string name;
  std::string checksum;
  std::string applied_at;
  long long duration_ms = 0;
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
  // back, leaving the schema at the previous version, and reported as MigrationError.
  std::vector<int> up(std::optional<int> target_version = std::nullopt);
  // Reverts the `count` most recent migrations; returns the versions reverted.
  std::vector<int> down(int count = 1);

 private:
  std::string url_;
  std::vector<Migration> migrations_;
};

// Writes NNNN_name.up.sql and .down.sql (next free number) into `directory`; returns the
// path of the up file.
[[nodiscard]] std::string create_migration_files(const std::string& directory,
                                                 const std::string& name);

}  // namespace ledger::db
