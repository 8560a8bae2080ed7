#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace ledger::process {

struct SpawnOptions {
  // Run the child as this user (setgid/setuid before exec); empty keeps the current user.
  std::string run_as_user;
  // Redirect the child's stdout and stderr (appending) to this file; empty inherits them.
  std::string output_file;
  // Extra "NAME=value" entries added to the inherited environment.
  std::vector<std::string> extra_environment;
  // Put the child in its own process group, so a terminal's Ctrl-C reaches only the parent,
  // which then stops its children in order.
  bool own_process_group = true;
};

// Starts argv[0] (looked up in PATH) with argv. Throws std::system_error when fork fails;
// an exec failure makes the child exit with code 127.
[[nodiscard]] pid_t spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

struct ExitStatus {
  bool exited = false;  // false: killed by a signal
  int code = 0;         // exit code, or the signal number
  [[nodiscard]] bool success() const { return exited && code == 0; }
};

// Waits up to `timeout` for the child to end; std::nullopt if it still runs.
[[nodiscard]] std::optional<ExitStatus> wait_for(pid_t pid, std::chrono::milliseconds timeout);

// Runs a command to completion, capturing stdout+stderr into `output`.
[[nodiscard]] ExitStatus run(const std::vector<std::string>& argv, std::string& output,
                             const SpawnOptions& options = {});

// Sends `signal`, waits up to `grace`, then SIGKILLs and reaps. Returns how the child ended.
ExitStatus stop(pid_t pid, int signal, std::chrono::milliseconds grace);

// True when a process with this pid exists (any owner), i.e. kill(pid, 0) succeeds or EPERM.
[[nodiscard]] bool is_alive(pid_t pid);

// Path of the running executable (/proc/self/exe), to re-invoke ourselves for subcommands.
[[nodiscard]] std::string self_executable();

}  // namespace ledger::process
