#pragma once

#include <string>

namespace ledger::api {

// An RFC 7807 problem: what every error answer carries (application/problem+json), with a
// stable snake_case `code` clients can branch on.
struct Problem {
  int status = 400;
  std::string code;
  std::string title;
  std::string detail;
};

}  // namespace ledger::api
