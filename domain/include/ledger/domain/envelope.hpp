#pragma once
// The Kafka message of one event (schemas/envelope.fbs), for the relay and for consumers.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ledger/domain/recorded_event.hpp"

namespace ledger::domain {

// The event store's incarnation (table store_incarnation): a point-in-time restore gives the
// store a new one, so a position names an event only together with its incarnation.
struct Incarnation {
  std::string id;                   // UUID text
  std::int64_t since_position = 0;  // the store's head when it began
  std::int64_t started_us = 0;      // when it began, microseconds since the Unix epoch
  friend bool operator==(const Incarnation&, const Incarnation&) = default;
};

// FlatBuffers bytes of an Envelope carrying `event` exactly as stored (payload and hash too),
// and the incarnation it is published under, when given.
[[nodiscard]] std::string encode_envelope(const RecordedEvent& event,
                                          const std::optional<Incarnation>& incarnation = std::nullopt);

// Verifies and decodes; std::nullopt when the bytes are not a valid Envelope.
[[nodiscard]] std::optional<RecordedEvent> decode_envelope(std::string_view bytes);

struct DecodedEnvelope {
  RecordedEvent event;
  std::optional<Incarnation> incarnation;  // absent in envelopes of relays before incarnations
};
[[nodiscard]] std::optional<DecodedEnvelope> decode_envelope_with_incarnation(std::string_view bytes);

// The JSON view of the relay's JSON topic: recorded_event_to_json with, when given, the
// fields incarnation, incarnation_since and incarnation_started_us added.
[[nodiscard]] std::string envelope_json(const RecordedEvent& event, const std::optional<Incarnation>& incarnation);

}  // namespace ledger::domain
