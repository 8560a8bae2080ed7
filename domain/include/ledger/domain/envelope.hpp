#pragma once
// The Kafka message of one event (schemas/envelope.fbs), for the relay and for consumers.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ledger/core/strong_type.hpp"
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

// Kafka's murmur2 hash (the Java client's Utils.murmur2, seed 0x9747b28c), unsigned.
[[nodiscard]] std::uint32_t kafka_murmur2(std::string_view bytes);
// The partition of the events topic that carries `stream_id`'s events: Kafka's default
// partitioner for a keyed message, (murmur2(key) & 0x7fffffff) % partition_count, so a Java
// producer or consumer with the default partitioner agrees. The relay, the projectors and the
// read-your-writes wait all use this one function. partition_count >= 1.
[[nodiscard]] std::int32_t partition_for_stream(std::string_view stream_id, std::int32_t partition_count);

// The Kafka header that marks a progress marker (value: the decimal position it covers).
// Consumers that only want events skip every message carrying it.
inline constexpr const char* progress_marker_header = "ledger-progress";

// FlatBuffers bytes of an Envelope carrying `event` exactly as stored (payload and hash too),
// the incarnation it is published under, when given, and the position of the event sent to the
// same partition before it (0: none).
[[nodiscard]] std::string encode_envelope(const RecordedEvent& event,
                                          const std::optional<Incarnation>& incarnation = std::nullopt,
                                          std::int64_t previous_position = 0);

// Verifies and decodes; std::nullopt when the bytes are not a valid Envelope.
[[nodiscard]] std::optional<RecordedEvent> decode_envelope(std::string_view bytes);

struct DecodedEnvelope {
  RecordedEvent event;
  std::optional<Incarnation> incarnation;  // absent in envelopes of relays before incarnations
  std::int64_t previous_position = 0;      // 0 in envelopes of relays before partitioning
};
// std::nullopt for a progress marker too: it carries no event.
[[nodiscard]] std::optional<DecodedEnvelope> decode_envelope_with_incarnation(std::string_view bytes);

// A per-partition progress marker: every event of its partition at or below `through` has been
// sent before it, the last of them at `previous_position` (0: none). It lets a consumer of an
// idle partition advance that partition's watermark without an event.
struct ProgressMarker {
  GlobalPosition through{0};
  GlobalPosition previous_position{0};
  std::optional<Incarnation> incarnation;
  friend bool operator==(const ProgressMarker&, const ProgressMarker&) = default;
};
[[nodiscard]] std::string encode_progress_marker(const ProgressMarker& marker);
// std::nullopt unless the bytes are a valid Envelope flagged as a marker with
// 0 <= previous_position <= through and through >= 1.
[[nodiscard]] std::optional<ProgressMarker> decode_progress_marker(std::string_view bytes);

// The JSON view of the relay's JSON topic: recorded_event_to_json with, when given, the
// fields incarnation, incarnation_since and incarnation_started_us added.
[[nodiscard]] std::string envelope_json(const RecordedEvent& event, const std::optional<Incarnation>& incarnation);

}  // namespace ledger::domain
