#pragma once
// UTF-8 validation, for text that crosses into JSON, PostgreSQL text and the event metadata.

#include <cstddef>
#include <string_view>

namespace ledger {

// Offset of the first byte that is not part of valid UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or npos.
[[nodiscard]] std::size_t invalid_utf8_offset(std::string_view text);

}  // namespace ledger
