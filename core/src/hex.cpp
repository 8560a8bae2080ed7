#include "ledger/core/hex.hpp"

namespace ledger {

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char byte : bytes) {
    out.push_back(digits[byte >> 4]);
    out.push_back(digits[byte & 0xf]);
  }
  return out;
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool append_from_hex(std::string& out, std::string_view hex) {
  if (hex.size() % 2 != 0) return false;
  const std::size_t size_before = out.size();
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int high = hex_value(hex[i]);
    const int low = hex_value(hex[i + 1]);
    if (high < 0 || low < 0) {
      out.resize(size_before);
      return false;
    }
    out.push_back(static_cast<char>((high << 4) | low));
  }
  return true;
}

std::optional<std::string> from_hex(std::string_view hex) {
  std::string out;
  out.reserve(hex.size() / 2);
  if (!append_from_hex(out, hex)) return std::nullopt;
  return out;
}

}  // namespace ledger
