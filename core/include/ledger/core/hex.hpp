#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ledger {

[[nodiscard]] std::string to_hex(std::string_view bytes);
// Returns std::nullopt when `hex` has odd length or a non-hex character.
[[nodiscard]] std::optional<std::string> from_hex(std::string_view hex);

}  // namespace ledger
