#pragma once
// An event as stored, its metadata and the hash chain over it (DESIGN.md inv. 6).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ledger/core/strong_type.hpp"

namespace ledger::domain {

// Metadata of every event: who did it and how to trace it. Stored as jsonb and covered by the
// hash chain through canonical_metadata_bytes.
struct EventMetadata {
  std::string actor;
  std::string command_id;
  std::string correlation_id;
  std::string causation_id;
  std::string request_id;
  std::string client_address;
  friend bool operator==(const EventMetadata&, const EventMetadata&) = default;
};

[[nodiscard]] std::string metadata_to_json(const EventMetadata& metadata);
// std::nullopt when `json` is not an object of strings.
[[nodiscard]] std::optional<EventMetadata> metadata_from_json(std::string_view json);

// An event as stored.
struct RecordedEvent {
  GlobalPosition position{0};
  std::string stream_id;
  StreamVersion version{0};
  std::string event_id;  // UUID text
  std::string type;
  std::int16_t schema_version = 1;
  std::string payload;  // FlatBuffers Event
  EventMetadata metadata;
  std::int64_t recorded_at_us = 0;  // microseconds since the Unix epoch
  std::string hash;                 // 32 bytes
};

constexpr std::size_t event_hash_size = 32;
// The hash before position 1.
[[nodiscard]] std::string genesis_hash();
// SHA-256(previous_hash ‖ canonical bytes of the event): position, stream, version, event id,
// type, schema version, time, payload and metadata, each length-prefixed (DESIGN.md inv. 6).
[[nodiscard]] std::string chain_hash(std::string_view previous_hash, const RecordedEvent& event);
// Whether event.hash is chain_hash(previous_hash, event), without allocating.
[[nodiscard]] bool chains_from(std::string_view previous_hash, const RecordedEvent& event);
// The event as one JSON object, the line format of `ledger replay export` and of the relay's
// JSON topic: position, stream_id, version, event_id, type, schema_version, recorded_at
// (RFC 3339), data (the decoded payload), metadata and hash (hex). Throws when the payload does
// not decode.
[[nodiscard]] std::string recorded_event_to_json(const RecordedEvent& event);

}  // namespace ledger::domain
