#pragma once
// HS256 and base64url for JWTs, private to the API: signing helpers and the signature check
// that TokenVerifier runs in constant time.

#include <optional>
#include <string>
#include <string_view>

namespace ledger::api {

// RFC 4648 section 5 (URL-safe alphabet), without padding, as JWTs use it.
[[nodiscard]] std::string base64url_encode(std::string_view bytes);
// The bytes of `text`, or nothing when it is not canonical base64url without padding: a
// character outside the URL-safe alphabet, a length of 4n+1, or unused bits that are not zero
// (so each byte string has exactly one encoding, and a token exactly one spelling).
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);

// HMAC-SHA256 of `data` under `key`: 32 raw bytes.
[[nodiscard]] std::string hs256(std::string_view key, std::string_view data);

// True when `token` is `<header>.<payload>.<signature>` and the signature is the base64url
// HMAC-SHA256 of `<header>.<payload>` under `key`. The comparison takes the same time whatever
// the signature holds (CRYPTO_memcmp over the fixed 43-character encoding): cpp-jwt compares
// with string equality, which stops at the first differing byte and so tells a forger, by
// timing, how much of a guessed signature is right.
[[nodiscard]] bool hs256_signature_matches(std::string_view token, std::string_view key);

}  // namespace ledger::api
