#pragma once
// Per-actor token buckets in front of commands and queries (private to the API). Thread-safe.

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "ledger/api/server.hpp"

namespace ledger::api {

enum class RequestClass { command, query };

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  RateLimiter(RateLimit commands, RateLimit queries) : commands_(commands), queries_(queries) {}

  // Takes a token from the actor's bucket of that class. std::nullopt: admitted; otherwise the
  // time until the next token, for Retry-After. A class whose rate is 0 is never limited.
  [[nodiscard]] std::optional<std::chrono::milliseconds> admit(const std::string& actor, RequestClass request_class,
                                                               Clock::time_point now = Clock::now());

  // Buckets kept at most: beyond it the full ones (actors idle long enough to have refilled)
  // are dropped, and if that is not enough, all of them (each actor then starts again with
  // its burst), so a stream of distinct actors cannot grow memory without bound.
  static constexpr std::size_t buckets_max = 100'000;
  [[nodiscard]] std::size_t buckets();

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point refilled{};
  };
  void drop_full_buckets(Clock::time_point now);

  RateLimit commands_;
  RateLimit queries_;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;  // key: class letter + actor
};

}  // namespace ledger::api
