#pragma once
// JSON Web Key Sets (RFC 7517) for TokenVerifier, private to the API: the RS256 and ES256 keys
// of a JWKS document as OpenSSL keys, and the signature check of each algorithm.

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace ledger::api {

enum class KeyAlgorithm { rs256, es256 };

// One public key, usable with exactly one algorithm: a key is never tried with another
// algorithm than its own (an RSA key is not an HMAC secret, nor an ES256 key).
struct VerificationKey {
  KeyAlgorithm algorithm = KeyAlgorithm::rs256;
  std::shared_ptr<evp_pkey_st> key;  // immutable once made: shared by threads that verify
};

// The usable keys of one JWKS document by `kid`; immutable once parsed.
struct KeySet {
  std::map<std::string, VerificationKey, std::less<>> keys;
};

// The keys of a JWKS document: an object whose `keys` array holds JWKs. RSA keys (alg absent
// or RS256, modulus at least jwks_rsa_bits_min) and EC P-256 keys (alg absent or ES256, a
// point on the curve) whose `use` is absent or `sig` are kept; keys of other types, curves,
// algorithms or uses are skipped (a provider may publish them for others). Throws JwksError
// when the document is not such an object, when a key it would keep is malformed or has no
// `kid`, when two keys share a `kid`, or when no key is left.
[[nodiscard]] KeySet parse_jwks(std::string_view text);

// True when `signature` (the decoded third part of a JWS) signs `signing_input` under `key`
// with the key's algorithm: RSASSA-PKCS1-v1_5 SHA-256, or ECDSA P-256 SHA-256 with the
// signature as 32-byte r and s (RFC 7518 3.4).
[[nodiscard]] bool signature_matches(const VerificationKey& key, std::string_view signing_input,
                                     std::string_view signature);

}  // namespace ledger::api
