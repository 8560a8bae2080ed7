#include "rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace ledger::api {

namespace {

double refill(double tokens, RateLimit limit, std::chrono::duration<double> elapsed) {
  return std::min(static_cast<double>(limit.burst), tokens + elapsed.count() * limit.per_second);
}

}  // namespace

std::optional<std::chrono::milliseconds> RateLimiter::admit(const std::string& actor, RequestClass request_class,
                                                             Clock::time_point now) {
  const RateLimit limit = request_class == RequestClass::command ? commands_ : queries_;
  if (limit.per_second <= 0) return std::nullopt;
  const std::string key = (request_class == RequestClass::command ? "c" : "q") + actor;
  std::lock_guard lock(mutex_);
  auto found = buckets_.find(key);
  if (found == buckets_.end()) {
    if (buckets_.size() >= buckets_max) drop_full_buckets(now);
    if (buckets_.size() >= buckets_max) buckets_.clear();
    found = buckets_.emplace(key, Bucket{static_cast<double>(limit.burst), now}).first;
  }
  Bucket& bucket = found->second;
  bucket.tokens = refill(bucket.tokens, limit, now - bucket.refilled);
  bucket.refilled = now;
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return std::nullopt;
  }
  const double seconds = (1.0 - bucket.tokens) / limit.per_second;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1'000)));
}

std::size_t RateLimiter::buckets() {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

void RateLimiter::drop_full_buckets(Clock::time_point now) {
  std::erase_if(buckets_, [&](const auto& entry) {
    const RateLimit limit = entry.first.front() == 'c' ? commands_ : queries_;
    return refill(entry.second.tokens, limit, now - entry.second.refilled) >= static_cast<double>(limit.burst);
  });
}

}  // namespace ledger::api
