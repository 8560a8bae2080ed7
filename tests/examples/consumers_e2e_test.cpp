// The example consumers of docs/consumers.md (examples/consumers/), run as a downstream team
// runs them against a `ledger dev` stack: two instances of each in one consumer group, load
// going on, one instance SIGKILLed and restarted, and in the end each consumer's balance table
// equals the ledger's balances, with every account stream applied exactly to its last version,
// although the whole log was published a second time on the way.
#include <doctest/doctest.h>
#include <signal.h>

#include <pqxx/pqxx>

#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "dev_stack.hpp"
#include "http_client.hpp"
#include "test_cluster.hpp"
#include "ledger/core/process.hpp"

using namespace ledger;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr int accounts = 12;

struct Balances {
  std::int64_t debits_posted = 0, credits_posted = 0, debits_pending = 0, credits_pending = 0;
  std::int64_t version = 0;
  friend bool operator==(const Balances&, const Balances&) = default;
};
using BalanceTable = std::map<std::string, Balances>;

// Commands over HTTP as a client sends them: each with its own Idempotency-Key, retried with
// that key while the answer is not definitive.
class Load {
 public:
  Load(int port, std::string token) : client_(port), token_(std::move(token)) {}

  void post(const std::string& path, const std::string& body) {
    const std::string key = "consumers-e2e-" + std::to_string(++sent_);
    for (int attempt = 0; attempt < 50; ++attempt) {
      const auto answer = client_.request("POST", path, body,
                                          {{"Authorization", "Bearer " + token_}, {"Idempotency-Key", key}});
      if (answer.status < 500) {
        REQUIRE_MESSAGE(answer.status < 300, path << " " << body << " answered " << answer.status << " "
                                                  << answer.body);
        return;
      }
      std::this_thread::sleep_for(100ms);
    }
    FAIL(path << " never got a definitive answer");
  }

  void open_and_fund() {
    for (int i = 0; i < accounts; ++i) {
      post("/v1/accounts", R"({"id":"c)" + std::to_string(i) + R"(","currency":"EUR"})");
      post("/v1/accounts/c" + std::to_string(i) + "/deposits", R"({"amount":1000000})");
    }
  }

  // Transfers, and holds that are posted in part or voided: every entry phase reaches the topic.
  void random_commands(int count) {
    for (int n = 0; n < count; ++n) {
      const int from = static_cast<int>(random_() % accounts);
      const int to = (from + 1 + static_cast<int>(random_() % (accounts - 1))) % accounts;
      const std::string amount = std::to_string(1 + random_() % 900);
      const std::string pair = R"("from":"c)" + std::to_string(from) + R"(","to":"c)" + std::to_string(to) + "\"";
      if (n % 5 != 4) {
        post("/v1/transfers", "{" + pair + R"(,"amount":)" + amount + R"(,"currency":"EUR"})");
        continue;
      }
      const std::string hold = "h" + std::to_string(++holds_);
      post("/v1/holds", R"({"id":")" + hold + "\"," + pair + R"(,"amount":)" + amount + R"(,"currency":"EUR"})");
      if (holds_ % 2 == 0) {
        post("/v1/holds/" + hold + "/post", R"({"amount":1})");
      } else {
        post("/v1/holds/" + hold + "/void", "{}");
      }
    }
  }

 private:
  test::HttpClient client_;
  std::string token_;
  std::mt19937 random_{7};
  int sent_ = 0;
  int holds_ = 0;
};

// The ledger's side: read.balances once the balance projection has reached the store's head.
BalanceTable ledger_balances(const std::string& database_url) {
  pqxx::connection connection(database_url);
  for (int attempt = 0; attempt < 600; ++attempt) {
    pqxx::read_transaction work(connection);
    const auto head = work.exec1("SELECT coalesce(max(position), 0) FROM events")[0].as<std::int64_t>();
    const auto watermark =
        work.exec1("SELECT watermark FROM read.projections WHERE name = 'balance'")[0].as<std::int64_t>();
    if (watermark >= head) {
      BalanceTable table;
      for (const auto& row : work.exec("SELECT account_id, debits_posted, credits_posted, debits_pending, "
                                       "credits_pending, version FROM read.balances")) {
        table[row[0].as<std::string>()] = {row[1].as<std::int64_t>(), row[2].as<std::int64_t>(),
                                           row[3].as<std::int64_t>(), row[4].as<std::int64_t>(),
                                           row[5].as<std::int64_t>()};
      }
      return table;
    }
    work.commit();
    std::this_thread::sleep_for(100ms);
  }
  FAIL("the balance projection did not reach the head within 60 s");
  return {};
}

// The Python consumer's SQLite file, read with the sqlite3 module of the same interpreter.
BalanceTable python_balances(const fs::path& database) {
  std::string output;
  const auto status = process::run(
      {"/usr/bin/python3", "-c",
       "import sqlite3, sys\n"
       "db = sqlite3.connect(sys.argv[1], timeout=30)\n"
       "versions = dict(db.execute(\"SELECT stream_id, version FROM stream_versions\"))\n"
       "for row in db.execute(\"SELECT * FROM balances\"):\n"
       "    print(*row, versions.get('account-' + row[0], 0))\n",
       database.string()},
      output);
  BalanceTable table;
  if (!status.success()) return table;  // not created yet
  std::istringstream lines(output);
  std::string id;
  Balances b;
  while (lines >> id >> b.debits_posted >> b.credits_posted >> b.debits_pending >> b.credits_pending >> b.version) {
    table[id] = b;
  }
  return table;
}

BalanceTable cpp_balances(const std::string& database_url) {
  BalanceTable table;
  try {
    pqxx::connection connection(database_url);
    pqxx::read_transaction work(connection);
    for (const auto& row : work.exec(
             "SELECT b.account_id, debits_posted, credits_posted, debits_pending, credits_pending, v.version "
             "FROM example_balances b JOIN example_stream_versions v ON v.stream_id = 'account-' || b.account_id")) {
      table[row[0].as<std::string>()] = {row[1].as<std::int64_t>(), row[2].as<std::int64_t>(),
                                         row[3].as<std::int64_t>(), row[4].as<std::int64_t>(),
                                         row[5].as<std::int64_t>()};
    }
  } catch (const pqxx::sql_error&) {
    // the consumer has not created its tables yet
  }
  return table;
}

std::string describe(const BalanceTable& table) {
  std::ostringstream out;
  for (const auto& [id, b] : table) {
    out << id << ": " << b.debits_posted << "/" << b.credits_posted << "/" << b.debits_pending << "/"
        << b.credits_pending << " v" << b.version << "\n";
  }
  return out.str();
}

template <typename Read>
void wait_equal(const std::string& consumer, const BalanceTable& expected, Read read) {
  BalanceTable seen;
  for (int attempt = 0; attempt < 900; ++attempt) {
    seen = read();
    if (seen == expected) return;
    std::this_thread::sleep_for(100ms);
  }
  FAIL(consumer << " consumer's balances differ from the ledger's after 90 s\nexpected:\n"
                << describe(expected) << "seen:\n" << describe(seen));
}

}  // namespace

TEST_CASE("the example consumers keep the ledger's balances through kills, restarts and a rebalance") {
  const fs::path home = "/tmp/ledger-consumers-e2e-" + std::to_string(getpid());
  fs::remove_all(home);
  const test::DevRun dev = test::start_dev(home);
  const std::string brokers = dev.env.at("LEDGER_KAFKA_BROKERS");
  Load load(dev.http_port(), dev.env.at("LEDGER_TOKEN"));

  // The Python consumer runs on code flatc generates from the schemas, as its header says.
  const fs::path generated = home / "python-schemas";
  std::string output;
  REQUIRE_MESSAGE(process::run({"flatc", "--python", "-o", generated.string(), "-I", LEDGER_SCHEMA_DIR,
                                LEDGER_SCHEMA_DIR "/events.fbs", LEDGER_SCHEMA_DIR "/envelope.fbs"},
                               output).success(),
                  output);
  const fs::path sqlite_file = home / "python-balances.sqlite";
  // The C++ consumer keeps its tables in a database of its own on the stack's PostgreSQL.
  std::string cpp_database;
  {
    pqxx::connection admin(dev.env.at("LEDGER_ADMIN_DATABASE_URL"));
    pqxx::nontransaction(admin).exec("CREATE DATABASE example_consumer");
    cpp_database = std::string("host=") + admin.hostname() + " port=" + admin.port() + " user=" + admin.username() +
                   " dbname=example_consumer";
  }
  // The development broker (librdkafka's mock cluster) holds every rebalance for a whole
  // session timeout (45 s by default) waiting for members; a short one keeps the test short.
  const std::string session_timeout = "session.timeout.ms=6000";
  auto start_python = [&](const std::string& name) {
    process::SpawnOptions options;
    options.output_file = (home / ("python-" + name + ".log")).string();
    options.extra_environment = {"PYTHONPATH=" + generated.string()};
    return process::spawn({"/usr/bin/python3", LEDGER_EXAMPLES_DIR "/python/balance_consumer.py", "--brokers", brokers,
                           "--database", sqlite_file.string(), "--kafka-property", session_timeout},
                          options);
  };
  auto start_cpp = [&](const std::string& name) {
    process::SpawnOptions options;
    options.output_file = (home / ("cpp-" + name + ".log")).string();
    return process::spawn({LEDGER_CPP_CONSUMER, "--brokers", brokers, "--database", cpp_database, "--kafka-property",
                           session_timeout}, options);
  };

  load.open_and_fund();
  load.random_commands(60);
  pid_t python_a = start_python("a");
  pid_t cpp_a = start_cpp("a");
  load.random_commands(60);
  // A second instance of each joins the group: the partitions are shared out again.
  const pid_t python_b = start_python("b");
  const pid_t cpp_b = start_cpp("b");
  load.random_commands(60);
  // The first instances die without leaving the group or finishing their batch, and come back.
  kill(python_a, SIGKILL);
  kill(cpp_a, SIGKILL);
  (void)process::wait_for(python_a, 10s);
  (void)process::wait_for(cpp_a, 10s);
  load.random_commands(60);
  python_a = start_python("a2");
  cpp_a = start_cpp("a2");
  load.random_commands(60);
  // An operator sends the whole log again (docs/consumers.md: a source of redelivery).
  process::SpawnOptions publish_options;
  publish_options.extra_environment = {"LEDGER_DATABASE_URL=" + dev.env.at("LEDGER_DATABASE_URL"),
                                       "LEDGER_KAFKA_BROKERS=" + brokers};
  const auto published = process::run({test::ledger_binary(), "replay", "publish", "--from", "1"}, output,
                                       publish_options);
  REQUIRE_MESSAGE(published.success(), output);
  load.random_commands(30);

  const BalanceTable expected = ledger_balances(dev.env.at("LEDGER_DATABASE_URL"));
  REQUIRE(expected.size() > static_cast<std::size_t>(accounts));  // the customers and system.cash.EUR
  wait_equal("the Python", expected, [&] { return python_balances(sqlite_file); });
  wait_equal("the C++", expected, [&] { return cpp_balances(cpp_database); });

  // SIGTERM: each leaves the group and exits 0.
  for (const pid_t pid : {python_a, python_b, cpp_a, cpp_b}) {
    CHECK_MESSAGE(process::is_alive(pid), "consumer " << pid << " died; see the logs under " << home);
    const auto status = process::stop(pid, SIGTERM, 30s);
    CHECK_MESSAGE(status.success(), "consumer " << pid << " ended with " << status.code);
  }
  kill(dev.pid, SIGTERM);
  const auto status = process::wait_for(dev.pid, 90s);
  CHECK((status && status->success()));
  fs::remove_all(home);
}
