// balance and statement: the fold of every account stream (read.balances) and one row per
// entry with the running posted balance (read.entries).
#include <pqxx/pqxx>
#include <pqxx/tablewriter>

#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ledger/db/prepared.hpp"
#include "ledger/db/sql_text.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/domain/types.hpp"
#include "ledger/domain/state.hpp"
#include "writers.hpp"

namespace ledger::projections {

namespace {


domain::AccountKind kind_from(std::string_view text) {
  return text == "system" ? domain::AccountKind::system : domain::AccountKind::customer;
}

domain::AccountStatus status_from(std::string_view text) {
  if (text == "frozen") return domain::AccountStatus::frozen;
  if (text == "closed") return domain::AccountStatus::closed;
  return domain::AccountStatus::open;
}

// The statements of every batch, for the schema's table (a rebuild writes its shadow's).
std::string select_balances_sql(const std::string& balances) {
  return "SELECT account_id, currency, kind, owner, ledger_code, flags, overdraft_limit, status, "
         "debits_posted, credits_posted, debits_pending, credits_pending, pending_count, version "
         "FROM " +
         balances + " WHERE account_id = ANY($1::text[])";
}

std::string store_balances_sql(const std::string& balances) {
  return "INSERT INTO " + balances +
         " (account_id, currency, kind, owner, ledger_code, flags, overdraft_limit, status, "
         "debits_posted, credits_posted, debits_pending, credits_pending, pending_count, version, "
         "position) "
         "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
         "$6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], "
         "$12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[]) "
         "ON CONFLICT (account_id) DO UPDATE SET currency = excluded.currency, "
         "kind = excluded.kind, owner = excluded.owner, ledger_code = excluded.ledger_code, "
         "flags = excluded.flags, overdraft_limit = excluded.overdraft_limit, "
         "status = excluded.status, debits_posted = excluded.debits_posted, "
         "credits_posted = excluded.credits_posted, debits_pending = excluded.debits_pending, "
         "credits_pending = excluded.credits_pending, pending_count = excluded.pending_count, "
         "version = excluded.version, position = excluded.position";
}

class BalanceProjection final : public Projection {
 public:
  BalanceProjection(const std::string& schema, const WriterOptions& options)
      : balances_(schema + ".balances"),
        entries_(schema + ".entries"),
        load_sql_(select_balances_sql(balances_)),
        store_sql_(store_balances_sql(balances_)),
        options_(options) {}

  void apply(pqxx::transaction_base& work, std::span<const domain::RecordedEvent> events) override {
    const bool keeps = options_.states_kept > 0;
    // Nothing kept: another process may have moved any account since our last batch.
    if (!keeps) forget();
    try {
      fold(work, events);
      if (!keeps) flush(work);
    } catch (...) {
      forget();  // what was folded may not be in the database: read it again next time
      throw;
    }
  }

  void forget_kept() override { forget(); }

  void flush(pqxx::transaction_base& work) override {
    if (!changed_.empty()) {
      try {
        store_balances(work);
      } catch (...) {
        forget();
        throw;
      }
    }
    for (const auto& account : changed_) account->second.changed_at = 0;
    changed_.clear();
    if (accounts_.size() > options_.states_kept) accounts_.clear();
  }

 private:
  void forget() {
    accounts_.clear();
    changed_.clear();
  }

  // Folds `events` into accounts_ (reading the accounts it lacks) and COPYs their entry rows.
  void fold(pqxx::transaction_base& work, std::span<const domain::RecordedEvent> events) {
    // Each account event's entry of accounts_, looked up once: three lookups an event were a
    // third of this projector's own CPU in a catch-up (issue 18).
    accounts_of_events_.assign(events.size(), nullptr);
    db::ArrayLiteral missing;
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto account = domain::stream_entity_id(events[i].stream_id, domain::StreamKind::account);
      if (!account) continue;
      const auto [entry, added] = accounts_.try_emplace(std::string(*account));
      if (added) missing.add_text(*account);
      accounts_of_events_[i] = &*entry;
    }
    if (!missing.empty()) load(work, missing.finish());

    std::string entry_rows;
    for (std::size_t i = 0; i < events.size(); ++i) {
      Account* const account = accounts_of_events_[i];
      if (account == nullptr) continue;  // not an account's event
      const domain::RecordedEvent& event = events[i];
      const std::string& id = account->first;
      domain::AccountState& state = account->second.state;
      // Events are applied in global order, so each stream's versions arrive dense.
      if (event.version.value() != state.version.value() + 1) {
        throw ProjectionError("stream " + event.stream_id + ": version " +
                              std::to_string(event.version.value()) + " follows " +
                              std::to_string(state.version.value()));
      }
      const auto decoded = domain::decode_event(event.type, event.payload);
      if (!decoded) {
        throw ProjectionError("position " + std::to_string(event.position.value()) +
                              ": undecodable " + event.type + " payload");
      }
      domain::apply(state, *decoded);
      if (account->second.changed_at == 0) changed_.push_back(account);
      account->second.changed_at = event.position.value();
      if (const auto* entry = std::get_if<domain::events::AccountEntry>(&*decoded)) {
        add_entry_row(entry_rows, id, event, *entry, state.balance().value_or(Amount(0)).minor_units());
      }
    }
    if (!entry_rows.empty()) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      // pqxx 6 keeps raw COPY lines only on the deprecated tablewriter.
      pqxx::tablewriter writer(work, entries_);
      entry_rows.pop_back();  // the writer adds the last newline
      writer.write_raw_line(entry_rows);
      writer.complete();
#pragma GCC diagnostic pop
    }
  }

  void load(pqxx::transaction_base& work, const std::string& ids) {
    // Prepared once per session under a name that holds the table.
    const auto rows = db::exec_statement(work, "ledger_load_balances " + balances_, load_sql_, ids);
    for (const auto& row : rows) {
      domain::AccountState& s = accounts_.at(row[0].as<std::string>()).state;
      s.exists = true;
      s.id = row[0].as<std::string>();
      s.currency = Currency::parse(row[1].as<std::string>()).value_or(Currency{});
      s.kind = kind_from(row[2].as<std::string>());
      s.owner = row[3].as<std::string>();
      s.ledger_code = static_cast<std::uint32_t>(row[4].as<std::int64_t>());
      s.flags = static_cast<std::uint32_t>(row[5].as<std::int64_t>());
      s.overdraft_limit = Amount(row[6].as<std::int64_t>());
      s.status = status_from(row[7].as<std::string>());
      s.debits_posted = Amount(row[8].as<std::int64_t>());
      s.credits_posted = Amount(row[9].as<std::int64_t>());
      s.debits_pending = Amount(row[10].as<std::int64_t>());
      s.credits_pending = Amount(row[11].as<std::int64_t>());
      s.pending_count = row[12].as<std::int64_t>();
      s.version = StreamVersion(row[13].as<std::int64_t>());
    }
  }

  static void add_entry_row(std::string& rows, const std::string& account_id,
                            const domain::RecordedEvent& event, const domain::events::AccountEntry& entry,
                            std::int64_t balance_after) {
    db::copy_text(rows, account_id);
    rows += '\t' + std::to_string(event.position.value()) + '\t' +
            std::to_string(event.version.value()) + '\t';
    db::copy_text(rows, entry.transfer_id);
    rows += entry.direction == domain::events::Direction::debit ? "\tdebit\t" : "\tcredit\t";
    rows += domain::to_string(entry.phase);
    rows += '\t' + std::to_string(entry.amount) + '\t';
    db::copy_text(rows, entry.counterparty);
    rows += '\t' + std::to_string(balance_after) + '\t';
    db::copy_timestamp(rows, event.recorded_at_us);
    rows += '\n';
  }

  // The accounts changed since the last flush, each with the position of its last event. The
  // columns travel as binary arrays (db::BinaryArray), which PostgreSQL copies rather than
  // parses element by element as it did the fifteen text literals.
  void store_balances(pqxx::transaction_base& work) {
    using db::BinaryArray;
    BinaryArray id(BinaryArray::Element::text), currency(BinaryArray::Element::text),
        kind(BinaryArray::Element::text), owner(BinaryArray::Element::text),
        ledger_code(BinaryArray::Element::int8), flags(BinaryArray::Element::int8),
        overdraft(BinaryArray::Element::int8), status(BinaryArray::Element::text),
        dp(BinaryArray::Element::int8), cp(BinaryArray::Element::int8),
        dpe(BinaryArray::Element::int8), cpe(BinaryArray::Element::int8),
        pending(BinaryArray::Element::int8), version(BinaryArray::Element::int8),
        position(BinaryArray::Element::int8);
    for (const Account* account : changed_) {
      const std::string& account_id = account->first;
      const domain::AccountState& s = account->second.state;
      const std::int64_t last_position = account->second.changed_at;
      id.add_bytes(account_id);
      currency.add_bytes(s.currency.code());
      kind.add_bytes(domain::to_string(s.kind));
      owner.add_bytes(s.owner);
      ledger_code.add_int8(s.ledger_code);
      flags.add_int8(s.flags);
      overdraft.add_int8(s.overdraft_limit.minor_units());
      status.add_bytes(domain::to_string(s.status));
      dp.add_int8(s.debits_posted.minor_units());
      cp.add_int8(s.credits_posted.minor_units());
      dpe.add_int8(s.debits_pending.minor_units());
      cpe.add_int8(s.credits_pending.minor_units());
      pending.add_int8(s.pending_count);
      version.add_int8(s.version.value());
      position.add_int8(last_position);
    }
    // pqxx 6 sends a binarystring parameter in binary.
    const auto binary = [](BinaryArray& array) { return pqxx::binarystring(array.finish()); };
    db::exec_statement(work, "ledger_store_balances " + balances_, store_sql_, binary(id),
                       binary(currency), binary(kind), binary(owner), binary(ledger_code),
                       binary(flags), binary(overdraft), binary(status), binary(dp), binary(cp),
                       binary(dpe), binary(cpe), binary(pending), binary(version),
                       binary(position));
  }

  std::string balances_;
  std::string entries_;
  std::string load_sql_;
  std::string store_sql_;
  WriterOptions options_;
  // An account folded, as written or to be, and the position of its last event since the last
  // flush (0: none since; a stored position is never 0, the events table checks position > 0).
  struct Kept {
    domain::AccountState state;
    std::int64_t changed_at = 0;
  };
  using Account = std::pair<const std::string, Kept>;  // an entry of accounts_, which never moves
  std::unordered_map<std::string, Kept> accounts_;
  std::vector<Account*> changed_;  // since the last flush, each once
  // fold's, one per event of its batch (null: not an account's event).
  std::vector<Account*> accounts_of_events_;
};

}  // namespace

std::unique_ptr<Projection> make_balance_projection(const std::string& schema,
                                                    const WriterOptions& options) {
  return std::make_unique<BalanceProjection>(schema, options);
}

}  // namespace ledger::projections
