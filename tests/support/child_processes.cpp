#include "child_processes.hpp"

#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "ledger/core/process.hpp"

namespace ledger::test {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string wait_for_file(const std::filesystem::path& path, pid_t pid) {
  for (int attempt = 0; attempt < 600 && process::is_alive(pid); ++attempt) {
    std::ifstream in(path);
    std::string line;
    if (std::getline(in, line) && !line.empty()) return line;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return {};
}

void ChildStopper::stop_all() {
  for (auto it = pids.rbegin(); it != pids.rend(); ++it) {
    (void)process::stop(*it, SIGTERM, std::chrono::seconds(20));
  }
  pids.clear();
}

}  // namespace ledger::test
