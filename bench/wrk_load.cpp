#include "wrk_load.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

#include "ledger/core/process.hpp"

namespace ledger::bench {

namespace {

double cpu_seconds_of_children() {
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// The machine's CPU time since boot from /proc/stat's first line, in ticks: all of it, and the
// part neither idle nor waiting on I/O.
struct MachineTicks {
  double total = 0;
  double busy = 0;
};

MachineTicks machine_ticks() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  stat >> cpu;
  MachineTicks ticks;
  for (int field = 0; field < 8; ++field) {  // user nice system idle iowait irq softirq steal
    double value = 0;
    if (!(stat >> value)) return {};
    ticks.total += value;
    if (field != 3 && field != 4) ticks.busy += value;
  }
  return ticks;
}

// The `ledger-bench: name=value ...` line the script's done() writes.
std::map<std::string, std::int64_t> summary_fields(const std::string& output) {
  std::map<std::string, std::int64_t> fields;
  const auto line_start = output.find("ledger-bench:");
  if (line_start == std::string::npos) return fields;
  std::istringstream line(output.substr(line_start + 13, output.find('\n', line_start) - line_start - 13));
  std::string pair;
  while (line >> pair) {
    const auto equals = pair.find('=');
    if (equals == std::string::npos) continue;
    fields[pair.substr(0, equals)] = std::stoll(pair.substr(equals + 1));
  }
  return fields;
}

}  // namespace

WrkResult run_wrk(const WrkSettings& settings) {
  WrkResult result;
  process::SpawnOptions options;
  options.extra_environment = {"LEDGER_BENCH_TOKEN=" + settings.token,
                               "LEDGER_BENCH_ACCOUNTS=" + std::to_string(settings.accounts),
                               "LEDGER_BENCH_RUN=" + settings.run_id};
  const std::string script = std::string(LEDGER_BENCH_WRK_DIRECTORY) +
                             (settings.script == WrkScript::deposits ? "/deposits.lua" : "/transfers.lua");
  const std::vector<std::string> argv = {
      "wrk", "-t", std::to_string(settings.threads), "-c", std::to_string(settings.connections), "-d",
      std::to_string(static_cast<int>(settings.seconds)) + "s", "--timeout", "10s", "-s", script,
      "http://127.0.0.1:" + std::to_string(settings.port) + "/"};  // the script sets each request's path
  std::string output;
  const double cpu_before = cpu_seconds_of_children();
  const MachineTicks machine_before = machine_ticks();
  const auto started = std::chrono::steady_clock::now();
  const auto status = process::run(argv, output, options);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double cpu = cpu_seconds_of_children() - cpu_before;
  const MachineTicks machine_after = machine_ticks();
  if (!status.success()) {
    result.problem = status.exited && status.code == 127 ? "wrk is not installed (ops/setup.sh installs it)"
                                                          : "wrk failed: " + output;
    return result;
  }
  const auto fields = summary_fields(output);
  if (!fields.contains("requests") || !fields.contains("duration_us")) {
    result.problem = "no summary line in wrk's output: " + output;
    return result;
  }
  result.ran = true;
  result.requests = fields.at("requests");
  result.non_2xx = fields.at("non_2xx");
  result.socket_errors = fields.at("socket_errors");
  result.seconds = static_cast<double>(fields.at("duration_us")) / 1e6;
  result.p50_ms = static_cast<double>(fields.at("p50_us")) / 1e3;
  result.p90_ms = static_cast<double>(fields.at("p90_us")) / 1e3;
  result.p99_ms = static_cast<double>(fields.at("p99_us")) / 1e3;
  result.p999_ms = static_cast<double>(fields.at("p999_us")) / 1e3;
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  result.generator_cpu_share = wall > 0 && cores > 0 ? cpu / (wall * static_cast<double>(cores)) : 0;
  const double ticks = machine_after.total - machine_before.total;
  result.machine_busy_share = ticks > 0 ? (machine_after.busy - machine_before.busy) / ticks : 0;
  return result;
}

}  // namespace ledger::bench
