#include "ledger/api/trusted_proxies.hpp"

#include <boost/asio/ip/address.hpp>

#include <charconv>
#include <optional>
#include <stdexcept>

namespace ledger::api {

namespace {

namespace ip = boost::asio::ip;

constexpr unsigned ipv6_bits = 128;
constexpr unsigned ipv4_bits = 32;
// An IPv4 address mapped into IPv6 is preceded by 96 bits (::ffff:0:0/96).
constexpr unsigned ipv4_mapped_prefix_bits = ipv6_bits - ipv4_bits;

std::optional<ip::address> parse_address(std::string_view text) {
  if (text.empty()) return std::nullopt;
  boost::system::error_code error;
  const auto address = ip::make_address(std::string(text), error);
  if (error) return std::nullopt;
  return address;
}

// The address as 16 bytes: IPv6 as is, IPv4 mapped into IPv6.
std::array<std::uint8_t, 16> to_bytes(const ip::address& address) {
  if (address.is_v4()) return ip::make_address_v6(ip::v4_mapped, address.to_v4()).to_bytes();
  return address.to_v6().to_bytes();
}

bool in_network(const std::array<std::uint8_t, 16>& bytes, const std::array<std::uint8_t, 16>& network,
                unsigned prefix_bits) {
  for (unsigned bit = 0; bit < prefix_bits; bit += 8) {
    const unsigned remaining = prefix_bits - bit;
    const std::uint8_t mask = remaining >= 8 ? 0xFF : static_cast<std::uint8_t>(0xFF << (8 - remaining));
    if ((bytes[bit / 8] & mask) != (network[bit / 8] & mask)) return false;
  }
  return true;
}

// One X-Forwarded-For element without its optional port, or nothing when it is no address.
std::optional<ip::address> parse_forwarded_element(std::string_view element) {
  while (!element.empty() && (element.front() == ' ' || element.front() == '\t')) element.remove_prefix(1);
  while (!element.empty() && (element.back() == ' ' || element.back() == '\t')) element.remove_suffix(1);
  std::string_view port;
  if (!element.empty() && element.front() == '[') {  // [IPv6] or [IPv6]:port
    const auto close = element.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = element.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
      if (port.empty()) return std::nullopt;
    }
    element = element.substr(1, close - 1);
    const auto address = parse_address(element);
    if (!address || !address->is_v6()) return std::nullopt;
  } else if (element.find(':') != element.rfind(':')) {
    // Two colons or more: an IPv6 address without a port (a port needs the brackets).
  } else if (const auto colon = element.find(':'); colon != std::string_view::npos) {  // IPv4:port
    port = element.substr(colon + 1);
    element = element.substr(0, colon);
    if (port.empty()) return std::nullopt;
  }
  if (!port.empty()) {
    unsigned value = 0;
    const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (error != std::errc() || end != port.data() + port.size() || value > 65535) return std::nullopt;
  }
  return parse_address(element);
}

// The text written into the audit: IPv4 mapped into IPv6 is shown as IPv4.
std::string address_text(const ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, address.to_v6()).to_string();
  }
  return address.to_string();
}

}  // namespace

std::string trusted_proxy_error(std::string_view entry) {
  const auto slash = entry.find('/');
  const auto address = parse_address(entry.substr(0, slash));
  if (!address) {
    return "'" + std::string(entry) + "' is not an IP address or CIDR block (e.g. 10.0.0.7, 10.0.0.0/8, fd00::/8)";
  }
  if (slash == std::string_view::npos) return {};
  const std::string_view prefix = entry.substr(slash + 1);
  const unsigned bits_max = address->is_v4() ? ipv4_bits : ipv6_bits;
  unsigned bits = 0;
  const auto [end, error] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), bits);
  if (prefix.empty() || error != std::errc() || end != prefix.data() + prefix.size() || bits > bits_max) {
    return "'" + std::string(entry) + "' has a prefix length that is not 0 to " + std::to_string(bits_max);
  }
  return {};
}

TrustedProxies::TrustedProxies(const std::vector<std::string>& entries) {
  for (const auto& entry : entries) {
    if (const auto error = trusted_proxy_error(entry); !error.empty()) throw std::invalid_argument(error);
    const auto slash = entry.find('/');
    const auto address = *parse_address(std::string_view(entry).substr(0, slash));
    Network network;
    network.bytes = to_bytes(address);
    network.prefix_bits = ipv6_bits;
    if (slash != std::string::npos) {
      network.prefix_bits = static_cast<unsigned>(std::stoul(entry.substr(slash + 1)));
      if (address.is_v4()) network.prefix_bits += ipv4_mapped_prefix_bits;
    }
    networks_.push_back(network);
  }
}

bool TrustedProxies::trusts(std::string_view address) const {
  const auto parsed = parse_address(address);
  return parsed && trusts(to_bytes(*parsed));
}

bool TrustedProxies::trusts(const std::array<std::uint8_t, 16>& bytes) const {
  for (const auto& network : networks_) {
    if (in_network(bytes, network.bytes, network.prefix_bits)) return true;
  }
  return false;
}

std::string client_address(const TrustedProxies& proxies, std::string_view peer,
                           const std::vector<std::string_view>& forwarded_for) {
  if (forwarded_for.empty() || proxies.empty() || !proxies.trusts(peer)) return std::string(peer);
  std::vector<ip::address> hops;
  for (std::string_view value : forwarded_for) {
    while (true) {
      const auto comma = value.find(',');
      const auto hop = parse_forwarded_element(value.substr(0, comma));
      if (!hop || hops.size() == forwarded_for_addresses_max) return std::string(peer);
      hops.push_back(*hop);
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
  }
  for (auto hop = hops.rbegin(); hop != hops.rend(); ++hop) {
    if (!proxies.trusts(to_bytes(*hop))) return address_text(*hop);
  }
  return address_text(hops.front());
}

}  // namespace ledger::api
