// Faults between the processes (issue 14, part 3). Real processes as an operator runs them:
// `ledger broker`, `ledger serve` and `ledger project all`, serve and the projectors connected
// to PostgreSQL through the tests' fault proxy. Client threads send transfers over HTTP and
// retry each with the same Idempotency-Key until a definitive answer, while one fault is
// injected per test case. After healing, every case checks:
// - every acknowledged transfer is stored exactly once, every definitively refused one not at
//   all, and no transfer exists that no client sent; the balances are what the clients were
//   told (initial deposits plus acknowledged transfers);
// - positions and stream versions are dense; `ledger replay verify` and `reconcile` are clean;
// - the read models reach the head within a bound and equal the fold of the store;
// - /health reported the fault while it lasted and says healthy within a bound after;
// - no process exited, except those the test killed (and restarted, as a supervisor would).
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>
#include <rapidjson/document.h>

#include "../projections/read_side_fixture.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "pg_fault_proxy.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

const std::string jwt_secret = "faults-e2e-secret-of-at-least-32-bytes!!";

// Timeouts the processes run with (flags), shortened so faults can outlast them quickly.
constexpr int database_connect_timeout_ms = 2'000;     // libpq's least (it rounds below 2 s up)
constexpr int database_statement_timeout_ms = 5'000;
constexpr int project_gap_wait_ms = 500;
// Fixed in the code: the engine's idle-in-transaction limit (10 s) and in-doubt wait (5 s),
// the read side's "behind" threshold (10 s) and Kafka's "stuck" threshold (5 s).
constexpr auto engine_idle_in_transaction_timeout = 10s;
constexpr auto projection_behind_threshold = 10s;
constexpr auto kafka_stuck_threshold = 5s;

// The client side.
constexpr int client_threads = 3;
constexpr int customer_accounts = 6;
constexpr std::int64_t initial_deposit = 10'000'000;
constexpr auto client_request_timeout = 3s;
constexpr auto client_pause = 15ms;              // between two commands of one client
constexpr auto client_retry_pause = 100ms;       // before sending the same command again
constexpr auto client_resolve_time_max = 90s;    // for the last command of each client
constexpr auto health_probe_interval = 250ms;
constexpr auto health_probe_timeout = 1500ms;
// Bounds after healing.
constexpr auto healthy_again_max = 45s;
constexpr auto converge_max = 60s;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// --- HTTP with a deadline: a stopped server must not hang a client -----------------------

struct Reply {
  int status = 0;
  std::string body;
};

// One request on its own connection (Connection: close). std::nullopt when the server cannot
// be reached or does not answer in time, as a client with a timeout sees it.
std::optional<Reply> http_call(int port, const std::string& method, const std::string& target,
                               const std::string& body, const std::vector<std::string>& headers,
                               std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::nullopt;
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  auto wait = [&](short events) {
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd entry{fd, events, 0};
      const int ready = ::poll(&entry, 1, static_cast<int>(left));
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) return false;
    }
  };
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    if (errno != EINPROGRESS || !wait(POLLOUT)) return std::nullopt;
    int error = 0;
    socklen_t length = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) return std::nullopt;
  }
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& header : headers) request += header + "\r\n";
  if (!body.empty()) request += "Content-Type: application/json\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait(POLLOUT)) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  std::string response;
  char chunk[16 * 1024];
  while (true) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      response.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) break;
    if (errno == EAGAIN || errno == EINTR) {
      if (!wait(POLLIN)) return std::nullopt;
      continue;
    }
    return std::nullopt;
  }
  const auto header_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 ", 0) != 0 || header_end == std::string::npos) return std::nullopt;
  Reply reply;
  reply.status = std::atoi(response.c_str() + 9);
  reply.body = response.substr(header_end + 4);
  return reply;
}

std::string json_string(const std::string& text, const char* key) {
  rapidjson::Document document;
  document.Parse(text.c_str());
  if (document.HasParseError() || !document.IsObject() || !document.HasMember(key) || !document[key].IsString()) {
    return {};
  }
  return document[key].GetString();
}

// --- the processes and their supervisor ------------------------------------------------------

struct Child {
  std::string name;
  std::vector<std::string> argv;
  process::SpawnOptions options;
  pid_t pid = 0;
  int starts = 0;
  std::vector<std::string> exits;  // how each run ended, in order
};

std::string describe(const process::ExitStatus& status) {
  return status.exited ? "exit code " + std::to_string(status.code) : "signal " + std::to_string(status.code);
}

// The database a stack runs on: the shared test cluster (a fresh database) or a private one.
struct ClusterRef {
  fs::path directory;
  int port = 0;
  std::string database;
  std::string admin_url;  // straight to PostgreSQL, for the checks
  std::string app_url;
};

std::string read_log(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The three processes, the proxy in front of PostgreSQL, and a supervisor thread that restarts
// whatever exits, recording how it ended (the test asserts which exits it expected).
class Stack {
 public:
  Stack(const std::string& name, ClusterRef cluster)
      : cluster_(std::move(cluster)),
        proxy_(cluster_.directory, cluster_.port),
        directory_("/tmp/ledger-faults-" + name + "-" + std::to_string(getpid())),
        broker_port_(free_port()),
        http_port_(free_port()) {
    fs::remove_all(directory_);
    fs::create_directories(directory_);
    const std::string brokers = "127.0.0.1:" + std::to_string(broker_port_);
    const std::string via_proxy = proxy_.url("ledger_app", cluster_.database);
    const std::vector<std::string> shared = {
        "--home", directory_.string(), "--database-url", via_proxy, "--kafka-brokers", brokers,
        "--database-connect-timeout-ms", std::to_string(database_connect_timeout_ms),
        "--database-statement-timeout-ms", std::to_string(database_statement_timeout_ms)};

    broker_.name = "broker";
    broker_.argv = {test::ledger_binary(), "broker", "--address-file", (directory_ / "broker.address").string(),
                    "--partitions", "4"};
    broker_.options.extra_environment = {"LD_PRELOAD=" LEDGER_FIXED_PORT_PRELOAD,
                                         "LEDGER_TEST_BIND_PORT=" + std::to_string(broker_port_)};

    serve_.name = "serve";
    serve_.argv = {test::ledger_binary()};
    serve_.argv.insert(serve_.argv.end(), shared.begin(), shared.end());
    for (const std::string& argument : {std::string("serve"), std::string("--http-port"), std::to_string(http_port_),
                                        std::string("--snapshot-directory"), (directory_ / "snapshots").string()}) {
      serve_.argv.push_back(argument);
    }
    serve_.options.extra_environment = {"LEDGER_JWT_SECRET=" + jwt_secret};

    project_.name = "project";
    project_.argv = {test::ledger_binary()};
    project_.argv.insert(project_.argv.end(), shared.begin(), shared.end());
    for (const std::string& argument :
         {std::string("project"), std::string("all"), std::string("--gap-wait-ms"), std::to_string(project_gap_wait_ms)}) {
      project_.argv.push_back(argument);
    }
    for (Child* child : {&broker_, &serve_, &project_}) {
      child->options.output_file = (directory_ / (child->name + ".log")).string();
    }
  }

  ~Stack() {
    stop_supervising();
    for (Child* child : {&project_, &serve_, &broker_}) {
      if (child->pid > 0) {
        ::kill(child->pid, SIGCONT);
        (void)process::stop(child->pid, SIGTERM, 10s);
      }
    }
  }

  void start() {
    start_child(broker_);
    REQUIRE_MESSAGE(wait_for_file(directory_ / "broker.address"), "the broker did not start; see " << log(broker_));
    start_child(serve_);
    REQUIRE_MESSAGE(ready(60s), "serve did not become ready; see " << log(serve_));
    start_child(project_);
    supervisor_ = std::thread([this] { supervise(); });
  }

  // The processes a test case signals: it tells the supervisor which exits to expect.
  Child& broker() { return broker_; }
  Child& serve() { return serve_; }
  Child& project() { return project_; }
  test::PgFaultProxy& proxy() { return proxy_; }
  const ClusterRef& cluster() const { return cluster_; }
  int http_port() const { return http_port_; }
  std::string brokers() const { return "127.0.0.1:" + std::to_string(broker_port_); }
  const fs::path& directory() const { return directory_; }

  // Kills `child` with `signal`, expecting that exit; the supervisor restarts it after `backoff`.
  void kill_child(Child& child, int signal, std::chrono::milliseconds backoff) {
    {
      std::lock_guard lock(mutex_);
      expected_exit_[child.name] = signal;
      restart_backoff_[child.name] = backoff;
    }
    ::kill(child.pid, signal);
  }

  // An exit `child` makes by design under the fault being injected (an exit code), restarted by
  // the supervisor after a second, as systemd or Kubernetes would.
  void allow_exit_code(const Child& child, int code) {
    std::lock_guard lock(mutex_);
    designed_exit_code_[child.name] = code;
  }
  std::vector<std::string> designed_exits() {
    std::lock_guard lock(mutex_);
    return designed_;
  }

  // Exits nobody asked for (how each ended); the suite expects none.
  std::vector<std::string> unexpected_exits() {
    std::lock_guard lock(mutex_);
    return unexpected_;
  }
  int restarts(const Child& child) {
    std::lock_guard lock(mutex_);
    return child.starts - 1;
  }

  bool ready(std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      const auto reply = http_call(http_port_, "GET", "/health/ready", "", {}, 1s);
      if (reply && reply->status == 200) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  std::string log(const Child& child) const { return child.options.output_file; }

  void stop_supervising() {
    stopping_ = true;
    if (supervisor_.joinable()) supervisor_.join();
  }

 private:
  static bool wait_for_file(const fs::path& path) {
    for (int attempt = 0; attempt < 300; ++attempt) {
      if (fs::exists(path)) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  void start_child(Child& child) {
    child.pid = process::spawn(child.argv, child.options);
    ++child.starts;
  }

  void supervise() {
    while (!stopping_) {
      for (Child* child : {&broker_, &serve_, &project_}) {
        const auto status = process::wait_for(child->pid, 0ms);
        if (!status) continue;
        std::chrono::milliseconds backoff{0};
        {
          std::lock_guard lock(mutex_);
          const std::string how = describe(*status);
          child->exits.push_back(how);
          const auto expected = expected_exit_.find(child->name);
          const auto designed = designed_exit_code_.find(child->name);
          if (expected != expected_exit_.end() && !status->exited && status->code == expected->second) {
            expected_exit_.erase(expected);
            backoff = restart_backoff_[child->name];
          } else if (designed != designed_exit_code_.end() && status->exited && status->code == designed->second) {
            designed_.push_back(child->name + " ended with " + how);
            backoff = 1s;
          } else {
            unexpected_.push_back(child->name + " ended with " + how + " (see " + log(*child) + ")");
            backoff = 1s;
          }
        }
        std::this_thread::sleep_for(backoff);
        if (child == &broker_) fs::remove(directory_ / "broker.address");
        std::lock_guard lock(mutex_);
        start_child(*child);
      }
      std::this_thread::sleep_for(50ms);
    }
  }

  ClusterRef cluster_;
  test::PgFaultProxy proxy_;
  fs::path directory_;
  int broker_port_;
  int http_port_;
  Child broker_;
  Child serve_;
  Child project_;
  std::mutex mutex_;
  std::map<std::string, int> expected_exit_;
  std::map<std::string, std::chrono::milliseconds> restart_backoff_;
  std::map<std::string, int> designed_exit_code_;
  std::vector<std::string> designed_;
  std::vector<std::string> unexpected_;
  std::atomic<bool> stopping_{false};
  std::thread supervisor_;
};

// --- the clients -------------------------------------------------------------------------

std::string account(int i) { return "f" + std::to_string(i); }

struct Sent {
  std::string id;
  int from = 0;
  int to = 0;
  std::int64_t amount = 0;
  int status = 0;  // the definitive answer; 0: none within the bound
  std::string code;
  int attempts = 0;
};

// Client threads sending transfers, each retried with its Idempotency-Key until a definitive
// answer: a 2xx, or a 4xx other than a retryable one. No answer, 5xx (outcome_unknown and
// every 503 included) and 429 are sent again.
class Load {
 public:
  Load(int port, std::string token) : port_(port), token_(std::move(token)) {}
  ~Load() { stop(); }

  void start() {
    for (int t = 0; t < client_threads; ++t) threads_.emplace_back([this, t] { run(t); });
  }
  // Ends the load; every client finishes its command (bounded by client_resolve_time_max).
  void stop() {
    stopping_ = true;
    for (auto& thread : threads_) thread.join();
    threads_.clear();
  }
  std::vector<Sent> sent() {
    std::lock_guard lock(mutex_);
    return sent_;
  }
  std::int64_t acknowledged() const { return acknowledged_.load(); }
  std::int64_t resent() const { return resent_.load(); }
  std::int64_t outcome_unknown() const { return outcome_unknown_.load(); }

 private:
  void run(int thread) {
    std::mt19937 random(1000u + static_cast<unsigned>(thread));
    for (int n = 0; !stopping_; ++n) {
      Sent command;
      command.id = "t" + std::to_string(thread) + "-" + std::to_string(n);
      command.from = static_cast<int>(random() % customer_accounts);
      command.to = (command.from + 1 + static_cast<int>(random() % (customer_accounts - 1))) % customer_accounts;
      command.amount = 1 + static_cast<std::int64_t>(random() % 1'000);
      const std::string body = R"({"id":")" + command.id + R"(","from":")" + account(command.from) +
                               R"(","to":")" + account(command.to) + R"(","amount":)" +
                               std::to_string(command.amount) + R"(,"currency":"EUR"})";
      const std::vector<std::string> headers = {"Authorization: Bearer " + token_, "Idempotency-Key: " + command.id};
      const auto give_up = Clock::now() + client_resolve_time_max;
      // Once sent, a command is resolved even after stop(): its outcome must be known.
      while (Clock::now() < give_up) {
        ++command.attempts;
        if (command.attempts > 1) ++resent_;
        const auto reply = http_call(port_, "POST", "/v1/transfers", body, headers, client_request_timeout);
        if (reply && reply->status >= 200 && reply->status < 300) {
          command.status = reply->status;
          ++acknowledged_;
          break;
        }
        if (reply && reply->status >= 400 && reply->status < 500 && reply->status != 429) {
          command.status = reply->status;
          command.code = json_string(reply->body, "code");
          break;
        }
        if (reply && json_string(reply->body, "code") == "outcome_unknown") ++outcome_unknown_;
        std::this_thread::sleep_for(client_retry_pause);
      }
      {
        std::lock_guard lock(mutex_);
        sent_.push_back(command);
      }
      std::this_thread::sleep_for(client_pause);
    }
  }

  int port_;
  std::string token_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::vector<Sent> sent_;
  std::atomic<std::int64_t> acknowledged_{0};
  std::atomic<std::int64_t> resent_{0};
  std::atomic<std::int64_t> outcome_unknown_{0};
};

// --- /health, probed throughout --------------------------------------------------------------

struct HealthSample {
  Clock::time_point at;
  int status = 0;  // 0: no answer within the probe's timeout
  std::string overall, database, kafka, relay, projections;
  double database_latency_ms = 0;
};

class HealthProbe {
 public:
  explicit HealthProbe(int port) : port_(port) {
    thread_ = std::thread([this] {
      while (!stopping_) {
        HealthSample sample;
        sample.at = Clock::now();
        if (const auto reply = http_call(port_, "GET", "/health", "", {}, health_probe_timeout)) {
          sample.status = reply->status;
          rapidjson::Document document;
          document.Parse(reply->body.c_str());
          if (!document.HasParseError() && document.IsObject()) {
            auto text = [](const rapidjson::Value& value, const char* key) -> std::string {
              return value.IsObject() && value.HasMember(key) && value[key].IsString() ? value[key].GetString() : "";
            };
            sample.overall = text(document, "status");
            if (document.HasMember("components") && document["components"].IsObject()) {
              const auto& components = document["components"];
              for (auto [name, field] : {std::pair{"database", &HealthSample::database},
                                         std::pair{"kafka", &HealthSample::kafka}, std::pair{"relay", &HealthSample::relay},
                                         std::pair{"projections", &HealthSample::projections}}) {
                if (components.HasMember(name)) sample.*field = text(components[name], "status");
              }
              if (components.HasMember("database") && components["database"].IsObject() &&
                  components["database"].HasMember("latency_ms") && components["database"]["latency_ms"].IsNumber()) {
                sample.database_latency_ms = components["database"]["latency_ms"].GetDouble();
              }
            }
          }
        }
        {
          std::lock_guard lock(mutex_);
          samples_.push_back(sample);
        }
        std::this_thread::sleep_for(health_probe_interval);
      }
    });
  }
  ~HealthProbe() {
    stopping_ = true;
    thread_.join();
  }
  std::vector<HealthSample> between(Clock::time_point from, Clock::time_point to) {
    std::lock_guard lock(mutex_);
    std::vector<HealthSample> found;
    for (const auto& sample : samples_) {
      if (sample.at >= from && sample.at <= to) found.push_back(sample);
    }
    return found;
  }

 private:
  int port_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<HealthSample> samples_;
  std::thread thread_;
};

std::string summarize(const std::vector<HealthSample>& samples) {
  std::map<std::string, int> counts;
  for (const auto& s : samples) {
    counts[s.status == 0 ? std::string("no answer")
                         : std::to_string(s.status) + " " + s.overall + " (database " + s.database + ", kafka " +
                               s.kafka + ", relay " + s.relay + ", projections " + s.projections + ")"]++;
  }
  std::string text;
  for (const auto& [what, count] : counts) text += "\n  " + std::to_string(count) + " x " + what;
  return text;
}

// --- the checks after healing ----------------------------------------------------------------

void run_cli(const ClusterRef& cluster, const std::vector<std::string>& command, const std::string& expected) {
  std::vector<std::string> argv = {test::ledger_binary(), "--home", "/tmp/ledger-faults-cli-none", "--database-url",
                                   cluster.app_url, "--admin-database-url", cluster.admin_url, "--log-level", "warn"};
  argv.insert(argv.end(), command.begin(), command.end());
  std::string output;
  const auto status = process::run(argv, output);
  CHECK_MESSAGE(status.success(), command.back() << ": " << output);
  CHECK_MESSAGE(output.find(expected) != std::string::npos, command.back() << ": " << output);
}

bool caught_up(const std::string& url) {
  try {
    const auto head = test::store_head(url);
    return test::watermark(url, "balance") == head && test::watermark(url, "audit") == head &&
           test::watermark(url, "loan") == head;
  } catch (const std::exception&) {
    return false;
  }
}

// Everything the clients were told, against the store, the read models and the tools.
void check_after_healing(Stack& stack, const std::vector<Sent>& sent) {
  const auto& cluster = stack.cluster();
  const std::string& url = cluster.app_url;

  std::map<std::string, const Sent*> by_id;
  std::map<std::string, std::int64_t> expected_balance;
  for (int i = 0; i < customer_accounts; ++i) expected_balance[account(i)] = initial_deposit;
  int unresolved = 0;
  int acknowledged = 0;
  std::map<std::string, int> refusals;
  for (const auto& command : sent) {
    by_id[command.id] = &command;
    if (command.status == 0) ++unresolved;
    if (command.status >= 200 && command.status < 300) {
      ++acknowledged;
      expected_balance[account(command.from)] -= command.amount;
      expected_balance[account(command.to)] += command.amount;
    } else if (command.status != 0) {
      refusals[command.code]++;
    }
  }
  CHECK_MESSAGE(unresolved == 0, unresolved << " commands got no definitive answer within the bound");
  for (const auto& [code, count] : refusals) MESSAGE(count << " refused definitively with " << code);
  CHECK(acknowledged > 0);
  // Enough funds that no transfer is refused: every definitive answer is an acknowledgement.
  CHECK(refusals.empty());

  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  // Dense positions, dense versions.
  const auto positions = work.exec1("SELECT count(*), coalesce(max(position), 0), coalesce(min(position), 1) FROM events");
  CHECK(positions[0].as<std::int64_t>() == positions[1].as<std::int64_t>());
  CHECK(positions[2].as<std::int64_t>() == 1);
  CHECK(work.exec1("SELECT position FROM event_store_head")[0].as<std::int64_t>() == positions[1].as<std::int64_t>());
  CHECK(work.exec1("SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id "
                   "HAVING count(*) <> max(version) OR min(version) <> 1) gaps")[0]
            .as<std::int64_t>() == 0);

  // Exactly once: one transfer stream with one event per acknowledged command, none for others.
  int stored_once = 0;
  int doubled = 0;
  int stored_but_not_acknowledged = 0;
  int acknowledged_but_missing = 0;
  std::set<std::string> stored;
  for (const auto& row : work.exec("SELECT substr(stream_id, 10), count(*) FROM events "
                                   "WHERE stream_id LIKE 'transfer-t%' GROUP BY stream_id")) {
    const std::string id = row[0].as<std::string>();
    stored.insert(id);
    const auto found = by_id.find(id);
    if (found == by_id.end() || found->second->status < 200 || found->second->status >= 300) {
      ++stored_but_not_acknowledged;
    } else if (row[1].as<std::int64_t>() != 1) {
      ++doubled;
    } else {
      ++stored_once;
    }
  }
  for (const auto& [id, command] : by_id) {
    if (command->status >= 200 && command->status < 300 && !stored.contains(id)) ++acknowledged_but_missing;
  }
  CHECK(doubled == 0);
  CHECK(stored_but_not_acknowledged == 0);
  CHECK(acknowledged_but_missing == 0);
  CHECK(stored_once == acknowledged);
  // One idempotency record per key, and two entries per transfer in the store's fold (checked
  // through the read model below, which must equal the fold).
  CHECK(work.exec1("SELECT count(*) FROM idempotency_keys WHERE key LIKE 't%'")[0].as<std::int64_t>() ==
        static_cast<std::int64_t>(sent.size()));
  work.commit();

  // The read models reach the head within a bound and equal the fold.
  const auto converging = Clock::now();
  const bool converged = test::eventually([&] { return caught_up(url); }, converge_max);
  CHECK_MESSAGE(converged, "the read models did not reach the head; see " << stack.log(stack.project()));
  MESSAGE("read models at the head " << seconds_since(converging) << " s after the load stopped");
  if (converged) {
    test::check_read_models_equal_fold(url);
    pqxx::connection read_connection(url);
    pqxx::read_transaction read(read_connection);
    int wrong = 0;
    for (const auto& [id, balance] : expected_balance) {
      const auto row = read.exec_params("SELECT credits_posted - debits_posted FROM read.balances WHERE account_id = $1", id);
      if (row.empty() || row[0][0].as<std::int64_t>() != balance) ++wrong;
    }
    CHECK_MESSAGE(wrong == 0, "balances differ from what the clients were told");
    CHECK(read.exec1("SELECT count(*) FROM read.entries WHERE transfer_id LIKE 't%'")[0].as<std::int64_t>() ==
          2 * static_cast<std::int64_t>(acknowledged));
    run_cli(cluster, {"replay", "verify"}, "double entry holds");
    run_cli(cluster, {"replay", "reconcile"}, "ok: 0 differences");
  }
}

// The positions on the events topic, read from the start of every partition to its end.
std::set<std::int64_t> positions_on_topic(const std::string& brokers) {
  constexpr int partitions = 4;
  char error[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), error, sizeof error);
  rd_kafka_conf_set(conf, "group.id", "faults-topic-reader", error, sizeof error);
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", error, sizeof error);
  rd_kafka_conf_set(conf, "log_level", "2", error, sizeof error);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> consumer(
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error), &rd_kafka_destroy);
  REQUIRE(consumer);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, test::events_topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(consumer.get(), list);
  rd_kafka_topic_partition_list_destroy(list);
  std::set<std::int64_t> positions;
  std::set<std::int32_t> ended;
  const auto deadline = Clock::now() + 30s;
  while (static_cast<int>(ended.size()) < partitions && Clock::now() < deadline) {
    rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer.get(), 100);
    if (message == nullptr) continue;
    if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ended.insert(message->partition);
    } else if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (auto event = domain::decode_envelope({static_cast<const char*>(message->payload), message->len})) {
        positions.insert(event->position.value());
      }
    }
    rd_kafka_message_destroy(message);
  }
  REQUIRE(static_cast<int>(ended.size()) == partitions);
  rd_kafka_consumer_close(consumer.get());
  return positions;
}

// --- one fault, from start to end ---------------------------------------------------------

struct Scenario {
  std::string name;
  // Injects the fault; returns when it has healed (the test's own restarts included).
  std::function<void(Stack&)> inject;
  // What /health must have said at least once while the fault lasted.
  std::string expected_report;
  std::function<bool(const HealthSample&)> reported;
  // Exits the fault causes by design (the rest must be none).
  std::function<void(Stack&)> check_exits;
  // A check of its own after healing, if any.
  std::function<void(Stack&)> check_more;
};

ClusterRef shared_cluster(const test::TestDatabase& database) {
  const auto& cluster = test::TestCluster::instance();
  return {cluster.directory(), cluster.port(), database.name(), database.admin_url(), database.app_url()};
}

void run_scenario(const ClusterRef& cluster, const Scenario& scenario) {
  const auto started = Clock::now();
  Stack stack(scenario.name, cluster);
  stack.start();
  const std::string token = api::issue_token(jwt_secret, "faults", {"teller", "admin"}, std::chrono::hours(1));
  const std::vector<std::string> auth = {"Authorization: Bearer " + token};
  for (int i = 0; i < customer_accounts; ++i) {
    const auto opened = http_call(stack.http_port(), "POST", "/v1/accounts",
                                  R"({"id":")" + account(i) + R"(","currency":"EUR"})", auth, 10s);
    REQUIRE(opened);
    REQUIRE_MESSAGE(opened->status == 201, opened->body);
    const auto deposited = http_call(stack.http_port(), "POST", "/v1/accounts/" + account(i) + "/deposits",
                                     R"({"amount":)" + std::to_string(initial_deposit) + "}", auth, 10s);
    REQUIRE(deposited);
    REQUIRE_MESSAGE(deposited->status == 201, deposited->body);
  }
  HealthProbe health(stack.http_port());
  Load load(stack.http_port(), token);
  load.start();
  std::this_thread::sleep_for(1s);  // the load runs and the read side follows
  const auto fault_started = Clock::now();
  scenario.inject(stack);
  const auto healed = Clock::now();
  const double fault_seconds = std::chrono::duration<double>(healed - fault_started).count();
  std::this_thread::sleep_for(1s);  // load after healing
  load.stop();
  const auto sent = load.sent();
  MESSAGE(scenario.name << ": fault " << fault_seconds << " s; " << sent.size() << " commands, "
                        << load.acknowledged() << " acknowledged, " << load.resent() << " resent, "
                        << load.outcome_unknown() << " outcome_unknown answers");

  // /health said so while it lasted, and is healthy again within a bound.
  const auto during = health.between(fault_started, healed);
  bool reported = false;
  for (const auto& sample : during) reported = reported || scenario.reported(sample);
  CHECK_MESSAGE(reported, scenario.name << ": /health never said " << scenario.expected_report
                                        << " during the fault; it said:" << summarize(during));
  MESSAGE(scenario.name << ": /health during the fault:" << summarize(during));
  const auto healing = Clock::now();
  bool healthy = false;
  while (!healthy && Clock::now() - healing < healthy_again_max) {
    const auto reply = http_call(stack.http_port(), "GET", "/health", "", {}, 2s);
    healthy = reply && reply->status == 200 && json_string(reply->body, "status") == "healthy";
    if (!healthy) std::this_thread::sleep_for(200ms);
  }
  CHECK_MESSAGE(healthy, scenario.name << ": /health not healthy " << healthy_again_max.count()
                                       << " s after healing; last said:" << summarize(health.between(healing, Clock::now())));
  MESSAGE(scenario.name << ": healthy " << seconds_since(healing) << " s after the load stopped");

  check_after_healing(stack, sent);
  if (scenario.check_more) scenario.check_more(stack);

  stack.stop_supervising();
  if (scenario.check_exits) scenario.check_exits(stack);
  const auto unexpected = stack.unexpected_exits();
  std::string exits;
  for (const auto& exit : unexpected) exits += "\n  " + exit;
  CHECK_MESSAGE(unexpected.empty(), scenario.name << ": processes exited that nobody stopped:" << exits);
  MESSAGE(scenario.name << ": whole case " << seconds_since(started) << " s");
}

// Sends SIGCONT to `pids` however the scope ends: a stopped process must never outlive a test.
struct ContinueOnExit {
  std::vector<pid_t> pids;
  ~ContinueOnExit() {
    for (auto it = pids.rbegin(); it != pids.rend(); ++it) ::kill(*it, SIGCONT);
  }
};

void stop_for(pid_t pid, std::chrono::milliseconds duration) {
  ContinueOnExit resume{{pid}};
  REQUIRE(::kill(pid, SIGSTOP) == 0);
  std::this_thread::sleep_for(duration);
}

bool says_database_down(const HealthSample& s) { return s.status == 503 && s.database == "down"; }

void expect_no_exits(Stack& stack) {
  CHECK(stack.restarts(stack.serve()) == 0);
  CHECK(stack.restarts(stack.project()) == 0);
  CHECK(stack.restarts(stack.broker()) == 0);
}

// A process that is killed and restarted: the designed exit is the one the test caused.
std::function<void(Stack&)> expect_restarted(Child& (Stack::*which)()) {
  return [which](Stack& stack) {
    Child& child = (stack.*which)();
    CHECK(stack.restarts(child) == 1);
    REQUIRE(!child.exits.empty());
    CHECK(child.exits.front() == "signal " + std::to_string(SIGKILL));
  };
}

}  // namespace

TEST_SUITE_BEGIN("faults between the processes");

TEST_CASE("PostgreSQL blackholed (connections open, nothing forwarded) past every timeout, then healed") {
  test::TestDatabase database;
  // Longer than the connect and statement timeouts, the in-doubt wait and the server's
  // idle-in-transaction limit, which ends a session the engine left waiting on a COMMIT.
  const auto outage = engine_idle_in_transaction_timeout + 2s;
  run_scenario(shared_cluster(database),
               {"pg-blackhole",
                [&](Stack& stack) {
                  stack.proxy().blackhole(outage);
                  std::this_thread::sleep_for(outage);
                },
                "database down", says_database_down, expect_no_exits});
}

TEST_CASE("PostgreSQL blackholed as a COMMIT is on its way: the session waits in its transaction past every timeout") {
  test::TestDatabase database;
  const auto outage = engine_idle_in_transaction_timeout + 2s;
  run_scenario(shared_cluster(database),
               {"pg-blackhole-commit",
                [&](Stack& stack) {
                  stack.proxy().fault_next_commit(test::PgFaultProxy::CommitFault::blackhole_commit, outage);
                  const auto deadline = Clock::now() + 10s;
                  while (stack.proxy().armed() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
                  REQUIRE_MESSAGE(!stack.proxy().armed(), "no COMMIT went through the proxy");
                  std::this_thread::sleep_for(100ms);
                  while (stack.proxy().blackholed()) std::this_thread::sleep_for(10ms);
                },
                "database down", says_database_down, expect_no_exits,
                [](Stack& stack) {
                  const auto log = read_log(stack.log(stack.serve()));
                  // The held COMMIT may be a projector's or the relay's (any client's next one):
                  // say whether it was the engine's, whose in-doubt check then ran.
                  const std::string in_doubt = "commit outcome unknown";
                  int count = 0;
                  for (auto at = log.find(in_doubt); at != std::string::npos; at = log.find(in_doubt, at + 1)) ++count;
                  MESSAGE("pg-blackhole-commit: the engine checked " << count << " commits in doubt");
                }});
}

TEST_CASE("PostgreSQL connections cut and refused for a while") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database), {"pg-refuse",
                                          [](Stack& stack) {
                                            // Long enough for a health probe to see it
                                            // on a loaded machine (a refresh is up to 1 s).
                                            stack.proxy().cut(8s);
                                            std::this_thread::sleep_for(8s);
                                          },
                                          "database down", says_database_down, expect_no_exits});
}

TEST_CASE("a COMMIT lost on its way, then the database cut off") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"commit-lost",
                [](Stack& stack) {
                  stack.proxy().fault_next_commit(test::PgFaultProxy::CommitFault::lose_commit, 8s);
                  const auto deadline = Clock::now() + 10s;
                  while (stack.proxy().armed() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
                  REQUIRE_MESSAGE(!stack.proxy().armed(), "no COMMIT went through the proxy");
                  while (stack.proxy().down()) std::this_thread::sleep_for(10ms);
                },
                "database down", says_database_down, expect_no_exits});
}

TEST_CASE("PostgreSQL slow: every message delayed") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"pg-delay",
                [](Stack& stack) {
                  stack.proxy().set_delay(40ms);
                  std::this_thread::sleep_for(4s);
                  stack.proxy().set_delay(0ms);
                },
                "the database's latency (slow, not down)",
                [](const HealthSample& s) { return s.status == 200 && s.database_latency_ms >= 40; },
                expect_no_exits});
}

TEST_CASE("serve stopped (SIGSTOP) and continued") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"serve-stop",
                [](Stack& stack) { stop_for(stack.serve().pid, 6s); },
                "nothing (a probe times out)", [](const HealthSample& s) { return s.status == 0; },
                expect_no_exits});
}

TEST_CASE("the projectors stopped (SIGSTOP) past the read side's lag threshold, and continued") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"project-stop",
                [](Stack& stack) { stop_for(stack.project().pid, projection_behind_threshold + 2500ms); },
                "projections behind",
                [](const HealthSample& s) { return s.status == 200 && s.overall == "degraded" && s.projections == "behind"; },
                expect_no_exits});
}

TEST_CASE("serve killed (SIGKILL) and restarted by its supervisor") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"serve-kill",
                [](Stack& stack) {
                  stack.kill_child(stack.serve(), SIGKILL, 2s);
                  std::this_thread::sleep_for(2s);
                  REQUIRE(stack.ready(30s));
                },
                "nothing (connection refused)", [](const HealthSample& s) { return s.status == 0; },
                expect_restarted(&Stack::serve)});
}

TEST_CASE("serve killed while PostgreSQL refuses connections: its restarts exit by design until the database is back") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"serve-kill-db-down",
                [](Stack& stack) {
                  constexpr auto outage = 9s;
                  stack.proxy().cut(outage);
                  // serve cannot check the migrations without the database: it exits (code 1)
                  // after its connection retries, and its supervisor starts it again.
                  stack.allow_exit_code(stack.serve(), 1);
                  stack.kill_child(stack.serve(), SIGKILL, 500ms);
                  std::this_thread::sleep_for(outage);
                  REQUIRE(stack.ready(30s));
                },
                "nothing (serve is down)", [](const HealthSample& s) { return s.status == 0; },
                [](Stack& stack) {
                  const auto designed = stack.designed_exits();
                  CHECK(!designed.empty());
                  for (const auto& exit : designed) MESSAGE("by design: " << exit);
                  CHECK(read_log(stack.log(stack.serve())).find("cannot connect to PostgreSQL") != std::string::npos);
                  CHECK(stack.restarts(stack.serve()) == 1 + static_cast<int>(designed.size()));
                }});
}

TEST_CASE("the projectors killed (SIGKILL) and restarted by their supervisor after a backoff") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"project-kill",
                [](Stack& stack) {
                  stack.kill_child(stack.project(), SIGKILL, projection_behind_threshold + 2500ms);
                  std::this_thread::sleep_for(projection_behind_threshold + 2500ms);
                },
                "projections behind",
                [](const HealthSample& s) { return s.status == 200 && s.overall == "degraded" && s.projections == "behind"; },
                expect_restarted(&Stack::project)});
}

TEST_CASE("the broker killed (SIGKILL), its log lost, and restarted on the same address") {
  test::TestDatabase database;
  run_scenario(shared_cluster(database),
               {"broker-kill",
                [](Stack& stack) {
                  stack.kill_child(stack.broker(), SIGKILL, kafka_stuck_threshold + 2s);
                  std::this_thread::sleep_for(kafka_stuck_threshold + 2s);
                  const auto deadline = Clock::now() + 10s;
                  while (!fs::exists(stack.directory() / "broker.address") && Clock::now() < deadline) {
                    std::this_thread::sleep_for(50ms);
                  }
                },
                "kafka down",
                [](const HealthSample& s) { return s.status == 200 && s.overall == "degraded" && s.kafka == "down"; },
                expect_restarted(&Stack::broker),
                [](Stack& stack) {
                  // The read models converge even without Kafka (a gap is read from the store), so
                  // look at the topic itself, as a consumer that is not ours does: the restarted
                  // broker must hold every position from where its log starts to the head, with
                  // no hole where messages were in flight when the old one died.
                  const auto head = test::store_head(stack.cluster().app_url);
                  std::set<std::int64_t> positions;
                  const bool complete = test::eventually(
                      [&] {
                        positions = positions_on_topic(stack.brokers());
                        return !positions.empty() && *positions.rbegin() == head;
                      },
                      30s);
                  CHECK_MESSAGE(complete, "the restarted broker's topic does not reach the head " << head);
                  REQUIRE(!positions.empty());
                  const std::int64_t first = *positions.begin();
                  const std::int64_t missing = (*positions.rbegin() - first + 1) - static_cast<std::int64_t>(positions.size());
                  CHECK_MESSAGE(missing == 0, missing << " positions missing on the restarted broker between " << first
                                                      << " and " << *positions.rbegin());
                  MESSAGE("broker-kill: the restarted broker holds positions " << first << " to "
                                                                                << *positions.rbegin() << " of " << head);
                }});
}

TEST_CASE("the broker stopped (SIGSTOP): connections accepted, nothing answered, then continued") {
  test::TestDatabase database;
  // A stopped broker is a blackhole for the relay and the projectors: the kernel still accepts
  // their connections, nothing answers. Past the read side's Kafka threshold, below librdkafka's
  // own request and delivery timeouts (30 s and 60 s), which the broker-kill case exceeds.
  run_scenario(shared_cluster(database),
               {"broker-stop",
                [](Stack& stack) { stop_for(stack.broker().pid, kafka_stuck_threshold + 7s); },
                "kafka down",
                [](const HealthSample& s) { return s.status == 200 && s.overall == "degraded" && s.kafka == "down"; },
                expect_no_exits});
}

TEST_CASE("PostgreSQL itself stopped (SIGSTOP of the postmaster and every backend), then continued") {
  // A private cluster: stopping the shared one would stall every other test of the run.
  const fs::path directory = "/tmp/ledger-faults-pg-" + std::to_string(getpid());
  fs::remove_all(directory);
  const int port = test::start_test_cluster(directory);
  struct StopCluster {
    fs::path directory;
    ~StopCluster() {
      try {
        test::stop_test_cluster(directory);
        fs::remove_all(directory);
      } catch (...) {
      }
    }
  } stop_cluster{directory};
  const std::string database = "faults";
  const test::TestCluster cluster(directory, port);
  {
    pqxx::connection connection(cluster.superuser_url("postgres"));
    pqxx::nontransaction work(connection);
    work.exec("CREATE DATABASE " + database + " TEMPLATE " + test::TestCluster::template_database);
  }
  const ClusterRef ref{directory, port, database, cluster.superuser_url(database), cluster.url("ledger_app", database)};
  run_scenario(ref, {"pg-stop",
                     [&](Stack&) {
                       std::ifstream pid_file(directory / "data" / "postmaster.pid");
                       pid_t postmaster = 0;
                       pid_file >> postmaster;
                       REQUIRE(postmaster > 0);
                       // The postmaster first (it forks no new backend meanwhile), then its children.
                       ContinueOnExit resume{{postmaster}};
                       REQUIRE(::kill(postmaster, SIGSTOP) == 0);
                       for (const auto& entry : fs::directory_iterator("/proc")) {
                         std::ifstream stat(entry.path() / "stat");
                         std::string line;
                         if (!std::getline(stat, line)) continue;
                         const auto close = line.rfind(')');
                         if (close == std::string::npos) continue;
                         std::istringstream rest(line.substr(close + 2));
                         char state = 0;
                         pid_t parent = 0;
                         rest >> state >> parent;
                         if (parent != postmaster) continue;
                         const pid_t child = std::stoi(entry.path().filename().string());
                         if (::kill(child, SIGSTOP) == 0) resume.pids.push_back(child);
                       }
                       MESSAGE("stopped the postmaster and " << resume.pids.size() - 1 << " backends");
                       std::this_thread::sleep_for(8s);
                     },
                     "database down", says_database_down, expect_no_exits});
}

TEST_SUITE_END();
