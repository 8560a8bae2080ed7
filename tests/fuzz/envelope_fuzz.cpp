// The Kafka envelope decoder (what consumers of the relay's topic read). Input: the message.
// Properties: a decoded envelope re-encodes to bytes that decode to the same event, field for
// field (payload, hash and metadata exactly as stored: the hash chain is checked over them),
// and re-encode byte for byte.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "ledger/domain/envelope.hpp"

namespace domain = ledger::domain;
using ledger::fuzz::require;

namespace {

void require_same(const domain::RecordedEvent& a, const domain::RecordedEvent& b) {
  require(a.position == b.position && a.version == b.version, "position or version changed");
  require(a.stream_id == b.stream_id && a.event_id == b.event_id && a.type == b.type,
          "stream id, event id or type changed", b.stream_id);
  require(a.schema_version == b.schema_version && a.recorded_at_us == b.recorded_at_us,
          "schema version or time changed");
  require(a.payload == b.payload, "payload changed");
  require(a.hash == b.hash, "hash changed");
  require(a.metadata == b.metadata, "metadata changed in the round trip", b.metadata.actor);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view message(reinterpret_cast<const char*>(data), size);
  const auto decoded = domain::decode_envelope(message);
  if (!decoded) return 0;
  const std::string bytes = domain::encode_envelope(*decoded);
  const auto again = domain::decode_envelope(bytes);
  require(again.has_value(), "a decoded envelope re-encodes to bytes that do not decode");
  require_same(*decoded, *again);
  require(domain::encode_envelope(*again) == bytes, "encode/decode/encode is not byte for byte");
  return 0;
}
