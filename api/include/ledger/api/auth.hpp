#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ledger/api/problem.hpp"

namespace ledger::api {

enum class Role : std::uint8_t { teller = 1, auditor = 2, admin = 4 };

// Who made a request, from a verified token.
struct Principal {
  std::string subject;
  std::uint8_t roles = 0;  // bit set of Role
  [[nodiscard]] bool has(Role role) const {
    return (roles & static_cast<std::uint8_t>(role)) != 0 ||
           (roles & static_cast<std::uint8_t>(Role::admin)) != 0;  // admin may do everything
  }
};

// The development secret `ledger dev` uses; `ledger serve` refuses it outside `ledger dev`.
constexpr std::string_view development_jwt_secret =
    "ledger-development-secret-never-use-in-production";
// HS256 secrets shorter than this are refused at start-up.
constexpr std::size_t jwt_secret_length_min = 32;
// A token's `sub` is copied into every event the request writes (metadata `actor`) and into
// logs, so it is held to the rule of copied headers: 1 to this many visible ASCII characters.
constexpr std::size_t jwt_subject_bytes_max = 128;
// The clocks of an identity provider and of this server never agree exactly: `exp` and `nbf`
// are checked with this much slack, so a token is refused from `exp` + 30 s on and accepted
// from `nbf` - 30 s. Small, because it lengthens every token's life by as much.
constexpr std::chrono::seconds jwt_clock_leeway{30};
// The verify path looks at the JWKS file's metadata (one fstat) at most this often, and
// reads it again only when the metadata changed: key rotation is seen within a second.
constexpr std::chrono::milliseconds jwks_check_interval{1'000};
// A JWKS file larger than this is refused (an identity provider's key set is a few KiB).
constexpr std::size_t jwks_file_bytes_max = 1 << 20;
// RSA keys with a shorter modulus are refused when the JWKS file is read.
constexpr int jwks_rsa_bits_min = 2048;
// Verified tokens are cached (by their whole text) so that a client sending the same token on
// every request is not verified again each time: at most this many tokens, each at most
// jwt_cache_token_bytes_max long (longer ones are verified on every use, never cached).
constexpr std::size_t jwt_cache_entries_max = 4'096;
constexpr std::size_t jwt_cache_token_bytes_max = 4'096;

// What the verified-token cache did (for /metrics and tests).
struct TokenCacheStats {
  std::uint64_t hits = 0;     // a cached token accepted without verifying it again
  std::uint64_t misses = 0;   // verified (whether accepted or not)
  std::uint64_t entries = 0;  // tokens cached now
};

// Which tokens a TokenVerifier accepts.
struct TokenSettings {
  // HS256 under this secret (development, scripts: `ledger token`); empty: HS256 is refused.
  std::string hs256_secret;
  // RS256 and ES256 (P-256) under the keys of this JWKS file (RFC 7517), chosen by the token's
  // `kid`; empty: both are refused. Read when the verifier is made, again when it changes.
  std::string jwks_file;
  // When set, every token's `iss` must equal it.
  std::string issuer;
  // When set, every token's `aud` (a string or an array of strings) must contain it. When not
  // set, a token with an `aud` is refused: it was meant for someone else (RFC 7519 4.1.3).
  std::string audience;
  std::chrono::milliseconds jwks_check_interval = api::jwks_check_interval;
};

// A JWKS file that cannot be read, is not a key set, or holds a key that cannot be used.
class JwksError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Verifies `Authorization: Bearer <JWT>`: HS256 (signature compared in constant time), RS256
// or ES256 (against the JWKS key named by `kid`, of that algorithm only; `alg: none` and every
// other algorithm are refused), then `exp` (required) and `nbf` with jwt_clock_leeway, `iss`
// and `aud` as configured, and `sub` (1 to jwt_subject_bytes_max visible ASCII characters).
// Anything else is a 401 Problem `unauthorized`. A token may carry no known role: the router
// refuses it (403), authentication does not.
//
// Shared by the server's I/O threads: authenticate() is thread-safe. A changed JWKS file is
// read again by the thread whose call finds the check interval over; a file that no longer
// parses keeps the previous key set (and is logged as an error) until it is fixed.
//
// An accepted token is cached under its whole text (signature included, compared in constant
// time) with its principal and `exp`: using it again checks only `exp` against the clock, as
// the first use did (an expired one is refused and dropped). Only accepted tokens are cached,
// so a token with a wrong signature is verified, and refused, every time. A new key set (the
// JWKS file reloaded) empties the cache: a token of a removed or replaced key is verified
// again against the keys now in force. The JWKS file is still looked at every check interval
// when every token in use is cached.
class TokenVerifier {
 public:
  // Throws JwksError when settings.jwks_file is set but cannot be used.
  explicit TokenVerifier(TokenSettings settings);
  ~TokenVerifier();
  TokenVerifier(const TokenVerifier&) = delete;
  TokenVerifier& operator=(const TokenVerifier&) = delete;

  [[nodiscard]] std::variant<Principal, Problem> authenticate(std::string_view authorization) const;

  // The `kid`s of the key set in use (sorted), for logs and tests.
  [[nodiscard]] std::vector<std::string> key_ids() const;

  [[nodiscard]] TokenCacheStats cache_stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Issues an HS256 token (for `ledger dev`, `ledger token` and tests); `iss` and `aud` only
// when not empty.
[[nodiscard]] std::string issue_token(const std::string& secret, const std::string& subject,
                                      const std::vector<std::string>& roles,
                                      std::chrono::seconds lifetime, const std::string& issuer = {},
                                      const std::string& audience = {});

}  // namespace ledger::api
