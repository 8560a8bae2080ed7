#include "ledger/domain/events.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <utility>

#include "ledger/core/assert.hpp"
#include "json_fields.hpp"
#include "loan_codec.hpp"
#include "overloaded.hpp"
#include "ledger/schemas/events_generated.h"

namespace ledger::domain {
namespace fb = ledger::schema;

namespace {

std::string to_string(const flatbuffers::String* value) {
  return value == nullptr ? std::string() : value->str();
}

std::int64_t add_checked(std::int64_t a, std::int64_t b) {
  std::int64_t result = 0;
  LEDGER_ASSERT(!__builtin_add_overflow(a, b, &result), "fold overflow: validation let it pass");
  return result;
}

Amount add(Amount a, std::int64_t b) { return Amount(add_checked(a.minor_units(), b)); }
Amount sub(Amount a, std::int64_t b) {
  LEDGER_ASSERT(b != INT64_MIN, "fold underflow");
  return Amount(add_checked(a.minor_units(), -b));
}

// JSON names of the event enums, indexed by value: event_to_json writes them and
// event_from_json reads them back.
constexpr std::string_view direction_names[] = {"debit", "credit"};
constexpr std::string_view phase_names[] = {"posted", "pending", "pending_posted",
                                            "pending_released"};
constexpr std::string_view end_names[] = {"voided", "expired"};

// A default event of the alternative whose event_type is `type`.
template <std::size_t I = 0>
std::optional<DomainEvent> blank_event(std::string_view type) {
  if constexpr (I == std::variant_size_v<DomainEvent>) {
    return std::nullopt;
  } else {
    DomainEvent event(std::in_place_index<I>);
    if (event_type(event) == type) return event;
    return blank_event<I + 1>(type);
  }
}

}  // namespace

std::string_view to_string(events::Direction direction) {
  return direction_names[static_cast<std::size_t>(direction)];
}

std::string_view to_string(events::Phase phase) { return phase_names[static_cast<std::size_t>(phase)]; }

std::string_view event_type(const DomainEvent& event) {
  static constexpr std::string_view names[] = {
      "account_opened",   "account_frozen",  "account_unfrozen",
      "account_closed",   "account_entry",   "transfer_posted",
      "transfer_pending", "pending_transfer_posted", "pending_transfer_ended",
      "loan_originated",  "loan_disbursed",  "loan_repaid",
      "loan_day_closed",  "loan_written_off"};
  static_assert(std::size(names) == std::variant_size_v<DomainEvent>);
  return names[event.index()];
}

std::string encode_event(const DomainEvent& event) {
  flatbuffers::FlatBufferBuilder builder(256);
  flatbuffers::Offset<fb::Event> root = std::visit(
      Overloaded{
          [&](const events::AccountOpened& e) {
            auto id = builder.CreateString(e.account_id);
            auto currency = builder.CreateString(e.currency);
            auto owner = builder.CreateString(e.owner);
            auto table = fb::CreateAccountOpened(builder, id, currency, e.ledger_code, owner,
                                                 static_cast<fb::AccountKind>(e.kind), e.flags,
                                                 e.overdraft_limit);
            return fb::CreateEvent(builder, fb::EventData::AccountOpened, table.Union());
          },
          [&](const events::AccountFrozen&) {
            return fb::CreateEvent(builder, fb::EventData::AccountFrozen,
                                   fb::CreateAccountFrozen(builder).Union());
          },
          [&](const events::AccountUnfrozen&) {
            return fb::CreateEvent(builder, fb::EventData::AccountUnfrozen,
                                   fb::CreateAccountUnfrozen(builder).Union());
          },
          [&](const events::AccountClosed&) {
            return fb::CreateEvent(builder, fb::EventData::AccountClosed,
                                   fb::CreateAccountClosed(builder).Union());
          },
          [&](const events::AccountEntry& e) {
            auto transfer = builder.CreateString(e.transfer_id);
            auto counterparty = builder.CreateString(e.counterparty);
            auto table = fb::CreateAccountEntry(
                builder, transfer, static_cast<fb::EntryDirection>(e.direction),
                static_cast<fb::EntryPhase>(e.phase), e.amount, e.released, counterparty);
            return fb::CreateEvent(builder, fb::EventData::AccountEntry, table.Union());
          },
          [&](const events::TransferPosted& e) {
            auto id = builder.CreateString(e.transfer_id);
            auto debit = builder.CreateString(e.debit_account);
            auto credit = builder.CreateString(e.credit_account);
            auto currency = builder.CreateString(e.currency);
            auto reference = builder.CreateString(e.reference);
            auto table = fb::CreateTransferPosted(builder, id, debit, credit, e.amount, currency,
                                                  reference);
            return fb::CreateEvent(builder, fb::EventData::TransferPosted, table.Union());
          },
          [&](const events::TransferPending& e) {
            auto id = builder.CreateString(e.transfer_id);
            auto debit = builder.CreateString(e.debit_account);
            auto credit = builder.CreateString(e.credit_account);
            auto currency = builder.CreateString(e.currency);
            auto reference = builder.CreateString(e.reference);
            auto table = fb::CreateTransferPending(builder, id, debit, credit, e.amount, currency,
                                                   reference, e.expires_at_us);
            return fb::CreateEvent(builder, fb::EventData::TransferPending, table.Union());
          },
          [&](const events::PendingTransferPosted& e) {
            auto table = fb::CreatePendingTransferPosted(builder, e.amount, e.released);
            return fb::CreateEvent(builder, fb::EventData::PendingTransferPosted, table.Union());
          },
          [&](const events::PendingTransferEnded& e) {
            auto table = fb::CreatePendingTransferEnded(builder, e.amount,
                                                        static_cast<fb::PendingEnd>(e.end));
            return fb::CreateEvent(builder, fb::EventData::PendingTransferEnded, table.Union());
          },
          [&](const events::LoanOriginated& e) { return loan_codec::encode(builder, e); },
          [&](const events::LoanDisbursed& e) { return loan_codec::encode(builder, e); },
          [&](const events::LoanRepaid& e) { return loan_codec::encode(builder, e); },
          [&](const events::LoanDayClosed& e) { return loan_codec::encode(builder, e); },
          [&](const events::LoanWrittenOff& e) { return loan_codec::encode(builder, e); },
      },
      event);
  builder.Finish(root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

std::optional<DomainEvent> decode_event(std::string_view type, std::string_view payload) {
  flatbuffers::Verifier verifier(reinterpret_cast<const std::uint8_t*>(payload.data()),
                                 payload.size());
  if (!fb::VerifyEventBuffer(verifier)) return std::nullopt;
  const fb::Event* root = fb::GetEvent(payload.data());
  // The verifier accepts a union whose type is set and whose table is absent.
  if (root->data() == nullptr) return std::nullopt;
  std::optional<DomainEvent> decoded;
  switch (root->data_type()) {
    // An enum value the schema does not define (loan_codec::in_range) is not an event: it would
    // index past the names' tables, or read as a known value and re-encode to other bytes.
    case fb::EventData::AccountOpened: {
      const auto* e = root->data_as_AccountOpened();
      if (!loan_codec::in_range(e->kind())) return std::nullopt;
      decoded = events::AccountOpened{to_string(e->account_id()), to_string(e->currency()),
                                      e->ledger_code(), to_string(e->owner()),
                                      static_cast<AccountKind>(e->kind()), e->flags(),
                                      e->overdraft_limit()};
      break;
    }
    case fb::EventData::AccountFrozen: decoded = events::AccountFrozen{}; break;
    case fb::EventData::AccountUnfrozen: decoded = events::AccountUnfrozen{}; break;
    case fb::EventData::AccountClosed: decoded = events::AccountClosed{}; break;
    case fb::EventData::AccountEntry: {
      const auto* e = root->data_as_AccountEntry();
      if (!loan_codec::in_range(e->direction()) || !loan_codec::in_range(e->phase())) {
        return std::nullopt;
      }
      decoded = events::AccountEntry{to_string(e->transfer_id()),
                                     static_cast<events::Direction>(e->direction()),
                                     static_cast<events::Phase>(e->phase()), e->amount(),
                                     e->released(), to_string(e->counterparty())};
      break;
    }
    case fb::EventData::TransferPosted: {
      const auto* e = root->data_as_TransferPosted();
      decoded = events::TransferPosted{to_string(e->transfer_id()), to_string(e->debit_account()),
                                       to_string(e->credit_account()), e->amount(),
                                       to_string(e->currency()), to_string(e->reference())};
      break;
    }
    case fb::EventData::TransferPending: {
      const auto* e = root->data_as_TransferPending();
      decoded = events::TransferPending{
          to_string(e->transfer_id()), to_string(e->debit_account()),
          to_string(e->credit_account()), e->amount(), to_string(e->currency()),
          to_string(e->reference()), e->expires_at_us()};
      break;
    }
    case fb::EventData::PendingTransferPosted: {
      const auto* e = root->data_as_PendingTransferPosted();
      decoded = events::PendingTransferPosted{e->amount(), e->released()};
      break;
    }
    case fb::EventData::PendingTransferEnded: {
      const auto* e = root->data_as_PendingTransferEnded();
      if (!loan_codec::in_range(e->end())) return std::nullopt;
      decoded = events::PendingTransferEnded{e->amount(), static_cast<events::PendingEnd>(e->end())};
      break;
    }
    default:
      decoded = loan_codec::decode(*root);
      if (!decoded) return std::nullopt;
  }
  if (event_type(*decoded) != type) return std::nullopt;
  return decoded;
}

namespace {

// The JSON fields of each account and transfer event, listed once: FieldReader reads them
// (event_from_json) and FieldWriter writes them (event_to_json), so the two cannot disagree.
template <class Event, class Fields>
using FieldsOf = std::conditional_t<Fields::reads, Event, const Event>;

template <class F>
void json_fields(F& f, FieldsOf<events::AccountOpened, F>& e) {
  static const std::string_view kind_names[] = {to_string(AccountKind::customer), to_string(AccountKind::system)};
  f.string("account_id", e.account_id);
  f.string("currency", e.currency);
  f.uint32("ledger_code", e.ledger_code);
  f.string("owner", e.owner);
  f.name("kind", e.kind, kind_names);
  f.uint32("flags", e.flags);
  f.int64("overdraft_limit", e.overdraft_limit);
}
template <class F>
void json_fields(F&, FieldsOf<events::AccountFrozen, F>&) {}
template <class F>
void json_fields(F&, FieldsOf<events::AccountUnfrozen, F>&) {}
template <class F>
void json_fields(F&, FieldsOf<events::AccountClosed, F>&) {}
template <class F>
void json_fields(F& f, FieldsOf<events::AccountEntry, F>& e) {
  f.string("transfer_id", e.transfer_id);
  f.name("direction", e.direction, direction_names);
  f.name("phase", e.phase, phase_names);
  f.int64("amount", e.amount);
  f.int64("released", e.released);
  f.string("counterparty", e.counterparty);
}
// A pending transfer has a posted transfer's fields and its expiry.
template <class F, class Transfer>
void transfer_fields(F& f, Transfer& e) {
  f.string("transfer_id", e.transfer_id);
  f.string("debit_account", e.debit_account);
  f.string("credit_account", e.credit_account);
  f.int64("amount", e.amount);
  f.string("currency", e.currency);
  f.string("reference", e.reference);
}
template <class F>
void json_fields(F& f, FieldsOf<events::TransferPosted, F>& e) {
  transfer_fields(f, e);
}
template <class F>
void json_fields(F& f, FieldsOf<events::TransferPending, F>& e) {
  transfer_fields(f, e);
  f.int64("expires_at_us", e.expires_at_us);
}
template <class F>
void json_fields(F& f, FieldsOf<events::PendingTransferPosted, F>& e) {
  f.int64("amount", e.amount);
  f.int64("released", e.released);
}
template <class F>
void json_fields(F& f, FieldsOf<events::PendingTransferEnded, F>& e) {
  f.int64("amount", e.amount);
  f.name("end", e.end, end_names);
}

template <class Event>
concept AccountOrTransferEvent = requires(FieldWriter& f, const Event& e) { json_fields(f, e); };

}  // namespace

std::string event_to_json(const DomainEvent& event) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  FieldWriter f(w);
  w.StartObject();
  std::visit(
      [&](const auto& e) {
        if constexpr (AccountOrTransferEvent<std::decay_t<decltype(e)>>) {
          json_fields(f, e);
        } else {
          loan_codec::write_json(w, e);
        }
      },
      event);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::optional<DomainEvent> event_from_json(std::string_view type, std::string_view json) {
  std::optional<DomainEvent> event = blank_event(type);
  if (!event) return std::nullopt;
  rapidjson::Document document;
  document.Parse(json.data(), json.size());
  if (document.HasParseError() || !document.IsObject()) return std::nullopt;
  return std::visit(
      [&](auto& e) -> std::optional<DomainEvent> {
        bool ok = false;
        if constexpr (AccountOrTransferEvent<std::decay_t<decltype(e)>>) {
          FieldReader r(document);
          json_fields(r, e);
          ok = r.complete();
        } else {
          ok = loan_codec::read_json(document, e);  // the loan events read themselves
        }
        if (!ok) return std::nullopt;
        return DomainEvent(std::move(e));
      },
      *event);
}

void apply(AccountState& state, const DomainEvent& event) {
  std::visit(
      Overloaded{
          [&](const events::AccountOpened& e) {
            LEDGER_ASSERT(!state.exists, "account opened twice");
            state.exists = true;
            state.id = e.account_id;
            state.currency = Currency::parse(e.currency).value_or(Currency{});
            state.owner = e.owner;
            state.kind = e.kind;
            state.ledger_code = e.ledger_code;
            state.flags = e.flags;
            state.overdraft_limit = Amount(e.overdraft_limit);
            state.status = AccountStatus::open;
          },
          [&](const events::AccountFrozen&) { state.status = AccountStatus::frozen; },
          [&](const events::AccountUnfrozen&) { state.status = AccountStatus::open; },
          [&](const events::AccountClosed&) { state.status = AccountStatus::closed; },
          [&](const events::AccountEntry& e) {
            const bool debit = e.direction == events::Direction::debit;
            Amount& posted = debit ? state.debits_posted : state.credits_posted;
            Amount& pending = debit ? state.debits_pending : state.credits_pending;
            switch (e.phase) {
              case events::Phase::posted: posted = add(posted, e.amount); break;
              case events::Phase::pending:
                pending = add(pending, e.amount);
                ++state.pending_count;
                break;
              case events::Phase::pending_posted:
                pending = sub(pending, e.released);
                posted = add(posted, e.amount);
                --state.pending_count;
                break;
              case events::Phase::pending_released:
                pending = sub(pending, e.amount);
                --state.pending_count;
                break;
            }
          },
          [&](const auto&) { LEDGER_ASSERT(false, "transfer event on an account stream"); },
      },
      event);
  state.version = StreamVersion(state.version.value() + 1);
}

void apply(TransferState& state, const DomainEvent& event) {
  std::visit(
      Overloaded{
          [&](const events::TransferPosted& e) {
            state = TransferState{true, e.transfer_id, e.debit_account, e.credit_account,
                                  Amount(e.amount), Currency::parse(e.currency).value_or(Currency{}),
                                  e.reference, TransferStatus::posted, 0, Amount(e.amount),
                                  state.version};
          },
          [&](const events::TransferPending& e) {
            state = TransferState{true, e.transfer_id, e.debit_account, e.credit_account,
                                  Amount(e.amount), Currency::parse(e.currency).value_or(Currency{}),
                                  e.reference, TransferStatus::pending, e.expires_at_us, Amount(0),
                                  state.version};
          },
          [&](const events::PendingTransferPosted& e) {
            state.status = TransferStatus::pending_posted;
            state.posted_amount = Amount(e.amount);
          },
          [&](const events::PendingTransferEnded& e) {
            state.status = e.end == events::PendingEnd::voided ? TransferStatus::voided
                                                                 : TransferStatus::expired;
          },
          [&](const auto&) { LEDGER_ASSERT(false, "account event on a transfer stream"); },
      },
      event);
  state.version = StreamVersion(state.version.value() + 1);
}

void apply(LoanState& state, const DomainEvent& event) {
  std::visit(
      Overloaded{
          [&](const events::LoanOriginated& e) {
            LEDGER_ASSERT(!state.exists, "loan originated twice");
            state.exists = true;
            state.id = e.loan_id;
            state.borrower = e.borrower;
            state.currency = Currency::parse(e.currency).value_or(Currency{});
            state.book = originated(e.terms, e.schedule);
          },
          [&](const events::LoanDisbursed& e) { domain::apply(state.book, e.disbursed); },
          [&](const events::LoanRepaid& e) {
            domain::apply(state.book, e.allocation);
            // Streams from before repayment ids were once-only may repeat an id: the first counts.
            state.repayments.try_emplace(e.repayment_id, e.allocation.total());
          },
          [&](const events::LoanDayClosed& e) { domain::apply(state.book, e.closed); },
          [&](const events::LoanWrittenOff& e) { domain::apply(state.book, e.written_off); },
          [&](const auto&) { LEDGER_ASSERT(false, "an account or transfer event on a loan stream"); },
      },
      event);
  state.version = StreamVersion(state.version.value() + 1);
}

}  // namespace ledger::domain
