// api/openapi.json against the router: every route the front answers is described, with the
// access it really needs, nothing else is; every reference resolves; and GET /openapi.json
// serves it without a token.
#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <rapidjson/pointer.h>

#include <algorithm>
#include <set>

#include "ledger/api/routes.hpp"
#include "server_fixture.hpp"

using namespace ledger;

namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// Every "$ref" under `value`, in `out`.
void collect_refs(const rapidjson::Value& value, std::set<std::string>& out) {
  if (value.IsObject()) {
    for (const auto& member : value.GetObject()) {
      if (std::string(member.name.GetString()) == "$ref" && member.value.IsString()) out.insert(member.value.GetString());
      collect_refs(member.value, out);
    }
  } else if (value.IsArray()) {
    for (const auto& item : value.GetArray()) collect_refs(item, out);
  }
}

}  // namespace

TEST_CASE("the OpenAPI document describes exactly the router's routes, each with its access, and is served") {
  test::TestDatabase database;
  test::ServerFixture server(database.app_url());
  auto client = server.client();
  const auto served = client.request("GET", "/openapi.json");  // no token
  REQUIRE(served.status == 200);
  CHECK(served.header("Content-Type") == "application/json");
  rapidjson::Document document;
  document.Parse(served.body.c_str());
  REQUIRE_FALSE(document.HasParseError());
  CHECK(std::string(document["openapi"].GetString()).rfind("3.0.", 0) == 0);

  const auto& paths = document["paths"];
  std::size_t operations = 0;
  for (const auto& path : paths.GetObject()) operations += path.value.MemberCount();
  const auto described = api::routes();
  CHECK(operations == described.size());  // nothing described that the router does not answer
  for (const auto& route : described) {
    INFO(route.method << " " << route.pattern);
    REQUIRE(paths.HasMember(route.pattern.c_str()));
    const auto& item = paths[route.pattern.c_str()];
    const std::string method = lower(route.method);
    REQUIRE(item.HasMember(method.c_str()));
    const auto& security = item[method.c_str()]["security"];
    REQUIRE(security.IsArray());
    if (route.access == "none") {
      CHECK(security.Empty());
      continue;
    }
    REQUIRE(security.Size() == 1);
    const auto& scopes = security[0]["bearer"];
    if (route.access == "any") {
      CHECK(scopes.Empty());
    } else {
      REQUIRE(scopes.Size() == 1);
      CHECK(scopes[0].GetString() == route.access);
    }
    // And the router agrees: without a token, a protected route is 401, never 404 or 405.
    std::string target = route.pattern;
    if (const auto id = target.find("{id}"); id != std::string::npos) target.replace(id, 4, "x1");
    CHECK(client.request(route.method, target, route.method == "POST" ? "{}" : "").status == 401);
  }

  std::set<std::string> references;
  collect_refs(document, references);
  CHECK(!references.empty());
  for (const auto& reference : references) {
    INFO(reference);
    REQUIRE(reference.rfind("#/", 0) == 0);
    CHECK(rapidjson::Pointer(reference.substr(1).c_str()).Get(document) != nullptr);
  }
}
