#include "jwks.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <rapidjson/document.h>

#include "hs256.hpp"
#include "ledger/api/auth.hpp"

namespace ledger::api {

namespace {

// Verifying with a huge modulus is slow, and no provider uses one: a bound on the work one
// token may cost.
constexpr int rsa_bits_max = 8'192;
// A `kid` is compared with the token's, which a client sends: bounded like everything else.
constexpr std::size_t kid_bytes_max = 256;
// P-256 coordinates, and ES256's r and s, are 32 bytes each.
constexpr std::size_t p256_coordinate_bytes = 32;

struct BignumFree {
  void operator()(BIGNUM* number) const { BN_free(number); }
};
using Bignum = std::unique_ptr<BIGNUM, BignumFree>;

struct KeyContextFree {
  void operator()(EVP_PKEY_CTX* context) const { EVP_PKEY_CTX_free(context); }
};
using KeyContext = std::unique_ptr<EVP_PKEY_CTX, KeyContextFree>;

std::shared_ptr<EVP_PKEY> owned(EVP_PKEY* key) { return {key, EVP_PKEY_free}; }

// A public key made from OpenSSL parameters of `type` ("RSA", "EC"); null when OpenSSL
// refuses them or the key fails OpenSSL's public key check (an EC point off the curve).
std::shared_ptr<EVP_PKEY> public_key_from(const char* type, OSSL_PARAM* parameters) {
  const KeyContext context(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* made = nullptr;
  if (!context || EVP_PKEY_fromdata_init(context.get()) != 1 ||
      EVP_PKEY_fromdata(context.get(), &made, EVP_PKEY_PUBLIC_KEY, parameters) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  auto key = owned(made);
  const KeyContext check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  return key;
}

std::string member_string(const rapidjson::Value& object, const char* name) {
  const auto found = object.FindMember(name);
  if (found == object.MemberEnd() || !found->value.IsString()) return {};
  return std::string(found->value.GetString(), found->value.GetStringLength());
}

bool has_member(const rapidjson::Value& object, const char* name) {
  return object.FindMember(name) != object.MemberEnd();
}

class KeyProblem : public JwksError {
 public:
  KeyProblem(std::size_t index, const std::string& kid, const std::string& problem)
      : JwksError("key " + std::to_string(index) + (kid.empty() ? "" : " (kid \"" + kid + "\")") +
                  ": " + problem) {}
};

// The bytes of the base64url member `name` of a JWK.
std::string key_bytes(const rapidjson::Value& jwk, const char* name, std::size_t index,
                      const std::string& kid) {
  const auto found = jwk.FindMember(name);
  if (found == jwk.MemberEnd() || !found->value.IsString()) {
    throw KeyProblem(index, kid, std::string("has no ") + name);
  }
  auto bytes = base64url_decode(
      std::string_view(found->value.GetString(), found->value.GetStringLength()));
  if (!bytes || bytes->empty()) {
    throw KeyProblem(index, kid, std::string(name) + " is not base64url");
  }
  return *bytes;
}

std::shared_ptr<EVP_PKEY> rsa_key(const rapidjson::Value& jwk, std::size_t index,
                                  const std::string& kid) {
  const std::string n = key_bytes(jwk, "n", index, kid);
  const std::string e = key_bytes(jwk, "e", index, kid);
  const Bignum modulus(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()),
                                 static_cast<int>(n.size()), nullptr));
  const Bignum exponent(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()),
                                  static_cast<int>(e.size()), nullptr));
  if (!modulus || !exponent) throw std::bad_alloc();
  const int bits = BN_num_bits(modulus.get());
  if (bits < jwks_rsa_bits_min || bits > rsa_bits_max) {
    throw KeyProblem(index, kid,
                     "an RSA modulus of " + std::to_string(bits) + " bits (allowed: " +
                         std::to_string(jwks_rsa_bits_min) + " to " + std::to_string(rsa_bits_max) +
                         ")");
  }
  if (!BN_is_odd(exponent.get()) || BN_is_one(exponent.get())) {
    throw KeyProblem(index, kid, "e is not a valid RSA public exponent");
  }
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> builder(OSSL_PARAM_BLD_new(),
                                                                         OSSL_PARAM_BLD_free);
  if (!builder || OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, modulus.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, exponent.get()) != 1) {
    throw std::bad_alloc();
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> parameters(
      OSSL_PARAM_BLD_to_param(builder.get()), OSSL_PARAM_free);
  if (!parameters) throw std::bad_alloc();
  auto key = public_key_from("RSA", parameters.get());
  if (!key) throw KeyProblem(index, kid, "OpenSSL refuses this RSA public key");
  return key;
}

std::shared_ptr<EVP_PKEY> p256_key(const rapidjson::Value& jwk, std::size_t index,
                                   const std::string& kid) {
  const std::string x = key_bytes(jwk, "x", index, kid);
  const std::string y = key_bytes(jwk, "y", index, kid);
  if (x.size() != p256_coordinate_bytes || y.size() != p256_coordinate_bytes) {
    throw KeyProblem(index, kid, "x and y of a P-256 key are 32 bytes each");
  }
  // SEC 1 uncompressed point: 0x04 || x || y.
  std::string point = "\x04" + x + y;
  char group[] = "prime256v1";
  OSSL_PARAM parameters[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end()};
  auto key = public_key_from("EC", parameters);
  if (!key) throw KeyProblem(index, kid, "x, y is not a point of P-256");
  return key;
}

}  // namespace

KeySet parse_jwks(std::string_view text) {
  rapidjson::Document document;
  document.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(
      text.data(), text.size());
  if (document.HasParseError()) {
    throw JwksError("not JSON (error at byte " + std::to_string(document.GetErrorOffset()) + ")");
  }
  if (!document.IsObject()) throw JwksError("not a JWKS object");
  const rapidjson::Value& root = document;  // const iterators: one operator== in C++20
  const auto keys = root.FindMember("keys");
  if (keys == root.MemberEnd() || !keys->value.IsArray()) {
    throw JwksError("has no \"keys\" array");
  }
  KeySet set;
  std::size_t index = 0;
  for (const auto& jwk : keys->value.GetArray()) {
    if (!jwk.IsObject()) throw KeyProblem(index, "", "is not an object");
    const std::string kty = member_string(jwk, "kty");
    const std::string alg = member_string(jwk, "alg");
    const std::string use = member_string(jwk, "use");
    // Keys published for others are skipped: encryption keys, other key types (an `oct`
    // secret is never taken: an HMAC key in a public document would let anyone sign), other
    // curves and algorithms.
    bool usable = false;
    KeyAlgorithm algorithm = KeyAlgorithm::rs256;
    if (has_member(jwk, "use") && use != "sig") {
      usable = false;
    } else if (kty == "RSA" && (!has_member(jwk, "alg") || alg == "RS256")) {
      usable = true;
      algorithm = KeyAlgorithm::rs256;
    } else if (kty == "EC" && member_string(jwk, "crv") == "P-256" &&
               (!has_member(jwk, "alg") || alg == "ES256")) {
      usable = true;
      algorithm = KeyAlgorithm::es256;
    }
    if (!usable) {
      ++index;
      continue;
    }
    const auto kid_member = jwk.FindMember("kid");
    if (kid_member == jwk.MemberEnd() || !kid_member->value.IsString() ||
        kid_member->value.GetStringLength() == 0 ||
        kid_member->value.GetStringLength() > kid_bytes_max) {
      throw KeyProblem(index, "",
                       "has no kid of 1 to " + std::to_string(kid_bytes_max) +
                           " bytes (tokens choose their key by kid)");
    }
    const std::string kid(kid_member->value.GetString(), kid_member->value.GetStringLength());
    if (set.keys.contains(kid)) throw KeyProblem(index, kid, "another key has the same kid");
    VerificationKey key;
    key.algorithm = algorithm;
    key.key = algorithm == KeyAlgorithm::rs256 ? rsa_key(jwk, index, kid) : p256_key(jwk, index, kid);
    set.keys.emplace(kid, std::move(key));
    ++index;
  }
  if (set.keys.empty()) throw JwksError("holds no RS256 or ES256 (P-256) signing key");
  return set;
}

bool signature_matches(const VerificationKey& key, std::string_view signing_input,
                       std::string_view signature) {
  std::string der;
  std::string_view checked = signature;
  if (key.algorithm == KeyAlgorithm::es256) {
    // JWS carries r || s; OpenSSL verifies the DER form of ECDSA-Sig-Value.
    if (signature.size() != 2 * p256_coordinate_bytes) return false;
    std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> value(ECDSA_SIG_new(), ECDSA_SIG_free);
    BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(signature.data()),
                          p256_coordinate_bytes, nullptr);
    BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(signature.data()) +
                              p256_coordinate_bytes,
                          p256_coordinate_bytes, nullptr);
    if (!value || r == nullptr || s == nullptr || ECDSA_SIG_set0(value.get(), r, s) != 1) {
      BN_free(r);
      BN_free(s);
      throw std::bad_alloc();
    }
    const int length = i2d_ECDSA_SIG(value.get(), nullptr);
    if (length <= 0) return false;
    der.resize(static_cast<std::size_t>(length));
    auto* out = reinterpret_cast<unsigned char*>(der.data());
    if (i2d_ECDSA_SIG(value.get(), &out) != length) return false;
    checked = der;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(),
                                                                  EVP_MD_CTX_free);
  if (!context) throw std::bad_alloc();
  const bool matches =
      EVP_DigestVerifyInit_ex(context.get(), nullptr, "SHA256", nullptr, nullptr, key.key.get(),
                              nullptr) == 1 &&
      EVP_DigestVerify(context.get(), reinterpret_cast<const unsigned char*>(checked.data()),
                       checked.size(), reinterpret_cast<const unsigned char*>(signing_input.data()),
                       signing_input.size()) == 1;
  // A refused signature leaves errors on this thread's OpenSSL queue; they are not news.
  if (!matches) ERR_clear_error();
  return matches;
}

}  // namespace ledger::api
