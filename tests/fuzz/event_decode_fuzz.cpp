// Event payload decoding (FlatBuffers verifier included), every event type. Input: byte 0 picks
// the type name, the rest is the stored payload.
// Properties: a decoded event is of the type asked for; it re-encodes to bytes that decode to
// the same event and re-encode byte for byte (encode ∘ decode is stable); its JSON (history,
// export), when event_from_json reads it back, encodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "event_types.hpp"
#include "fuzz_support.hpp"
#include "ledger/domain/events.hpp"

namespace domain = ledger::domain;
using ledger::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::string_view type = ledger::fuzz::event_types[data[0] % std::size(ledger::fuzz::event_types)];
  // A copy, as the store hands the engine its own string (FlatBuffers reads need alignment).
  const std::string payload(reinterpret_cast<const char*>(data + 1), size - 1);

  const auto decoded = domain::decode_event(type, payload);
  if (!decoded) return 0;
  require(domain::event_type(*decoded) == type, "decoded an event of another type", type);

  const std::string bytes = domain::encode_event(*decoded);
  const auto again = domain::decode_event(type, bytes);
  require(again.has_value(), "a decoded event re-encodes to bytes that do not decode", type);
  require(domain::encode_event(*again) == bytes, "encode/decode/encode is not byte for byte", type);
  const std::string json = domain::event_to_json(*decoded);
  require(domain::event_to_json(*again) == json, "the re-decoded event differs", json);
  // The export line of the event, when read back (it is refused when a string is not UTF-8,
  // which the API never stores), names the same event.
  if (const auto reread = domain::event_from_json(type, json)) {
    require(domain::encode_event(*reread) == bytes, "the export line reads back as another event",
            json);
  }
  return 0;
}
