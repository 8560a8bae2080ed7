#include "ledger/domain/envelope.hpp"

#include <flatbuffers/flatbuffers.h>

#include <utility>

#include "ledger/core/assert.hpp"

#include "ledger/schemas/envelope_generated.h"

namespace ledger::domain {

namespace fb = ledger::schema;

std::uint32_t kafka_murmur2(std::string_view bytes) {
  // Kafka's Utils.murmur2 (MurmurHash2, 32 bit), byte for byte: little-endian 4-byte words,
  // then the tail, then the final mix. Unsigned arithmetic wraps as Java's int does.
  constexpr std::uint32_t seed = 0x9747b28c;
  constexpr std::uint32_t m = 0x5bd1e995;
  constexpr int r = 24;
  const auto length = static_cast<std::uint32_t>(bytes.size());
  std::uint32_t h = seed ^ length;
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])); };
  const std::size_t words = bytes.size() / 4;
  for (std::size_t i = 0; i < words; ++i) {
    const std::size_t at = i * 4;
    std::uint32_t k = byte(at) | (byte(at + 1) << 8) | (byte(at + 2) << 16) | (byte(at + 3) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const std::size_t tail = words * 4;
  switch (bytes.size() % 4) {
    case 3: h ^= byte(tail + 2) << 16; [[fallthrough]];
    case 2: h ^= byte(tail + 1) << 8; [[fallthrough]];
    case 1:
      h ^= byte(tail);
      h *= m;
      break;
    default: break;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return h;
}

std::int32_t partition_for_stream(std::string_view stream_id, std::int32_t partition_count) {
  LEDGER_ASSERT(partition_count >= 1, "partition_for_stream: at least one partition");
  return static_cast<std::int32_t>((kafka_murmur2(stream_id) & 0x7fff'ffffu) %
                                   static_cast<std::uint32_t>(partition_count));
}

std::string encode_envelope(const RecordedEvent& event, const std::optional<Incarnation>& incarnation,
                            std::int64_t previous_position) {
  flatbuffers::FlatBufferBuilder builder(512 + event.payload.size());
  const auto& m = event.metadata;
  // Strings with their length, not as C strings: the envelope carries the event exactly as
  // stored (its hash covers the metadata), a NUL included.
  const auto metadata = fb::CreateMetadata(
      builder, builder.CreateString(m.actor), builder.CreateString(m.command_id),
      builder.CreateString(m.correlation_id), builder.CreateString(m.causation_id),
      builder.CreateString(m.request_id), builder.CreateString(m.client_address));
  const auto payload = builder.CreateVector(
      reinterpret_cast<const std::uint8_t*>(event.payload.data()), event.payload.size());
  const auto hash = builder.CreateVector(reinterpret_cast<const std::uint8_t*>(event.hash.data()),
                                         event.hash.size());
  const auto stream_id = builder.CreateString(event.stream_id);
  const auto event_id = builder.CreateString(event.event_id);
  const auto type = builder.CreateString(event.type);
  const auto incarnation_id =
      incarnation ? builder.CreateString(incarnation->id) : flatbuffers::Offset<flatbuffers::String>();
  fb::EnvelopeBuilder envelope(builder);
  envelope.add_envelope_version(1);
  envelope.add_position(event.position.value());
  envelope.add_stream_id(stream_id);
  envelope.add_version(event.version.value());
  envelope.add_event_id(event_id);
  envelope.add_type(type);
  envelope.add_schema_version(static_cast<std::uint16_t>(event.schema_version));
  envelope.add_recorded_at_us(event.recorded_at_us);
  envelope.add_payload(payload);
  envelope.add_metadata(metadata);
  envelope.add_hash(hash);
  if (incarnation) {
    envelope.add_incarnation(incarnation_id);
    envelope.add_incarnation_since(incarnation->since_position);
    envelope.add_incarnation_started_us(incarnation->started_us);
  }
  if (previous_position > 0) envelope.add_previous_position(previous_position);
  builder.Finish(envelope.Finish());
  return {reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize()};
}

std::string encode_progress_marker(const ProgressMarker& marker) {
  flatbuffers::FlatBufferBuilder builder(128);
  const auto incarnation_id = marker.incarnation ? builder.CreateString(marker.incarnation->id)
                                                 : flatbuffers::Offset<flatbuffers::String>();
  fb::EnvelopeBuilder envelope(builder);
  envelope.add_envelope_version(1);
  envelope.add_position(marker.through.value());
  envelope.add_previous_position(marker.previous_position.value());
  envelope.add_progress_marker(true);
  if (marker.incarnation) {
    envelope.add_incarnation(incarnation_id);
    envelope.add_incarnation_since(marker.incarnation->since_position);
    envelope.add_incarnation_started_us(marker.incarnation->started_us);
  }
  builder.Finish(envelope.Finish());
  return {reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize()};
}

std::optional<ProgressMarker> decode_progress_marker(std::string_view bytes) {
  flatbuffers::Verifier verifier(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  if (!fb::VerifyEnvelopeBuffer(verifier)) return std::nullopt;
  const auto* envelope = fb::GetEnvelope(bytes.data());
  if (!envelope->progress_marker()) return std::nullopt;
  const std::int64_t through = envelope->position();
  const std::int64_t previous = envelope->previous_position();
  if (through < 1 || previous < 0 || previous > through) return std::nullopt;
  ProgressMarker marker{GlobalPosition(through), GlobalPosition(previous), std::nullopt};
  if (envelope->incarnation() != nullptr) {
    marker.incarnation = Incarnation{envelope->incarnation()->str(), envelope->incarnation_since(),
                                     envelope->incarnation_started_us()};
  }
  return marker;
}

std::optional<RecordedEvent> decode_envelope(std::string_view bytes) {
  auto decoded = decode_envelope_with_incarnation(bytes);
  if (!decoded) return std::nullopt;
  return std::move(decoded->event);
}

std::optional<DecodedEnvelope> decode_envelope_with_incarnation(std::string_view bytes) {
  flatbuffers::Verifier verifier(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  if (!fb::VerifyEnvelopeBuffer(verifier)) return std::nullopt;
  const auto* envelope = fb::GetEnvelope(bytes.data());
  if (envelope->progress_marker()) return std::nullopt;  // carries no event
  if (envelope->stream_id() == nullptr || envelope->type() == nullptr ||
      envelope->payload() == nullptr || envelope->event_id() == nullptr) {
    return std::nullopt;
  }
  auto text = [](const flatbuffers::String* value) {
    return value == nullptr ? std::string() : value->str();
  };
  DecodedEnvelope decoded;
  auto& event = decoded.event;
  event.position = GlobalPosition(envelope->position());
  event.stream_id = envelope->stream_id()->str();
  event.version = StreamVersion(envelope->version());
  event.event_id = envelope->event_id()->str();
  event.type = envelope->type()->str();
  event.schema_version = static_cast<std::int16_t>(envelope->schema_version());
  event.recorded_at_us = envelope->recorded_at_us();
  event.payload.assign(reinterpret_cast<const char*>(envelope->payload()->data()),
                       envelope->payload()->size());
  if (envelope->hash() != nullptr) {
    event.hash.assign(reinterpret_cast<const char*>(envelope->hash()->data()), envelope->hash()->size());
  }
  if (const auto* m = envelope->metadata()) {
    event.metadata = {text(m->actor()),      text(m->command_id()), text(m->correlation_id()),
                      text(m->causation_id()), text(m->request_id()), text(m->client_address())};
  }
  if (envelope->incarnation() != nullptr) {
    decoded.incarnation = Incarnation{envelope->incarnation()->str(), envelope->incarnation_since(),
                                      envelope->incarnation_started_us()};
  }
  decoded.previous_position = envelope->previous_position();
  return decoded;
}

std::string envelope_json(const RecordedEvent& event, const std::optional<Incarnation>& incarnation) {
  std::string json = recorded_event_to_json(event);
  if (!incarnation || json.empty() || json.back() != '}') return json;
  // A UUID needs no escaping; the object gets three more members before its closing brace.
  json.pop_back();
  json += ",\"incarnation\":\"" + incarnation->id + "\",\"incarnation_since\":" +
          std::to_string(incarnation->since_position) +
          ",\"incarnation_started_us\":" + std::to_string(incarnation->started_us) + "}";
  return json;
}

}  // namespace ledger::domain
