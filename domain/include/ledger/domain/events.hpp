#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "ledger/domain/loan_book.hpp"
#include "ledger/domain/state.hpp"

namespace ledger::domain {

// Domain events: what the engine decides and folds. Stored as FlatBuffers (schemas/events.fbs)
// with `type` naming the variant member.
namespace events {

struct AccountOpened {
  std::string account_id;
  std::string currency;
  std::uint32_t ledger_code = 0;
  std::string owner;
  AccountKind kind = AccountKind::customer;
  std::uint32_t flags = 0;
  std::int64_t overdraft_limit = 0;
};
struct AccountFrozen {};
struct AccountUnfrozen {};
struct AccountClosed {};

enum class Direction : std::uint8_t { debit = 0, credit = 1 };
enum class Phase : std::uint8_t { posted = 0, pending = 1, pending_posted = 2, pending_released = 3 };

struct AccountEntry {
  std::string transfer_id;
  Direction direction = Direction::debit;
  Phase phase = Phase::posted;
  std::int64_t amount = 0;
  std::int64_t released = 0;  // pending_posted: the held amount leaving pending
  std::string counterparty;
};

struct TransferPosted {
  std::string transfer_id;
  std::string debit_account;
  std::string credit_account;
  std::int64_t amount = 0;
  std::string currency;
  std::string reference;
};
struct TransferPending {
  std::string transfer_id;
  std::string debit_account;
  std::string credit_account;
  std::int64_t amount = 0;
  std::string currency;
  std::string reference;
  std::int64_t expires_at_us = 0;
};
struct PendingTransferPosted {
  std::int64_t amount = 0;
  std::int64_t released = 0;
};
enum class PendingEnd : std::uint8_t { voided = 0, expired = 1 };
struct PendingTransferEnded {
  std::int64_t amount = 0;
  PendingEnd end = PendingEnd::voided;
};

// Stream loan-<id>: each records what the loan rules (loan_book.hpp) decided.
struct LoanOriginated {
  std::string loan_id;
  std::string borrower;  // account id
  std::string currency;
  LoanTerms terms;
  std::vector<ScheduledInstallment> schedule;  // computed once, here
};
// Derived transfer ids are <loan>~disbursement, <loan>~fee, <loan>~<repayment>~penalties,
// ~interest, ~principal and <loan>~write_off (types.hpp derived_id); events stored before
// issue 13 name them <loan>.d, .f, .w and <repayment>.p, .i, .n.
struct LoanDisbursed {
  std::string transfer_id;      // receivable -> borrower
  std::string fee_transfer_id;  // receivable -> fee income; empty without a fee
  Disbursement disbursed;
};
struct LoanRepaid {
  std::string repayment_id;  // once per loan; its transfers are named above
  Allocation allocation;
};
struct LoanDayClosed {
  DayClose closed;
};
struct LoanWrittenOff {
  std::string transfer_id;  // write-off expense -> receivable
  WriteOff written_off;
};

}  // namespace events

using DomainEvent =
    std::variant<events::AccountOpened, events::AccountFrozen, events::AccountUnfrozen,
                 events::AccountClosed, events::AccountEntry, events::TransferPosted,
                 events::TransferPending, events::PendingTransferPosted,
                 events::PendingTransferEnded, events::LoanOriginated, events::LoanDisbursed,
                 events::LoanRepaid, events::LoanDayClosed, events::LoanWrittenOff>;

// Payload schema version written for every event type today.
constexpr std::int16_t event_schema_version = 1;

// The names of the entry enums in JSON, read models and reports.
[[nodiscard]] std::string_view to_string(events::Direction direction);
[[nodiscard]] std::string_view to_string(events::Phase phase);

// snake_case name stored in the `type` column.
[[nodiscard]] std::string_view event_type(const DomainEvent& event);

// FlatBuffers bytes of schemas/events.fbs `Event`.
[[nodiscard]] std::string encode_event(const DomainEvent& event);
// Verifies and decodes; std::nullopt when the bytes are not a valid Event of that type.
[[nodiscard]] std::optional<DomainEvent> decode_event(std::string_view type,
                                                      std::string_view payload);
// The event's fields as a JSON object (for history, export and audit).
[[nodiscard]] std::string event_to_json(const DomainEvent& event);
// The inverse, so that an export can be read back and re-encoded and an auditor can re-check
// the hash chain from the export alone. std::nullopt unless the JSON is an object with exactly
// the fields of `type` (an event_type name), each of the right JSON type and in range.
[[nodiscard]] std::optional<DomainEvent> event_from_json(std::string_view type,
                                                         std::string_view json);

// Folds. Programmer errors (an event of the wrong aggregate, an overflow that validation
// should have refused) are assertions, not rejections.
void apply(AccountState& state, const DomainEvent& event);
void apply(TransferState& state, const DomainEvent& event);
void apply(LoanState& state, const DomainEvent& event);

}  // namespace ledger::domain
