// The Kafka envelope carries an event exactly as stored: consumers re-check the hash chain over
// these fields, so a byte lost in the envelope is an event that no longer verifies.
#include <doctest/doctest.h>

#include <string>

#include "ledger/domain/envelope.hpp"

namespace domain = ledger::domain;
using namespace ledger::domain;
using namespace std::literals;

namespace {

RecordedEvent example() {
  RecordedEvent event;
  event.position = ledger::GlobalPosition(7);
  event.stream_id = "account-alice";
  event.version = ledger::StreamVersion(3);
  event.event_id = "00000000-0000-4000-8000-000000000001";
  event.type = "account_frozen";
  event.payload = "\x01\x00\x02"s;
  event.metadata = {"teller-1", "cmd-1", "corr-1", "cause-1", "req-1", "127.0.0.1"};
  event.recorded_at_us = 1'800'000'000'000'000;
  event.hash = std::string(event_hash_size, '\x5a');
  return event;
}

}  // namespace

TEST_CASE("an envelope decodes to the event it was encoded from") {
  const RecordedEvent event = example();
  const auto decoded = domain::decode_envelope(domain::encode_envelope(event));
  REQUIRE(decoded.has_value());
  CHECK(decoded->position == event.position);
  CHECK(decoded->stream_id == event.stream_id);
  CHECK(decoded->payload == event.payload);
  CHECK(decoded->hash == event.hash);
  CHECK(decoded->metadata == event.metadata);
}

// Found by tests/fuzz/envelope_fuzz (corpus/envelope/regression-metadata-nul): metadata was
// written as C strings, so an actor (a JWT `sub`) holding U+0000 was cut at the NUL.
TEST_CASE("metadata with a NUL byte crosses the envelope unchanged") {
  domain::RecordedEvent event = example();
  event.metadata.actor = "teller\0evil"s;
  event.metadata.request_id = "\0"s;
  const auto decoded = domain::decode_envelope(domain::encode_envelope(event));
  REQUIRE(decoded.has_value());
  CHECK(decoded->metadata.actor == event.metadata.actor);
  CHECK(decoded->metadata.request_id == event.metadata.request_id);
}
