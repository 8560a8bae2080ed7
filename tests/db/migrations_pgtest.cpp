#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include <fstream>
#include <thread>

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

  CHECK(runner.down(static_cast<int>(all.size())).size() == all.size());
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
  const auto path = db::create_migration_files(directory.string(), "add_things");
  CHECK(path == (directory / "0008_add_things.up.sql").string());
  CHECK(std::filesystem::exists(directory / "0008_add_things.down.sql"));
  CHECK_THROWS_AS((void)db::create_migration_files(directory.string(), "Bad Name"),
                  db::MigrationError);
  std::filesystem::remove_all(directory);
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
