#pragma once
// JSON text as PostgreSQL prints a jsonb value (private to projections/).

#include <string>
#include <string_view>

namespace ledger::projections {

// `json` (an object, array or scalar) written the way `jsonb::text` writes it: object keys in
// jsonb's order (shorter first, then bytewise), ", " and ": " between items, strings escaped as
// jsonb escapes them. The audit query answered `data` from a jsonb copy of each event until
// migration 0011; it now decodes the event from the store and prints it this way, so the
// answer stays the same to the byte. Throws std::invalid_argument when `json` does not parse.
[[nodiscard]] std::string jsonb_text(std::string_view json);

}  // namespace ledger::projections
