#pragma once
// Which proxies' X-Forwarded-For is believed, and the client address it yields: behind a load
// balancer the TCP peer is the balancer, and the audit must show the client instead.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ledger::api {

// A set of networks (single addresses and CIDR blocks, IPv4 and IPv6). An IPv4 address and the
// same address mapped into IPv6 (::ffff:a.b.c.d, as a dual-stack listener sees it) are one.
// Immutable once built; shared by the I/O threads.
class TrustedProxies {
 public:
  TrustedProxies() = default;  // trusts nobody
  // Each entry is an address ("10.0.0.7", "2001:db8::1") or a CIDR block ("10.0.0.0/8",
  // "fd00::/8"). Throws std::invalid_argument naming the first entry that is neither.
  explicit TrustedProxies(const std::vector<std::string>& entries);

  [[nodiscard]] bool empty() const { return networks_.empty(); }
  // False for text that is not an address.
  [[nodiscard]] bool trusts(std::string_view address) const;
  // `address` as 16 bytes: IPv6, or IPv4 mapped into it.
  [[nodiscard]] bool trusts(const std::array<std::uint8_t, 16>& address) const;

 private:
  struct Network {
    std::array<std::uint8_t, 16> bytes{};
    unsigned prefix_bits = 0;
  };
  std::vector<Network> networks_;
};

// The entry's problem ("" when it is an address or a CIDR block), for settings validation.
[[nodiscard]] std::string trusted_proxy_error(std::string_view entry);

// X-Forwarded-For elements beyond this many make the header malformed (ignored).
inline constexpr std::size_t forwarded_for_addresses_max = 64;

// The client a request came from. `peer` (the TCP peer's address) unless it is a trusted proxy;
// then, walking X-Forwarded-For from the right (the hop nearest the peer), the first address
// that is not a trusted proxy (the leftmost when every one is). `forwarded_for` holds the
// header's field values in the order they came (several lines are one comma-separated list).
// Each element is an address, optionally with a port ("192.0.2.1:4711", "[2001:db8::1]:443");
// anything else (a name, "unknown", an empty element, too many elements) makes the whole header
// untrustworthy, and `peer` is the answer. No header, or no trusted proxies: `peer`.
[[nodiscard]] std::string client_address(const TrustedProxies& proxies, std::string_view peer,
                                         const std::vector<std::string_view>& forwarded_for);

}  // namespace ledger::api
