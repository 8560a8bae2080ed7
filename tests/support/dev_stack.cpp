#include "dev_stack.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "http_client.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

namespace ledger::test {

std::map<std::string, std::string> read_env(const std::filesystem::path& file) {
  std::map<std::string, std::string> values;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const auto equals = line.find('=');
    if (line.empty() || line[0] == '#' || equals == std::string::npos) continue;
    std::string value = line.substr(equals + 1);
    if (value.size() >= 2 && value.front() == '\'') value = value.substr(1, value.size() - 2);
    values[line.substr(0, equals)] = value;
  }
  return values;
}

int DevRun::http_port() const {
  const std::string& url = env.at("LEDGER_URL");
  return std::stoi(url.substr(url.rfind(':') + 1));
}

DevRun start_dev(const std::filesystem::path& home) {
  process::SpawnOptions options;
  options.output_file = (home.string() + ".log");
  DevRun run;
  run.pid = process::spawn({ledger_binary(), "--home", home.string(), "dev"}, options);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    // Only the dev.env written by this run counts (a killed run leaves its own behind).
    std::ifstream env_file(home / "dev.env");
    std::string first_line;
    if (std::getline(env_file, first_line) &&
        first_line.find("(pid " + std::to_string(run.pid) + ")") != std::string::npos) {
      run.env = read_env(home / "dev.env");
      if (run.env.contains("LEDGER_URL")) {
        // Ready when /health/ready answers 200 (API.md).
        try {
          HttpClient client(run.http_port());
          if (client.request("GET", "/health/ready").status == 200) return run;
        } catch (const std::exception&) {
          // not listening yet
        }
      }
    }
    REQUIRE_MESSAGE(process::is_alive(run.pid), "ledger dev exited early; see " << options.output_file);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("ledger dev did not become ready within 120 s; see " << options.output_file);
  return run;
}

}  // namespace ledger::test
