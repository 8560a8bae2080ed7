// The operator's side of `ledger serve` and `ledger migrate`, run as an operator runs them:
// the JWT secret from a file, --migrate=auto as the schema owner, and a `migrate down` that
// would destroy the log.
#include <doctest/doctest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <pqxx/pqxx>

#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "ledger/db/migrations.hpp"
#include "test_cluster.hpp"

using namespace ledger;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

long long count(const std::string& url, const std::string& sql) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return work.exec1(sql)[0].as<long long>();
}

}  // namespace

TEST_CASE("serve --migrate=auto migrates as the owner and takes its secret from a file") {
  test::TestDatabase database(/*migrated=*/false);
  const fs::path directory = "/tmp/ledger-operations-e2e-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  const std::string secret = "operations-e2e-secret-of-at-least-32-bytes";
  const fs::path secret_file = directory / "jwt-secret";
  std::ofstream(secret_file) << secret << "\n";
  fs::permissions(secret_file, fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace);

  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  const pid_t pid = process::spawn(
      {test::ledger_binary(), "--home", directory.string(), "--database-url", database.app_url(),
       "--admin-database-url", database.admin_url(), "serve", "--migrate", "auto", "--http-port",
       "0", "--port-file", (directory / "port").string(), "--relay", "false", "--jwt-secret-file",
       secret_file.string()},
      options);
  int port = 0;
  for (int attempt = 0; attempt < 600 && port == 0 && process::is_alive(pid); ++attempt) {
    std::ifstream in(directory / "port");
    if (!(in >> port)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_MESSAGE(port > 0, "serve did not start: " << read_file(options.output_file));
  if (port > 0) {
    CHECK(count(database.admin_url(), "SELECT count(*) FROM schema_migrations") ==
          static_cast<long long>(db::embedded_migrations().size()));
    CHECK(count(database.admin_url(),
                "SELECT count(*) FROM pg_tables WHERE tablename = 'events' "
                "AND tableowner <> 'ledger_app'") == 1);
    // The secret is the file's content without its newline, and `ps` does not show it.
    test::HttpClient client(port);
    const auto token = api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1));
    CHECK(client
              .request("POST", "/v1/accounts", R"({"id":"a","currency":"EUR"})",
                       {{"Authorization", "Bearer " + token}})
              .status == 201);
    const auto with_newline =
        api::issue_token(secret + "\n", "e2e", {"teller"}, std::chrono::hours(1));
    CHECK(client
              .request("GET", "/v1/streams/account-a/events", "",
                       {{"Authorization", "Bearer " + with_newline}})
              .status == 401);
    const auto command_line = read_file(fs::path("/proc") / std::to_string(pid) / "cmdline");
    CHECK(command_line.find(secret) == std::string::npos);
  }
  kill(pid, SIGTERM);
  const auto status = process::wait_for(pid, std::chrono::seconds(30));
  REQUIRE(status.has_value());
  CHECK(status->success());
  fs::remove_all(directory);
}

TEST_CASE(
    "ledger migrate down names the tables it would drop and reverts nothing without --force") {
  test::TestDatabase database;
  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec(
        "INSERT INTO events VALUES (1, 'account-a', 1, gen_random_uuid(), 'opened', 1, "
        "'\\x00'::bytea, '{}', now(), decode(repeat('ab', 32), 'hex'))");
    work.commit();
  }
  const auto all = static_cast<long long>(db::embedded_migrations().size());
  auto migrate = [&](std::vector<std::string> arguments, std::string& output) {
    arguments.insert(arguments.begin(),
                     {test::ledger_binary(), "--home", "/tmp/ledger-operations-none",
                      "--database-url", database.admin_url(), "migrate"});
    output.clear();
    return process::run(arguments, output);
  };
  std::string output;
  auto status = migrate({"down", std::to_string(all)}, output);
  CHECK(status.exited);
  CHECK(status.code == 1);
  CHECK(output.find("public.events (1 row)") != std::string::npos);
  CHECK(output.find("nothing was reverted") != std::string::npos);
  CHECK(output.find("--force") != std::string::npos);
  CHECK(count(database.admin_url(), "SELECT count(*) FROM schema_migrations") == all);
  CHECK(count(database.admin_url(), "SELECT count(*) FROM events") == 1);

  status = migrate({"down", std::to_string(all), "--force"}, output);
  CHECK_MESSAGE(status.success(), output);
  CHECK(count(database.admin_url(), "SELECT count(*) FROM schema_migrations") == 0);
  CHECK(count(database.admin_url(), "SELECT count(*) FROM pg_tables WHERE tablename = 'events'") ==
        0);
}
