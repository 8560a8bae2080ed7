#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ledger {

// An amount of money in integer minor units (cents for EUR). Arithmetic is checked: an
// overflow yields std::nullopt, never a wrapped value. No floating point touches money.
class Amount {
 public:
  constexpr Amount() = default;
  constexpr explicit Amount(std::int64_t minor_units) : minor_units_(minor_units) {}

  [[nodiscard]] constexpr std::int64_t minor_units() const noexcept { return minor_units_; }

  [[nodiscard]] std::optional<Amount> checked_add(Amount other) const noexcept {
    std::int64_t result = 0;
    if (__builtin_add_overflow(minor_units_, other.minor_units_, &result)) return std::nullopt;
    return Amount{result};
  }
  [[nodiscard]] std::optional<Amount> checked_sub(Amount other) const noexcept {
    std::int64_t result = 0;
    if (__builtin_sub_overflow(minor_units_, other.minor_units_, &result)) return std::nullopt;
    return Amount{result};
  }

  constexpr auto operator<=>(const Amount&) const = default;

 private:
  std::int64_t minor_units_ = 0;
};

// An ISO 4217 alphabetic code: exactly three capital ASCII letters.
class Currency {
 public:
  constexpr Currency() = default;

  // Returns std::nullopt unless `code` is three capital letters A-Z.
  [[nodiscard]] static std::optional<Currency> parse(std::string_view code) noexcept;

  [[nodiscard]] std::string_view code() const noexcept { return {letters_.data(), 3}; }
  [[nodiscard]] std::string str() const { return std::string(code()); }

  constexpr auto operator<=>(const Currency&) const = default;

 private:
  std::array<char, 3> letters_{'X', 'X', 'X'};
};

}  // namespace ledger
