// X-Forwarded-For through the HTTP front: a stored event's metadata carries the client's
// address from the header only when the peer (here the loopback client) is a trusted proxy.
#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include "server_fixture.hpp"

using namespace ledger;
using test::ServerFixture;

namespace {

// Opens account `id` with X-Forwarded-For `forwarded_for` and returns the client address its
// event's metadata recorded.
std::string recorded_client_address(const test::TestDatabase& database, ServerFixture& server, const std::string& id,
                                    const std::string& forwarded_for) {
  auto client = server.client();
  auto headers = ServerFixture::auth({"teller"});
  headers["X-Forwarded-For"] = forwarded_for;
  const auto response = client.request("POST", "/v1/accounts", R"({"id":")" + id + R"(","currency":"EUR"})", headers);
  REQUIRE_MESSAGE(response.status == 201, response.body);
  pqxx::connection connection(database.app_url());
  pqxx::read_transaction work(connection);
  return work.exec_params1("SELECT metadata->>'client_address' FROM events WHERE stream_id = $1", "account-" + id)[0]
      .as<std::string>();
}

}  // namespace

TEST_CASE("the audit records the forwarded client address only when the peer is a trusted proxy") {
  test::TestDatabase database;
  const std::string chain = "198.51.100.66, 203.0.113.9";  // a spoofed hop, then what the proxy saw

  SUBCASE("no trusted proxies (the default): the header is ignored") {
    ServerFixture server(database.app_url());
    CHECK(recorded_client_address(database, server, "a", chain) == "127.0.0.1");
  }
  SUBCASE("the peer is not among the trusted proxies: the header is ignored") {
    api::ServerSettings settings;
    settings.trusted_proxies = api::TrustedProxies({"10.0.0.0/8", "fd00::/8"});
    ServerFixture server(database.app_url(), settings);
    CHECK(recorded_client_address(database, server, "b", chain) == "127.0.0.1");
  }
  SUBCASE("the peer is a trusted proxy: the rightmost untrusted hop, not the spoofed one") {
    api::ServerSettings settings;
    settings.trusted_proxies = api::TrustedProxies({"127.0.0.1", "10.0.0.0/8"});
    ServerFixture server(database.app_url(), settings);
    CHECK(recorded_client_address(database, server, "c", chain) == "203.0.113.9");
    CHECK(recorded_client_address(database, server, "d", "2001:db8::7, 10.4.0.1") == "2001:db8::7");
    // A malformed header from a trusted proxy is not believed at all.
    CHECK(recorded_client_address(database, server, "e", "203.0.113.9, unknown") == "127.0.0.1");
  }
}
