// The client address behind proxies: which X-Forwarded-For is believed (only a trusted peer's),
// how the chain is walked (from the peer leftwards, past trusted proxies), and what is refused.
#include <doctest/doctest.h>

#include <stdexcept>

#include "ledger/api/trusted_proxies.hpp"

using ledger::api::client_address;
using ledger::api::forwarded_for_addresses_max;
using ledger::api::trusted_proxy_error;
using ledger::api::TrustedProxies;

TEST_CASE("trusted proxies are addresses and CIDR blocks, IPv4 and IPv6; anything else names the entry") {
  const TrustedProxies proxies({"10.0.0.0/8", "192.0.2.7", "2001:db8:1::/48", "::1", "172.16.0.0/12"});
  CHECK(proxies.trusts("10.1.2.3"));
  CHECK(proxies.trusts("10.255.255.255"));
  CHECK_FALSE(proxies.trusts("11.0.0.1"));
  CHECK(proxies.trusts("192.0.2.7"));
  CHECK_FALSE(proxies.trusts("192.0.2.8"));
  CHECK(proxies.trusts("172.31.0.1"));
  CHECK_FALSE(proxies.trusts("172.32.0.1"));
  CHECK(proxies.trusts("2001:db8:1:ffff::5"));
  CHECK_FALSE(proxies.trusts("2001:db8:2::5"));
  CHECK(proxies.trusts("::1"));
  CHECK_FALSE(proxies.trusts("::2"));
  // A dual-stack listener sees IPv4 peers mapped into IPv6: the same address.
  CHECK(proxies.trusts("::ffff:10.9.8.7"));
  CHECK_FALSE(proxies.trusts("::ffff:11.9.8.7"));
  CHECK_FALSE(proxies.trusts("not-an-address"));
  CHECK_FALSE(proxies.trusts(""));
  CHECK(TrustedProxies({"0.0.0.0/0"}).trusts("203.0.113.1"));
  CHECK_FALSE(TrustedProxies({"0.0.0.0/0"}).trusts("2001:db8::1"));  // IPv4's /0 is not IPv6's
  CHECK(TrustedProxies({"::/0"}).trusts("2001:db8::1"));
  CHECK(TrustedProxies().empty());

  for (const char* bad : {"", "10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/8/8", "10.0.0",
                          "proxy.example", "10.0.0.0/-1", " 10.0.0.1"}) {
    CAPTURE(bad);
    CHECK_FALSE(trusted_proxy_error(bad).empty());
    CHECK_THROWS_AS(TrustedProxies({bad}), std::invalid_argument);
  }
  CHECK(trusted_proxy_error("10.0.0.0/33").find("10.0.0.0/33") != std::string::npos);
  CHECK(trusted_proxy_error("fd00::/8").empty());
  CHECK(trusted_proxy_error("10.0.0.1/32").empty());
}

TEST_CASE("X-Forwarded-For is believed only from a trusted peer") {
  const TrustedProxies proxies({"10.0.0.0/8"});
  // No trusted proxies configured (the default): never believed.
  CHECK(client_address(TrustedProxies(), "10.0.0.1", {"203.0.113.9"}) == "10.0.0.1");
  // A client talking to us directly cannot claim another address.
  CHECK(client_address(proxies, "198.51.100.4", {"203.0.113.9"}) == "198.51.100.4");
  // Through the balancer: the address the balancer saw.
  CHECK(client_address(proxies, "10.0.0.1", {"203.0.113.9"}) == "203.0.113.9");
  // No header: the peer.
  CHECK(client_address(proxies, "10.0.0.1", {}) == "10.0.0.1");
}

TEST_CASE("the chain is walked from the peer leftwards, past trusted proxies only") {
  const TrustedProxies proxies({"10.0.0.0/8", "2001:db8:ff::/48"});
  // A client that sends its own X-Forwarded-For (spoofed "1.1.1.1") through the balancer: the
  // balancer appends the address it saw, and that one is the answer.
  CHECK(client_address(proxies, "10.0.0.1", {"1.1.1.1, 203.0.113.9"}) == "203.0.113.9");
  // Two trusted hops (an edge proxy in front of the balancer): skipped.
  CHECK(client_address(proxies, "10.0.0.1", {"1.1.1.1, 203.0.113.9, 10.2.0.5, 10.3.0.9"}) == "203.0.113.9");
  // Several header lines are one list, in order.
  CHECK(client_address(proxies, "10.0.0.1", {"1.1.1.1", "203.0.113.9, 10.2.0.5"}) == "203.0.113.9");
  // Every hop trusted: the leftmost (the client is itself inside the trusted network).
  CHECK(client_address(proxies, "10.0.0.1", {"10.9.9.9, 10.2.0.5"}) == "10.9.9.9");
  // IPv6 peers and hops, with and without brackets and ports.
  CHECK(client_address(proxies, "2001:db8:ff::1", {"2001:db8:1::7"}) == "2001:db8:1::7");
  CHECK(client_address(proxies, "2001:db8:ff::1", {"[2001:db8:1::7]:4711, 2001:db8:ff::2"}) == "2001:db8:1::7");
  CHECK(client_address(proxies, "2001:db8:ff::1", {"[2001:db8:1::7]"}) == "2001:db8:1::7");
  // An IPv4 peer as a dual-stack listener reports it, and hops with ports.
  CHECK(client_address(proxies, "::ffff:10.0.0.1", {"203.0.113.9:55123"}) == "203.0.113.9");
  CHECK(client_address(proxies, "10.0.0.1", {"::ffff:203.0.113.9"}) == "203.0.113.9");
  // Spaces and tabs around elements are allowed.
  CHECK(client_address(proxies, "10.0.0.1", {"  203.0.113.9 ,\t10.2.0.5  "}) == "203.0.113.9");
}

TEST_CASE("a malformed X-Forwarded-For is ignored as a whole: the peer is the client") {
  const TrustedProxies proxies({"10.0.0.0/8"});
  for (const char* header : {"", "unknown", "203.0.113.9, unknown", "203.0.113.9,", ",203.0.113.9",
                             "203.0.113.9,,10.0.0.2", "client.example", "203.0.113.9:", "203.0.113.9:99999",
                             "203.0.113.9:80x", "[203.0.113.9]", "[2001:db8::1", "[2001:db8::1]x",
                             "2001:db8::1]:80", "203.0.113.9 10.0.0.2", "_hidden", "203.0.113.999"}) {
    CAPTURE(header);
    CHECK(client_address(proxies, "10.0.0.1", {header}) == "10.0.0.1");
  }
  // A second line that is malformed spoils the first.
  CHECK(client_address(proxies, "10.0.0.1", {"203.0.113.9", "garbage"}) == "10.0.0.1");
  // A chain longer than the limit is not walked.
  std::string longest;
  for (std::size_t i = 0; i < forwarded_for_addresses_max; ++i) longest += (i == 0 ? "" : ",") + std::string("10.0.0.2");
  CHECK(client_address(proxies, "10.0.0.1", {"203.0.113.9, " + longest}) == "10.0.0.1");
  CHECK(client_address(proxies, "10.0.0.1", {longest}) == "10.0.0.2");
}
