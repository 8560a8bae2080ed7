#include <doctest/doctest.h>

#include <limits>

#include "ledger/core/hex.hpp"
#include "ledger/core/money.hpp"
#include "ledger/core/strong_type.hpp"

using ledger::Amount;
using ledger::Currency;

TEST_CASE("amount arithmetic is checked at the int64 limits") {
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  constexpr auto min = std::numeric_limits<std::int64_t>::min();
  CHECK(Amount(max - 1).checked_add(Amount(1)) == Amount(max));
  CHECK_FALSE(Amount(max).checked_add(Amount(1)).has_value());
  CHECK_FALSE(Amount(min).checked_sub(Amount(1)).has_value());
  CHECK_FALSE(Amount(0).checked_sub(Amount(min)).has_value());
  CHECK(Amount(min + 1).checked_sub(Amount(1)) == Amount(min));
  CHECK(Amount(1250).checked_sub(Amount(250)) == Amount(1000));
}

TEST_CASE("currency codes are exactly three capital letters") {
  CHECK(Currency::parse("EUR").has_value());
  CHECK(Currency::parse("EUR")->code() == "EUR");
  for (const char* bad : {"", "EU", "EURO", "eur", "E1R", "EU ", "\xc3\x89UR"}) {
    INFO(bad);
    CHECK_FALSE(Currency::parse(bad).has_value());
  }
}

TEST_CASE("hex round-trips and rejects malformed input") {
  const std::string bytes("\x00\x01\xfe\xff", 4);
  CHECK(ledger::to_hex(bytes) == "0001feff");
  CHECK(ledger::from_hex("0001FEff") == bytes);
  CHECK_FALSE(ledger::from_hex("abc").has_value());
  CHECK_FALSE(ledger::from_hex("zz").has_value());
  // Appending: the bytes go after what `out` holds; a malformed input leaves it as it was.
  std::string out = "ab";
  CHECK(ledger::append_from_hex(out, "0001"));
  CHECK(out == std::string("ab\x00\x01", 4));
  CHECK_FALSE(ledger::append_from_hex(out, "ffzz"));
  CHECK_FALSE(ledger::append_from_hex(out, "fff"));
  CHECK(out == std::string("ab\x00\x01", 4));
}

TEST_CASE("strong types compare by value") {
  CHECK(ledger::GlobalPosition(3) < ledger::GlobalPosition(4));
  CHECK(ledger::StreamVersion(2) == ledger::StreamVersion(2));
  static_assert(!std::is_convertible_v<ledger::GlobalPosition, ledger::StreamVersion>);
  static_assert(!std::is_convertible_v<std::int64_t, ledger::GlobalPosition>);
}
