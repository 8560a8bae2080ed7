#include "replay_runs.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "ledger/core/process.hpp"

namespace ledger::bench {

namespace {

// The KiB of `field` ("VmHWM:", "VmRSS:") in /proc/<pid>/status; 0 when unknown.
long status_kib(pid_t pid, const std::string& field) {
  std::ifstream status(pid == 0 ? std::string("/proc/self/status") : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size()));
  }
  return 0;
}

}  // namespace

long peak_rss_kib(pid_t pid) {
  return status_kib(pid, "VmHWM:");
}

long rss_kib(pid_t pid) {
  return status_kib(pid, "VmRSS:");
}

CliRun run_cli(const std::string& binary, const std::vector<std::string>& arguments, const std::string& output_file) {
  std::vector<std::string> argv{binary};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  process::SpawnOptions options;
  options.output_file = output_file;
  std::ofstream(output_file, std::ios::trunc).close();
  CliRun run;
  const auto started = std::chrono::steady_clock::now();
  const pid_t pid = process::spawn(argv, options);
  std::optional<process::ExitStatus> status;
  // VmHWM only grows, so the last sample before exit is the peak to within 50 ms of work.
  while (!(status = process::wait_for(pid, std::chrono::milliseconds(50)))) {
    run.peak_rss_kib = std::max(run.peak_rss_kib, peak_rss_kib(pid));
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  run.ok = status->success();
  std::ifstream in(output_file);
  run.output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return run;
}

double json_number(const std::string& text, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  const auto at = text.find(needle);
  return at == std::string::npos ? 0.0 : std::strtod(text.c_str() + at + needle.size(), nullptr);
}

}  // namespace ledger::bench
