#pragma once
// Signing keys for tests of RS256 and ES256 tokens, made with OpenSSL by the test itself:
// the key pair, its public JWK, a JWKS document and tokens signed with the private key. The
// signing here shares no code with the verifier under test (api/src/jwks.cpp).

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ledger::test {

inline std::string base64url(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t bits = 0;
  int count = 0;
  for (unsigned char c : bytes) {
    bits = (bits << 8) | c;
    count += 8;
    while (count >= 6) {
      count -= 6;
      out.push_back(alphabet[(bits >> count) & 63]);
    }
  }
  if (count > 0) out.push_back(alphabet[(bits << (6 - count)) & 63]);
  return out;
}

// Seconds since the epoch, `offset` from now: for exp, nbf and iat claims.
inline std::string epoch_seconds(std::chrono::seconds offset) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch() + offset)
                            .count());
}

// An RSA 2048 (RS256) or EC P-256 (ES256) key pair with a kid.
class SigningKey {
 public:
  static SigningKey rsa(std::string kid, unsigned bits = 2048) {
    return SigningKey(std::move(kid), "RS256", EVP_RSA_gen(bits));
  }
  static SigningKey p256(std::string kid) { return SigningKey(std::move(kid), "ES256", EVP_EC_gen("P-256")); }

  [[nodiscard]] const std::string& kid() const { return kid_; }
  [[nodiscard]] const std::string& alg() const { return alg_; }

  // The public JWK, with `kid` (and `alg` and `use` when `with_alg`).
  [[nodiscard]] std::string jwk(bool with_alg = true) const {
    std::string members = R"("kid":")" + kid_ + "\"";
    if (with_alg) members += R"(,"alg":")" + alg_ + R"(","use":"sig")";
    if (alg_ == "RS256") {
      return "{" + members + R"(,"kty":"RSA","n":")" + base64url(number(OSSL_PKEY_PARAM_RSA_N, 0)) +
             R"(","e":")" + base64url(number(OSSL_PKEY_PARAM_RSA_E, 0)) + "\"}";
    }
    return "{" + members + R"(,"kty":"EC","crv":"P-256","x":")" +
           base64url(number(OSSL_PKEY_PARAM_EC_PUB_X, 32)) + R"(","y":")" +
           base64url(number(OSSL_PKEY_PARAM_EC_PUB_Y, 32)) + "\"}";
  }

  [[nodiscard]] std::string public_pem() const {
    return pem([](BIO* bio, EVP_PKEY* key) { return PEM_write_bio_PUBKEY(bio, key); });
  }
  [[nodiscard]] std::string private_pem() const {
    return pem([](BIO* bio, EVP_PKEY* key) {
      return PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
  }

  // A compact JWS of exactly these header and claims texts, signed with this key.
  [[nodiscard]] std::string sign(const std::string& header, const std::string& claims) const {
    const std::string input = base64url(header) + "." + base64url(claims);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    std::size_t length = 0;
    if (EVP_DigestSignInit_ex(context.get(), nullptr, "SHA256", nullptr, nullptr, key_.get(), nullptr) != 1 ||
        EVP_DigestSign(context.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(input.data()),
                       input.size()) != 1) {
      throw std::runtime_error("cannot sign");
    }
    std::string signature(length, '\0');
    if (EVP_DigestSign(context.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
      throw std::runtime_error("cannot sign");
    }
    signature.resize(length);
    if (alg_ == "ES256") {  // DER ECDSA-Sig-Value to JWS r || s
      const auto* der = reinterpret_cast<const unsigned char*>(signature.data());
      std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> value(
          d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(signature.size())), ECDSA_SIG_free);
      std::string raw(64, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(value.get()), reinterpret_cast<unsigned char*>(raw.data()), 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(value.get()), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
      signature = raw;
    }
    return input + "." + base64url(signature);
  }

  // A token with this key's alg and kid (or `kid` instead) over `claims`.
  [[nodiscard]] std::string token(const std::string& claims, const std::string& kid = {}) const {
    return sign(R"({"alg":")" + alg_ + R"(","typ":"JWT","kid":")" + (kid.empty() ? kid_ : kid) + "\"}", claims);
  }

 private:
  SigningKey(std::string kid, std::string alg, EVP_PKEY* key)
      : kid_(std::move(kid)), alg_(std::move(alg)), key_(key, EVP_PKEY_free) {
    if (key == nullptr) throw std::runtime_error("OpenSSL could not make a key");
  }

  [[nodiscard]] std::string number(const char* name, int width) const {
    BIGNUM* value = nullptr;
    if (EVP_PKEY_get_bn_param(key_.get(), name, &value) != 1) throw std::runtime_error(name);
    std::string bytes(width > 0 ? static_cast<std::size_t>(width) : static_cast<std::size_t>(BN_num_bytes(value)), '\0');
    BN_bn2binpad(value, reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
    BN_free(value);
    return bytes;
  }

  template <typename Write>
  [[nodiscard]] std::string pem(Write write) const {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    if (write(bio.get(), key_.get()) != 1) throw std::runtime_error("cannot write PEM");
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
  }

  std::string kid_;
  std::string alg_;
  std::shared_ptr<EVP_PKEY> key_;
};

inline std::string jwks(const std::vector<const SigningKey*>& keys) {
  std::string text = R"({"keys":[)";
  for (std::size_t i = 0; i < keys.size(); ++i) text += (i == 0 ? "" : ",") + keys[i]->jwk();
  return text + "]}";
}

// Replaces `path` as an operator should: a new file renamed over the old one, so a reader
// sees the old content or the new, never half of it.
inline void replace_file(const std::filesystem::path& path, const std::string& content) {
  const std::filesystem::path temporary = path.string() + ".new";
  std::ofstream(temporary, std::ios::binary | std::ios::trunc) << content;
  std::filesystem::rename(temporary, path);
}

}  // namespace ledger::test
