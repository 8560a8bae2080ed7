#pragma once
// The routes of the HTTP front, as the router matches them: for the OpenAPI document's test and
// for tools that list the interface.

#include <string>
#include <vector>

namespace ledger::api {

struct RouteDescription {
  std::string method;   // GET, POST
  std::string pattern;  // /v1/accounts/{id}/deposits
  // "none": no token; "any": a token with any of the three roles; else the role it needs.
  std::string access;
};

[[nodiscard]] std::vector<RouteDescription> routes();

}  // namespace ledger::api
