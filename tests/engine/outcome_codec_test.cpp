// A stored idempotency outcome reads back whatever its code: a replayed refusal must answer,
// never abort the engine (a code the reader could not find once took `ledger serve` down).
#include <doctest/doctest.h>

#include "ledger/domain/commands.hpp"
#include "outcome_codec.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;

TEST_CASE("every rejection code survives the stored outcome's round trip") {
  const int last = static_cast<int>(domain::rejection_code_last);
  // rejection_code_last is the last code: the one after it has no name.
  CHECK(to_string(static_cast<RejectionCode>(last + 1)) == "unknown");
  for (int value = 0; value <= last; ++value) {
    const auto code = static_cast<RejectionCode>(value);
    INFO(to_string(code));
    CHECK(to_string(code) != "unknown");
    domain::CommandOutcome outcome;
    outcome.code = code;
    outcome.detail = "because";
    outcome.command_id = "c1";
    const auto read = outcome_from_json(outcome_to_json(outcome));
    REQUIRE(read.has_value());
    CHECK(read->code == code);
    CHECK(read->detail == "because");
  }
}
