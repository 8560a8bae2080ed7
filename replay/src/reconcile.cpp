// `ledger replay reconcile`: every read-model row against the fold of the log. Written apart
// from the projection writers on purpose: a second derivation is what catches their bugs.

#include <ostream>
#include <pqxx/pqxx>
#include <unordered_map>

#include "ledger/db/pool.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/replay/replay.hpp"
#include "log_reader.hpp"

namespace ledger::replay {

namespace {

constexpr std::size_t reconcile_batch_events = 20'000;
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
  domain::AccountState state;
  std::int64_t position = 0;
};

struct FoldedLoan {
  domain::LoanState state;
  std::int64_t position = 0;
  bool row_seen = false;
  std::size_t installment_rows = 0;
};


void reconcile_loans(SnapshotTransaction& tx, Reconciler& check, std::unordered_map<std::string, FoldedLoan>& loans,
                     std::int64_t loan_watermark) {
  RowCursor rows(tx, "reconcile_loans",
                 "SELECT loan_id, borrower, currency, status, principal, rate_bps, installments, schedule_type, "
                 "origination_date::text, first_due_date::text, origination_fee, late_fee, grace_days, "
                 "coalesce(closed_through::text, ''), interest_recognised, days_past_due, principal_written_off, "
                 "interest_reversed, version, position FROM read.loans");
  for (const pqxx::row* row = rows.peek(); row != nullptr; rows.pop(), row = rows.peek()) {
    const std::string loan_id = (*row)[0].c_str();
    const std::string where = "read.loans loan " + loan_id;
    const auto found = loans.find(loan_id);
    if (found == loans.end()) {
      check.difference(where + ": a loan the log does not have at position " + std::to_string(loan_watermark));
      continue;
    }
    ++check.result.rows_checked;
    found->second.row_seen = true;
    const domain::LoanState& s = found->second.state;
    const domain::LoanBook& b = s.book;
    check.compare(where, "borrower", (*row)[1].c_str(), s.borrower);
    check.compare(where, "currency", (*row)[2].c_str(), s.currency.code());
    check.compare(where, "status", (*row)[3].c_str(), domain::to_string(b.status));
    check.compare(where, "principal", (*row)[4], b.terms.principal);
    check.compare(where, "rate_bps", (*row)[5], b.terms.rate_bps);
    check.compare(where, "installments", (*row)[6], b.terms.installments);
    check.compare(where, "schedule_type", (*row)[7].c_str(), domain::to_string(b.terms.type));
    check.compare(where, "origination_date", (*row)[8].c_str(), domain::to_string(b.terms.origination_date));
    check.compare(where, "first_due_date", (*row)[9].c_str(), domain::to_string(b.terms.first_due));
    check.compare(where, "origination_fee", (*row)[10], b.terms.origination_fee);
    check.compare(where, "late_fee", (*row)[11], b.terms.late_fee);
    check.compare(where, "grace_days", (*row)[12], b.terms.grace_days);
    check.compare(where, "closed_through", (*row)[13].c_str(),
                  b.closed_through ? domain::to_string(*b.closed_through) : std::string());
    check.compare(where, "interest_recognised", (*row)[14], b.interest_recognised);
    check.compare(where, "days_past_due", (*row)[15], b.days_past_due);
    check.compare(where, "principal_written_off", (*row)[16], b.principal_written_off);
    check.compare(where, "interest_reversed", (*row)[17], b.interest_reversed);
    check.compare(where, "version", (*row)[18], s.version.value());
    check.compare(where, "position", (*row)[19], found->second.position);
  }
  RowCursor installments(tx, "reconcile_loan_installments",
                         "SELECT loan_id, number, due_date::text, principal, interest, principal_paid, interest_paid, "
                         "penalty, penalty_paid, overdue, interest_waived FROM read.loan_installments");
  for (const pqxx::row* row = installments.peek(); row != nullptr; installments.pop(), row = installments.peek()) {
    const std::string loan_id = (*row)[0].c_str();
    const auto number = (*row)[1].as<std::int64_t>();
    const std::string where = "read.loan_installments loan " + loan_id + " installment " + std::to_string(number);
    const auto found = loans.find(loan_id);
    if (found == loans.end() || number < 1 ||
        number > static_cast<std::int64_t>(found->second.state.book.installments.size())) {
      check.difference(where + ": an installment the log does not have");
      continue;
    }
    ++check.result.rows_checked;
    ++found->second.installment_rows;
    const domain::InstallmentBook& i = found->second.state.book.installments[static_cast<std::size_t>(number - 1)];
    check.compare(where, "due_date", (*row)[2].c_str(), domain::to_string(i.due_date));
    check.compare(where, "principal", (*row)[3], i.principal);
    check.compare(where, "interest", (*row)[4], i.interest);
    check.compare(where, "principal_paid", (*row)[5], i.principal_paid);
    check.compare(where, "interest_paid", (*row)[6], i.interest_paid);
    check.compare(where, "penalty", (*row)[7], i.penalty);
    check.compare(where, "penalty_paid", (*row)[8], i.penalty_paid);
    check.compare(where, "overdue", (*row)[9].as<bool>() ? "true" : "false", i.overdue ? "true" : "false");
    check.compare(where, "interest_waived", (*row)[10].as<bool>() ? "true" : "false", i.interest_waived ? "true" : "false");
  }
  for (const auto& [loan_id, folded] : loans) {
    if (!folded.row_seen) {
      check.difference("read.loans loan " + loan_id + ": missing (originated in the log by position " +
                       std::to_string(folded.position) + ")");
    } else if (folded.installment_rows != folded.state.book.installments.size()) {
      check.difference("read.loans loan " + loan_id + ": " + std::to_string(folded.installment_rows) +
                       " installment rows, the log has " + std::to_string(folded.state.book.installments.size()));
    }
  }
}

}  // namespace

ReconcileResult reconcile(db::ConnectionPool& pool, std::ostream& report, std::int64_t report_max,
                          const Progress& progress) {
  Reconciler check(report, report_max);
  auto lease = pool.acquire();
  SnapshotTransaction tx(*lease);
  // The watermarks and every row below come from one snapshot; events at or below a
  // watermark are committed and immutable, so they can be read on other connections.
  // A read model split over partitions holds, per partition, every event of that partition's
  // streams up to the partition's watermark (projections/README.md): an event belongs in it if
  // its position is at or below the watermark of its stream's partition.
  std::unordered_map<std::string, std::pair<std::int32_t, std::vector<std::int64_t>>> split;
  for (const auto& row : tx.exec("SELECT name, watermark, coalesce(partitions, 0) FROM read.projections ORDER BY name")) {
    check.result.watermarks[row[0].as<std::string>()] = row[1].as<std::int64_t>();
    const auto partitions = row[2].as<std::int32_t>();
    if (partitions > 0) {
      split[row[0].as<std::string>()] = {partitions, std::vector<std::int64_t>(static_cast<std::size_t>(partitions),
                                                                               row[1].as<std::int64_t>())};
    }
  }
  for (const auto& row : tx.exec("SELECT projection, partition, position FROM read.partition_watermarks")) {
    const auto found = split.find(row[0].as<std::string>());
    const auto partition = row[1].as<std::int32_t>();
    if (found != split.end() && partition < found->second.first) {
      found->second.second[static_cast<std::size_t>(partition)] = row[2].as<std::int64_t>();
    }
  }
  // The watermark an event at `position` of `stream_id` is compared with in `projection`.
  auto watermark_of = [&](const std::string& projection, const std::string& stream_id) {
    const auto found = split.find(projection);
    if (found == split.end()) return check.result.watermarks[projection];
    return found->second.second[static_cast<std::size_t>(
        domain::partition_for_stream(stream_id, found->second.first))];
  };
  auto highest = [&](const std::string& projection) {
    const auto found = split.find(projection);
    std::int64_t high = check.result.watermarks[projection];
    if (found != split.end()) {
      for (const auto mark : found->second.second) high = std::max(high, mark);
    }
    return high;
  };
  const std::int64_t balance_watermark = highest("balance");
  const std::int64_t audit_watermark = highest("audit");
  const std::int64_t loan_watermark = highest("loan");
  const std::int64_t last = std::max({balance_watermark, audit_watermark, loan_watermark});

  RowCursor entries(tx, "reconcile_entries",
                    "SELECT account_id, position, version, transfer_id, direction, phase, amount, counterparty, "
                    "balance_after, (extract(epoch FROM recorded_at) * 1000000)::bigint FROM read.entries "
                    "ORDER BY position");
  RowCursor audit(
      tx, "reconcile_audit",
      "SELECT position, type, actor, (extract(epoch FROM recorded_at) * 1000000)::bigint "
      "FROM read.audit ORDER BY position");

  std::unordered_map<std::string, FoldedAccount> accounts;
  std::unordered_map<std::string, FoldedLoan> loans;
  LogReader reader(pool, 1, last, reconcile_batch_events);
  std::int64_t done = 0;
  for (const auto* batch = &reader.next(); !batch->empty(); batch = &reader.next()) {
    for (const auto& event : *batch) {
      const std::int64_t position = event.position.value();
      const auto decoded = domain::decode_event(event.type, event.payload);
      if (!decoded) {
        throw std::runtime_error("position " + std::to_string(position) + ": the " + event.type +
                                 " payload does not decode (run `ledger replay verify`)");
      }
      if (position <= watermark_of("audit", event.stream_id)) {
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
          // The row holds what the audit query filters by but the stream (the store's own index
          // serves that); the rest of an answer is the store's.
          check.compare(where, "type", (*row)[1].c_str(), event.type);
          check.compare(where, "actor", (*row)[2].c_str(), event.metadata.actor);
          check.compare(where, "recorded_at", (*row)[3], event.recorded_at_us);
          audit.pop();
        }
      }

      const auto loan_id = domain::stream_entity_id(event.stream_id, domain::StreamKind::loan);
      if (loan_id && position <= watermark_of("loan", event.stream_id)) {
        FoldedLoan& loan = loans[std::string(*loan_id)];
        domain::apply(loan.state, *decoded);
        loan.position = position;
      }
      const auto account_stream_id = domain::stream_entity_id(event.stream_id, domain::StreamKind::account);
      if (!account_stream_id || position > watermark_of("balance", event.stream_id)) continue;
      const std::string account_id(*account_stream_id);
      FoldedAccount& account = accounts[account_id];
      domain::apply(account.state, *decoded);
      account.position = position;
      const auto* entry = std::get_if<domain::events::AccountEntry>(&*decoded);
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
      check.compare(where, "direction", (*row)[4].c_str(), domain::to_string(entry->direction));
      check.compare(where, "phase", (*row)[5].c_str(), domain::to_string(entry->phase));
      check.compare(where, "amount", (*row)[6], entry->amount);
      check.compare(where, "counterparty", (*row)[7].c_str(), entry->counterparty);
      check.compare(where, "balance_after", (*row)[8],
                    account.state.credits_posted.minor_units() - account.state.debits_posted.minor_units());
      check.compare(where, "recorded_at", (*row)[9], event.recorded_at_us);
      entries.pop();
    }
    done += static_cast<std::int64_t>(batch->size());
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
    const domain::AccountState& s = found->second.state;
    check.compare(where, "currency", (*row)[1].c_str(), s.currency.code());
    check.compare(where, "kind", (*row)[2].c_str(), domain::to_string(s.kind));
    check.compare(where, "owner", (*row)[3].c_str(), s.owner);
    check.compare(where, "ledger_code", (*row)[4], s.ledger_code);
    check.compare(where, "flags", (*row)[5], s.flags);
    check.compare(where, "overdraft_limit", (*row)[6], s.overdraft_limit.minor_units());
    check.compare(where, "status", (*row)[7].c_str(), domain::to_string(s.status));
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
  reconcile_loans(tx, check, loans, loan_watermark);
  tx.commit();
  return check.result;
}

}  // namespace ledger::replay
