#pragma once
// Ids the engine generates (private to the engine).

#include <mutex>
#include <random>
#include <string>

namespace ledger::engine {

// Time-ordered UUIDv7 text (RFC 9562): 48 bits of Unix milliseconds, then randomness. Ordered
// ids keep the events' unique index growing at its right edge instead of at random pages.
// Thread-safe.
class UuidGenerator {
 public:
  UuidGenerator() : random_(std::random_device{}()) {}
  [[nodiscard]] std::string next();

 private:
  std::mutex mutex_;
  std::mt19937_64 random_;
};

}  // namespace ledger::engine
