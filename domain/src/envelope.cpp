#include "ledger/domain/envelope.hpp"

#include <flatbuffers/flatbuffers.h>

#include <utility>

#include "ledger/schemas/envelope_generated.h"

namespace ledger::domain {

namespace fb = ledger::schema;

std::string encode_envelope(const RecordedEvent& event, const std::optional<Incarnation>& incarnation) {
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
  builder.Finish(envelope.Finish());
  return {reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize()};
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
