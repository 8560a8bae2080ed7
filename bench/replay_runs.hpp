#pragma once
// Replay and rebuild measurements for ledger-bench: the `ledger` CLI run as an operator runs
// it, timed from outside, with its peak RSS.

#include <sys/types.h>

#include <string>
#include <vector>

namespace ledger::bench {

struct CliRun {
  bool ok = false;       // exit code 0
  double seconds = 0;    // wall time, process start to exit
  long peak_rss_kib = 0;
  std::string output;    // stdout and stderr
};

// Runs `binary arguments…` to completion, sampling /proc/<pid>/status for its peak RSS.
[[nodiscard]] CliRun run_cli(const std::string& binary, const std::vector<std::string>& arguments,
                             const std::string& output_file);

// Peak resident set size (VmHWM) of process `pid` in KiB, 0 meaning this process; 0 when unknown.
[[nodiscard]] long peak_rss_kib(pid_t pid = 0);
// Its resident set size now (VmRSS), the same way.
[[nodiscard]] long rss_kib(pid_t pid = 0);

// The number after "key": in the CLI's JSON summary; 0 when absent.
[[nodiscard]] double json_number(const std::string& text, const std::string& key);

}  // namespace ledger::bench
