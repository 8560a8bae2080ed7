#pragma once
// The OpenAPI 3 description of the HTTP front (api/openapi.json), served at GET /openapi.json.

#include <string_view>

namespace ledger::api {

[[nodiscard]] std::string_view openapi_document();

}  // namespace ledger::api
