#pragma once

#include <chrono>
#include <cstdint>
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

// Verifies `Authorization: Bearer <JWT>` (HS256, claims sub, roles, exp); the signature is
// compared in constant time. A missing, malformed, badly signed or expired token, or one whose
// sub is not 1 to 128 visible ASCII characters, is a 401 Problem. A token may carry no known
// role: the router refuses it (403), authentication does not.
[[nodiscard]] std::variant<Principal, Problem> authenticate(std::string_view authorization,
                                                            const std::string& secret);

// Issues an HS256 token (for `ledger dev` and tests).
[[nodiscard]] std::string issue_token(const std::string& secret, const std::string& subject,
                                      const std::vector<std::string>& roles,
                                      std::chrono::seconds lifetime);

}  // namespace ledger::api
