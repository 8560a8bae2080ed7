// Stored payloads name their enums by number and the FlatBuffers verifier does not check enum
// ranges: decode_event must, or an entry with direction 33 indexes past the names' table when
// written as JSON (history, export), and an unknown account kind or schedule type reads as a
// known one that re-encodes to other bytes.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "ledger/domain/events.hpp"

namespace domain = ledger::domain;
using namespace ledger::domain;

namespace {

// A fuzz corpus input: byte 0 selects the type in the fuzz target, the payload follows.
std::string payload_of(const char* name) {
  std::ifstream in(std::filesystem::path(LEDGER_FUZZ_CORPUS_DIR) / "event_decode" / name,
                   std::ios::binary);
  REQUIRE(in.good());
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  REQUIRE(bytes.size() > 1);
  return bytes.substr(1);
}

}  // namespace

// Found by tests/fuzz/event_decode_fuzz under UBSan (index 33 out of bounds in event_to_json).
TEST_CASE("an account entry whose direction is outside the enum is not an event") {
  CHECK_FALSE(domain::decode_event("account_entry", payload_of("regression-entry-direction")).has_value());
}

TEST_CASE("every enum value the schema defines still decodes") {
  for (const auto direction : {events::Direction::debit, events::Direction::credit}) {
    for (const auto phase : {events::Phase::posted, events::Phase::pending,
                             events::Phase::pending_posted, events::Phase::pending_released}) {
      const DomainEvent entry = events::AccountEntry{"t-1", direction, phase, 5, 0, "bob"};
      const auto decoded = domain::decode_event("account_entry", domain::encode_event(entry));
      REQUIRE(decoded.has_value());
      CHECK(domain::event_to_json(*decoded) == domain::event_to_json(entry));
    }
  }
  for (const auto kind : {AccountKind::customer, AccountKind::system}) {
    const DomainEvent opened = events::AccountOpened{"a", "EUR", 0, "", kind, 0, 0};
    CHECK(domain::decode_event("account_opened", domain::encode_event(opened)).has_value());
  }
  for (const auto end : {events::PendingEnd::voided, events::PendingEnd::expired}) {
    const DomainEvent ended = events::PendingTransferEnded{5, end};
    CHECK(domain::decode_event("pending_transfer_ended", domain::encode_event(ended)).has_value());
  }
}

// Found by tests/fuzz/event_decode_fuzz under UBSan: the verifier accepts a union whose type is
// set and whose table is absent, and decoding read the absent table (a null pointer).
TEST_CASE("a payload naming an event type without its table is not an event") {
  CHECK_FALSE(domain::decode_event("account_entry", payload_of("regression-entry-without-table")).has_value());
}

// Found by tests/fuzz/event_decode_fuzz after the range check above: the schema's enums are
// `byte`, signed, so 0xFF is -1 and passed a check of the upper bound only.
TEST_CASE("an enum byte of 0xFF (-1) is outside the enum too") {
  CHECK_FALSE(domain::decode_event("pending_transfer_ended", payload_of("regression-ended-negative")).has_value());
}

// Found by tests/fuzz/event_decode_fuzz under UBSan: a repayment's parts near INT64_MAX made
// the check of their sum against the stored amount overflow (undefined behaviour).
TEST_CASE("a repayment whose parts overflow int64 is not an event") {
  CHECK_FALSE(domain::decode_event("loan_repaid", payload_of("regression-repaid-total-overflow")).has_value());
  const std::string big = "9223372036854775807";
  const std::string json = R"({"repayment_id":"r-1","amount":-2,"penalties":)" + big +
                           R"(,"interest":)" + big + R"(,"principal":0,"interest_reversed":0,"allocations":[]})";
  CHECK_FALSE(domain::event_from_json("loan_repaid", json).has_value());
}
