#pragma once
// Shared by the libFuzzer targets: a property check that stops the run with a readable reason
// (libFuzzer saves the input that broke it as crash-<sha1>), and independent restatements of
// API.md's bounds, written here rather than taken from the code under test.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace ledger::fuzz {

[[noreturn]] inline void violated(const char* property, std::string_view detail) {
  std::fprintf(stderr, "\nPROPERTY VIOLATED: %s: %.*s\n", property,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

inline void require(bool holds, const char* property, std::string_view detail = {}) {
  if (!holds) violated(property, detail);
}

// API.md: client ids are 1 to 64 of A-Za-z0-9._:-
inline bool is_api_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (const char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// ISO 4217 alphabetic: three capital ASCII letters.
inline bool is_iso_currency(std::string_view code) {
  if (code.size() != 3) return false;
  for (const char c : code) {
    if (c < 'A' || c > 'Z') return false;
  }
  return true;
}

// "YYYY-MM-DD", a real calendar day from 1970-01-01 to 2199-12-31 (API.md business dates).
inline bool is_business_date_text(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return false;
  int parts[3] = {0, 0, 0};
  const std::size_t starts[3] = {0, 5, 8};
  const std::size_t lengths[3] = {4, 2, 2};
  for (int p = 0; p < 3; ++p) {
    for (std::size_t i = starts[p]; i < starts[p] + lengths[p]; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      parts[p] = parts[p] * 10 + (text[i] - '0');
    }
  }
  const std::chrono::year_month_day day{std::chrono::year(parts[0]),
                                        std::chrono::month(static_cast<unsigned>(parts[1])),
                                        std::chrono::day(static_cast<unsigned>(parts[2]))};
  return day.ok() && parts[0] >= 1970 && parts[0] <= 2199;
}

}  // namespace ledger::fuzz
