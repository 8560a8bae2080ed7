#include "metrics.hpp"

#include <fmt/format.h>

#include <string_view>

namespace ledger::api {

namespace {

// The methods the API knows of (and the `-` of answers given before a request was read); any
// other method a client makes up is counted as `other`, so clients cannot add series.
std::string_view method_label(std::string_view method) {
  static constexpr std::string_view known[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "-"};
  for (const std::string_view name : known) {
    if (method == name) return name;
  }
  return "other";
}

}  // namespace

void Metrics::observe_request(std::string_view route, std::string_view method, int status, double seconds) {
  const std::tuple<std::string_view, std::string_view, int> key{route, method_label(method), status};
  std::lock_guard lock(mutex_);
  auto found = requests_.find(key);
  if (found == requests_.end()) {
    found = requests_.emplace(std::tuple<std::string, std::string, int>{route, std::get<1>(key), status}, 0).first;
  }
  ++found->second;
  latency_.observe(seconds);
}

void Metrics::count_command(std::string_view type, std::string_view outcome) {
  const std::tuple<std::string_view, std::string_view> key{type, outcome};
  std::lock_guard lock(mutex_);
  auto found = commands_.find(key);
  if (found == commands_.end()) found = commands_.emplace(std::tuple<std::string, std::string>{type, outcome}, 0).first;
  ++found->second;
}

void Metrics::count_rate_limited(const std::string& request_class) {
  std::lock_guard lock(mutex_);
  ++rate_limited_[request_class];
}

std::string Metrics::render(const std::string& extra) const {
  std::string out;
  std::lock_guard lock(mutex_);
  out += "# HELP ledger_http_requests_total HTTP requests by route, method and status.\n";
  out += "# TYPE ledger_http_requests_total counter\n";
  for (const auto& [key, count] : requests_) {
    const auto& [route, method, status] = key;
    out += fmt::format("ledger_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}\n",
                       route, method, status, count);
  }
  append_prometheus_histogram(out, "ledger_http_request_duration_seconds", "HTTP request latency.", latency_);
  out += "# HELP ledger_commands_total Commands by type and outcome.\n";
  out += "# TYPE ledger_commands_total counter\n";
  for (const auto& [key, count] : commands_) {
    out += fmt::format("ledger_commands_total{{type=\"{}\",outcome=\"{}\"}} {}\n", std::get<0>(key),
                       std::get<1>(key), count);
  }
  out += "# HELP ledger_http_rate_limited_total Requests refused by the per-actor rate limit.\n";
  out += "# TYPE ledger_http_rate_limited_total counter\n";
  for (const auto& [request_class, count] : rate_limited_) {
    out += fmt::format("ledger_http_rate_limited_total{{class=\"{}\"}} {}\n", request_class, count);
  }
  out += extra;
  return out;
}

}  // namespace ledger::api
