// Bearer token verification: HS256 signatures compared in constant time, claims checked.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "hs256.hpp"
#include "ledger/api/auth.hpp"

using namespace ledger;

namespace {

const std::string secret = "auth-test-secret-that-is-at-least-32-bytes";

std::string bearer(const std::string& token) { return "Bearer " + token; }

int status_of(const std::variant<api::Principal, api::Problem>& result) {
  if (const auto* problem = std::get_if<api::Problem>(&result)) return problem->status;
  return 200;
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
  const auto good = api::authenticate(bearer(token), secret);
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
    CHECK(status_of(api::authenticate(bearer(signing_input + "." + forged), secret)) == 401);
  }
  for (const std::string& forged : {std::string(), signature.substr(0, 42), signature + "A", signature + "=",
                                   std::string(43, 'A'), std::string(4096, 'A')}) {
    INFO(forged.size());
    CHECK_FALSE(api::hs256_signature_matches(signing_input + "." + forged, secret));
    CHECK(status_of(api::authenticate(bearer(signing_input + "." + forged), secret)) == 401);
  }
  CHECK_FALSE(api::hs256_signature_matches(token, secret + "x"));
  CHECK_FALSE(api::hs256_signature_matches(signing_input, secret));  // no signature part
  CHECK_FALSE(api::hs256_signature_matches("a.b.c.d", secret));
  // alg none, and a valid signature of another algorithm's header, are refused.
  const std::string payload = R"({"sub":"mallory","roles":["admin"],"exp":)" + future_exp() + "}";
  const std::string none = api::base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." + api::base64url_encode(payload) + ".";
  CHECK(status_of(api::authenticate(bearer(none), secret)) == 401);
  CHECK(status_of(api::authenticate(bearer(make_token(R"({"alg":"HS512","typ":"JWT"})", payload, secret)), secret)) == 401);
  // A token we sign ourselves over the same claims passes: the helpers agree with cpp-jwt.
  CHECK(status_of(api::authenticate(bearer(make_token(R"({"alg":"HS256","typ":"JWT"})", payload, secret)), secret)) == 200);
}

TEST_CASE("the sub claim, copied into every event's metadata, must be 1 to 128 visible ASCII bytes") {
  const std::string header = R"({"alg":"HS256","typ":"JWT"})";
  for (const std::string& sub : {std::string(""), std::string("has space"), std::string("bad\\u00ffbyte"),
                                std::string("nul\\u0000"), std::string(129, 's')}) {
    INFO(sub);
    const std::string payload = R"({"sub":")" + sub + R"(","roles":["teller"],"exp":)" + future_exp() + "}";
    CHECK(status_of(api::authenticate(bearer(make_token(header, payload, secret)), secret)) == 401);
  }
  const std::string payload = R"({"sub":")" + std::string(128, 's') + R"(","roles":["teller"],"exp":)" + future_exp() + "}";
  CHECK(status_of(api::authenticate(bearer(make_token(header, payload, secret)), secret)) == 200);
}
