#pragma once
// Prometheus text-format metrics of the HTTP front (private to the API). Thread-safe.

#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "ledger/core/histogram.hpp"

namespace ledger::api {

class Metrics {
 public:
  // `route` must come from a fixed set (route templates, `other`); a method the API does not
  // know is counted as `other`.
  // Both take views and look their series up without making a key: a request allocates
  // nothing here once its series exists.
  void observe_request(std::string_view route, std::string_view method, int status, double seconds);
  void count_command(std::string_view type, std::string_view outcome);
  // A request refused by the per-actor rate limit; `request_class` is `command` or `query`.
  void count_rate_limited(const std::string& request_class);
  // The metrics in Prometheus text format, followed by `extra` (already formatted lines).
  [[nodiscard]] std::string render(const std::string& extra) const;

 private:
  // Orders a stored key and a probe of views alike, element by element as views (comparing a
  // tuple of strings with a tuple of views directly needs a mixed operator<=> that not every
  // standard library offers, clang 14's use of libstdc++ 12 among them).
  struct ViewLess {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return as_views(a) < as_views(b);
    }
    template <typename... T>
    static auto as_views(const std::tuple<T...>& key) {
      return std::apply([](const auto&... part) { return std::make_tuple(view_of(part)...); }, key);
    }
    static std::string_view view_of(const std::string& text) { return text; }
    static std::string_view view_of(std::string_view text) { return text; }
    static int view_of(int number) { return number; }
  };

  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, std::uint64_t, ViewLess> requests_;
  std::map<std::tuple<std::string, std::string>, std::uint64_t, ViewLess> commands_;
  std::map<std::string, std::uint64_t> rate_limited_{{"command", 0}, {"query", 0}};
  Histogram latency_{{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5}};
};

}  // namespace ledger::api
