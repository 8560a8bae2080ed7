#include "ledger/core/assert.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>

namespace ledger::detail {

void assertion_failed(const char* expression, const char* file, int line, const char* message) {
  spdlog::critical("assertion failed: {} ({}) at {}:{}", expression, message, file, line);
  spdlog::shutdown();
  std::fprintf(stderr, "assertion failed: %s (%s) at %s:%d\n", expression, message, file, line);
  std::abort();
}

}  // namespace ledger::detail
