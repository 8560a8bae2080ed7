#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ledger {

[[nodiscard]] std::string to_hex(std::string_view bytes);
// Returns std::nullopt when `hex` has odd length or a non-hex character.
[[nodiscard]] std::optional<std::string> from_hex(std::string_view hex);
// from_hex appending to `out` (no allocation of its own); false, with `out` as it was, when
// `hex` has odd length or a non-hex character.
[[nodiscard]] bool append_from_hex(std::string& out, std::string_view hex);

}  // namespace ledger
