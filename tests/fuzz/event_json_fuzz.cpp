// event_from_json, the reader of export lines. Input: byte 0 picks the type name, the rest is
// the JSON object.
// Properties: an accepted event is of that type; its FlatBuffers bytes decode to the same
// event; its own JSON reads back to the same bytes (JSON -> event -> JSON -> event is stable).
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
  const std::string_view json(reinterpret_cast<const char*>(data + 1), size - 1);

  const auto event = domain::event_from_json(type, json);
  if (!event) return 0;
  require(domain::event_type(*event) == type, "read an event of another type", type);

  const std::string bytes = domain::encode_event(*event);
  const auto decoded = domain::decode_event(type, bytes);
  require(decoded.has_value(), "an accepted export line encodes to bytes that do not decode", json);
  require(domain::encode_event(*decoded) == bytes, "encode/decode/encode is not byte for byte", json);

  const std::string written = domain::event_to_json(*event);
  require(domain::event_to_json(*decoded) == written, "the decoded event has other JSON", written);
  const auto reread = domain::event_from_json(type, written);
  require(reread.has_value(), "event_to_json wrote a line event_from_json refuses", written);
  require(domain::encode_event(*reread) == bytes, "the re-read export line encodes differently",
          written);
  return 0;
}
