#include "two_serves.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "serve_metrics.hpp"

namespace ledger::bench {

namespace {

namespace fs = std::filesystem;

// Seconds of load before the measured runs, so a serve's state cache holds the accounts.
constexpr double warm_up_seconds = 3;

struct EngineCounters {
  std::int64_t commands = 0;
  std::int64_t conflicts = 0;
  std::int64_t redecided = 0;
  std::int64_t stalls = 0;
  std::int64_t batches = 0;
  std::int64_t on_own_head = 0;
  std::int64_t on_own_head_missed = 0;
  double head_lock_wait_seconds = 0;
  double head_lock_held_seconds = 0;
};

EngineCounters counters(int port) {
  const std::string text = http_get(port, "/metrics");
  return {metric(text, "ledger_engine_commands_total{outcome=\"accepted\"}") +
              metric(text, "ledger_engine_commands_total{outcome=\"rejected\"}"),
          metric(text, "ledger_engine_conflicts_total"),
          metric(text, "ledger_engine_commands_redecided_total"),
          metric(text, "ledger_engine_pipeline_stalls_total"),
          metric(text, "ledger_engine_batches_total"),
          metric(text, "ledger_engine_appends_on_own_head_total{outcome=\"committed\"}"),
          metric(text, "ledger_engine_appends_on_own_head_total{outcome=\"head_moved\"}"),
          metric_sum(text, "ledger_engine_head_lock_wait_seconds"),
          metric_sum(text, "ledger_engine_head_lock_held_seconds")};
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error("no free port on loopback");
  }
  close(fd);
  return ntohs(address.sin_port);
}

struct Serve {
  pid_t pid = 0;
  int port = 0;
};

Serve start_serve(const TwoServesSettings& settings, const std::string& name) {
  const fs::path home = fs::path(settings.work_directory) / ("two-serves-" + name);
  // Snapshots of an earlier run describe another database: start the cache empty.
  fs::remove_all(home);
  fs::create_directories(home);
  process::SpawnOptions options;
  options.output_file = (home / "serve.log").string();
  options.extra_environment = {"LEDGER_JWT_SECRET=" + settings.jwt_secret, "LEDGER_LOG_LEVEL=warn"};
  Serve serve;
  serve.pid = process::spawn({settings.ledger_binary, "--home", home.string(), "--database-url", settings.database_url,
                              "serve", "--http-port", "0", "--port-file", (home / "port").string(),
                              "--snapshot-directory", (home / "snapshots").string(), "--relay", "false"},
                             options);
  for (int attempt = 0; attempt < 600 && serve.port == 0; ++attempt) {
    std::ifstream in(home / "port");
    if (!(in >> serve.port)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (serve.port == 0) throw std::runtime_error("ledger serve did not start; see " + options.output_file);
  return serve;
}

// HAProxy in the foreground, round robin per request over `serves`; 0 when it did not start.
pid_t start_haproxy(const TwoServesSettings& settings, const std::vector<Serve>& serves, int& port,
                    std::string& problem) {
  const fs::path directory = fs::path(settings.work_directory) / "two-serves-haproxy";
  fs::create_directories(directory);
  port = free_port();
  std::ostringstream config;
  config << "global\n  maxconn 1024\n"
         << "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n"
         << "frontend ledger\n  bind 127.0.0.1:" << port << "\n  default_backend serves\n"
         << "backend serves\n  balance roundrobin\n";
  for (std::size_t i = 0; i < serves.size(); ++i) {
    config << "  server serve" << i << " 127.0.0.1:" << serves[i].port << "\n";
  }
  std::ofstream(directory / "haproxy.cfg") << config.str();
  process::SpawnOptions options;
  options.output_file = (directory / "haproxy.log").string();
  const pid_t pid = process::spawn({"haproxy", "-db", "-f", (directory / "haproxy.cfg").string()}, options);
  for (int attempt = 0; attempt < 100 && process::is_alive(pid); ++attempt) {
    try {
      (void)http_get(port, "/health/live");
      return pid;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  (void)process::stop(pid, SIGTERM, std::chrono::seconds(5));
  problem = "haproxy did not start (ops/setup.sh installs it); see " + options.output_file;
  return 0;
}

std::string workload_name(WrkScript script) { return script == WrkScript::deposits ? "deposits" : "transfers"; }

// wrk on each port at the same time; the engines' counters are read from `counted` around it.
std::vector<ServeLoad> load_at_once(const TwoServesSettings& settings, WrkScript script, const std::vector<int>& ports,
                                    int connections, const std::vector<int>& counted, const std::string& run_id,
                                    double seconds) {
  std::vector<EngineCounters> before;
  for (const int port : counted) before.push_back(counters(port));
  std::vector<std::future<WrkResult>> runs;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    WrkSettings wrk;
    wrk.port = ports[i];
    wrk.connections = connections;
    wrk.seconds = seconds;
    wrk.accounts = settings.accounts;
    wrk.token = api::issue_token(settings.jwt_secret, "bench", {"teller"}, std::chrono::hours(1));
    wrk.script = script;
    // Each wrk process its own keys: two runs at once must not replay each other's commands.
    wrk.run_id = run_id + "-" + std::to_string(i);
    runs.push_back(std::async(std::launch::async, [wrk] { return run_wrk(wrk); }));
  }
  std::vector<ServeLoad> loads(ports.size());
  for (std::size_t i = 0; i < ports.size(); ++i) loads[i].wrk = runs[i].get();
  // With one wrk per serve each load gets its own serve's counters; one wrk over several
  // serves (the balancer) gets their sum.
  for (std::size_t c = 0; c < counted.size(); ++c) {
    const auto after = counters(counted[c]);
    ServeLoad& load = loads[counted.size() == ports.size() ? c : 0];
    load.commands += after.commands - before[c].commands;
    load.conflicts += after.conflicts - before[c].conflicts;
    load.redecided += after.redecided - before[c].redecided;
    load.stalls += after.stalls - before[c].stalls;
    load.batches += after.batches - before[c].batches;
    load.on_own_head += after.on_own_head - before[c].on_own_head;
    load.on_own_head_missed += after.on_own_head_missed - before[c].on_own_head_missed;
    load.head_lock_wait_seconds += after.head_lock_wait_seconds - before[c].head_lock_wait_seconds;
    load.head_lock_held_seconds += after.head_lock_held_seconds - before[c].head_lock_held_seconds;
  }
  return loads;
}

}  // namespace

TwoServesRun run_two_serves(const TwoServesSettings& settings) {
  TwoServesRun run;
  const std::string run_id =
      "two-serves-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  const int connections = settings.connections_per_serve;
  const std::vector<WrkScript> workloads = {WrkScript::transfers, WrkScript::deposits};
  for (const auto script : workloads) run.scenarios.push_back({script, {}, {}, {}, {}});

  std::vector<Serve> serves;
  auto stop_all = [&] {
    for (auto it = serves.rbegin(); it != serves.rend(); ++it) {
      (void)process::stop(it->pid, SIGTERM, std::chrono::seconds(30));
    }
  };
  try {
    serves.push_back(start_serve(settings, "a"));
    serves.push_back(start_serve(settings, "b"));
    const int a = serves[0].port;
    const int b = serves[1].port;
    for (const auto& [port, name] : {std::pair{a, "a"}, std::pair{b, "b"}}) {
      std::cout << "two serves: warming serve " << name << " (" << warm_up_seconds << " s) ...\n";
      (void)load_at_once(settings, WrkScript::transfers, {port}, connections, {port}, run_id + "-warm-" + name,
                         warm_up_seconds);
    }
    int balancer_port = 0;
    std::string problem;
    const pid_t balancer = start_haproxy(settings, serves, balancer_port, problem);
    // Per workload: a alone (b started and idle), both, a alone again, both behind HAProxy;
    // the runs of one bracket the run of two closely, so the machine's drift shows in them.
    for (auto& scenario : run.scenarios) {
      const auto name = workload_name(scenario.workload);
      auto one_alone = [&](const std::string& when) {
        std::cout << "two serves: " << name << ", one serve alone (" << when << "), " << connections
                  << " connections, " << settings.seconds << " s ...\n";
        scenario.one.push_back(load_at_once(settings, scenario.workload, {a}, connections, {a},
                                            run_id + "-one-" + when + "-" + name, settings.seconds)[0]);
      };
      one_alone("before");
      std::cout << "two serves: " << name << ", two serves at once, " << connections << " connections on each, "
                << settings.seconds << " s ...\n";
      scenario.two = load_at_once(settings, scenario.workload, {a, b}, connections, {a, b}, run_id + "-two-" + name,
                                  settings.seconds);
      one_alone("after");
      if (balancer == 0) {
        scenario.balancer_problem = problem;
        continue;
      }
      std::cout << "two serves: " << name << ", both behind HAProxy, " << 2 * connections << " connections, "
                << settings.seconds << " s ...\n";
      scenario.balanced = load_at_once(settings, scenario.workload, {balancer_port}, 2 * connections, {a, b},
                                       run_id + "-haproxy-" + name, settings.seconds)[0];
    }
    if (balancer != 0) (void)process::stop(balancer, SIGTERM, std::chrono::seconds(10));
  } catch (...) {
    stop_all();
    throw;
  }
  stop_all();
  return run;
}

}  // namespace ledger::bench
