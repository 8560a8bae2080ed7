#pragma once
// Queries over the read models, each answered with the watermark it was read at, and the
// bounded wait behind `min_position` (read your own writes).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ledger/projections/projector.hpp"

namespace ledger::projections {

struct AccountView {
  std::string id;
  std::string currency;
  std::string kind;
  std::string owner;
  std::string status;
  std::int64_t ledger_code = 0;
  std::int64_t overdraft_limit = 0;
  std::int64_t debits_posted = 0;
  std::int64_t credits_posted = 0;
  std::int64_t debits_pending = 0;
  std::int64_t credits_pending = 0;
  std::int64_t version = 0;
};

struct EntryView {
  std::int64_t position = 0;
  std::int64_t version = 0;
  std::string transfer_id;
  std::string direction;  // debit | credit
  std::string phase;      // posted | pending | pending_posted | pending_released
  std::int64_t amount = 0;
  std::string counterparty;
  std::int64_t balance_after = 0;
  std::int64_t recorded_at_us = 0;
};

struct LoanInstallmentView {
  std::int32_t number = 0;
  std::string due_date;  // YYYY-MM-DD
  std::int64_t principal = 0;
  std::int64_t interest = 0;
  std::int64_t principal_paid = 0;
  std::int64_t interest_paid = 0;
  std::int64_t penalty = 0;
  std::int64_t penalty_paid = 0;
  bool overdue = false;
  bool interest_waived = false;
  [[nodiscard]] bool settled() const {
    return principal_paid == principal && interest_paid == interest && penalty_paid == penalty;
  }
};

struct LoanView {
  std::string id;
  std::string borrower;
  std::string currency;
  std::string status;  // originated | active | repaid | written_off
  std::int64_t principal = 0;
  std::int32_t rate_bps = 0;
  std::string schedule_type;
  std::string origination_date;
  std::string closed_through;  // the last business day closed; empty before the first
  std::int64_t interest_recognised = 0;
  std::int64_t days_past_due = 0;
  std::int64_t principal_written_off = 0;
  std::int64_t interest_reversed = 0;
  std::int64_t version = 0;
  std::vector<LoanInstallmentView> installments;
};

struct EntriesPage {
  std::vector<EntryView> entries;
  std::optional<std::int64_t> next_cursor;  // a position: pass it back as `cursor`
};

struct AuditFilter {
  std::optional<std::string> actor;
  std::optional<std::string> stream_id;
  std::optional<std::string> type;
  std::optional<std::int64_t> from_us;  // recorded_at >= from
  std::optional<std::int64_t> to_us;    // recorded_at < to
  std::int64_t after_position = 0;      // the cursor
  std::size_t limit = 100;
};

struct AuditRow {
  std::int64_t position = 0;
  std::string stream_id;
  std::int64_t version = 0;
  std::string type;
  std::string event_id;
  std::string actor;
  std::string command_id;
  std::string correlation_id;
  std::string causation_id;
  std::string request_id;
  std::string client_address;
  std::int64_t recorded_at_us = 0;
  std::string data_json;
};

struct AuditPage {
  std::vector<AuditRow> rows;
  std::optional<std::int64_t> next_cursor;
};

// A query's answer and the watermark it was read at, from the same snapshot. A query about one
// stream (an account, its entries, a loan) reports the watermark of that stream's partition;
// the others the projection's, the minimum over its partitions.
template <typename T>
struct AtWatermark {
  T value;
  std::int64_t watermark = 0;
};

struct ProjectionProgress {
  std::string name;
  std::int64_t watermark = 0;
  std::int64_t head = 0;
  std::int64_t lag_events = 0;
  // How long the oldest event the projection has not applied has been committed (0: none).
  double lag_seconds = 0;
  std::int64_t events_applied = 0;  // counter since the projection was created
  double events_per_second = 0;     // since the previous progress() call (0 on the first)
  // The position the projector cannot apply (0: not stalled), why, and for how long.
  std::int64_t stalled_position = 0;
  std::string stalled_reason;
  double stalled_seconds = 0;
};

// Thread-safe. Queries block (run them off I/O threads); wait_for does not.
class ReadModels {
 public:
  explicit ReadModels(db::ConnectionPool& pool);
  ~ReadModels();
  ReadModels(const ReadModels&) = delete;
  ReadModels& operator=(const ReadModels&) = delete;

  [[nodiscard]] AtWatermark<std::optional<AccountView>> account(const std::string& id) const;
  [[nodiscard]] AtWatermark<std::optional<EntriesPage>> entries(const std::string& account_id,
                                                                std::int64_t after_position,
                                                                std::size_t limit) const;
  [[nodiscard]] AtWatermark<AuditPage> audit(const AuditFilter& filter) const;
  [[nodiscard]] AtWatermark<std::optional<LoanView>> loan(const std::string& id) const;
  // The loans of a borrower account, by loan id (std::nullopt: no such account).
  [[nodiscard]] AtWatermark<std::optional<std::vector<LoanView>>> loans_of(const std::string& account_id) const;
  [[nodiscard]] std::vector<ProjectionProgress> progress() const;
  // The lowest watermark of all read models: what the relay must publish again after a broker
  // lost data (0 when there are none).
  [[nodiscard]] std::int64_t lowest_watermark() const;

  // Calls `then(reached, watermark)` once `kind`'s watermark is at least `min_position`, or
  // with reached=false after `wait`. Called on a watcher thread: keep it short. With a
  // `stream_id`, the watermark is that of the stream's partition (domain::partition_for_stream
  // over the count the projection's watermarks are split by): every event of the stream up to
  // it is applied. Without one, the projection's watermark, the minimum over its partitions.
  void wait_for(ProjectionKind kind, std::int64_t min_position, std::chrono::milliseconds wait,
                std::function<void(bool reached, std::int64_t watermark)> then,
                std::optional<std::string> stream_id = std::nullopt);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::projections
