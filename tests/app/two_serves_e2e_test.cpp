// Two `ledger serve` processes on one database behind HAProxy (round robin, a generated
// configuration on free loopback ports), as a platform team deploys several front ends (issue
// 17, item 2). Concurrent clients send conflicting transfers among a few accounts and deposits
// (which all move the currency's one cash account), each with an Idempotency-Key; some are
// sent again with the same key (after their answer, or until a definite one), so the second
// copy often lands on the other engine. The history is judged by what the clients were
// told (Jepsen's bank test): every acknowledged command is stored once, a rejected one changed
// nothing, balances equal a client-side oracle, positions and stream versions are dense.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <strings.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <pqxx/pqxx>
#include <rapidjson/document.h>

#include "child_processes.hpp"
#include "http_client.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

const std::string secret = "two-serves-e2e-secret-of-at-least-32-bytes";
const std::string actor = "two-serves-client";

// The load: a few accounts so the two engines' versions collide, a bounded time and count.
constexpr int accounts_count = 5;
constexpr std::int64_t opening_deposit_minor = 5'000;
constexpr std::int64_t transfer_amount_max_minor = 2'000;  // above a balance now and then: insufficient_funds
constexpr std::int64_t deposit_amount_max_minor = 500;
constexpr int client_threads = 8;
constexpr auto load_duration = std::chrono::seconds(12);
constexpr int commands_max = 4'000;
// One command in this many is sent on two connections at once with the same key; one in
// retry_one_in is sent again with the same key after its definite answer.
constexpr int race_one_in = 20;
constexpr int retry_one_in = 4;
// An answer that is not definite (503, 502/504 from the balancer, version_conflict, a broken
// connection) is retried with the same key this often, waiting retry_wait between tries.
constexpr int indefinite_retries_max = 100;
constexpr auto retry_wait = std::chrono::milliseconds(20);

std::string cash_account() { return "system.cash.EUR"; }

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document document;
  document.Parse(text.c_str());
  return document;
}

// A free TCP port on loopback (bound, read, released: HAProxy binds it a moment later).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  close(fd);
  return ntohs(address.sin_port);
}

struct Serve {
  pid_t pid = 0;
  int port = 0;
  fs::path log;
};

Serve start_serve(const fs::path& home, const std::string& database_url, test::ChildStopper& children) {
  fs::create_directories(home);
  process::SpawnOptions options;
  options.output_file = (home / "serve.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + secret};
  Serve serve;
  serve.log = options.output_file;
  // No relay: nothing here reads Kafka; the store is the judge.
  serve.pid = process::spawn({test::ledger_binary(), "--home", home.string(), "--database-url", database_url,
                              "serve", "--http-port", "0", "--port-file", (home / "port").string(), "--relay",
                              "false"},
                             options);
  children.pids.push_back(serve.pid);
  const std::string port = test::wait_for_file(home / "port", serve.pid);
  REQUIRE_MESSAGE(!port.empty(), "serve did not start: " << test::read_file(serve.log));
  serve.port = std::stoi(port);
  return serve;
}

// HAProxy in the foreground (-db) with a configuration of our own: round robin per request
// over the two serves, no stickiness, and the chosen server's name in a response header so
// the test can see retries change engines.
struct Balancer {
  pid_t pid = 0;
  int port = 0;
};

Balancer start_haproxy(const fs::path& directory, const std::vector<Serve>& serves, test::ChildStopper& children) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    Balancer balancer;
    balancer.port = free_port();
    std::ostringstream config;
    config << "global\n  maxconn 512\n"
           << "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n"
           << "frontend ledger\n  bind 127.0.0.1:" << balancer.port << "\n  default_backend serves\n"
           << "backend serves\n  balance roundrobin\n  http-response set-header X-Served-By %s\n";
    for (std::size_t i = 0; i < serves.size(); ++i) {
      config << "  server serve" << i << " 127.0.0.1:" << serves[i].port << "\n";
    }
    const fs::path config_file = directory / "haproxy.cfg";
    std::ofstream(config_file) << config.str();
    process::SpawnOptions options;
    options.output_file = (directory / "haproxy.log").string();
    balancer.pid = process::spawn({"haproxy", "-db", "-f", config_file.string()}, options);
    children.pids.push_back(balancer.pid);
    for (int wait = 0; wait < 100 && process::is_alive(balancer.pid); ++wait) {
      try {
        test::HttpClient client(balancer.port);
        if (client.request("GET", "/health/live").status == 200) return balancer;
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    (void)process::stop(balancer.pid, SIGTERM, std::chrono::seconds(5));
  }
  FAIL("haproxy did not start (is the Debian package installed? ops/setup.sh): "
       << test::read_file(directory / "haproxy.log"));
  return {};
}

enum class Kind { open_account, transfer, deposit };

struct Command {
  std::string key;
  Kind kind = Kind::transfer;
  std::string from, to;  // a deposit's account is `to`
  std::int64_t amount = 0;
  std::string target, body;
};

// What one answer says about its key's command.
struct Answer {
  enum class Class { applied, rejected, indefinite, wrong } kind = Class::indefinite;
  int status = 0;
  std::string code;  // a problem's code
  std::string command_id;
  std::int64_t position = 0;
  std::map<std::string, std::int64_t> versions;
  std::string served_by;
  std::string text;  // for failure messages
};

Answer classify(const test::HttpResponse& response) {
  Answer answer;
  answer.status = response.status;
  for (const auto& [name, value] : response.headers) {
    if (strcasecmp(name.c_str(), "X-Served-By") == 0) answer.served_by = value;  // HAProxy sends it lower case
  }
  answer.text = "[" + answer.served_by + "] " + std::to_string(response.status) + " " + response.body.substr(0, 300);
  const auto document = parse(response.body);
  const bool object = !document.HasParseError() && document.IsObject();
  if (object && document.HasMember("code") && document["code"].IsString()) answer.code = document["code"].GetString();
  if (response.status == 200 || response.status == 201) {
    if (!object || !document.HasMember("command_id") || !document.HasMember("position") ||
        !document.HasMember("versions")) {
      answer.kind = Answer::Class::wrong;
      return answer;
    }
    answer.kind = Answer::Class::applied;
    answer.command_id = document["command_id"].GetString();
    answer.position = document["position"].GetInt64();
    for (const auto& member : document["versions"].GetObject()) {
      answer.versions[member.name.GetString()] = member.value.GetInt64();
    }
    return answer;
  }
  // Not definite: the engine or the balancer could not finish (503, 502, 504), a lost race
  // the engine gave up on (version_conflict: nothing was written), a rate limit.
  if (response.status >= 500 || response.status == 429 || answer.code == "version_conflict") return answer;
  // A business rejection (insufficient_funds): definite, nothing was written.
  if ((response.status == 422 || response.status == 404) && !answer.code.empty()) {
    answer.kind = Answer::Class::rejected;
    return answer;
  }
  answer.kind = Answer::Class::wrong;  // idempotency_key_reused, 400, 401: the test sent it right
  return answer;
}

Answer transport_failure(const std::exception& error) {
  Answer answer;
  answer.text = std::string("connection failed: ") + error.what();
  return answer;
}

// Everything the clients were told about one key, folded: the first definite answer, and a
// violation when a later answer contradicts it.
struct History {
  Command command;
  std::optional<Answer> definite;
  int answers = 0;
  std::set<std::string> served_by;
  std::vector<std::string> violations;
  bool contradicted = false;  // two definite answers disagree

  void add(const Answer& answer) {
    ++answers;
    if (!answer.served_by.empty()) served_by.insert(answer.served_by);
    if (answer.kind == Answer::Class::wrong) {
      violations.push_back("key " + command.key + ": unexpected answer " + answer.text);
      return;
    }
    if (answer.kind == Answer::Class::indefinite) return;
    if (!definite) {
      definite = answer;
      return;
    }
    const bool same = definite->kind == answer.kind &&
                      (answer.kind == Answer::Class::applied
                           ? definite->command_id == answer.command_id && definite->position == answer.position &&
                                 definite->versions == answer.versions
                           : definite->code == answer.code);
    if (!same) {
      violations.push_back("key " + command.key + ": first " + definite->text + ", then " + answer.text);
      contradicted = true;
    }
  }
};

// A keep-alive connection to the balancer that reconnects after a failure.
class Connection {
 public:
  explicit Connection(int port) : port_(port) {}

  Answer send(const Command& command, const std::map<std::string, std::string>& headers) {
    try {
      if (!client_) client_ = std::make_unique<test::HttpClient>(port_);
      auto with_key = headers;
      with_key["Idempotency-Key"] = command.key;
      return classify(client_->request("POST", command.target, command.body, with_key));
    } catch (const std::exception& error) {
      client_.reset();
      return transport_failure(error);
    }
  }

  void reset() { client_.reset(); }

 private:
  int port_;
  std::unique_ptr<test::HttpClient> client_;
};

Command make_command(const std::string& key, Kind kind, const std::string& from, const std::string& to,
                     std::int64_t amount) {
  Command command{key, kind, from, to, amount, {}, {}};
  switch (kind) {
    case Kind::open_account:
      command.target = "/v1/accounts";
      command.body = R"({"id":")" + to + R"(","currency":"EUR"})";
      break;
    case Kind::deposit:
      command.target = "/v1/accounts/" + to + "/deposits";
      command.body = R"({"amount":)" + std::to_string(amount) + "}";
      break;
    case Kind::transfer:
      command.target = "/v1/transfers";
      command.body = R"({"from":")" + from + R"(","to":")" + to + R"(","amount":)" + std::to_string(amount) +
                     R"(,"currency":"EUR"})";
      break;
  }
  return command;
}

// Sends until the key has a definite answer (bounded), racing or repeating as asked.
History settle(Connection& connection, int port, const Command& command,
               const std::map<std::string, std::string>& headers, bool race, bool repeat) {
  History history;
  history.command = command;
  if (race) {
    // Two connections, the same key at the same moment: round robin puts them on both engines.
    Answer other;
    std::thread racer([&] {
      Connection second(port);
      other = second.send(command, headers);
    });
    history.add(connection.send(command, headers));
    racer.join();
    history.add(other);
  } else {
    history.add(connection.send(command, headers));
  }
  for (int attempt = 0; attempt < indefinite_retries_max && !history.definite; ++attempt) {
    std::this_thread::sleep_for(retry_wait);
    connection.reset();  // a new connection: the retry may reach the other engine
    history.add(connection.send(command, headers));
  }
  if (history.definite && repeat) {
    connection.reset();
    history.add(connection.send(command, headers));
  }
  return history;
}

std::int64_t metric(int port, const std::string& name) {
  test::HttpClient client(port);
  const auto body = client.request("GET", "/metrics").body;
  const auto at = body.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(body.substr(at + name.size() + 2));
}

// The whole run; `racing`: some commands are also sent on two connections at once.
void check_two_serves(bool racing) {
  test::TestDatabase database;
  const fs::path directory = "/tmp/ledger-two-serves-e2e-" + std::to_string(getpid());
  fs::remove_all(directory);
  fs::create_directories(directory);
  test::ChildStopper children;
  std::vector<Serve> serves;
  serves.push_back(start_serve(directory / "serve-a", database.app_url(), children));
  serves.push_back(start_serve(directory / "serve-b", database.app_url(), children));
  const Balancer balancer = start_haproxy(directory, serves, children);
  const std::map<std::string, std::string> auth = {
      {"Authorization",
       "Bearer " + api::issue_token(secret, actor, {"teller", "auditor"}, std::chrono::hours(1))}};

  std::mutex histories_mutex;
  std::vector<History> histories;
  std::vector<std::string> accounts;
  for (int i = 0; i < accounts_count; ++i) accounts.push_back("acct" + std::to_string(i));

  // Setup through the balancer too: open and fund the accounts.
  {
    Connection connection(balancer.port);
    for (const auto& account : accounts) {
      for (const auto& command : {make_command("open-" + account, Kind::open_account, "", account, 0),
                                  make_command("fund-" + account, Kind::deposit, "", account, opening_deposit_minor)}) {
        auto history = settle(connection, balancer.port, command, auth, false, false);
        REQUIRE_MESSAGE(history.definite.has_value(), command.key << " got no definite answer");
        REQUIRE_MESSAGE(history.definite->kind == Answer::Class::applied, history.definite->text);
        histories.push_back(std::move(history));
      }
    }
  }
  const auto serve_accepted = [&](const Serve& serve) {
    return metric(serve.port, "ledger_engine_commands_total{outcome=\"accepted\"}");
  };
  std::vector<std::int64_t> conflicts_before;
  for (const auto& serve : serves) conflicts_before.push_back(metric(serve.port, "ledger_engine_conflicts_total"));

  // The load.
  std::atomic<int> issued{0};
  const auto deadline = Clock::now() + load_duration;
  const auto load_started = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < client_threads; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 random(0x17 + static_cast<unsigned>(c));
      Connection connection(balancer.port);
      std::vector<History> mine;
      for (int n = 0; Clock::now() < deadline && issued++ < commands_max; ++n) {
        const std::string key = "c" + std::to_string(c) + "-" + std::to_string(n);
        const auto& to = accounts[random() % accounts.size()];
        Command command;
        if (random() % 10 < 6) {
          std::string from = accounts[random() % accounts.size()];
          while (from == to) from = accounts[random() % accounts.size()];
          command = make_command(key, Kind::transfer, from, to,
                                 1 + static_cast<std::int64_t>(random() % transfer_amount_max_minor));
        } else {
          command =
              make_command(key, Kind::deposit, "", to, 1 + static_cast<std::int64_t>(random() % deposit_amount_max_minor));
        }
        const bool race = racing && random() % race_one_in == 0;
        const bool repeat = random() % retry_one_in == 0;
        mine.push_back(settle(connection, balancer.port, command, auth, race, repeat));
      }
      std::lock_guard lock(histories_mutex);
      for (auto& history : mine) histories.push_back(std::move(history));
    });
  }
  for (auto& thread : clients) thread.join();
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_started).count();

  // The clients' view: every key settled, no contradiction, and the oracle of balances.
  std::map<std::string, std::int64_t> oracle;
  std::map<std::string, const History*> applied_by_command;
  int applied = 0, rejected = 0, answers = 0, retried_elsewhere = 0;
  std::vector<std::string> violations;
  for (const auto& history : histories) {
    answers += history.answers;
    if (history.served_by.size() > 1) ++retried_elsewhere;
    violations.insert(violations.end(), history.violations.begin(), history.violations.end());
    if (!history.definite) {
      violations.push_back("key " + history.command.key + " never got a definite answer");
      continue;
    }
    if (history.definite->kind == Answer::Class::rejected) {
      ++rejected;
      continue;
    }
    ++applied;
    if (!applied_by_command.emplace(history.definite->command_id, &history).second) {
      violations.push_back("command " + history.definite->command_id + " acknowledged for two keys");
    }
    const auto& command = history.command;
    switch (command.kind) {
      case Kind::open_account: oracle[command.to] += 0; break;
      case Kind::deposit:
        oracle[command.to] += command.amount;
        oracle[cash_account()] -= command.amount;
        break;
      case Kind::transfer:
        oracle[command.from] -= command.amount;
        oracle[command.to] += command.amount;
        break;
    }
  }
  MESSAGE(histories.size() << " keys in " << load_seconds << " s (" << answers << " answers): " << applied
                           << " applied, " << rejected << " rejected; " << retried_elsewhere
                           << " keys answered by both serves");
  for (std::size_t i = 0; i < violations.size() && i < 20; ++i) FAIL_CHECK(violations[i]);
  CHECK(violations.empty());
  CHECK(rejected > 0);            // the balance guard was exercised
  CHECK(retried_elsewhere > 0);   // a key reached both engines
  for (std::size_t i = 0; i < serves.size(); ++i) {
    const auto accepted = serve_accepted(serves[i]);
    MESSAGE("serve " << i << ": " << accepted << " commands accepted, "
                     << metric(serves[i].port, "ledger_engine_conflicts_total") - conflicts_before[i]
                     << " version conflicts during the load");
    CHECK(accepted > 0);
  }

  // The store's view.
  pqxx::connection connection(database.admin_url());
  pqxx::read_transaction work(connection);
  const auto head = work.exec1("SELECT count(*), coalesce(min(position), 0), coalesce(max(position), 0) FROM events");
  const auto events = head[0].as<std::int64_t>();
  CHECK(head[1].as<std::int64_t>() == 1);
  CHECK(head[2].as<std::int64_t>() == events);  // positions dense: 1..N, no gap, no repeat
  CHECK(work.exec1("SELECT position FROM event_store_head")[0].as<std::int64_t>() == events);
  CHECK(work.exec1("SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                   "HAVING min(version) <> 1 OR max(version) <> count(*) OR count(DISTINCT version) <> count(*)) s")[0]
            .as<std::int64_t>() == 0);  // stream versions dense

  // Every acknowledged command: exactly the events it was told about, once; nothing else.
  std::map<std::string, std::map<std::string, std::int64_t>> stored_versions;
  std::map<std::string, std::int64_t> stored_last_position;
  for (const auto& row : work.exec("SELECT metadata->>'command_id', stream_id, version, position FROM events")) {
    const auto command_id = row[0].is_null() ? std::string("(none)") : row[0].as<std::string>();
    // A command may write a stream twice (a deposit that opens the cash account first); its
    // answer names the stream's last version.
    auto& version = stored_versions[command_id][row[1].as<std::string>()];
    version = std::max(version, row[2].as<std::int64_t>());
    auto& last = stored_last_position[command_id];
    last = std::max(last, row[3].as<std::int64_t>());
  }
  int unacknowledged = 0, mismatched = 0;
  for (const auto& [command_id, versions] : stored_versions) {
    const auto found = applied_by_command.find(command_id);
    if (found == applied_by_command.end()) {
      if (++unacknowledged <= 5) FAIL_CHECK("stored command " << command_id << " was never acknowledged");
      continue;
    }
    const Answer& answer = *found->second->definite;
    if (answer.versions != versions || answer.position != stored_last_position[command_id]) {
      if (++mismatched <= 5) {
        FAIL_CHECK("command " << command_id << " (key " << found->second->command.key
                                  << ") stored differently from its answer " << answer.text);
      }
    }
  }
  CHECK(unacknowledged == 0);
  CHECK(mismatched == 0);
  CHECK(stored_versions.size() == applied_by_command.size());  // every acknowledged one is there
  // Each acknowledged key's outcome is stored once, at its command's position.
  std::map<std::string, std::int64_t> key_positions;
  for (const auto& row : work.exec("SELECT key, position FROM idempotency_keys WHERE actor = " + work.quote(actor))) {
    key_positions[row[0].as<std::string>()] = row[1].as<std::int64_t>();
  }
  int keys_missing = 0;
  for (const auto& [command_id, history] : applied_by_command) {
    const auto found = key_positions.find(history->command.key);
    if (found == key_positions.end() || found->second != history->definite->position) {
      if (++keys_missing <= 5) FAIL_CHECK("key " << history->command.key << " not stored at its position");
    }
  }
  CHECK(keys_missing == 0);
  // For a contradiction: what the store holds for the key.
  int shown = 0;
  for (const auto& history : histories) {
    if (!history.contradicted || ++shown > 5) continue;
    const auto rows = work.exec("SELECT convert_from(outcome, 'UTF8'), position FROM idempotency_keys WHERE actor = " +
                                work.quote(actor) + " AND key = " + work.quote(history.command.key));
    MESSAGE("key " << history.command.key << " stored: "
                   << (rows.empty() ? std::string("nothing") : rows[0][0].as<std::string>()));
  }

  // Balances, folded by the engine from the streams (no read model involved), equal the oracle.
  test::HttpClient client(balancer.port);
  std::int64_t total = 0;
  for (const auto& [account, expected] : oracle) {
    const auto response = client.request(
        "GET", "/v1/accounts/" + account + "/balance?at_position=" + std::to_string(events), {}, auth);
    REQUIRE_MESSAGE(response.status == 200, response.body);
    const auto balance = parse(response.body);
    CHECK_MESSAGE(balance["balance"].GetInt64() == expected, account);
    total += balance["balance"].GetInt64();
  }
  CHECK(oracle.size() == accounts.size() + 1);
  CHECK(total == 0);  // double entry

  // The log's own audit: hash chain, versions and double entry at every position.
  std::string verify_output;
  const auto verify =
      process::run({test::ledger_binary(), "--database-url", database.app_url(), "replay", "verify"}, verify_output);
  CHECK_MESSAGE(verify.success(), verify_output);

  children.stop_all();
  fs::remove_all(directory);
}

}  // namespace

TEST_CASE("two serves behind HAProxy, retries one after the other: every acknowledged command stored once, "
          "balances equal the oracle") {
  check_two_serves(/*racing=*/false);
}

// The same, and one command in race_one_in is also sent on a second connection at the same
// moment with the same key: the copies meet on two engines (the key's row decides) or in one
// engine's batch (the first copy decides, the other follows it). Every copy must be told the
// one outcome, command id and versions included.
TEST_CASE("two serves behind HAProxy, the same key racing on two connections: every copy told the one outcome") {
  check_two_serves(/*racing=*/true);
}
