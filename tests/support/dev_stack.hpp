#pragma once
// `ledger dev` started as a developer starts it, for end-to-end tests that need the whole
// embedded stack (PostgreSQL, the broker, serve with its relay, the projectors).

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <string>

namespace ledger::test {

// The variables of a `dev.env` file (KEY=value or KEY='value' lines).
[[nodiscard]] std::map<std::string, std::string> read_env(const std::filesystem::path& file);

struct DevRun {
  pid_t pid = 0;
  std::map<std::string, std::string> env;  // dev.env of this run
  [[nodiscard]] int http_port() const;
};

// Starts `ledger --home <home> dev` (output in <home>.log) and returns once this run's
// dev.env exists and /health/ready answers 200; fails the test after 120 s.
[[nodiscard]] DevRun start_dev(const std::filesystem::path& home);

}  // namespace ledger::test
