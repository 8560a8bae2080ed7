// Opens a EUR customer account and deposits into it, for the engine tests that need funded
// accounts; either command refused fails the test at once.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "engine_fixture.hpp"

namespace ledger::test {

inline void open_and_fund(engine::Engine& engine, const std::string& id, std::int64_t amount) {
  REQUIRE(engine.execute(command(domain::OpenAccount{id, eur()})).accepted());
  if (amount > 0) {
    REQUIRE(engine.execute(command(domain::Deposit{id, Amount(amount)})).accepted());
  }
}

}  // namespace ledger::test
