#pragma once
// API.md's bounds on a command, restated independently of the parser: what command_parser_fuzz
// requires of everything the parser accepts and http_front_fuzz of everything the router hands
// to the engine. A breach stops the run (fuzz_support.hpp).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "fuzz_support.hpp"
#include "ledger/domain/commands.hpp"

namespace ledger::fuzz {

namespace domain = ledger::domain;

inline constexpr std::size_t text_length_max = 256;  // API.md: owner and reference
inline constexpr std::size_t batch_size_max = 100;   // API.md: POST /v1/batch

inline bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t extra = 0;
    std::uint32_t point = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { extra = 1; point = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { extra = 2; point = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { extra = 3; point = c & 0x07; }
    else return false;
    if (i + extra >= text.size()) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      point = (point << 6) | (next & 0x3F);
    }
    const std::uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    if (point < min[extra] || point > 0x10FFFF || (point >= 0xD800 && point <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

inline void check_id(const std::string& id, bool optional, const char* what) {
  if (optional && id.empty()) return;
  require(ledger::fuzz::is_api_id(id), "accepted id outside 1-64 of A-Za-z0-9._:-", what);
}
inline void check_positive(ledger::Amount amount, const char* what) {
  require(amount.minor_units() > 0, "accepted amount not positive", what);
}
inline void check_not_negative(ledger::Amount amount, const char* what) {
  require(amount.minor_units() >= 0, "accepted amount negative", what);
}
inline void check_currency(const ledger::Currency& currency) {
  require(ledger::fuzz::is_iso_currency(currency.code()), "accepted currency not ISO 4217",
          currency.code());
}
inline void check_text(const std::string& text, const char* what) {
  require(text.size() <= text_length_max, "accepted text longer than 256 bytes", what);
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    require(byte >= 0x20 && byte != 0x7F, "accepted text with a control character", what);
  }
  require(valid_utf8(text), "accepted text that is not UTF-8", what);
}
inline void check_date(const std::string& date, const char* what) {
  require(ledger::fuzz::is_business_date_text(date), "accepted date outside 1970-01-01..2199-12-31",
          what + std::string(": ") + date);
}

inline void check(const domain::SingleCommand& command) {
  std::visit(
      [](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, domain::OpenAccount>) {
          check_id(c.id, true, "open_account.id");
          check_currency(c.currency);
          check_text(c.owner, "owner");
          check_not_negative(c.overdraft_limit, "overdraft_limit");
          require(c.kind == domain::AccountKind::customer || c.kind == domain::AccountKind::system,
                  "accepted an unknown account kind");
        } else if constexpr (std::is_same_v<T, domain::Transfer> ||
                             std::is_same_v<T, domain::PlaceHold>) {
          check_id(c.id, true, "id");
          check_id(c.from, false, "from");
          check_id(c.to, false, "to");
          check_positive(c.amount, "amount");
          check_currency(c.currency);
          check_text(c.reference, "reference");
          if constexpr (std::is_same_v<T, domain::PlaceHold>) {
            require(!c.timeout_seconds || *c.timeout_seconds > 0, "accepted timeout_seconds <= 0");
          }
        } else if constexpr (std::is_same_v<T, domain::Deposit> ||
                             std::is_same_v<T, domain::Withdrawal>) {
          check_id(c.account_id, false, "account_id");
          check_positive(c.amount, "amount");
          check_text(c.reference, "reference");
          check_id(c.transfer_id, true, "transfer_id");
        } else if constexpr (std::is_same_v<T, domain::PostHold>) {
          check_id(c.id, false, "post_hold.id");
          if (c.amount) check_positive(*c.amount, "post_hold.amount");
        } else if constexpr (std::is_same_v<T, domain::OriginateLoan>) {
          check_id(c.id, true, "loan.id");
          check_id(c.borrower, false, "account_id");
          check_currency(c.currency);
          check_positive(c.principal, "principal");
          require(c.rate_bps >= 0 && c.installments >= 0 && c.grace_days >= 0,
                  "accepted a negative loan term");
          check_date(c.origination_date, "origination_date");
          check_date(c.first_due_date, "first_due_date");
          check_not_negative(c.origination_fee, "origination_fee");
          check_not_negative(c.late_fee, "late_fee");
        } else if constexpr (std::is_same_v<T, domain::RepayLoan>) {
          check_id(c.id, false, "loan id");
          check_positive(c.amount, "repayment amount");
          check_id(c.repayment_id, true, "repayment_id");
        } else if constexpr (std::is_same_v<T, domain::CloseLoanBusinessDay> ||
                             std::is_same_v<T, domain::ExpireHold>) {
          ledger::fuzz::violated("the parser produced an engine-only command",
                                 domain::command_name(c));
        } else {
          check_id(c.id, false, "path id");
        }
      },
      command);
}

inline bool batch_member_type(const domain::SingleCommand& command) {
  return std::holds_alternative<domain::OpenAccount>(command) ||
         std::holds_alternative<domain::Deposit>(command) ||
         std::holds_alternative<domain::Withdrawal>(command) ||
         std::holds_alternative<domain::Transfer>(command) ||
         std::holds_alternative<domain::PlaceHold>(command) ||
         std::holds_alternative<domain::PostHold>(command) ||
         std::holds_alternative<domain::VoidHold>(command);
}

// A whole body: one command, or linked commands (the batch route) of 1 to 100 batch members.
inline void check_body(const domain::CommandBody& body) {
  if (const auto* linked = std::get_if<domain::LinkedCommands>(&body)) {
    require(!linked->commands.empty() && linked->commands.size() <= batch_size_max,
            "accepted a batch of 0 or more than 100 commands");
    for (const auto& member : linked->commands) {
      require(batch_member_type(member), "a batch member of a type the batch does not take",
              domain::command_name(member));
      check(member);
    }
    return;
  }
  check(std::get<domain::SingleCommand>(body));
}

}  // namespace ledger::fuzz
