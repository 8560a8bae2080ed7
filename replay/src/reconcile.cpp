// `ledger replay reconcile`: every read-model row against the fold of the log. Written apart
// from the projection writers on purpose: a second derivation is what catches their bugs.
#include <rapidjson/document.h>

#include <ostream>
#include <pqxx/pqxx>
#include <unordered_map>

#include "ledger/db/pool.hpp"
#include "ledger/engine/events.hpp"
#include "ledger/replay/replay.hpp"
#include "log_reader.hpp"

namespace ledger::replay {

namespace {

constexpr std::size_t reconcile_batch_events = 20'000;
constexpr std::string_view account_prefix = "account-";
using SnapshotTransaction = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

// A server-side cursor in the snapshot: one sort, rows fetched in pages.
class RowCursor {
 public:
  RowCursor(SnapshotTransaction& tx, std::string name, const std::string& query) : tx_(tx), name_(std::move(name)) {
    tx_.exec("DECLARE " + name_ + " NO SCROLL CURSOR FOR " + query);
  }
  const pqxx::row* peek() {
    if (index_ >= page_.size()) {
      if (done_) return nullptr;
      page_ = tx_.exec("FETCH 10000 FROM " + name_);
      index_ = 0;
      if (page_.empty()) {
        done_ = true;
        return nullptr;
      }
    }
    row_ = page_[static_cast<pqxx::result::size_type>(index_)];
    return &row_;
  }
  void pop() { ++index_; }

 private:
  SnapshotTransaction& tx_;
  std::string name_;
  pqxx::result page_;
  std::size_t index_ = 0;
  bool done_ = false;
  pqxx::row row_{pqxx::result(), 0};
};

std::string_view phase_name(engine::events::Phase phase) {
  switch (phase) {
    case engine::events::Phase::posted: return "posted";
    case engine::events::Phase::pending: return "pending";
    case engine::events::Phase::pending_posted: return "pending_posted";
    case engine::events::Phase::pending_released: return "pending_released";
  }
  return "?";
}

class Reconciler {
 public:
  Reconciler(std::ostream& report, std::int64_t report_max) : report_(report), report_max_(report_max) {}

  // One field of one row: counts and reports a difference.
  void compare(const std::string& where, std::string_view field, std::string_view actual, std::string_view expected) {
    if (actual != expected) difference(where + ": " + std::string(field) + " is '" + std::string(actual) +
                                       "', the log says '" + std::string(expected) + "'");
  }
  void compare(const std::string& where, std::string_view field, const pqxx::field& actual, std::int64_t expected) {
    compare(where, field, actual.c_str(), std::to_string(expected));
  }
  void difference(const std::string& line) {
    if (result.differences++ < report_max_) report_ << line << '\n';
  }

  ReconcileResult result;

 private:
  std::ostream& report_;
  std::int64_t report_max_;
};

struct FoldedAccount {
  engine::AccountState state;
  std::int64_t position = 0;
};

}  // namespace

ReconcileResult reconcile(db::ConnectionPool& pool, std::ostream& report, std::int64_t report_max,
                          const Progress& progress) {
  Reconciler check(report, report_max);
  auto lease = pool.acquire();
  SnapshotTransaction tx(*lease);
  // The watermarks and every row below come from one snapshot; events at or below a
  // watermark are committed and immutable, so they can be read on other connections.
  for (const auto& row : tx.exec("SELECT name, watermark FROM read.projections ORDER BY name")) {
    check.result.watermarks[row[0].as<std::string>()] = row[1].as<std::int64_t>();
  }
  const std::int64_t balance_watermark = check.result.watermarks["balance"];
  const std::int64_t audit_watermark = check.result.watermarks["audit"];
  const std::int64_t last = std::max(balance_watermark, audit_watermark);

  RowCursor entries(tx, "reconcile_entries",
                    "SELECT account_id, position, version, transfer_id, direction, phase, amount, counterparty, "
                    "balance_after, (extract(epoch FROM recorded_at) * 1000000)::bigint FROM read.entries "
                    "ORDER BY position");
  RowCursor audit(tx, "reconcile_audit",
                  "SELECT position, stream_id, version, type, event_id::text, actor, command_id, correlation_id, "
                  "causation_id, request_id, client_address, (extract(epoch FROM recorded_at) * 1000000)::bigint, "
                  "data::text FROM read.audit ORDER BY position");

  std::unordered_map<std::string, FoldedAccount> accounts;
  const engine::EventStore store(pool);
  LogReader reader(store, 1, last, reconcile_batch_events);
  std::int64_t done = 0;
  for (auto batch = reader.next(); !batch.empty(); batch = reader.next()) {
    for (const auto& event : batch) {
      const std::int64_t position = event.position.value();
      const auto decoded = engine::decode_event(event.type, event.payload);
      if (!decoded) {
        throw std::runtime_error("position " + std::to_string(position) + ": the " + event.type +
                                 " payload does not decode (run `ledger replay verify`)");
      }
      if (position <= audit_watermark) {
        // Rows the log does not have, then the row of this event.
        for (const pqxx::row* row = audit.peek(); row != nullptr && (*row)[0].as<std::int64_t>() < position;
             audit.pop(), row = audit.peek()) {
          check.difference("read.audit position " + std::string((*row)[0].c_str()) + ": a row the log does not have");
        }
        const pqxx::row* row = audit.peek();
        const std::string where = "read.audit position " + std::to_string(position);
        if (row == nullptr || (*row)[0].as<std::int64_t>() != position) {
          check.difference(where + ": missing");
        } else {
          ++check.result.rows_checked;
          const auto& m = event.metadata;
          check.compare(where, "stream_id", (*row)[1].c_str(), event.stream_id);
          check.compare(where, "version", (*row)[2], event.version.value());
          check.compare(where, "type", (*row)[3].c_str(), event.type);
          check.compare(where, "event_id", (*row)[4].c_str(), event.event_id);
          check.compare(where, "actor", (*row)[5].c_str(), m.actor);
          check.compare(where, "command_id", (*row)[6].c_str(), m.command_id);
          check.compare(where, "correlation_id", (*row)[7].c_str(), m.correlation_id);
          check.compare(where, "causation_id", (*row)[8].c_str(), m.causation_id);
          check.compare(where, "request_id", (*row)[9].c_str(), m.request_id);
          check.compare(where, "client_address", (*row)[10].c_str(), m.client_address);
          check.compare(where, "recorded_at", (*row)[11], event.recorded_at_us);
          // jsonb reorders keys: compare as JSON values, not as text.
          const std::string expected = engine::event_to_json(*decoded);
          rapidjson::Document actual_json, expected_json;
          actual_json.Parse((*row)[12].c_str());
          expected_json.Parse(expected.c_str());
          if (actual_json.HasParseError() || actual_json != expected_json) {
            check.difference(where + ": data is " + (*row)[12].c_str() + ", the log says " + expected);
          }
          audit.pop();
        }
      }

      if (position > balance_watermark || !event.stream_id.starts_with(account_prefix)) continue;
      const std::string account_id = event.stream_id.substr(account_prefix.size());
      FoldedAccount& account = accounts[account_id];
      engine::apply(account.state, *decoded);
      account.position = position;
      const auto* entry = std::get_if<engine::events::AccountEntry>(&*decoded);
      if (entry == nullptr) continue;
      for (const pqxx::row* row = entries.peek(); row != nullptr && (*row)[1].as<std::int64_t>() < position;
           entries.pop(), row = entries.peek()) {
        check.difference("read.entries position " + std::string((*row)[1].c_str()) + " (account " +
                         (*row)[0].c_str() + "): a row the log does not have");
      }
      const pqxx::row* row = entries.peek();
      const std::string where = "read.entries account " + account_id + " position " + std::to_string(position);
      if (row == nullptr || (*row)[1].as<std::int64_t>() != position) {
        check.difference(where + ": missing");
        continue;
      }
      ++check.result.rows_checked;
      check.compare(where, "account_id", (*row)[0].c_str(), account_id);
      check.compare(where, "version", (*row)[2], event.version.value());
      check.compare(where, "transfer_id", (*row)[3].c_str(), entry->transfer_id);
      check.compare(where, "direction", (*row)[4].c_str(),
                    entry->direction == engine::events::Direction::debit ? "debit" : "credit");
      check.compare(where, "phase", (*row)[5].c_str(), phase_name(entry->phase));
      check.compare(where, "amount", (*row)[6], entry->amount);
      check.compare(where, "counterparty", (*row)[7].c_str(), entry->counterparty);
      check.compare(where, "balance_after", (*row)[8],
                    account.state.credits_posted.minor_units() - account.state.debits_posted.minor_units());
      check.compare(where, "recorded_at", (*row)[9], event.recorded_at_us);
      entries.pop();
    }
    done += static_cast<std::int64_t>(batch.size());
    if (progress) progress(done, last);
  }
  for (const pqxx::row* row = audit.peek(); row != nullptr; audit.pop(), row = audit.peek()) {
    check.difference("read.audit position " + std::string((*row)[0].c_str()) + ": above the watermark " +
                     std::to_string(audit_watermark));
  }
  for (const pqxx::row* row = entries.peek(); row != nullptr; entries.pop(), row = entries.peek()) {
    check.difference("read.entries position " + std::string((*row)[1].c_str()) + " (account " + (*row)[0].c_str() +
                     "): above the watermark " + std::to_string(balance_watermark));
  }

  RowCursor balances(tx, "reconcile_balances",
                     "SELECT account_id, currency, kind, owner, ledger_code, flags, overdraft_limit, status, "
                     "debits_posted, credits_posted, debits_pending, credits_pending, pending_count, version, "
                     "position FROM read.balances");
  for (const pqxx::row* row = balances.peek(); row != nullptr; balances.pop(), row = balances.peek()) {
    const std::string account_id = (*row)[0].c_str();
    const std::string where = "read.balances account " + account_id;
    const auto found = accounts.find(account_id);
    if (found == accounts.end()) {
      check.difference(where + ": an account the log does not have at position " + std::to_string(balance_watermark));
      continue;
    }
    ++check.result.rows_checked;
    const engine::AccountState& s = found->second.state;
    check.compare(where, "currency", (*row)[1].c_str(), s.currency.code());
    check.compare(where, "kind", (*row)[2].c_str(), engine::to_string(s.kind));
    check.compare(where, "owner", (*row)[3].c_str(), s.owner);
    check.compare(where, "ledger_code", (*row)[4], s.ledger_code);
    check.compare(where, "flags", (*row)[5], s.flags);
    check.compare(where, "overdraft_limit", (*row)[6], s.overdraft_limit.minor_units());
    check.compare(where, "status", (*row)[7].c_str(), engine::to_string(s.status));
    check.compare(where, "debits_posted", (*row)[8], s.debits_posted.minor_units());
    check.compare(where, "credits_posted", (*row)[9], s.credits_posted.minor_units());
    check.compare(where, "debits_pending", (*row)[10], s.debits_pending.minor_units());
    check.compare(where, "credits_pending", (*row)[11], s.credits_pending.minor_units());
    check.compare(where, "pending_count", (*row)[12], s.pending_count);
    check.compare(where, "version", (*row)[13], s.version.value());
    check.compare(where, "position", (*row)[14], found->second.position);
    accounts.erase(found);
  }
  for (const auto& [account_id, folded] : accounts) {
    check.difference("read.balances account " + account_id + ": missing (opened in the log by position " +
                     std::to_string(folded.position) + ")");
  }
  tx.commit();
  return check.result;
}

}  // namespace ledger::replay
