#include "hs256.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ledger/core/assert.hpp"

namespace ledger::api {

namespace {

// A 32-byte HMAC-SHA256 is 43 base64url characters without padding.
constexpr std::size_t hs256_signature_chars = 43;

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
    out.push_back(alphabet[(n >> 6) & 63]);
    out.push_back(alphabet[n & 63]);
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
    if (rest == 2) out.push_back(alphabet[(n >> 6) & 63]);
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  std::uint32_t bits = 0;
  int bit_count = 0;
  for (char c : text) {
    const int value = value_of(c);
    if (value < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      out.push_back(static_cast<char>((bits >> bit_count) & 0xff));
    }
  }
  // The 2 or 4 bits left over must be zero, or two texts would decode to the same bytes.
  if ((bits & ((1u << bit_count) - 1)) != 0) return std::nullopt;
  return out;
}

std::string hs256(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  const unsigned char* result =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &length);
  LEDGER_ASSERT(result != nullptr && length == 32, "HMAC-SHA256 failed");
  return std::string(reinterpret_cast<const char*>(digest), length);
}

bool hs256_signature_matches(std::string_view token, std::string_view key) {
  const auto first_dot = token.find('.');
  const auto last_dot = token.rfind('.');
  if (first_dot == std::string_view::npos || last_dot == first_dot) return false;
  if (token.find('.', first_dot + 1) != last_dot) return false;  // exactly three parts
  const std::string_view signature = token.substr(last_dot + 1);
  // The length of a valid signature is public (always 43): refusing another length early
  // reveals nothing about the expected bytes.
  if (signature.size() != hs256_signature_chars) return false;
  const std::string expected = base64url_encode(hs256(key, token.substr(0, last_dot)));
  LEDGER_ASSERT(expected.size() == hs256_signature_chars, "an HS256 signature is 43 characters");
  return CRYPTO_memcmp(expected.data(), signature.data(), hs256_signature_chars) == 0;
}

}  // namespace ledger::api
