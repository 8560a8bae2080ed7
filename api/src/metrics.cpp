#include "metrics.hpp"

#include <fmt/format.h>

#include <string_view>

namespace ledger::api {

namespace {

// The methods the API knows of (and the `-` of answers given before a request was read); any
// other method a client makes up is counted as `other`, so clients cannot add series.
std::string method_label(const std::string& method) {
  static constexpr std::string_view known[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "-"};
  for (const std::string_view name : known) {
    if (method == name) return method;
  }
  return "other";
}

}  // namespace

void Metrics::observe_request(const std::string& route, const std::string& method, int status,
                              double seconds) {
  std::lock_guard lock(mutex_);
  ++requests_[{route, method_label(method), status}];
  latency_.observe(seconds);
}

void Metrics::count_command(const std::string& type, const std::string& outcome) {
  std::lock_guard lock(mutex_);
  ++commands_[{type, outcome}];
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
    out += fmt::format("ledger_commands_total{{type=\"{}\",outcome=\"{}\"}} {}\n", key.first,
                       key.second, count);
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
