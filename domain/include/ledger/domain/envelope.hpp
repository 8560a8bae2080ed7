#pragma once
// The Kafka message of one event (schemas/envelope.fbs), for the relay and for consumers.

#include <optional>
#include <string>
#include <string_view>

#include "ledger/domain/recorded_event.hpp"

namespace ledger::domain {

// FlatBuffers bytes of an Envelope carrying `event` exactly as stored (payload and hash too).
[[nodiscard]] std::string encode_envelope(const RecordedEvent& event);

// Verifies and decodes; std::nullopt when the bytes are not a valid Envelope.
[[nodiscard]] std::optional<RecordedEvent> decode_envelope(std::string_view bytes);

}  // namespace ledger::domain
