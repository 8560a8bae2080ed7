#pragma once
// The circuit breaker in front of PostgreSQL (private to the engine). A batch that still fails
// after its connection retries opens it: for a while every command fails fast with
// DatabaseCircuitOpen instead of queueing behind retries that will fail too. When the while
// has passed it is half open: the next batch is the probe; if it commits the breaker closes,
// if it fails the breaker opens again for twice as long (up to a maximum). Thread-safe.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

#include "ledger/engine/engine.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;

  CircuitBreaker(std::chrono::milliseconds open_initial, std::chrono::milliseconds open_max)
      : open_initial_(open_initial), open_max_(open_max), open_for_(open_initial) {}

  // std::nullopt: let the command in (closed; or open long enough, which makes it half open).
  // Otherwise how long the breaker stays open.
  [[nodiscard]] std::optional<std::chrono::milliseconds> refuse(Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mutex_);
    if (state_ == CircuitState::open) {
      if (now < open_until_) return std::chrono::ceil<std::chrono::milliseconds>(open_until_ - now);
      state_ = CircuitState::half_open;
    }
    return std::nullopt;
  }

  // A batch exhausted its connection retries.
  void record_failure(Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mutex_);
    if (state_ == CircuitState::half_open) open_for_ = std::min(open_for_ * 2, open_max_);
    if (state_ != CircuitState::open) ++opened_;
    state_ = CircuitState::open;
    open_until_ = now + open_for_;
  }

  // A batch reached the database and committed (or was decided there). True when this closed
  // the breaker (it was open or half open).
  bool record_success() {
    std::lock_guard lock(mutex_);
    const bool was_closed = state_ == CircuitState::closed;
    state_ = CircuitState::closed;
    open_for_ = open_initial_;
    return !was_closed;
  }

  [[nodiscard]] CircuitState state() const {
    std::lock_guard lock(mutex_);
    return state_;
  }
  [[nodiscard]] std::uint64_t times_opened() const {
    std::lock_guard lock(mutex_);
    return opened_;
  }

 private:
  const std::chrono::milliseconds open_initial_;
  const std::chrono::milliseconds open_max_;
  mutable std::mutex mutex_;
  CircuitState state_ = CircuitState::closed;
  std::chrono::milliseconds open_for_;
  Clock::time_point open_until_{};
  std::uint64_t opened_ = 0;
};

}  // namespace ledger::engine
