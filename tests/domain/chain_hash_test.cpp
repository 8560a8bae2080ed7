// The hash chain's format (DESIGN.md invariant 6) is what auditors recompute from an export,
// and every stored hash depends on it: it must never change by accident. The digest below was
// computed independently of this code (Python's hashlib over the documented byte layout:
// previous hash, then position, stream id, version, event id, type, schema version,
// recorded_at in microseconds, payload and the six metadata fields in declaration order, each
// integer 8 bytes big-endian and each string prefixed with its length so).
#include <doctest/doctest.h>

#include <string>

#include "ledger/core/hex.hpp"
#include "ledger/domain/recorded_event.hpp"

using namespace ledger;
using namespace ledger::domain;

namespace {

RecordedEvent fixed_event() {
  RecordedEvent event;
  event.position = GlobalPosition(7);
  event.stream_id = "account-alice";
  event.version = StreamVersion(3);
  event.event_id = "0b5e7c2a-1f3d-4e5a-9b8c-7d6e5f4a3b2c";
  event.type = "account_entry";
  event.schema_version = 1;
  event.recorded_at_us = 1'764'600'000'000'000;
  event.payload = std::string("\x01\x02payload\x00\xff", 11);
  event.metadata = {"teller-1", "cmd-1", "corr", "", "req-9", "127.0.0.1"};
  return event;
}

const std::string previous(event_hash_size, '\xab');

}  // namespace

TEST_CASE("the chain hash of a fixed event is the documented SHA-256, byte for byte") {
  auto event = fixed_event();
  const std::string expected = "23a1afc8b60c3faa934b4475157dd740e455c34f86ded65f14699eed6a3841ca";
  CHECK(to_hex(chain_hash(previous, event)) == expected);
  event.hash = chain_hash(previous, event);
  CHECK(chains_from(previous, event));
}

TEST_CASE("every field the chain covers changes the hash") {
  const RecordedEvent original = fixed_event();
  const std::string hash = chain_hash(previous, original);
  auto differs = [&](auto&& change) {
    RecordedEvent changed = original;
    change(changed);
    changed.hash = hash;
    CHECK(chain_hash(previous, changed) != hash);
    CHECK_FALSE(chains_from(previous, changed));
  };
  differs([](RecordedEvent& e) { e.position = GlobalPosition(8); });
  differs([](RecordedEvent& e) { e.stream_id += "x"; });
  differs([](RecordedEvent& e) { e.version = StreamVersion(4); });
  differs([](RecordedEvent& e) { e.event_id.back() = 'd'; });
  differs([](RecordedEvent& e) { e.type = "account_opened"; });
  differs([](RecordedEvent& e) { e.schema_version = 2; });
  differs([](RecordedEvent& e) { e.recorded_at_us += 1; });
  differs([](RecordedEvent& e) { e.payload.back() = '\xfe'; });
  differs([](RecordedEvent& e) { e.metadata.actor = "teller-2"; });
  differs([](RecordedEvent& e) { e.metadata.command_id.clear(); });
  differs([](RecordedEvent& e) { e.metadata.correlation_id = "corr2"; });
  differs([](RecordedEvent& e) { e.metadata.causation_id = "c"; });
  differs([](RecordedEvent& e) { e.metadata.request_id = "req-8"; });
  differs([](RecordedEvent& e) { e.metadata.client_address = "::1"; });
  // Length prefixes: bytes moved from one field to the next change the hash too.
  differs([](RecordedEvent& e) {
    e.metadata.actor = "teller-1c";
    e.metadata.command_id = "md-1";
  });
  // Another predecessor, or a stored hash that is not 32 bytes, never chains.
  RecordedEvent stored = original;
  stored.hash = hash;
  CHECK_FALSE(chains_from(std::string(event_hash_size, '\xac'), stored));
  stored.hash = hash.substr(0, 31);
  CHECK_FALSE(chains_from(previous, stored));
}
