#include "ledger/core/money.hpp"

namespace ledger {

std::optional<Currency> Currency::parse(std::string_view code) noexcept {
  if (code.size() != 3) return std::nullopt;
  Currency currency;
  for (std::size_t i = 0; i < 3; ++i) {
    if (code[i] < 'A' || code[i] > 'Z') return std::nullopt;
    currency.letters_[i] = code[i];
  }
  return currency;
}

}  // namespace ledger
