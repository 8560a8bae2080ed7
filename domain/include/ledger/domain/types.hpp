#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ledger::domain {

// Stable codes of business rejections. Part of the API contract: never renumber or rename.
enum class RejectionCode {
  none = 0,
  invalid_id,
  invalid_amount,
  invalid_currency,
  invalid_command,
  reserved_id,
  unknown_account,
  unknown_transfer,
  currency_mismatch,
  insufficient_funds,
  credits_exceed_debits,
  account_frozen,
  account_closed,
  account_not_frozen,
  account_not_empty,
  same_account,
  amount_overflow,
  duplicate_id,
  transfer_not_pending,
  pending_transfer_expired,
  amount_exceeds_pending,
  version_conflict,
  idempotency_key_reused,
  linked_command_failed,
  unknown_loan,
  invalid_loan_terms,
  invalid_date,
  loan_not_active,
  loan_already_disbursed,
  overpayment,
  // A client command names an account of kind system: only the engine's rules move money
  // there (loans; deposits and withdrawals against the cash account).
  system_account,
  // A new code goes above this line, and rejection_code_last names it.
};
// The last code: stored outcomes are read back by searching every code up to it.
inline constexpr RejectionCode rejection_code_last = RejectionCode::system_account;

[[nodiscard]] std::string_view to_string(RejectionCode code);

enum class AccountKind : std::uint8_t { customer = 0, system = 1 };
enum class AccountStatus : std::uint8_t { open = 0, frozen = 1, closed = 2 };

[[nodiscard]] std::string_view to_string(AccountKind kind);
[[nodiscard]] std::string_view to_string(AccountStatus status);

// Account flags (bit values are stored in events: never change them).
struct AccountFlags {
  static constexpr std::uint32_t debits_must_not_exceed_credits = 1u << 0;
  static constexpr std::uint32_t credits_must_not_exceed_debits = 1u << 1;
};

// Client-chosen ids: 1 to 64 of A-Za-z0-9._:- (API.md).
constexpr std::size_t id_length_max = 64;
[[nodiscard]] bool is_valid_id(std::string_view id);

// Ids the engine derives from client ids (a loan's transfers) join their parts with this
// character, which the client id grammar refuses: no client id can name, and so block, one.
// Events stored before this rule keep their derived ids of the client grammar ("L1.d").
constexpr char derived_id_separator = '~';
// `base` (a client or derived id) and `part` (of the client grammar) joined by the separator.
[[nodiscard]] std::string derived_id(std::string_view base, std::string_view part);
// Two or more parts of the client grammar joined by the separator (no bound on the length:
// a derived id is as long as the client ids it joins).
[[nodiscard]] bool is_valid_derived_id(std::string_view id);

// Ids beginning with this prefix belong to the engine's per-currency system accounts.
constexpr std::string_view system_id_prefix = "system.";

// The system accounts that exist per currency, created on first use.
enum class SystemAccount { cash, loan_receivable, interest_income, fee_income, write_off_expense };
[[nodiscard]] std::string system_account_id(SystemAccount account, std::string_view currency);

// Stream ids are "<kind>-<id>" (account-A1, transfer-T1, loan-L1): the only place that spells
// the prefixes is types.cpp.
enum class StreamKind { account, transfer, loan };
[[nodiscard]] std::string account_stream(std::string_view account_id);
[[nodiscard]] std::string transfer_stream(std::string_view transfer_id);
[[nodiscard]] std::string loan_stream(std::string_view loan_id);
// The id of a stream of `kind` (a view into `stream_id`), or std::nullopt for another kind.
[[nodiscard]] std::optional<std::string_view> stream_entity_id(std::string_view stream_id, StreamKind kind);
[[nodiscard]] inline bool is_stream_of(std::string_view stream_id, StreamKind kind) {
  return stream_entity_id(stream_id, kind).has_value();
}

}  // namespace ledger::domain
