#pragma once
// Prometheus text-format metrics of the HTTP front (private to the API). Thread-safe.

#include <array>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace ledger::api {

class Metrics {
 public:
  void observe_request(const std::string& route, const std::string& method, int status,
                       double seconds);
  void count_command(const std::string& type, const std::string& outcome);
  // The metrics in Prometheus text format, followed by `extra` (already formatted lines).
  [[nodiscard]] std::string render(const std::string& extra) const;

  static constexpr std::array<double, 12> latency_buckets_seconds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

 private:
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> commands_;
  std::array<std::uint64_t, latency_buckets_seconds.size()> latency_counts_{};
  std::uint64_t latency_count_ = 0;
  double latency_sum_ = 0;
};

}  // namespace ledger::api
