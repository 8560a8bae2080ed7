#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "ledger/core/process.hpp"

using namespace ledger;

TEST_CASE("run captures output and the exit code") {
  std::string output;
  auto status = process::run({"sh", "-c", "echo hello; exit 3"}, output);
  CHECK(status.exited);
  CHECK(status.code == 3);
  CHECK(output == "hello\n");
}

TEST_CASE("stop escalates to SIGKILL when a child ignores SIGTERM") {
  const std::string ready = "/tmp/ledger-process-test-" + std::to_string(getpid());
  const pid_t pid = process::spawn({"sh", "-c", "trap '' TERM; touch " + ready + "; exec sleep 30"});
  // Signal only once the trap is in place (before exec the child still has our handlers).
  for (int i = 0; i < 500 && !std::filesystem::exists(ready); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(std::filesystem::exists(ready));
  std::filesystem::remove(ready);
  CHECK(process::is_alive(pid));
  const auto status = process::stop(pid, SIGTERM, std::chrono::milliseconds(300));
  CHECK_FALSE(status.exited);
  CHECK(status.code == SIGKILL);
  CHECK_FALSE(process::is_alive(pid));
}

TEST_CASE("a missing program exits with 127") {
  std::string output;
  auto status = process::run({"ledger-no-such-program"}, output);
  CHECK(status.exited);
  CHECK(status.code == 127);
}
