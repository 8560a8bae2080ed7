#include "uuid_generator.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace ledger::engine {

std::string UuidGenerator::next() {
  std::lock_guard lock(mutex_);
  const auto millis = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  std::uint64_t high = (millis << 16) | (random_() & 0x0fffULL) | 0x7000ULL;  // version 7
  std::uint64_t low = (random_() & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant
  char text[37];
  std::snprintf(text, sizeof text, "%08x-%04x-%04x-%04x-%012llx",
                static_cast<unsigned>(high >> 32), static_cast<unsigned>((high >> 16) & 0xffff),
                static_cast<unsigned>(high & 0xffff), static_cast<unsigned>(low >> 48),
                static_cast<unsigned long long>(low & 0xffffffffffffULL));
  return text;
}

}  // namespace ledger::engine
