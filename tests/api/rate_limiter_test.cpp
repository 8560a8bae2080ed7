// The per-actor token buckets alone, on a clock the test moves.
#include <doctest/doctest.h>

#include "rate_limiter.hpp"

using namespace ledger::api;
using namespace std::chrono_literals;

TEST_CASE("a bucket admits its burst, then one request per refill interval, and says how long to wait") {
  RateLimiter limiter(RateLimit{2.0, 3}, RateLimit{});
  const auto start = RateLimiter::Clock::time_point{} + 1h;
  for (int i = 0; i < 3; ++i) CHECK_FALSE(limiter.admit("alice", RequestClass::command, start).has_value());
  const auto refused = limiter.admit("alice", RequestClass::command, start);
  REQUIRE(refused.has_value());
  CHECK(*refused == 500ms);  // 2 a second: the next token in half a second
  CHECK(limiter.admit("alice", RequestClass::command, start + 499ms).has_value());
  CHECK_FALSE(limiter.admit("alice", RequestClass::command, start + 1000ms).has_value());
  // Saved up for a long time: never more than the burst.
  const auto later = start + 1h;
  for (int i = 0; i < 3; ++i) CHECK_FALSE(limiter.admit("alice", RequestClass::command, later).has_value());
  CHECK(limiter.admit("alice", RequestClass::command, later).has_value());
}

TEST_CASE("actors and classes have buckets of their own; a rate of 0 never limits") {
  RateLimiter limiter(RateLimit{1.0, 1}, RateLimit{});
  const auto now = RateLimiter::Clock::time_point{} + 1h;
  CHECK_FALSE(limiter.admit("alice", RequestClass::command, now).has_value());
  CHECK(limiter.admit("alice", RequestClass::command, now).has_value());
  CHECK_FALSE(limiter.admit("bob", RequestClass::command, now).has_value());  // alice's burst is hers
  int queries = 0;
  for (int i = 0; i < 1'000; ++i) queries += !limiter.admit("alice", RequestClass::query, now).has_value();
  CHECK(queries == 1'000);
}

TEST_CASE("a stream of distinct actors does not grow the buckets without bound") {
  RateLimiter limiter(RateLimit{1'000.0, 1}, RateLimit{});
  auto now = RateLimiter::Clock::time_point{} + 1h;
  std::size_t admitted = 0;
  for (std::size_t i = 0; i < RateLimiter::buckets_max + 10; ++i) {
    admitted += !limiter.admit("actor-" + std::to_string(i), RequestClass::command, now).has_value();
  }
  CHECK(admitted == RateLimiter::buckets_max + 10);  // each newcomer has its burst
  CHECK(limiter.buckets() <= RateLimiter::buckets_max);  // none full yet: all dropped once
  // A second later a newcomer still gets exactly its own burst.
  now += 1s;
  CHECK_FALSE(limiter.admit("newcomer", RequestClass::command, now).has_value());
  CHECK(limiter.admit("newcomer", RequestClass::command, now).has_value());
  CHECK(limiter.buckets() <= RateLimiter::buckets_max);
}
