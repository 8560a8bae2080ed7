// `ledger serve` as an operator runs it: it refuses pending migrations by name, and SIGTERM
// finishes in-flight work and exits 0.
#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <thread>

#include "../relay/mock_cluster.hpp"
#include "child_processes.hpp"
#include "http_client.hpp"
#include "jwt_keys.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
namespace fs = std::filesystem;

namespace {
const std::string secret = "serve-e2e-secret-of-at-least-32-bytes!";

struct ServeProcess {
  pid_t pid = 0;
  int port = 0;
  std::string log;
};

// `ledger serve` with its home (and so its snapshot cache) in `directory`, on a free port;
// the JWT secret in the environment unless other `environment` is given. Its relay publishes
// to `kafka_brokers`; none: no relay.
ServeProcess start_serve(const fs::path& directory, const std::string& database_url,
                         const std::vector<std::string>& serve_arguments = {},
                         std::vector<std::string> environment = {"LEDGER_JWT_SECRET=" + secret},
                         const std::string& kafka_brokers = {}) {
  process::SpawnOptions options;
  options.output_file = (directory / "serve.log").string();
  options.extra_environment = std::move(environment);
  ServeProcess serve;
  serve.log = options.output_file;
  std::vector<std::string> argv = {test::ledger_binary(), "--home", directory.string(),
                                   "--database-url", database_url};
  if (!kafka_brokers.empty()) argv.insert(argv.end(), {"--kafka-brokers", kafka_brokers});
  argv.insert(argv.end(),
              {"serve", "--http-port", "0", "--port-file", (directory / "port").string(), "--relay",
               kafka_brokers.empty() ? "false" : "true"});
  argv.insert(argv.end(), serve_arguments.begin(), serve_arguments.end());
  serve.pid = process::spawn(argv, options);
  for (int attempt = 0; attempt < 300 && serve.port == 0; ++attempt) {
    std::ifstream in(directory / "port");
    if (!(in >> serve.port)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return serve;
}

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document document;
  document.Parse(text.c_str());
  REQUIRE_MESSAGE(!document.HasParseError(), text);
  return document;
}
}  // namespace

TEST_CASE("serve refuses to start while migrations are pending, naming them") {
  test::TestDatabase database(/*migrated=*/false);
  std::string output;
  process::SpawnOptions options;
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret, "LEDGER_HOME=/tmp/ledger-serve-e2e-none"};
  const auto status = process::run(
      {test::ledger_binary(), "--database-url", database.admin_url(), "serve", "--http-port", "0"},
      output, options);
  CHECK(status.exited);
  CHECK(status.code == 1);
  CHECK(output.find("migrations are pending (0001_event_store") != std::string::npos);
}

TEST_CASE("serve answers, then stops on SIGTERM with exit code 0 after in-flight commands") {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-serve-e2e-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  const auto [pid, port, log] = start_serve(directory, database.app_url());
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
  test::HttpClient client(port);
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1))}};
  CHECK(client.request("POST", "/v1/accounts", R"({"id":"a","currency":"EUR"})", auth).status == 201);
  // Pipeline a few commands, signal at once, and still get every answer.
  std::string burst;
  for (int i = 0; i < 20; ++i) {
    const std::string body = R"({"amount":1})";
    burst += "POST /v1/accounts/a/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.at("Authorization") +
             "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n\r\n" + body;
  }
  client.send_raw(burst);
  const auto first = client.read();
  kill(pid, SIGTERM);
  int answered = first.status == 201 ? 1 : 0;
  for (int i = 1; i < 20; ++i) {
    try {
      if (client.read().status == 201) ++answered;
    } catch (const std::exception&) {
      break;  // the server closed the connection after finishing what it was doing
    }
  }
  CHECK(answered >= 1);
  const auto status = process::wait_for(pid, std::chrono::seconds(30));
  REQUIRE(status.has_value());
  CHECK(status->success());
  // Every answered deposit is durable.
  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  CHECK(work.exec1("SELECT count(*) FROM events WHERE stream_id = 'account-a'")[0].as<int>() >= 1 + answered);
  fs::remove_all(directory);
}

TEST_CASE(
    "serve's /health and /metrics name a position missing from the event store while its relay "
    "waits there") {
  test::TestDatabase database;
  test::MockCluster cluster(1);
  cluster.create_topic("ledger.events", 4, 1);
  const fs::path directory = "/tmp/ledger-serve-e2e-hole-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  const std::map<std::string, std::string> auth = {
      {"Authorization",
       "Bearer " + api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1))}};
  test::ChildStopper serves;  // a failed check stops them too
  {
    // Events no relay has published: a serve without one takes the commands.
    const auto [pid, port, log] = start_serve(directory, database.app_url());
    serves.pids.push_back(pid);
    REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
    test::HttpClient client(port);
    REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"a","currency":"EUR"})", auth).status ==
            201);
    for (int i = 0; i < 6; ++i) {
      REQUIRE(client.request("POST", "/v1/accounts/a/deposits", R"({"amount":1})", auth).status ==
              201);
    }
    serves.stop_all();
  }
  // A damaged store: one of those events taken out, past the store's own triggers.
  std::int64_t missing = 0;
  {
    pqxx::connection owner(test::TestCluster::instance().superuser_url(database.name()));
    pqxx::work work(owner);
    work.exec("SET session_replication_role = replica");
    missing = work.exec1("SELECT max(position) / 2 FROM events")[0].as<std::int64_t>();
    REQUIRE(missing > 1);
    work.exec("DELETE FROM events WHERE position = " + std::to_string(missing));
    work.commit();
  }
  fs::remove(directory / "port");
  const auto [pid, port, log] = start_serve(directory, database.app_url(), {},
                                            {"LEDGER_JWT_SECRET=" + secret}, cluster.bootstrap());
  serves.pids.push_back(pid);
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
  test::HttpClient client(port);
  // Everything before the hole is acknowledged, nothing after it.
  std::string relay_status;
  std::int64_t acknowledged = 0;
  for (int attempt = 0; attempt < 300 && (relay_status != "stalled" || acknowledged != missing - 1);
       ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto health = parse(client.request("GET", "/health").body);
    relay_status = health["components"]["relay"]["status"].GetString();
    acknowledged = health["components"]["relay"]["acknowledged_position"].GetInt64();
  }
  REQUIRE_MESSAGE(relay_status == "stalled", "the relay's status stayed " << relay_status << " at "
                                                                          << acknowledged
                                                                          << "; see " << log);
  CHECK(acknowledged == missing - 1);
  const auto health = parse(client.request("GET", "/health").body);
  CHECK(health["status"].GetString() == std::string("degraded"));
  CHECK(health["components"]["relay"]["missing_position"].GetInt64() == missing);
  const std::string metrics = client.request("GET", "/metrics").body;
  CHECK(metrics.find("ledger_relay_missing_position " + std::to_string(missing) + "\n") !=
        std::string::npos);
  CHECK(client.request("GET", "/health/ready").status == 200);
  serves.stop_all();
  fs::remove_all(directory);
}

TEST_CASE("a snapshot cache directory RocksDB cannot open is reported in /health, wiped and rebuilt") {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-serve-e2e-snapshots-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory / "snapshots");
  bool corrupt = false;
  SUBCASE("a healthy (empty) directory") {}
  SUBCASE("garbage where RocksDB keeps its manifest") {
    corrupt = true;
    std::ofstream(directory / "snapshots" / "CURRENT") << "MANIFEST-000009\n";
    std::ofstream(directory / "snapshots" / "MANIFEST-000009") << "not a RocksDB manifest";
    std::ofstream(directory / "snapshots" / "IDENTITY") << "x";
  }
  const auto [pid, port, log] = start_serve(directory, database.app_url());
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
  test::HttpClient client(port);
  const std::map<std::string, std::string> auth = {
      {"Authorization", "Bearer " + api::issue_token(secret, "e2e", {"teller"}, std::chrono::hours(1))}};
  CHECK(client.request("POST", "/v1/accounts", R"({"id":"s","currency":"EUR"})", auth).status == 201);
  CHECK(client.request("POST", "/v1/accounts/s/deposits", R"({"amount":5})", auth).status == 201);

  const auto health = parse(client.request("GET", "/health").body);
  CHECK(health["status"].GetString() != std::string("unhealthy"));
  const auto& cache = health["components"]["snapshot_cache"];
  CHECK(cache["status"].GetString() == std::string("up"));
  CHECK(cache["snapshots"]["directory_rebuilt"].GetBool() == corrupt);
  CHECK(cache["state_cache"]["streams"].GetUint64() >= 1);
  CHECK(cache["state_cache"]["streams_max"].GetUint64() > 0);
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK((output.find("cannot be opened") != std::string::npos) == corrupt);

  kill(pid, SIGTERM);
  const auto status = process::wait_for(pid, std::chrono::seconds(30));
  REQUIRE(status.has_value());
  CHECK(status->success());
  fs::remove_all(directory);
}

TEST_CASE("serve --jwt-jwks-file accepts RS256 tokens of the key set as it rotates, and `ledger token`'s with the secret") {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-serve-e2e-jwks-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  const std::string issuer = "https://idp.example/realms/bank";
  const std::string audience = "ledger";
  const auto first = test::SigningKey::rsa("idp-1");
  const auto next = test::SigningKey::p256("idp-2");
  const fs::path jwks = directory / "jwks.json";
  test::replace_file(jwks, test::jwks({&first}));
  const fs::path secret_file = directory / "jwt-secret";
  test::replace_file(secret_file, secret + "\n");
  fs::permissions(secret_file, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  // The JWKS file and the issuer as flags, the audience and the secret file from the environment.
  const auto [pid, port, log] =
      start_serve(directory, database.app_url(), {"--jwt-jwks-file", jwks.string(), "--jwt-issuer", issuer},
                  {"LEDGER_JWT_AUDIENCE=" + audience, "LEDGER_JWT_SECRET_FILE=" + secret_file.string()});
  REQUIRE_MESSAGE(port > 0, "serve did not start; see " << log);
  test::HttpClient client(port);
  auto open_account = [&](const std::string& token, const std::string& id) {
    return client.request("POST", "/v1/accounts", R"({"id":")" + id + R"(","currency":"EUR"})",
                          {{"Authorization", "Bearer " + token}});
  };
  const std::string claims = R"({"sub":"idp-user","roles":["teller"],"iss":")" + issuer + R"(","aud":")" + audience +
                             R"(","exp":)" + test::epoch_seconds(std::chrono::minutes(5)) + "}";
  CHECK(open_account(first.token(claims), "jwks-1").status == 201);
  const auto refused = open_account(test::SigningKey::rsa("idp-1").token(claims), "jwks-x");  // wrong key
  CHECK(refused.status == 401);
  CHECK(refused.header("WWW-Authenticate") == "Bearer");
  CHECK(refused.body.find(R"("code":"unauthorized")") != std::string::npos);

  // `ledger token` with the same secret, issuer and audience (flags this time).
  std::string minted;
  const auto minting = process::run({test::ledger_binary(), "token", "--role", "teller", "--subject", "ops-script",
                                     "--ttl", "15m", "--jwt-secret-file", secret_file.string(), "--jwt-issuer",
                                     issuer, "--jwt-audience", audience},
                                    minted);
  REQUIRE_MESSAGE(minting.success(), minted);
  REQUIRE(minted.size() > 1);
  CHECK(minted.back() == '\n');
  minted.pop_back();
  CHECK(minted.find('\n') == std::string::npos);
  CHECK(open_account(minted, "jwks-2").status == 201);

  // The provider rotates: the next key in, the first out. Within about a second serve reads it.
  test::replace_file(jwks, test::jwks({&next}));
  const std::string next_token = next.token(claims);
  int status = 0;
  for (int attempt = 0; attempt < 60 && status != 201; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    status = open_account(next_token, "jwks-3").status;
  }
  CHECK(status == 201);
  CHECK(open_account(first.token(claims), "jwks-4").status == 401);

  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  const auto actors = work.exec(
      "SELECT stream_id, min(metadata->>'actor') FROM events WHERE stream_id LIKE 'account-jwks-%' "
      "GROUP BY stream_id ORDER BY stream_id");
  REQUIRE(actors.size() == 3);
  CHECK(actors[0][1].as<std::string>() == "idp-user");
  CHECK(actors[1][1].as<std::string>() == "ops-script");
  CHECK(actors[2][0].as<std::string>() == "account-jwks-3");

  kill(pid, SIGTERM);
  const auto stopped = process::wait_for(pid, std::chrono::seconds(30));
  REQUIRE(stopped.has_value());
  CHECK(stopped->success());
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(output.find("tokens accepted: HS256 (secret), RS256/ES256 from " + jwks.string() + " (keys idp-1)") !=
        std::string::npos);
  CHECK(output.find("reloaded: keys idp-2") != std::string::npos);
  CHECK(output.find(secret) == std::string::npos);
  fs::remove_all(directory);
}
