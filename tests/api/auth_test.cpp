// Bearer token verification (TokenVerifier): HS256 signatures compared in constant time;
// RS256 and ES256 against a JWKS file, keys chosen by kid and reloaded when the file changes;
// exp and nbf with the clock leeway, iss, aud and sub checked. Keys are made by the test with
// OpenSSL (jwt_keys.hpp).
#include <doctest/doctest.h>
#include <unistd.h>

#include <jwt/jwt.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "hs256.hpp"
#include "jwt_keys.hpp"
#include "ledger/api/auth.hpp"

using namespace ledger;
namespace fs = std::filesystem;
using std::chrono::seconds;

namespace {

const std::string secret = "auth-test-secret-that-is-at-least-32-bytes";

std::string bearer(const std::string& token) { return "Bearer " + token; }

int status_of(const std::variant<api::Principal, api::Problem>& result) {
  if (const auto* problem = std::get_if<api::Problem>(&result)) {
    CHECK(problem->code == "unauthorized");  // every refusal here is the one 401 code
    return problem->status;
  }
  return 200;
}

std::string detail_of(const std::variant<api::Principal, api::Problem>& result) {
  if (const auto* problem = std::get_if<api::Problem>(&result)) return problem->detail;
  return "accepted as " + std::get<api::Principal>(result).subject;
}

// The HS256-only verifier the tests of HS256 use (the development set-up).
const api::TokenVerifier& hs256_verifier() {
  static const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret});
  return verifier;
}

// HS256 with the shared secret, as the tests before TokenVerifier called it.
std::variant<api::Principal, api::Problem> authenticate(const std::string& authorization, const std::string& key) {
  if (key == secret) return hs256_verifier().authenticate(authorization);
  return api::TokenVerifier(api::TokenSettings{.hs256_secret = key}).authenticate(authorization);
}

// A token with the given header and payload JSON, signed with `key` (or with `signature`).
std::string make_token(const std::string& header, const std::string& payload, const std::string& key) {
  const std::string signing_input = api::base64url_encode(header) + "." + api::base64url_encode(payload);
  return signing_input + "." + api::base64url_encode(api::hs256(key, signing_input));
}

std::string future_exp() {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch() + std::chrono::hours(1))
                            .count());
}

}  // namespace

TEST_CASE("HS256 signatures: exactly the right one passes; every other is refused") {
  const std::string token = api::issue_token(secret, "alice", {"teller"}, std::chrono::hours(1));
  const auto good = authenticate(bearer(token), secret);
  REQUIRE(status_of(good) == 200);
  CHECK(std::get<api::Principal>(good).subject == "alice");
  CHECK(api::hs256_signature_matches(token, secret));

  const auto dot = token.rfind('.');
  const std::string signing_input = token.substr(0, dot);
  const std::string signature = token.substr(dot + 1);
  CHECK(signature.size() == 43);  // 32 bytes, base64url without padding
  // Each character of the signature changed in turn (first, middle and last included).
  for (std::size_t i = 0; i < signature.size(); ++i) {
    std::string forged = signature;
    forged[i] = forged[i] == 'A' ? 'B' : 'A';
    INFO("position " << i);
    CHECK_FALSE(api::hs256_signature_matches(signing_input + "." + forged, secret));
    CHECK(status_of(authenticate(bearer(signing_input + "." + forged), secret)) == 401);
  }
  for (const std::string& forged : {std::string(), signature.substr(0, 42), signature + "A", signature + "=",
                                   std::string(43, 'A'), std::string(4096, 'A')}) {
    INFO(forged.size());
    CHECK_FALSE(api::hs256_signature_matches(signing_input + "." + forged, secret));
    CHECK(status_of(authenticate(bearer(signing_input + "." + forged), secret)) == 401);
  }
  CHECK_FALSE(api::hs256_signature_matches(token, secret + "x"));
  CHECK_FALSE(api::hs256_signature_matches(signing_input, secret));  // no signature part
  CHECK_FALSE(api::hs256_signature_matches("a.b.c.d", secret));
  // alg none, and a valid signature of another algorithm's header, are refused.
  const std::string payload = R"({"sub":"mallory","roles":["admin"],"exp":)" + future_exp() + "}";
  const std::string none = api::base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." + api::base64url_encode(payload) + ".";
  CHECK(status_of(authenticate(bearer(none), secret)) == 401);
  CHECK(status_of(authenticate(bearer(make_token(R"({"alg":"HS512","typ":"JWT"})", payload, secret)), secret)) == 401);
  // A token we sign ourselves over the same claims passes: the helpers agree with cpp-jwt.
  CHECK(status_of(authenticate(bearer(make_token(R"({"alg":"HS256","typ":"JWT"})", payload, secret)), secret)) == 200);
}

TEST_CASE("the sub claim, copied into every event's metadata, must be 1 to 128 visible ASCII bytes") {
  const std::string header = R"({"alg":"HS256","typ":"JWT"})";
  for (const std::string& sub : {std::string(""), std::string("has space"), std::string("bad\\u00ffbyte"),
                                std::string("nul\\u0000"), std::string(129, 's')}) {
    INFO(sub);
    const std::string payload = R"({"sub":")" + sub + R"(","roles":["teller"],"exp":)" + future_exp() + "}";
    CHECK(status_of(authenticate(bearer(make_token(header, payload, secret)), secret)) == 401);
  }
  const std::string payload = R"({"sub":")" + std::string(128, 's') + R"(","roles":["teller"],"exp":)" + future_exp() + "}";
  CHECK(status_of(authenticate(bearer(make_token(header, payload, secret)), secret)) == 200);
}

namespace {

// Keys made once for the whole file (RSA generation takes a while).
const test::SigningKey& rsa_a() {
  static const auto key = test::SigningKey::rsa("rsa-a");
  return key;
}
const test::SigningKey& rsa_b() {
  static const auto key = test::SigningKey::rsa("rsa-b");
  return key;
}
const test::SigningKey& ec_a() {
  static const auto key = test::SigningKey::p256("ec-a");
  return key;
}
// Other key pairs that claim the kids of the ones above: what a forger has.
const test::SigningKey& rsa_stranger() {
  static const auto key = test::SigningKey::rsa("rsa-a");
  return key;
}
const test::SigningKey& ec_stranger() {
  static const auto key = test::SigningKey::p256("ec-a");
  return key;
}

std::string claims(const std::string& extra = "", seconds exp_in = std::chrono::hours(1)) {
  return R"({"sub":"alice","roles":["teller"],"exp":)" + test::epoch_seconds(exp_in) + extra + "}";
}

// A JWKS file in a directory of its own, removed at the end.
struct JwksFile {
  fs::path directory;
  fs::path path;
  explicit JwksFile(const std::string& content) {
    static int made = 0;
    directory = fs::temp_directory_path() /
                ("ledger-auth-test-" + std::to_string(getpid()) + "-" + std::to_string(++made));
    fs::remove_all(directory);
    fs::create_directories(directory);
    path = directory / "jwks.json";
    test::replace_file(path, content);
  }
  ~JwksFile() { fs::remove_all(directory); }
  [[nodiscard]] api::TokenSettings settings(std::chrono::milliseconds check_interval = std::chrono::milliseconds(0)) const {
    return api::TokenSettings{.jwks_file = path.string(), .jwks_check_interval = check_interval};
  }
};

// The JwksError message for a file with `content`, or "" when it was accepted.
std::string jwks_error(const std::string& content) {
  const JwksFile file(content);
  try {
    const api::TokenVerifier verifier(file.settings());
    return "";
  } catch (const api::JwksError& error) {
    return error.what();
  }
}

}  // namespace

TEST_CASE("base64url: canonical text only, and what is encoded decodes back") {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes.push_back(static_cast<char>(i * 37 % 256));
    const auto back = api::base64url_decode(api::base64url_encode(bytes));
    REQUIRE(back.has_value());
    CHECK(*back == bytes);
  }
  CHECK(api::base64url_decode("").value() == "");
  CHECK_FALSE(api::base64url_decode("A").has_value());      // 4n+1 characters
  CHECK_FALSE(api::base64url_decode("AB=").has_value());    // padding
  CHECK_FALSE(api::base64url_decode("AB+/").has_value());   // the other alphabet
  CHECK_FALSE(api::base64url_decode("AB C").has_value());
  CHECK(api::base64url_decode("AA").value() == std::string(1, '\0'));
  CHECK_FALSE(api::base64url_decode("AB").has_value());     // unused bits not zero
  CHECK_FALSE(api::base64url_decode("AAB").has_value());
}

TEST_CASE("HS256: malformed tokens, headers and claims are refused; roles are read") {
  const std::string header = R"({"alg":"HS256","typ":"JWT"})";
  const std::string exp = test::epoch_seconds(std::chrono::hours(1));
  auto hs = [](const std::string& h, const std::string& c) { return make_token(h, c, secret); };
  const std::string good = hs(header, R"({"sub":"alice","roles":["teller"],"exp":)" + exp + "}");
  REQUIRE(status_of(authenticate(bearer(good), secret)) == 200);

  CHECK(status_of(authenticate("", secret)) == 401);
  CHECK(status_of(authenticate("Bearer", secret)) == 401);
  CHECK(status_of(authenticate("Bearer ", secret)) == 401);
  CHECK(status_of(authenticate("Basic " + good, secret)) == 401);
  CHECK(status_of(authenticate("bearer " + good, secret)) == 401);
  CHECK(status_of(authenticate("Bearer " + good + ".x", secret)) == 401);  // four parts
  CHECK(status_of(authenticate("Bearer " + good.substr(0, good.rfind('.')), secret)) == 401);
  // Correctly signed, yet not a JWT: the header or the claims are not JSON objects, or name
  // something twice (readers disagree on which of the two counts).
  for (const auto& header_and_claims : std::vector<std::pair<std::string, std::string>>{
           {"not json", R"({"sub":"a","exp":)" + exp + "}"},
           {"[1]", R"({"sub":"a","exp":)" + exp + "}"},
           {R"({"alg":"HS256","alg":"none"})", R"({"sub":"a","exp":)" + exp + "}"},
           {R"({"typ":"JWT"})", R"({"sub":"a","exp":)" + exp + "}"},
           {R"({"alg":"hs256"})", R"({"sub":"a","exp":)" + exp + "}"},
           {R"({"alg":"HS256","crit":["exp"]})", R"({"sub":"a","exp":)" + exp + "}"},
           {header, "not json"},
           {header, R"(["sub"])"},
           {header, R"({"sub":"a","sub":"admin","exp":)" + exp + "}"},
           {header, R"({"sub":"a","exp":")" + exp + "\"}"},
           {header, R"({"sub":"a","exp":)" + exp + ".5}"},
           {header, R"({"sub":"a"})"},
           {header, R"({"sub":7,"exp":)" + exp + "}"},
           {header, R"({"exp":)" + exp + "}"},
       }) {
    const std::string& h = header_and_claims.first;
    const std::string& c = header_and_claims.second;
    INFO(h << " " << c);
    const auto result = authenticate(bearer(hs(h, c)), secret);
    CHECK(status_of(result) == 401);
  }
  // A header that is not base64url.
  CHECK(status_of(authenticate(bearer("e30*" + good.substr(good.find('.'))), secret)) == 401);

  // Roles: unknown names and non-strings are ignored; none left is still authenticated (the
  // router answers 403); admin may do everything.
  const auto roles_of = [&](const std::string& roles) {
    const auto result = authenticate(bearer(hs(header, R"({"sub":"r","exp":)" + exp + roles + "}")), secret);
    REQUIRE(status_of(result) == 200);
    return std::get<api::Principal>(result);
  };
  CHECK(roles_of(R"(,"roles":["auditor","root",3])").roles == static_cast<std::uint8_t>(api::Role::auditor));
  CHECK(roles_of(R"(,"roles":"admin")").roles == 0);
  CHECK(roles_of("").roles == 0);
  const auto admin = roles_of(R"(,"roles":["admin"])");
  CHECK(admin.has(api::Role::teller));
  CHECK(admin.has(api::Role::auditor));
  CHECK_FALSE(roles_of(R"(,"roles":["teller"])").has(api::Role::auditor));
}

TEST_CASE("RS256 and ES256 tokens signed by a key of the JWKS file pass; the key is chosen by kid") {
  const JwksFile file(test::jwks({&rsa_a(), &ec_a(), &rsa_b()}));
  const api::TokenVerifier verifier(file.settings());
  CHECK(verifier.key_ids() == std::vector<std::string>{"ec-a", "rsa-a", "rsa-b"});
  for (const auto* key : {&rsa_a(), &ec_a(), &rsa_b()}) {
    INFO(key->kid());
    const auto result = verifier.authenticate(bearer(key->token(claims())));
    REQUIRE_MESSAGE(status_of(result) == 200, detail_of(result));
    CHECK(std::get<api::Principal>(result).subject == "alice");
    CHECK(std::get<api::Principal>(result).roles == static_cast<std::uint8_t>(api::Role::teller));
  }
  // The same keys as another library signs with them (cpp-jwt, from the private key's PEM).
  for (const auto* key : {&rsa_a(), &ec_a()}) {
    INFO(key->kid());
    jwt::jwt_object token{jwt::params::algorithm(key->alg()), jwt::params::secret(key->private_pem())};
    token.header().add_header("kid", key->kid());
    token.add_claim("sub", "bob");
    token.add_claim("roles", std::vector<std::string>{"auditor"});
    token.add_claim("exp", std::chrono::system_clock::now() + std::chrono::minutes(5));
    const auto result = verifier.authenticate(bearer(token.signature()));
    REQUIRE_MESSAGE(status_of(result) == 200, detail_of(result));
    CHECK(std::get<api::Principal>(result).subject == "bob");
  }
  // JWKs without alg and use are taken for the algorithm of their type.
  const JwksFile bare(R"({"keys":[)" + rsa_a().jwk(false) + "," + ec_a().jwk(false) + "]}");
  const api::TokenVerifier bare_verifier(bare.settings());
  CHECK(status_of(bare_verifier.authenticate(bearer(rsa_a().token(claims())))) == 200);
  CHECK(status_of(bare_verifier.authenticate(bearer(ec_a().token(claims())))) == 200);
  // An HS256-only verifier refuses them: no key set.
  CHECK(status_of(hs256_verifier().authenticate(bearer(rsa_a().token(claims())))) == 401);
}

TEST_CASE("a token signed by another key, naming another kid, an unknown kid or none, is refused") {
  const JwksFile file(test::jwks({&rsa_a(), &ec_a(), &rsa_b()}));
  const api::TokenVerifier verifier(file.settings());
  auto refused = [&](const std::string& token, const std::string& why) {
    const auto result = verifier.authenticate(bearer(token));
    CHECK(status_of(result) == 401);
    CHECK_MESSAGE(detail_of(result).find(why) != std::string::npos, detail_of(result));
  };
  SUBCASE("wrong key: another key pair with the same kid") {
    refused(rsa_stranger().token(claims()), "bad signature");
    refused(ec_stranger().token(claims()), "bad signature");
  }
  SUBCASE("wrong kid: signed by one key of the set, naming another") {
    refused(rsa_a().token(claims(), "rsa-b"), "bad signature");
    refused(rsa_b().token(claims(), "rsa-a"), "bad signature");
  }
  SUBCASE("unknown kid, no kid, a kid that is not a string") {
    refused(rsa_a().token(claims(), "rsa-z"), "unknown kid");
    refused(rsa_a().sign(R"({"alg":"RS256","typ":"JWT"})", claims()), "no kid");
    refused(rsa_a().sign(R"({"alg":"RS256","kid":7})", claims()), "no kid");
  }
  SUBCASE("a kid of a key of the other algorithm") {
    refused(ec_a().sign(R"({"alg":"ES256","kid":"rsa-a"})", claims()), "not an ES256 key");
    refused(rsa_a().sign(R"({"alg":"RS256","kid":"ec-a"})", claims()), "not an RS256 key");
  }
  SUBCASE("a signature changed, cut, empty, or not base64url") {
    for (const auto* key : {&rsa_a(), &ec_a()}) {
      const std::string token = key->token(claims());
      const std::string input = token.substr(0, token.rfind('.'));
      const std::string signature = token.substr(token.rfind('.') + 1);
      std::string flipped = signature;
      flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
      refused(input + "." + flipped, "bad signature");
      refused(input + "." + signature.substr(0, signature.size() - 4), "bad signature");
      refused(input + ".", "bad signature");
      refused(input + "." + signature + "=", "bad signature");
      // The claims changed under a valid signature.
      refused(key->token(claims()).substr(0, token.find('.')) + "." + test::base64url(claims(R"(,"x":1)")) + "." +
                  signature,
              "bad signature");
    }
  }
  SUBCASE("an ES256 signature in DER form (what OpenSSL makes) rather than r || s") {
    const std::string input = test::base64url(R"({"alg":"ES256","kid":"ec-a"})") + "." + test::base64url(claims());
    // Sign with ES256 as the helper does, then re-encode r || s as DER by hand: 0x30 len 0x02 ...
    const std::string token = ec_a().sign(R"({"alg":"ES256","kid":"ec-a"})", claims());
    const auto raw = api::base64url_decode(token.substr(token.rfind('.') + 1)).value();
    auto integer = [](std::string bytes) {
      while (bytes.size() > 1 && bytes[0] == '\0' && (static_cast<unsigned char>(bytes[1]) & 0x80) == 0) bytes.erase(0, 1);
      if (static_cast<unsigned char>(bytes[0]) & 0x80) bytes.insert(0, 1, '\0');
      return std::string{'\x02', static_cast<char>(bytes.size())} + bytes;
    };
    const std::string body = integer(raw.substr(0, 32)) + integer(raw.substr(32));
    const std::string der = std::string{'\x30', static_cast<char>(body.size())} + body;
    refused(input + "." + test::base64url(der), "bad signature");
    CHECK(status_of(verifier.authenticate(bearer(token))) == 200);
  }
}

TEST_CASE("alg none, other algorithms, and an HS256 token keyed with the public key are refused") {
  const JwksFile file(test::jwks({&rsa_a(), &ec_a()}));
  const std::string claim_text = claims();
  SUBCASE("alg none and algorithms nobody configured") {
    const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret, .jwks_file = file.path.string()});
    for (const std::string alg : {"none", "None", "NONE", "RS512", "PS256", "ES384", "HS512", "rs256", "EdDSA", ""}) {
      INFO(alg);
      const std::string header = R"({"alg":")" + alg + R"(","kid":"rsa-a"})";
      const std::string input = test::base64url(header) + "." + test::base64url(claim_text);
      CHECK(status_of(verifier.authenticate(bearer(input + "."))) == 401);
      CHECK(status_of(verifier.authenticate(bearer(rsa_a().sign(header, claim_text)))) == 401);
    }
    CHECK(status_of(verifier.authenticate(bearer(rsa_a().sign(R"({"alg":"RS256","kid":"rsa-a","crit":["b64"]})", claim_text)))) == 401);
  }
  SUBCASE("HS256 keyed with the public key's text: no secret configured") {
    const api::TokenVerifier verifier(file.settings());
    for (const std::string& key : {rsa_a().public_pem(), rsa_a().jwk(), ec_a().public_pem(), file.path.string()}) {
      for (const std::string kid : {"rsa-a", "ec-a"}) {
        const auto result = verifier.authenticate(bearer(make_token(R"({"alg":"HS256","kid":")" + kid + "\"}", claim_text, key)));
        CHECK(status_of(result) == 401);
        CHECK(detail_of(result).find("HS256 is not accepted") != std::string::npos);
      }
    }
  }
  SUBCASE("HS256 keyed with the public key's text: a secret configured too") {
    const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret, .jwks_file = file.path.string()});
    for (const std::string& key : {rsa_a().public_pem(), rsa_a().jwk(), ec_a().public_pem()}) {
      const auto result = verifier.authenticate(bearer(make_token(R"({"alg":"HS256","kid":"rsa-a"})", claim_text, key)));
      CHECK(status_of(result) == 401);
      CHECK(detail_of(result).find("bad signature") != std::string::npos);
    }
    // Both kinds are accepted side by side: the development secret and the identity provider.
    CHECK(status_of(verifier.authenticate(bearer(make_token(R"({"alg":"HS256"})", claim_text, secret)))) == 200);
    CHECK(status_of(verifier.authenticate(bearer(rsa_a().token(claim_text)))) == 200);
  }
}

TEST_CASE("exp and nbf are checked with the clock leeway, for HS256 and RS256 alike") {
  CHECK(api::jwt_clock_leeway == seconds(30));
  const JwksFile file(test::jwks({&rsa_a(), &ec_a()}));
  const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret, .jwks_file = file.path.string()});
  using Signer = std::function<std::string(const std::string&)>;
  const std::vector<std::pair<std::string, Signer>> signers = {
      {"HS256", [](const std::string& c) { return make_token(R"({"alg":"HS256","typ":"JWT"})", c, secret); }},
      {"RS256", [](const std::string& c) { return rsa_a().token(c); }},
      {"ES256", [](const std::string& c) { return ec_a().token(c); }}};
  for (const auto& signer : signers) {
    INFO(signer.first);
    const Signer& sign = signer.second;
    auto status = [&](const std::string& c) { return status_of(verifier.authenticate(bearer(sign(c)))); };
    CHECK(status(claims("", seconds(3600))) == 200);
    CHECK(status(claims("", seconds(-10))) == 200);   // expired 10 s ago: within the leeway
    CHECK(status(claims("", seconds(-60))) == 401);   // beyond it
    const auto expired = verifier.authenticate(bearer(sign(claims("", seconds(-60)))));
    CHECK(detail_of(expired) == "token expired");
    CHECK(status(claims(R"(,"nbf":)" + test::epoch_seconds(seconds(10)))) == 200);  // the issuer's clock is ahead
    CHECK(status(claims(R"(,"nbf":)" + test::epoch_seconds(seconds(120)))) == 401);
    CHECK(status(claims(R"(,"nbf":"soon")")) == 401);
    CHECK(status(R"({"sub":"alice","roles":["teller"]})") == 401);  // exp is required
  }
  // issue_token's lifetimes as the other tests use them.
  CHECK(status_of(verifier.authenticate(bearer(api::issue_token(secret, "a", {"teller"}, seconds(-120))))) == 401);
  CHECK(status_of(verifier.authenticate(bearer(api::issue_token(secret, "a", {"teller"}, seconds(-5))))) == 200);
}

TEST_CASE("iss and aud are checked when configured; a token for another audience is refused") {
  const JwksFile file(test::jwks({&rsa_a(), &ec_a()}));
  auto settings = file.settings();
  settings.hs256_secret = secret;
  settings.issuer = "https://idp.example/realms/bank";
  settings.audience = "ledger";
  const api::TokenVerifier strict(settings);
  const std::string iss = R"(,"iss":"https://idp.example/realms/bank")";
  for (const auto* key : {&rsa_a(), &ec_a()}) {
    INFO(key->kid());
    auto status = [&](const std::string& extra) { return status_of(strict.authenticate(bearer(key->token(claims(extra))))); };
    CHECK(status(iss + R"(,"aud":"ledger")") == 200);
    CHECK(status(iss + R"(,"aud":["payments","ledger"])") == 200);
    CHECK(status(iss + R"(,"aud":"payments")") == 401);            // wrong audience
    CHECK(status(iss + R"(,"aud":["payments"])") == 401);
    CHECK(status(iss + R"(,"aud":["ledger2"])") == 401);
    CHECK(status(iss + R"(,"aud":7)") == 401);
    CHECK(status(iss) == 401);                                     // no audience
    CHECK(status(R"(,"iss":"https://evil.example/realms/bank","aud":"ledger")") == 401);  // wrong issuer
    CHECK(status(R"(,"iss":"https://idp.example/realms/bank/","aud":"ledger")") == 401);
    CHECK(status(R"(,"aud":"ledger")") == 401);                    // no issuer
    CHECK(status(R"(,"iss":["https://idp.example/realms/bank"],"aud":"ledger")") == 401);
  }
  // HS256 tokens meet the same checks; issue_token sets iss and aud when asked.
  CHECK(status_of(strict.authenticate(bearer(api::issue_token(secret, "a", {"teller"}, seconds(60), settings.issuer, "ledger")))) == 200);
  CHECK(status_of(strict.authenticate(bearer(api::issue_token(secret, "a", {"teller"}, seconds(60))))) == 401);
  // Without an audience configured, a token naming one was meant for another service.
  const api::TokenVerifier lax(file.settings());
  CHECK(status_of(lax.authenticate(bearer(rsa_a().token(claims(iss))))) == 200);  // no issuer configured: any
  CHECK(status_of(lax.authenticate(bearer(rsa_a().token(claims(R"(,"aud":"ledger")"))))) == 401);
}

TEST_CASE("a rotated key set: the new kid works and the removed one stops working") {
  const JwksFile file(test::jwks({&rsa_a()}));
  const api::TokenVerifier verifier(file.settings());  // looks at the file on every call
  const std::string token_a = rsa_a().token(claims());
  const std::string token_b = rsa_b().token(claims());
  const std::string token_ec = ec_a().token(claims());
  CHECK(status_of(verifier.authenticate(bearer(token_a))) == 200);
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 401);
  // The provider publishes the next key beside the current one, then drops the old one.
  test::replace_file(file.path, test::jwks({&rsa_a(), &rsa_b()}));
  CHECK(status_of(verifier.authenticate(bearer(token_a))) == 200);
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 200);
  test::replace_file(file.path, test::jwks({&rsa_b(), &ec_a()}));
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 200);
  CHECK(status_of(verifier.authenticate(bearer(token_ec))) == 200);
  const auto removed = verifier.authenticate(bearer(token_a));
  CHECK(status_of(removed) == 401);
  CHECK(detail_of(removed).find("unknown kid") != std::string::npos);
  CHECK(verifier.key_ids() == std::vector<std::string>{"ec-a", "rsa-b"});
  // Written in place rather than renamed over: seen too (size and modification time).
  std::ofstream(file.path, std::ios::trunc) << test::jwks({&rsa_a()});
  CHECK(status_of(verifier.authenticate(bearer(token_a))) == 200);
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 401);
}

TEST_CASE("the JWKS file is looked at no more than once per check interval") {
  const JwksFile file(test::jwks({&rsa_a()}));
  const api::TokenVerifier verifier(file.settings(std::chrono::milliseconds(2'000)));
  test::replace_file(file.path, test::jwks({&rsa_b()}));
  const std::string token_b = rsa_b().token(claims());
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 401);  // not looked at yet
  std::this_thread::sleep_for(std::chrono::milliseconds(2'100));
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 200);
  CHECK(status_of(verifier.authenticate(bearer(rsa_a().token(claims())))) == 401);
}

TEST_CASE("a JWKS file that turns to garbage, loses its keys or disappears keeps the old keys") {
  const JwksFile file(test::jwks({&rsa_a()}));
  const api::TokenVerifier verifier(file.settings());
  const std::string token_a = rsa_a().token(claims());
  const std::string token_b = rsa_b().token(claims());
  const std::string whole = test::jwks({&rsa_b()});
  for (const std::string& garbage :
       {std::string("not json at all"), std::string(R"({"keys":[]})"), std::string(R"({"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"rsa-b"}]})"),
        whole.substr(0, whole.size() / 2), std::string(api::jwks_file_bytes_max + 1, ' '), std::string()}) {
    INFO(garbage.substr(0, 60));
    test::replace_file(file.path, garbage);
    CHECK(status_of(verifier.authenticate(bearer(token_a))) == 200);
    CHECK(status_of(verifier.authenticate(bearer(token_b))) == 401);
    CHECK(verifier.key_ids() == std::vector<std::string>{"rsa-a"});
  }
  fs::remove(file.path);
  CHECK(status_of(verifier.authenticate(bearer(token_a))) == 200);
  // Fixed: the next version is taken.
  test::replace_file(file.path, whole);
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 200);
  CHECK(status_of(verifier.authenticate(bearer(token_a))) == 401);
}

TEST_CASE("a JWKS file that cannot be used stops the verifier from being made, saying why") {
  CHECK(std::string(jwks_error(test::jwks({&rsa_a(), &ec_a()}))) == "");
  const std::string rsa = rsa_a().jwk();
  const std::string ec = ec_a().jwk();
  auto with = [](const std::string& jwk, const std::string& from, const std::string& to) {
    std::string changed = jwk;
    const auto at = changed.find(from);
    REQUIRE(at != std::string::npos);
    return changed.replace(at, from.size(), to);
  };
  const std::string y = R"("y":")";
  const std::string ec_y = ec.substr(ec.find(y) + y.size(), 43);
  const std::string other_y = ec_y.substr(0, 20) + (ec_y[20] == 'A' ? 'B' : 'A') + ec_y.substr(21);
  const auto small = test::SigningKey::rsa("small", 1024);
  for (const auto& content_and_error : std::vector<std::pair<std::string, std::string>>{
           {"{", "not JSON"},
           {"[]", "not a JWKS object"},
           {R"({"keys":{}})", "no \"keys\" array"},
           {R"({"keys":[]})", "no RS256 or ES256"},
           {R"({"keys":[1]})", "key 0: is not an object"},
           {R"({"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}]})", "no RS256 or ES256"},
           {R"({"keys":[)" + small.jwk() + "]}", "modulus of 1024 bits"},
           {R"({"keys":[)" + with(rsa, R"("n":")", R"("n":"*)") + "]}", "n is not base64url"},
           {R"({"keys":[)" + with(rsa, R"("e":")", R"("x":")") + "]}", "has no e"},
           {R"({"keys":[)" + with(ec, y + ec_y, y + other_y) + "]}", "not a point of P-256"},
           {R"({"keys":[)" + with(ec, y + ec_y, y + ec_y.substr(0, 40)) + "]}", "32 bytes each"},
           {R"({"keys":[)" + with(rsa, R"("kid":"rsa-a",)", "") + "]}", "has no kid"},
           {R"({"keys":[)" + rsa + "," + with(ec, R"("kid":"ec-a")", R"("kid":"rsa-a")") + "]}", "key 1 (kid \"rsa-a\"): another key has the same kid"},
       }) {
    const std::string& content = content_and_error.first;
    const std::string& expected = content_and_error.second;
    INFO(content.substr(0, 80));
    const std::string error = jwks_error(content);
    CHECK_MESSAGE(error.find(expected) != std::string::npos, error);
  }
  // A missing file, named.
  try {
    const api::TokenVerifier verifier(api::TokenSettings{.jwks_file = "/nonexistent/jwks.json"});
    FAIL("a missing JWKS file was accepted");
  } catch (const api::JwksError& error) {
    CHECK(std::string(error.what()).find("cannot read /nonexistent/jwks.json") != std::string::npos);
  }
  // Keys published for others are skipped, not refused: encryption keys, other algorithms,
  // curves and key types, and symmetric keys (never taken from a key set).
  const std::string others =
      R"({"kty":"oct","k":"c2VjcmV0","kid":"hmac"},)"
      R"({"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"},)"
      R"({"kty":"OKP","crv":"Ed25519","kid":"ed","x":"AA"},)" +
      with(rsa_b().jwk(), R"("use":"sig")", R"("use":"enc")") + "," +
      with(with(rsa_b().jwk(), R"("alg":"RS256")", R"("alg":"RS512")"), R"("kid":"rsa-b")", R"("kid":"rsa-512")") + ",";
  const JwksFile file(R"({"keys":[)" + others + rsa + "]}");
  const api::TokenVerifier verifier(file.settings());
  CHECK(verifier.key_ids() == std::vector<std::string>{"rsa-a"});
  CHECK(status_of(verifier.authenticate(bearer(rsa_b().token(claims())))) == 401);
  CHECK(status_of(verifier.authenticate(bearer(make_token(R"({"alg":"HS256","kid":"hmac"})", claims(), "secret")))) == 401);
}

TEST_CASE("threads verifying while the key set is replaced see the old set or the new, never neither") {
  const JwksFile file(test::jwks({&rsa_a()}));
  const api::TokenVerifier verifier(file.settings());  // every call may reload
  const std::string token_a = rsa_a().token(claims());
  const std::string token_b = rsa_b().token(claims());
  std::atomic<bool> stop{false};
  std::atomic<int> a_refused{0};
  std::atomic<int> verified{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      while (!stop) {
        // rsa-a is in every version of the file; rsa-b in every other one.
        if (status_of(verifier.authenticate(bearer(token_a))) != 200) ++a_refused;
        (void)verifier.authenticate(bearer(t % 2 == 0 ? token_b : token_a));
        ++verified;
      }
    });
  }
  // At least 40 versions, and until the threads have verified often enough to have met several
  // (slow under the sanitizers; bounded).
  for (int i = 0; (i < 40 || verified < 200) && i < 4'000; ++i) {
    test::replace_file(file.path, i % 2 == 0 ? test::jwks({&rsa_a(), &rsa_b()}) : test::jwks({&rsa_a()}));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (auto& thread : threads) thread.join();
  CHECK(a_refused == 0);
  CHECK(verified >= 200);
}

// The verified-token cache: a token used again is not verified again, but its exp still is,
// a token that failed is never cached, and a new key set empties the cache.
namespace {

std::uint64_t hits(const api::TokenVerifier& verifier) { return verifier.cache_stats().hits; }
std::uint64_t entries(const api::TokenVerifier& verifier) { return verifier.cache_stats().entries; }

}  // namespace

TEST_CASE("a token used again comes from the cache, with the same principal, for HS256, RS256 and ES256") {
  const JwksFile file(test::jwks({&rsa_a(), &ec_a()}));
  auto settings = file.settings();
  settings.hs256_secret = secret;
  const api::TokenVerifier verifier(settings);
  const std::vector<std::string> tokens = {
      make_token(R"({"alg":"HS256","typ":"JWT"})", claims(), secret),
      rsa_a().token(claims()), ec_a().token(claims())};
  for (const auto& token : tokens) {
    const auto first = verifier.authenticate(bearer(token));
    REQUIRE_MESSAGE(status_of(first) == 200, detail_of(first));
    const auto hits_before = hits(verifier);
    const auto again = verifier.authenticate(bearer(token));
    REQUIRE_MESSAGE(status_of(again) == 200, detail_of(again));
    CHECK(hits(verifier) == hits_before + 1);
    CHECK(std::get<api::Principal>(again).subject == std::get<api::Principal>(first).subject);
    CHECK(std::get<api::Principal>(again).roles == std::get<api::Principal>(first).roles);
  }
  CHECK(entries(verifier) == 3);
  CHECK(verifier.cache_stats().misses == 3);
}

TEST_CASE("a cached token is refused once its exp has passed (with the leeway), and dropped") {
  const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret});
  // Valid for about two more seconds: exp 28 s ago, the leeway is 30 s.
  const std::string token = make_token(R"({"alg":"HS256","typ":"JWT"})", claims("", seconds(-28)), secret);
  REQUIRE(status_of(verifier.authenticate(bearer(token))) == 200);
  REQUIRE(status_of(verifier.authenticate(bearer(token))) == 200);
  CHECK(hits(verifier) == 1);
  CHECK(entries(verifier) == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(3'100));
  const auto late = verifier.authenticate(bearer(token));
  CHECK(status_of(late) == 401);
  CHECK(detail_of(late) == "token expired");
  CHECK(entries(verifier) == 0);
  CHECK(hits(verifier) == 1);
  CHECK(status_of(verifier.authenticate(bearer(token))) == 401);  // and so on, verified each time
}

TEST_CASE("a token that is refused is never cached: a wrong signature stays wrong") {
  const JwksFile file(test::jwks({&rsa_a()}));
  auto settings = file.settings();
  settings.hs256_secret = secret;
  const api::TokenVerifier verifier(settings);
  const std::string c = claims();
  const std::string good = make_token(R"({"alg":"HS256","typ":"JWT"})", c, secret);
  const std::string forged = make_token(R"({"alg":"HS256","typ":"JWT"})", c, secret + "x");
  const std::string rsa_good = rsa_a().token(c);
  const std::string rsa_forged = rsa_b().token(c, "rsa-a");  // another key, the same kid
  for (int round = 0; round < 3; ++round) {
    CHECK(status_of(verifier.authenticate(bearer(forged))) == 401);
    CHECK(status_of(verifier.authenticate(bearer(rsa_forged))) == 401);
  }
  CHECK(entries(verifier) == 0);
  CHECK(verifier.cache_stats().misses == 6);
  // The genuine tokens over the same header and claims are cached; the forged ones, which
  // differ only in their signature, are still refused.
  REQUIRE(status_of(verifier.authenticate(bearer(good))) == 200);
  REQUIRE(status_of(verifier.authenticate(bearer(rsa_good))) == 200);
  CHECK(entries(verifier) == 2);
  CHECK(detail_of(verifier.authenticate(bearer(forged))) == "invalid token: bad signature");
  CHECK(detail_of(verifier.authenticate(bearer(rsa_forged))) == "invalid token: bad signature");
  const std::string truncated = good.substr(0, good.size() - 1);
  CHECK(status_of(verifier.authenticate(bearer(truncated))) == 401);
  CHECK(status_of(verifier.authenticate(bearer(good + "A"))) == 401);
  CHECK(entries(verifier) == 2);
  CHECK(hits(verifier) == 0);
}

TEST_CASE("a reloaded key set drops the cached tokens: removed and replaced keys stop working at once") {
  const JwksFile file(test::jwks({&rsa_a(), &rsa_b()}));
  const api::TokenVerifier verifier(file.settings());  // looks at the file on every call
  const std::string token_a = rsa_a().token(claims());
  const std::string token_b = rsa_b().token(claims());
  REQUIRE(status_of(verifier.authenticate(bearer(token_a))) == 200);
  REQUIRE(status_of(verifier.authenticate(bearer(token_b))) == 200);
  REQUIRE(status_of(verifier.authenticate(bearer(token_a))) == 200);
  CHECK(hits(verifier) == 1);
  CHECK(entries(verifier) == 2);
  // rsa-a removed: its cached token goes with it, and rsa-b's is verified again.
  test::replace_file(file.path, test::jwks({&rsa_b()}));
  const auto removed = verifier.authenticate(bearer(token_a));
  CHECK(status_of(removed) == 401);
  CHECK(detail_of(removed) == "invalid token: unknown kid");
  CHECK(entries(verifier) == 0);
  CHECK(status_of(verifier.authenticate(bearer(token_b))) == 200);
  CHECK(hits(verifier) == 1);
  CHECK(entries(verifier) == 1);
  // rsa-b's kid now names another key (a compromised key replaced under the same name): the
  // token signed by the old key was cached and is refused now.
  static const auto replacement = test::SigningKey::rsa("rsa-b");
  test::replace_file(file.path, test::jwks({&replacement}));
  const auto replaced = verifier.authenticate(bearer(token_b));
  CHECK(status_of(replaced) == 401);
  CHECK(detail_of(replaced) == "invalid token: bad signature");
  CHECK(status_of(verifier.authenticate(bearer(replacement.token(claims())))) == 200);
  CHECK(entries(verifier) == 1);
}

TEST_CASE("the cache holds at most jwt_cache_entries_max tokens, and no token longer than the bound") {
  const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret});
  for (std::size_t i = 0; i < api::jwt_cache_entries_max + 100; ++i) {
    const auto token = make_token(R"({"alg":"HS256","typ":"JWT"})",
                                  R"({"sub":"user-)" + std::to_string(i) + R"(","exp":)" + future_exp() + "}", secret);
    REQUIRE(status_of(verifier.authenticate(bearer(token))) == 200);
  }
  CHECK(entries(verifier) == api::jwt_cache_entries_max);
  // The last one is in the cache (the entries made room for it).
  const auto last = make_token(R"({"alg":"HS256","typ":"JWT"})",
                               R"({"sub":"user-last","exp":)" + future_exp() + "}", secret);
  REQUIRE(status_of(verifier.authenticate(bearer(last))) == 200);
  const auto hits_before = hits(verifier);
  REQUIRE(status_of(verifier.authenticate(bearer(last))) == 200);
  CHECK(hits(verifier) == hits_before + 1);
  // A long token is accepted but verified on every use.
  const std::string padding(api::jwt_cache_token_bytes_max, 'p');
  const auto long_token = make_token(R"({"alg":"HS256","typ":"JWT"})",
                                     R"({"sub":"long","pad":")" + padding + R"(","exp":)" + future_exp() + "}", secret);
  REQUIRE(status_of(verifier.authenticate(bearer(long_token))) == 200);
  REQUIRE(status_of(verifier.authenticate(bearer(long_token))) == 200);
  CHECK(hits(verifier) == hits_before + 1);
}
