#pragma once

// Always-on assertion for programmer errors. Never reachable from user input: business
// rejections are data (see engine's RejectionCode), infrastructure failures are exceptions.
namespace ledger::detail {
[[noreturn]] void assertion_failed(const char* expression, const char* file, int line,
                                   const char* message);
}

#define LEDGER_ASSERT(expression, message)                                                \
  do {                                                                                    \
    if (!(expression)) [[unlikely]] {                                                     \
      ::ledger::detail::assertion_failed(#expression, __FILE__, __LINE__, (message));     \
    }                                                                                     \
  } while (false)
