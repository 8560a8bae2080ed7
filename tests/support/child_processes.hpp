#pragma once
// Helpers for tests that run `ledger` subcommands as child processes.

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace ledger::test {

// The whole file, empty when it cannot be read (for failure messages: a child's log).
[[nodiscard]] std::string read_file(const std::filesystem::path& path);

// Waits up to 30 s for a child to write a one-line file (a port, an address); empty when it
// died first or never wrote it.
[[nodiscard]] std::string wait_for_file(const std::filesystem::path& path, pid_t pid);

// Stops the children it holds with SIGTERM (then SIGKILL after 20 s), newest first, at the
// latest when it goes out of scope.
struct ChildStopper {
  std::vector<pid_t> pids;
  void stop_all();
  ~ChildStopper() { stop_all(); }
};

}  // namespace ledger::test
