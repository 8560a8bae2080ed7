#include "ledger/api/auth.hpp"

#include <jwt/jwt.hpp>

#include "hs256.hpp"

namespace ledger::api {

namespace {

// `sub` is copied into every event the request writes (metadata `actor`) and into logs: it is
// held to the rule of copied headers (router.cpp), 1 to 128 visible ASCII characters.
constexpr std::size_t subject_bytes_max = 128;

bool is_visible_ascii(std::string_view text, std::size_t length_max) {
  if (text.empty() || text.size() > length_max) return false;
  for (char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

Problem unauthorized(std::string detail) {
  return Problem{401, "unauthorized", "Unauthorized", std::move(detail)};
}

}  // namespace

std::variant<Principal, Problem> authenticate(std::string_view authorization,
                                              const std::string& key) {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.empty()) return unauthorized("missing Authorization: Bearer token");
  if (authorization.size() <= scheme.size() || authorization.substr(0, scheme.size()) != scheme) {
    return unauthorized("Authorization must be 'Bearer <token>'");
  }
  const std::string_view token = authorization.substr(scheme.size());
  // Our own constant-time check first: cpp-jwt compares signatures with string equality
  // (jwt/impl/algorithm.ipp), whose timing leaks how much of a forged signature is right.
  // cpp-jwt then sees only correctly signed tokens and checks the algorithm and exp.
  if (!hs256_signature_matches(token, key)) return unauthorized("invalid token: bad signature");
  using namespace jwt::params;
  std::error_code error;
  jwt::jwt_object decoded;
  try {
    decoded = jwt::decode(jwt::string_view(token.data(), token.size()), algorithms({"HS256"}),
                          error, secret(key), verify(true));
  } catch (const std::exception& exception) {
    return unauthorized(std::string("malformed token: ") + exception.what());
  }
  if (error) {
    if (error == jwt::VerificationErrc::TokenExpired) return unauthorized("token expired");
    return unauthorized("invalid token: " + error.message());
  }
  const auto& claims = decoded.payload().create_json_obj();
  if (!claims.contains("exp") || !claims["exp"].is_number_integer()) {
    return unauthorized("token has no exp claim");
  }
  if (!claims.contains("sub") || !claims["sub"].is_string() ||
      claims["sub"].get<std::string>().empty()) {
    return unauthorized("token has no sub claim");
  }
  if (!is_visible_ascii(claims["sub"].get<std::string>(), subject_bytes_max)) {
    return unauthorized("the token's sub claim must be 1 to " + std::to_string(subject_bytes_max) +
                        " visible ASCII characters");
  }
  Principal principal;
  principal.subject = claims["sub"].get<std::string>();
  if (claims.contains("roles") && claims["roles"].is_array()) {
    for (const auto& role : claims["roles"]) {
      if (!role.is_string()) continue;
      const auto name = role.get<std::string>();
      if (name == "teller") principal.roles |= static_cast<std::uint8_t>(Role::teller);
      if (name == "auditor") principal.roles |= static_cast<std::uint8_t>(Role::auditor);
      if (name == "admin") principal.roles |= static_cast<std::uint8_t>(Role::admin);
    }
  }
  return principal;
}

std::string issue_token(const std::string& key, const std::string& subject,
                        const std::vector<std::string>& roles, std::chrono::seconds lifetime) {
  using namespace jwt::params;
  jwt::jwt_object token{algorithm("HS256"), secret(key)};
  token.add_claim("sub", subject);
  token.add_claim("roles", roles);
  token.add_claim("exp", std::chrono::system_clock::now() + lifetime);
  return token.signature();
}

}  // namespace ledger::api
