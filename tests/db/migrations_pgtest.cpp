#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "ledger/db/migrations.hpp"
#include "test_cluster.hpp"

using namespace ledger;

namespace {

long long count(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return work.exec1(sql)[0].as<long long>();
}

bool table_exists(const std::string& url, const std::string& table) {
  return count(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = '" +
                        table + "'") == 1;
}

void execute(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::work work(connection);
  work.exec(sql);
  work.commit();
}

// The embedded migrations plus one whose down script drops a table directly and another
// through DROP SCHEMA … CASCADE (which a parser of DROP TABLE statements would miss).
std::vector<db::Migration> with_scratch_migration() {
  auto migrations = db::embedded_migrations();
  migrations.push_back({migrations.back().version + 1, "scratch",
                        "CREATE TABLE scratch (id int); CREATE SCHEMA scratch_schema; "
                        "CREATE TABLE scratch_schema.inner_table (id int);",
                        "DROP SCHEMA scratch_schema CASCADE; DROP TABLE scratch;"});
  return migrations;
}

// What a version before the down script was checksummed recorded: SHA-256 of the up script
// alone, computed here by PostgreSQL so that it shares no code with the runner.
void record_legacy_checksums(const std::string& url, const std::vector<db::Migration>& migrations) {
  pqxx::connection connection(url);
  pqxx::work work(connection);
  for (const auto& migration : migrations) {
    work.exec_params(
        "UPDATE schema_migrations SET checksum = encode(sha256(convert_to($1, 'UTF8')), 'hex') "
        "WHERE version = $2",
        migration.up_sql, migration.version);
  }
  work.commit();
}

std::vector<std::string> stored_checksums(const std::string& url) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  std::vector<std::string> checksums;
  for (const auto& row : work.exec("SELECT checksum FROM schema_migrations ORDER BY version")) {
    checksums.push_back(row[0].as<std::string>());
  }
  return checksums;
}

}  // namespace

TEST_CASE("migrate up applies every migration once, status lists them, down and up again") {
  test::TestDatabase database(/*migrated=*/false);
  db::MigrationRunner runner(database.admin_url());
  const auto& all = db::embedded_migrations();
  REQUIRE(all.size() >= 2);

  CHECK(runner.status().pending.size() == all.size());
  CHECK(runner.up().size() == all.size());
  CHECK(runner.up().empty());
  auto status = runner.status();
  CHECK(status.applied.size() == all.size());
  CHECK(status.pending.empty());
  CHECK(status.problems.empty());
  CHECK(table_exists(database.admin_url(), "events"));
  CHECK(status.applied.front().checksum == db::migration_checksum(all.front()));

  // The event store's bookkeeping tables hold seed rows (event_store_head's genesis row), so
  // reverting everything needs the operator's --force even on a fresh database.
  CHECK(runner.down(static_cast<int>(all.size()), db::DroppingRows::allow).size() == all.size());
  CHECK_FALSE(table_exists(database.admin_url(), "events"));
  CHECK(runner.status().applied.empty());
  CHECK(runner.up().size() == all.size());
  CHECK(table_exists(database.admin_url(), "events"));
}

TEST_CASE("an applied migration whose file changed is refused by validate and up") {
  test::TestDatabase database(false);
  auto migrations = db::embedded_migrations();
  db::MigrationRunner(database.admin_url(), migrations).up();

  migrations.front().up_sql += "\n-- edited after it was applied\n";
  db::MigrationRunner edited(database.admin_url(), migrations);
  CHECK_THROWS_WITH_AS(edited.validate(), doctest::Contains("was edited after it was applied"),
                       db::MigrationError);
  CHECK_THROWS_AS(edited.up(), db::MigrationError);
  CHECK(edited.status().problems.size() == 1);
}

TEST_CASE("two concurrent runners apply each migration exactly once") {
  test::TestDatabase database(false);
  std::vector<int> first;
  std::vector<int> second;
  std::thread a([&] { first = db::MigrationRunner(database.admin_url()).up(); });
  std::thread b([&] { second = db::MigrationRunner(database.admin_url()).up(); });
  a.join();
  b.join();
  CHECK(first.size() + second.size() == db::embedded_migrations().size());
  CHECK(count(database.admin_url(), "SELECT count(*) FROM schema_migrations") ==
        static_cast<long long>(db::embedded_migrations().size()));
}

TEST_CASE("a failing migration is rolled back and leaves the schema at the previous version") {
  test::TestDatabase database(false);
  auto migrations = db::embedded_migrations();
  const int failing_version = migrations.back().version + 1;
  migrations.push_back({failing_version, "broken",
                        "CREATE TABLE half_done (id int); SELECT 1 / 0;", "DROP TABLE half_done;"});
  db::MigrationRunner runner(database.admin_url(), migrations);
  CHECK_THROWS_WITH_AS(runner.up(), doctest::Contains("_broken failed and was rolled back"),
                       db::MigrationError);
  const auto status = runner.status();
  CHECK(status.applied.size() == migrations.size() - 1);
  REQUIRE(status.pending.size() == 1);
  CHECK(status.pending.front().version == failing_version);
  CHECK_FALSE(table_exists(database.admin_url(), "half_done"));
}

TEST_CASE("create writes the next numbered pair of files") {
  const auto directory = std::filesystem::temp_directory_path() / "ledger-migrations-create";
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  std::ofstream(directory / "0007_existing.up.sql") << "SELECT 1;";
  // Files that are not NNNN_<name>.up.sql do not count toward the next number.
  for (const char* decoy : {"0042_later.down.sql", "999_short.up.sql", "00a9_letters.up.sql",
                            "0099.up.sql", "0077_notes.up.sql.orig", "12345_long.up.sql"}) {
    std::ofstream(directory / decoy) << "SELECT 1;";
  }
  const auto path = db::create_migration_files(directory.string(), "add_things");
  CHECK(path == (directory / "0008_add_things.up.sql").string());
  CHECK(std::filesystem::exists(directory / "0008_add_things.down.sql"));
  const std::string longest(60, 'a');
  CHECK(db::create_migration_files(directory.string(), longest) ==
        (directory / ("0009_" + longest + ".up.sql")).string());
  for (const std::string& bad :
       std::vector<std::string>{"Bad Name", "", "a-b", "x.sql", std::string(61, 'a')}) {
    INFO(bad);
    CHECK_THROWS_AS((void)db::create_migration_files(directory.string(), bad), db::MigrationError);
  }
  CHECK_FALSE(std::filesystem::exists(directory / "0010_x.sql.up.sql"));
  std::filesystem::remove_all(directory);
}

TEST_CASE("create refuses a name that would write outside the migrations directory, and writes nothing") {
  // The name is checked by hand, character by character: a path separator, a parent step or a
  // NUL byte (which would cut the path short in the C library) must never reach the file name.
  const auto parent = std::filesystem::temp_directory_path() / "ledger-migrations-escape";
  const auto directory = parent / "migrations";
  std::filesystem::remove_all(parent);
  std::filesystem::create_directories(directory);
  const auto files_under = [&] {
    return std::distance(std::filesystem::recursive_directory_iterator(parent),
                         std::filesystem::recursive_directory_iterator{});
  };
  const auto before = files_under();
  for (const std::string& hostile :
       std::vector<std::string>{"../escape", "sub/dir", "/tmp/absolute", "..", std::string("a\0b", 3),
                                "name\n", "caf\xc3\xa9"}) {
    INFO(hostile);
    CHECK_THROWS_AS((void)db::create_migration_files(directory.string(), hostile), db::MigrationError);
  }
  CHECK(files_under() == before);
  CHECK_FALSE(std::filesystem::exists(parent / "0001_escape.up.sql"));
  std::filesystem::remove_all(parent);
}

TEST_CASE("the application role cannot update, delete or truncate events; nobody can by default") {
  test::TestDatabase database;
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec(
        "INSERT INTO events VALUES (1, 'account-a', 1, gen_random_uuid(), 'opened', 1, "
        "'\\x00'::bytea, '{}', now(), decode(repeat('ab', 32), 'hex'))");
    work.commit();
  }
  for (const char* statement :
       {"UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"}) {
    INFO(statement);
    pqxx::connection app(database.app_url());
    pqxx::work work(app);
    CHECK_THROWS_WITH(work.exec(statement), doctest::Contains("permission denied"));
  }
  // Even the owner is stopped by the trigger.
  for (const char* statement :
       {"UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"}) {
    INFO(statement);
    pqxx::connection owner(database.admin_url());
    pqxx::work work(owner);
    CHECK_THROWS_WITH(work.exec(statement), doctest::Contains("events are immutable"));
  }
  CHECK(count(database.admin_url(), "SELECT count(*) FROM events") == 1);
  // The application role may append and read.
  pqxx::connection app(database.app_url());
  pqxx::work work(app);
  CHECK_NOTHROW(work.exec(
      "INSERT INTO events VALUES (2, 'account-a', 2, gen_random_uuid(), 'frozen', 1, "
      "'\\x00'::bytea, '{}', now(), decode(repeat('cd', 32), 'hex'))"));
  CHECK(work.exec1("SELECT count(*) FROM events")[0].as<int>() == 2);
}

TEST_CASE("migrate down refuses to drop tables holding rows, names them with their row counts") {
  test::TestDatabase database(false);
  const auto migrations = with_scratch_migration();
  const int scratch_version = migrations.back().version;
  const auto applied_count = migrations.size();
  db::MigrationRunner runner(database.admin_url(), migrations);
  REQUIRE(runner.up().size() == applied_count);

  // Tables without rows are dropped without --force.
  CHECK(runner.down(1) == std::vector<int>{scratch_version});
  CHECK_FALSE(table_exists(database.admin_url(), "scratch"));
  REQUIRE(runner.up() == std::vector<int>{scratch_version});

  execute(database.admin_url(), "INSERT INTO scratch VALUES (1), (2)");
  execute(database.admin_url(), "INSERT INTO scratch_schema.inner_table VALUES (1), (2), (3)");
  CHECK_THROWS_WITH_AS(runner.down(1), doctest::Contains("scratch_schema.inner_table (3 rows)"),
                       db::MigrationError);
  CHECK_THROWS_WITH_AS(runner.down(1), doctest::Contains("public.scratch (2 rows)"),
                       db::MigrationError);
  CHECK_THROWS_WITH_AS(runner.down(1), doctest::Contains("--force"), db::MigrationError);
  CHECK(runner.status().applied.size() == applied_count);
  CHECK(count(database.admin_url(), "SELECT count(*) FROM scratch_schema.inner_table") == 3);

  // Reverting several is checked as a whole before anything is reverted: the event store's
  // tables hold rows, so even the scratch migration stays applied.
  execute(database.admin_url(), "DELETE FROM scratch; DELETE FROM scratch_schema.inner_table");
  execute(database.admin_url(),
          "INSERT INTO events VALUES (1, 'account-a', 1, gen_random_uuid(), 'opened', 1, "
          "'\\x00'::bytea, '{}', now(), decode(repeat('ab', 32), 'hex'))");
  CHECK_THROWS_WITH_AS(runner.down(static_cast<int>(applied_count)),
                       doctest::Contains("public.events (1 row)"), db::MigrationError);
  CHECK(runner.status().applied.size() == applied_count);
  CHECK(table_exists(database.admin_url(), "scratch"));
  CHECK(count(database.admin_url(), "SELECT count(*) FROM events") == 1);

  // --force drops them.
  execute(database.admin_url(), "INSERT INTO scratch VALUES (1)");
  CHECK(runner.down(1, db::DroppingRows::allow) == std::vector<int>{scratch_version});
  CHECK_FALSE(table_exists(database.admin_url(), "scratch"));
  CHECK(runner.down(static_cast<int>(applied_count) - 1, db::DroppingRows::allow).size() ==
        applied_count - 1);
  CHECK_FALSE(table_exists(database.admin_url(), "events"));
}

TEST_CASE("the checksum covers the down script: an edited down script is refused") {
  test::TestDatabase database(false);
  auto migrations = db::embedded_migrations();
  db::MigrationRunner(database.admin_url(), migrations).up();

  migrations.front().down_sql += "\nDROP TABLE something_else;\n";
  db::MigrationRunner edited(database.admin_url(), migrations);
  CHECK_THROWS_WITH_AS(edited.validate(), doctest::Contains("was edited after it was applied"),
                       db::MigrationError);
  CHECK_THROWS_AS(edited.down(static_cast<int>(migrations.size()), db::DroppingRows::allow),
                  db::MigrationError);
  CHECK(table_exists(database.admin_url(), "events"));
}

TEST_CASE(
    "checksums recorded by an earlier version (up script only) are accepted and rewritten by up") {
  test::TestDatabase database(false);
  const auto& migrations = db::embedded_migrations();
  db::MigrationRunner runner(database.admin_url());
  REQUIRE(runner.up().size() == migrations.size());
  const auto current = stored_checksums(database.admin_url());
  record_legacy_checksums(database.admin_url(), migrations);
  const auto legacy = stored_checksums(database.admin_url());
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    INFO(migrations[i].name);
    CHECK(legacy[i] != current[i]);  // the new checksum is not the up-only one
    CHECK(current[i] == db::migration_checksum(migrations[i]));
  }

  // An older database is not a problem ...
  CHECK(runner.status().problems.empty());
  CHECK_NOTHROW(runner.validate());
  // ... but a legacy checksum of an edited up script still is.
  auto edited_migrations = migrations;
  edited_migrations.front().up_sql += "\n-- edited after it was applied\n";
  CHECK(db::MigrationRunner(database.admin_url(), edited_migrations).status().problems.size() == 1);

  // The next `migrate up` records the new checksums, even with nothing pending.
  CHECK(runner.up().empty());
  CHECK(stored_checksums(database.admin_url()) == current);
  CHECK(runner.status().problems.empty());
}

// Migration 0013: PostgreSQL applies these storage parameters itself; what can break here is
// the migration (a table left out, a value mistyped, a down script that leaves one behind).
TEST_CASE("the append-only tables vacuum every 100,000 inserted rows, freezing what they visit") {
  test::TestDatabase database(false);
  db::MigrationRunner runner(database.admin_url());
  REQUIRE(!runner.up().empty());
  const std::string append_only =
      "oid IN ('events'::regclass, 'idempotency_keys'::regclass, 'read.entries'::regclass, "
      "'read.audit'::regclass)";
  const std::string tuned = "SELECT count(*) FROM pg_class WHERE " + append_only +
                            " AND reloptions @> ARRAY['autovacuum_vacuum_insert_scale_factor=0', "
                            "'autovacuum_vacuum_insert_threshold=100000', "
                            "'autovacuum_freeze_min_age=0']";
  const std::string any_autovacuum_option =
      "array_to_string(reloptions, ',') LIKE '%autovacuum%'";
  CHECK(count(database.admin_url(), tuned) == 4);
  // Tables updated in place keep the cluster's defaults.
  CHECK(count(database.admin_url(),
              "SELECT count(*) FROM pg_class WHERE oid = 'read.balances'::regclass AND " +
                  any_autovacuum_option) == 0);

  // Down to before the migration (with what came after it) resets them; up sets them again.
  const auto& all = db::embedded_migrations();
  const auto tuning = std::find_if(all.begin(), all.end(), [](const db::Migration& m) {
    return m.name == "append_only_autovacuum";
  });
  REQUIRE(tuning != all.end());
  const auto reverted = static_cast<std::size_t>(all.end() - tuning);
  CHECK(runner.down(static_cast<int>(reverted)).size() == reverted);
  CHECK(count(database.admin_url(), "SELECT count(*) FROM pg_class WHERE " + append_only +
                                        " AND " + any_autovacuum_option) == 0);
  CHECK(runner.up().size() == reverted);
  CHECK(count(database.admin_url(), tuned) == 4);
}

TEST_CASE("a database that orders text by a locale, not C, is named with the risk; a C database is not") {
  test::TestDatabase database(false);
  CHECK_FALSE(db::collation_warning(database.admin_url()).has_value());

  // C.utf8 is built into the C library of every Debian 12 machine.
  const std::string name = database.name() + "_locale";
  const std::string admin = test::TestCluster::instance().superuser_url("postgres");
  {
    pqxx::connection connection(admin);
    pqxx::nontransaction work(connection);
    work.exec("CREATE DATABASE " + name + " TEMPLATE template0 LC_COLLATE 'C.utf8' LC_CTYPE 'C.utf8'");
  }
  const std::string url = test::TestCluster::instance().superuser_url(name);
  const auto warning = db::collation_warning(url);
  REQUIRE(warning.has_value());
  CHECK(warning->find("database " + name + " orders text by the locale \"C.utf8\", not C") != std::string::npos);
  CHECK(warning->find("REINDEX") != std::string::npos);
  // A warning, not a refusal: the migrations apply.
  CHECK_FALSE(db::MigrationRunner(url).up().empty());

  // An ICU locale orders by its library's rules, which change with its version too.
  const std::string icu = database.name() + "_icu";
  {
    pqxx::connection connection(admin);
    pqxx::nontransaction work(connection);
    work.exec("CREATE DATABASE " + icu +
              " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'");
  }
  const auto icu_warning = db::collation_warning(test::TestCluster::instance().superuser_url(icu));
  REQUIRE(icu_warning.has_value());
  CHECK(icu_warning->find("orders text by the ICU locale \"und\", not C") != std::string::npos);
  {
    pqxx::connection connection(admin);
    pqxx::nontransaction work(connection);
    work.exec("DROP DATABASE " + name + " WITH (FORCE)");
    work.exec("DROP DATABASE " + icu + " WITH (FORCE)");
  }
}
