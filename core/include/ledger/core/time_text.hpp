#pragma once
// Times as text: RFC 3339, the format of every time in the API, exports and reports.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ledger {

// RFC 3339 UTC with microseconds, e.g. 2026-11-28T09:30:00.000001Z.
[[nodiscard]] std::string rfc3339(std::int64_t micros_since_epoch);

// Microseconds since the Unix epoch of an RFC 3339 time (Z or a numeric offset).
[[nodiscard]] std::optional<std::int64_t> parse_rfc3339(std::string_view text);

}  // namespace ledger
