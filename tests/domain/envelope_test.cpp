// The Kafka envelope carries an event exactly as stored: consumers re-check the hash chain over
// these fields, so a byte lost in the envelope is an event that no longer verifies.
#include <doctest/doctest.h>

#include <string>

#include "ledger/domain/envelope.hpp"

namespace domain = ledger::domain;
using namespace ledger::domain;
using namespace std::literals;
using ledger::GlobalPosition;

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

// Kafka's own test vectors for murmur2 (clients' UtilsTest.testMurmur2, as signed Java ints):
// a Java producer with the default partitioner puts a key where the relay puts its stream.
TEST_CASE("the partition hash is Kafka's murmur2, so Java's default partitioner agrees") {
  CHECK(static_cast<std::int32_t>(domain::kafka_murmur2("21")) == -973932308);
  CHECK(static_cast<std::int32_t>(domain::kafka_murmur2("foobar")) == -790332482);
  CHECK(static_cast<std::int32_t>(domain::kafka_murmur2("a-little-bit-long-string")) == -985981536);
  CHECK(static_cast<std::int32_t>(domain::kafka_murmur2("a-little-bit-longer-string")) == -1486304829);
  CHECK(static_cast<std::int32_t>(domain::kafka_murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")) ==
        -58897971);
  CHECK(static_cast<std::int32_t>(domain::kafka_murmur2("abc")) == 479470107);
  // toPositive(murmur2) % count: the sign bit is masked, not the absolute value taken.
  CHECK(domain::partition_for_stream("21", 7) == 3);  // (0xc5f2f8ec & 0x7fffffff) % 7
  CHECK(domain::partition_for_stream("account-alice", 1) == 0);
  for (std::int32_t count = 1; count <= 16; ++count) {
    const auto partition = domain::partition_for_stream("account-alice", count);
    CHECK(partition >= 0);
    CHECK(partition < count);
  }
}

TEST_CASE("an envelope carries the previous position sent to its partition") {
  const RecordedEvent event = example();
  const auto decoded = domain::decode_envelope_with_incarnation(
      domain::encode_envelope(event, Incarnation{"00000000-0000-4000-8000-0000000000aa", 0, 1}, 5));
  REQUIRE(decoded.has_value());
  CHECK(decoded->previous_position == 5);
  CHECK(decoded->event.position == event.position);
  // An envelope without the field (older relays) says 0: nothing known before it.
  CHECK(domain::decode_envelope_with_incarnation(domain::encode_envelope(event))->previous_position == 0);
  // An event's envelope is not a progress marker.
  CHECK_FALSE(domain::decode_progress_marker(domain::encode_envelope(event)).has_value());
}

TEST_CASE("a progress marker round-trips and is never taken for an event") {
  const ProgressMarker marker{GlobalPosition(120), GlobalPosition(97),
                              Incarnation{"00000000-0000-4000-8000-0000000000aa", 3, 4}};
  const auto bytes = domain::encode_progress_marker(marker);
  const auto decoded = domain::decode_progress_marker(bytes);
  REQUIRE(decoded.has_value());
  CHECK(decoded->through == marker.through);
  CHECK(decoded->previous_position == marker.previous_position);
  CHECK(decoded->incarnation == marker.incarnation);
  // A consumer that decodes every message as an event finds no event in it.
  CHECK_FALSE(domain::decode_envelope(bytes).has_value());
  CHECK_FALSE(domain::decode_envelope_with_incarnation(bytes).has_value());
  // Garbled bytes or a marker that names no position are refused, not read as position 0.
  CHECK_FALSE(domain::decode_progress_marker("garbage").has_value());
  CHECK_FALSE(domain::decode_progress_marker(bytes.substr(0, bytes.size() / 2)).has_value());
  CHECK_FALSE(domain::decode_progress_marker(
                  domain::encode_progress_marker({GlobalPosition(0), GlobalPosition(0), std::nullopt}))
                  .has_value());
  CHECK_FALSE(domain::decode_progress_marker(
                  domain::encode_progress_marker({GlobalPosition(5), GlobalPosition(9), std::nullopt}))
                  .has_value());
}
