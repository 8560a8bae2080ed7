// `ledger dev` as a developer runs it: start, use, stop with SIGTERM leaving nothing behind,
// start again on the same data, and recover from a run that was SIGKILLed.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include <filesystem>
#include <algorithm>
#include <fstream>
#include <map>
#include <thread>

#include "dev_stack.hpp"
#include "http_client.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using test::DevRun;
using test::read_env;
using test::start_dev;
namespace fs = std::filesystem;

namespace {

bool tcp_connects(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(std::stoi(host_port.substr(colon + 1))));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  const bool connected = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  close(fd);
  return connected;
}

std::vector<pid_t> stack_pids(const fs::path& home) {
  std::vector<pid_t> pids;
  for (const auto& entry : fs::directory_iterator(home / "run")) {
    if (entry.path().extension() == ".pid") {
      std::ifstream in(entry.path());
      pid_t pid = 0;
      in >> pid;
      pids.push_back(pid);
    }
  }
  std::ifstream postmaster(home / "postgres" / "data" / "postmaster.pid");
  pid_t postgres = 0;
  if (postmaster >> postgres) pids.push_back(postgres);
  return pids;
}

void wait_all_gone(const std::vector<pid_t>& pids) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (pid_t pid : pids) {
    while (process::is_alive(pid) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK_MESSAGE(!process::is_alive(pid), "process " << pid << " was left running");
  }
}

// Every live process that belongs to the stack under `home`, pid files or not: the ledger
// children name the home on their command line, PostgreSQL processes run inside its data
// directory.
std::vector<pid_t> processes_under(const fs::path& home) {
  std::vector<pid_t> found;
  const std::string prefix = fs::weakly_canonical(home).string();
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const pid_t pid = std::stoi(name);
    if (pid == getpid()) continue;
    std::ifstream cmdline_file(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(cmdline_file)), std::istreambuf_iterator<char>());
    std::error_code error;
    const std::string cwd = fs::read_symlink(entry.path() / "cwd", error).string();
    if (cmdline.find(prefix) != std::string::npos || (!error && cwd.rfind(prefix, 0) == 0)) {
      found.push_back(pid);
    }
  }
  return found;
}

void check_nothing_left(const fs::path& home) {
  std::vector<pid_t> left = processes_under(home);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = processes_under(home);
  }
  for (pid_t pid : left) {
    std::ifstream cmdline(fs::path("/proc") / std::to_string(pid) / "cmdline");
    std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    std::replace(text.begin(), text.end(), '\0', ' ');
    FAIL_CHECK("process " << pid << " of the stack was left running: " << text);
  }
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::perms mode_of(const fs::path& path) {
  return fs::status(path).permissions() & fs::perms::mask;
}

// dev.env and the JWT secret are readable by their owner only, and serve gets the secret by
// file: neither its command line (`ps`) nor its environment holds it.
std::string check_secrets_are_private(const fs::path& home, const DevRun& run) {
  constexpr auto owner_only = fs::perms::owner_read | fs::perms::owner_write;
  CHECK(mode_of(home / "dev.env") == owner_only);
  // CHECK, not REQUIRE: a failure here must not leave the stack running.
  CHECK(run.env.contains("LEDGER_JWT_SECRET_FILE"));
  if (!run.env.contains("LEDGER_JWT_SECRET_FILE")) return {};
  const fs::path secret_file = run.env.at("LEDGER_JWT_SECRET_FILE");
  CHECK(mode_of(secret_file) == owner_only);
  std::string secret = read_file(secret_file);
  while (!secret.empty() && secret.back() == '\n') secret.pop_back();
  CHECK(secret.size() >= 32);
  CHECK(secret != "ledger-development-secret-never-use-in-production");
  CHECK(run.env.contains("LEDGER_JWT_SECRET"));  // API.md: dev.env names the secret
  if (run.env.contains("LEDGER_JWT_SECRET")) CHECK(run.env.at("LEDGER_JWT_SECRET") == secret);
  std::ifstream serve_pid_file(home / "run" / "serve.pid");
  pid_t serve_pid = 0;
  serve_pid_file >> serve_pid;
  CHECK(serve_pid > 0);
  const fs::path serve_proc = fs::path("/proc") / std::to_string(serve_pid);
  CHECK(read_file(serve_proc / "cmdline").find(secret) == std::string::npos);
  CHECK(read_file(serve_proc / "environ").find(secret) == std::string::npos);
  CHECK(read_file(serve_proc / "cmdline").find(secret_file.string()) != std::string::npos);
  return secret;
}

}  // namespace

TEST_CASE("ledger dev starts, stops cleanly, restarts on the same data and survives a SIGKILL") {
  const fs::path home = "/tmp/ledger-dev-e2e-" + std::to_string(getpid());
  fs::remove_all(home);

  // First run: everything comes up and is reachable.
  DevRun first = start_dev(home);
  {
    pqxx::connection app(first.env.at("LEDGER_DATABASE_URL"));
    pqxx::read_transaction work(app);
    CHECK(work.exec1("SELECT count(*) FROM pending_expiries")[0].as<int>() == 0);
    CHECK(work.exec1("SELECT current_user")[0].as<std::string>() == "ledger_app");
  }
  {
    pqxx::connection admin(first.env.at("LEDGER_ADMIN_DATABASE_URL"));
    pqxx::work work(admin);
    work.exec("CREATE TABLE survives_restart (note text)");
    work.exec("INSERT INTO survives_restart VALUES ('kept')");
    work.commit();
  }
  CHECK(tcp_connects(first.env.at("LEDGER_KAFKA_BROKERS")));
  const std::string first_secret = check_secrets_are_private(home, first);
  {
    // The printed development token works against the printed URL.
    const auto& url = first.env.at("LEDGER_URL");
    test::HttpClient client(std::stoi(url.substr(url.rfind(':') + 1)));
    const auto opened = client.request("POST", "/v1/accounts", R"({"id":"dev-check","currency":"EUR"})",
                                       {{"Authorization", "Bearer " + first.env.at("LEDGER_TOKEN")}});
    CHECK(opened.status == 201);
    CHECK(client.request("GET", "/v1/streams/account-dev-check/events", "",
                         {{"Authorization", "Bearer " + first.env.at("LEDGER_TOKEN")}}).status == 200);
  }
  auto pids = stack_pids(home);
  CHECK(pids.size() >= 3);  // broker, serve and postgres
  CHECK(processes_under(home).size() >= pids.size());  // the scan below sees the stack

  // SIGTERM stops every child and exits 0.
  kill(first.pid, SIGTERM);
  auto status = process::wait_for(first.pid, std::chrono::seconds(90));
  REQUIRE(status.has_value());
  CHECK(status->success());
  wait_all_gone(pids);
  check_nothing_left(home);
  CHECK_FALSE(fs::exists(home / "dev.env"));
  CHECK_FALSE(fs::exists(home / "dev.pid"));

  // Second run reuses the data.
  DevRun second = start_dev(home);
  {
    pqxx::connection admin(second.env.at("LEDGER_ADMIN_DATABASE_URL"));
    pqxx::read_transaction work(admin);
    CHECK(work.exec1("SELECT note FROM survives_restart")[0].as<std::string>() == "kept");
  }
  {
    // The home keeps its secret: a token of the first run is still good.
    CHECK(check_secrets_are_private(home, second) == first_secret);
    const auto& url = second.env.at("LEDGER_URL");
    test::HttpClient client(std::stoi(url.substr(url.rfind(':') + 1)));
    CHECK(client
              .request("GET", "/v1/streams/account-dev-check/events", "",
                       {{"Authorization", "Bearer " + first.env.at("LEDGER_TOKEN")}})
              .status == 200);
  }
  // A run killed without warning leaves its children behind ...
  const auto orphans = stack_pids(home);
  kill(second.pid, SIGKILL);
  (void)process::wait_for(second.pid, std::chrono::seconds(10));

  // ... and the next run finds and stops them, then comes up normally.
  DevRun third = start_dev(home);
  const auto current = stack_pids(home);
  for (pid_t orphan : orphans) {
    // Every process of the killed run is gone (unless the kernel reused its pid for the new run).
    const bool reused = std::find(current.begin(), current.end(), orphan) != current.end();
    CHECK_MESSAGE((!process::is_alive(orphan) || reused),
                  "orphan " << orphan << " of the killed run is still running");
  }
  CHECK(tcp_connects(third.env.at("LEDGER_KAFKA_BROKERS")));
  pids = stack_pids(home);
  kill(third.pid, SIGTERM);
  status = process::wait_for(third.pid, std::chrono::seconds(90));
  REQUIRE(status.has_value());
  CHECK(status->success());
  wait_all_gone(pids);
  check_nothing_left(home);
  fs::remove_all(home);
  fs::remove(home.string() + ".log");
}

namespace {

pid_t pid_in(const fs::path& file) {
  std::ifstream in(file);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

std::string log_of(const fs::path& home) {
  std::ifstream in(home.string() + ".log");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Waits until `file` names a live process other than `old_pid`; returns it (0 on timeout).
pid_t wait_for_new_pid(const fs::path& file, pid_t old_pid) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t pid = pid_in(file);
    if (pid > 0 && pid != old_pid && process::is_alive(pid)) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

// A deposit is accepted and the balance read model shows it (min_position), within 60 s.
void check_stack_works(const fs::path& home, const std::string& deposit_key) {
  const auto env = read_env(home / "dev.env");
  const auto& url = env.at("LEDGER_URL");
  const std::map<std::string, std::string> auth = {{"Authorization", "Bearer " + env.at("LEDGER_TOKEN")}};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  std::string body;
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      test::HttpClient client(std::stoi(url.substr(url.rfind(':') + 1)));
      auto headers = auth;
      headers["Idempotency-Key"] = deposit_key;
      const auto deposit = client.request("POST", "/v1/accounts/restarts/deposits", R"({"amount":5})", headers);
      status = deposit.status;
      body = deposit.body;
      if (status == 201 || status == 200) {
        const auto position = body.substr(body.find("\"position\":") + 11);
        const auto read = client.request(
            "GET", "/v1/accounts/restarts?wait_ms=10000&min_position=" + position.substr(0, position.find_first_of(",}")),
            "", auth);
        status = read.status;
        body = read.body;
        if (status == 200) return;
      }
    } catch (const std::exception& error) {
      body = error.what();  // serve is restarting
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  FAIL_CHECK("the stack did not serve a deposit and its read model again: " << status << " " << body);
}

}  // namespace

TEST_CASE("ledger dev restarts whatever dies (serve, projectors, broker, PostgreSQL) with backoff") {
  const fs::path home = "/tmp/ledger-dev-restarts-" + std::to_string(getpid());
  fs::remove_all(home);
  DevRun run = start_dev(home);
  {
    const auto& url = run.env.at("LEDGER_URL");
    test::HttpClient client(std::stoi(url.substr(url.rfind(':') + 1)));
    REQUIRE(client.request("POST", "/v1/accounts", R"({"id":"restarts","currency":"EUR"})",
                           {{"Authorization", "Bearer " + run.env.at("LEDGER_TOKEN")}})
                .status == 201);
  }
  check_stack_works(home, "before");

  for (const std::string child : {"serve", "project"}) {
    INFO(child);
    const pid_t old_pid = pid_in(home / "run" / (child + ".pid"));
    REQUIRE(old_pid > 0);
    kill(old_pid, SIGKILL);
    CHECK(wait_for_new_pid(home / "run" / (child + ".pid"), old_pid) != 0);
    check_stack_works(home, "after-" + child);
    CHECK(log_of(home).find("restarting " + child) != std::string::npos);
  }

  // A new broker has a new address: serve and the projectors follow it, and so does dev.env.
  const std::string old_brokers = read_env(home / "dev.env").at("LEDGER_KAFKA_BROKERS");
  const pid_t old_serve = pid_in(home / "run" / "serve.pid");
  const pid_t old_broker = pid_in(home / "run" / "broker.pid");
  kill(old_broker, SIGKILL);
  CHECK(wait_for_new_pid(home / "run" / "broker.pid", old_broker) != 0);
  CHECK(wait_for_new_pid(home / "run" / "serve.pid", old_serve) != 0);
  check_stack_works(home, "after-broker");
  CHECK(read_env(home / "dev.env").at("LEDGER_KAFKA_BROKERS") != old_brokers);

  // PostgreSQL itself, killed without warning, comes back on its port.
  const pid_t postmaster = pid_in(home / "postgres" / "data" / "postmaster.pid");
  REQUIRE(postmaster > 0);
  kill(postmaster, SIGKILL);
  CHECK(wait_for_new_pid(home / "postgres" / "data" / "postmaster.pid", postmaster) != 0);
  check_stack_works(home, "after-postgres");
  CHECK(log_of(home).find("PostgreSQL restarted") != std::string::npos);
  CHECK(process::is_alive(run.pid));

  const auto pids = stack_pids(home);
  kill(run.pid, SIGTERM);
  const auto status = process::wait_for(run.pid, std::chrono::seconds(90));
  REQUIRE(status.has_value());
  CHECK(status->success());
  wait_all_gone(pids);
  check_nothing_left(home);
  fs::remove_all(home);
  fs::remove(home.string() + ".log");
}
