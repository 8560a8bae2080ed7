#include "ledger/projections/read_models.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "ledger/db/pool.hpp"
#include "ledger/db/retry.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/domain/recorded_event.hpp"
#include "ledger/domain/types.hpp"
#include "jsonb_text.hpp"
#include "stream_cursor.hpp"

namespace ledger::projections {

namespace {

using Clock = std::chrono::steady_clock;
// Rows and watermark come from one snapshot, so "read at watermark W" is exact.
using SnapshotRead = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

constexpr auto watermark_poll_interval = std::chrono::milliseconds(3);
constexpr const char* micros = "(extract(epoch FROM recorded_at) * 1000000)::bigint";

// The projection's watermark or, given a stream, the watermark of the stream's partition.
std::int64_t read_watermark(SnapshotRead& work, std::string_view projection,
                            const std::optional<std::string>& stream_id = std::nullopt) {
  const auto rows = work.exec_params("SELECT watermark, partitions FROM read.projections WHERE name = $1",
                                     std::string(projection));
  if (rows.empty()) return 0;
  const auto watermark = rows[0][0].as<std::int64_t>();
  if (!stream_id || rows[0][1].is_null()) return watermark;
  const auto partition = domain::partition_for_stream(*stream_id, rows[0][1].as<std::int32_t>());
  const auto mark = work.exec_params(
      "SELECT position FROM read.partition_watermarks WHERE projection = $1 AND partition = $2",
      std::string(projection), partition);
  return mark.empty() ? watermark : std::max(watermark, mark[0][0].as<std::int64_t>());
}

}  // namespace

struct ReadModels::Impl {
  explicit Impl(db::ConnectionPool& p)
      : pool(p), retry{static_cast<int>(p.settings().connections_max) + 1, std::chrono::milliseconds(20),
                       std::chrono::milliseconds(200)} {}

  struct Waiter {
    std::string projection;
    std::optional<std::string> stream_id;
    std::int64_t min_position;
    Clock::time_point deadline;
    std::function<void(bool, std::int64_t)> then;
  };

  db::ConnectionPool& pool;
  // A query that meets a dropped connection (PostgreSQL restarted, a failover) runs again on a
  // fresh one instead of failing the request; every pooled connection may be stale.
  db::RetryPolicy retry;
  template <typename Query>
  auto read(Query&& query) const {
    return db::with_retry(retry, std::forward<Query>(query));
  }
  std::mutex mutex;
  std::condition_variable changed;
  std::list<Waiter> waiters;
  std::map<std::string, std::int64_t> watermarks;  // last read
  // Per projection: the partition count its watermarks are split by, and each partition's.
  std::map<std::string, std::pair<std::int32_t, std::map<std::int32_t, std::int64_t>>> partition_watermarks;

  // The watermark a waiter waits for: its stream's partition's, or the projection's.
  std::int64_t watermark_for(const Waiter& waiter) {
    const std::int64_t watermark = watermarks[waiter.projection];
    if (!waiter.stream_id) return watermark;
    const auto found = partition_watermarks.find(waiter.projection);
    if (found == partition_watermarks.end() || found->second.first < 1) return watermark;
    const auto partition = domain::partition_for_stream(*waiter.stream_id, found->second.first);
    const auto mark = found->second.second.find(partition);
    return mark == found->second.second.end() ? watermark : std::max(watermark, mark->second);
  }
  // Per projection: when progress() last read the applied counter, and its value.
  std::map<std::string, std::pair<Clock::time_point, std::int64_t>> applied_samples;
  bool stopping = false;
  std::thread watcher;

  ~Impl() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    changed.notify_all();
    if (watcher.joinable()) watcher.join();
    for (auto& waiter : waiters) waiter.then(false, watermark_for(waiter));
  }

  // Polls the watermarks while someone waits; answers each waiter once.
  void watch() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      changed.wait(lock, [&] { return stopping || !waiters.empty(); });
      if (stopping) break;
      lock.unlock();
      std::map<std::string, std::int64_t> fresh;
      std::map<std::string, std::pair<std::int32_t, std::map<std::int32_t, std::int64_t>>> fresh_partitions;
      try {
        auto lease = pool.acquire();
        pqxx::read_transaction work(*lease);
        for (const auto& row : work.exec("SELECT name, watermark, coalesce(partitions, 0) FROM read.projections")) {
          fresh[row[0].as<std::string>()] = row[1].as<std::int64_t>();
          fresh_partitions[row[0].as<std::string>()].first = row[2].as<std::int32_t>();
        }
        for (const auto& row : work.exec("SELECT projection, partition, position FROM read.partition_watermarks")) {
          fresh_partitions[row[0].as<std::string>()].second[row[1].as<std::int32_t>()] = row[2].as<std::int64_t>();
        }
      } catch (const std::exception& error) {
        spdlog::debug("reading projection watermarks failed: {}", error.what());
      }
      lock.lock();
      for (const auto& [name, value] : fresh) watermarks[name] = value;
      for (auto& [name, value] : fresh_partitions) partition_watermarks[name] = std::move(value);
      const auto now = Clock::now();
      std::vector<std::pair<std::function<void(bool, std::int64_t)>, std::pair<bool, std::int64_t>>> ready;
      for (auto it = waiters.begin(); it != waiters.end();) {
        const std::int64_t watermark = watermark_for(*it);
        if (watermark >= it->min_position || now >= it->deadline) {
          ready.push_back({std::move(it->then), {watermark >= it->min_position, watermark}});
          it = waiters.erase(it);
        } else {
          ++it;
        }
      }
      lock.unlock();
      for (auto& [then, result] : ready) then(result.first, result.second);
      lock.lock();
      if (!waiters.empty()) changed.wait_for(lock, watermark_poll_interval, [&] { return stopping; });
    }
  }
};

ReadModels::ReadModels(db::ConnectionPool& pool) : impl_(std::make_unique<Impl>(pool)) {}

ReadModels::~ReadModels() = default;

AtWatermark<std::optional<AccountView>> ReadModels::account(const std::string& id) const {
  return impl_->read([&]() -> AtWatermark<std::optional<AccountView>> {
    auto lease = impl_->pool.acquire();
    SnapshotRead work(*lease);
    AtWatermark<std::optional<AccountView>> result;
    result.watermark = read_watermark(work, to_string(ProjectionKind::balance), domain::account_stream(id));
    const auto rows = work.exec_params(
        "SELECT account_id, currency, kind, owner, status, ledger_code, overdraft_limit, "
        "debits_posted, credits_posted, debits_pending, credits_pending, version "
        "FROM read.balances WHERE account_id = $1",
        id);
    if (!rows.empty()) {
      const auto& row = rows[0];
      result.value = AccountView{row[0].as<std::string>(),  row[1].as<std::string>(),
                                 row[2].as<std::string>(),  row[3].as<std::string>(),
                                 row[4].as<std::string>(),  row[5].as<std::int64_t>(),
                                 row[6].as<std::int64_t>(), row[7].as<std::int64_t>(),
                                 row[8].as<std::int64_t>(), row[9].as<std::int64_t>(),
                                 row[10].as<std::int64_t>(), row[11].as<std::int64_t>()};
    }
    return result;
  });
}

namespace {

std::vector<LoanView> read_loans(pqxx::transaction_base& work, const std::string& where, const std::string& key) {
  std::vector<LoanView> loans;
  const auto rows = work.exec_params(
      "SELECT loan_id, borrower, currency, status, principal, rate_bps, schedule_type, origination_date::text, "
      "coalesce(closed_through::text, ''), interest_recognised, days_past_due, principal_written_off, "
      "interest_reversed, version FROM read.loans WHERE " + where + " = $1 ORDER BY loan_id",
      key);
  for (const auto& row : rows) {
    loans.push_back(LoanView{row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                             row[3].as<std::string>(), row[4].as<std::int64_t>(), row[5].as<std::int32_t>(),
                             row[6].as<std::string>(), row[7].as<std::string>(), row[8].as<std::string>(),
                             row[9].as<std::int64_t>(), row[10].as<std::int64_t>(), row[11].as<std::int64_t>(),
                             row[12].as<std::int64_t>(), row[13].as<std::int64_t>(), {}});
  }
  for (auto& loan : loans) {
    for (const auto& row : work.exec_params(
             "SELECT number, due_date::text, principal, interest, principal_paid, interest_paid, penalty, "
             "penalty_paid, overdue, interest_waived FROM read.loan_installments WHERE loan_id = $1 ORDER BY number",
             loan.id)) {
      loan.installments.push_back(LoanInstallmentView{
          row[0].as<std::int32_t>(), row[1].as<std::string>(), row[2].as<std::int64_t>(), row[3].as<std::int64_t>(),
          row[4].as<std::int64_t>(), row[5].as<std::int64_t>(), row[6].as<std::int64_t>(), row[7].as<std::int64_t>(),
          row[8].as<bool>(), row[9].as<bool>()});
    }
  }
  return loans;
}

}  // namespace

AtWatermark<std::optional<LoanView>> ReadModels::loan(const std::string& id) const {
  return impl_->read([&]() -> AtWatermark<std::optional<LoanView>> {
    auto lease = impl_->pool.acquire();
    SnapshotRead work(*lease);
    AtWatermark<std::optional<LoanView>> result;
    result.watermark = read_watermark(work, to_string(ProjectionKind::loan), domain::loan_stream(id));
    auto loans = read_loans(work, "loan_id", id);
    if (!loans.empty()) result.value = std::move(loans.front());
    return result;
  });
}

AtWatermark<std::optional<std::vector<LoanView>>> ReadModels::loans_of(const std::string& account_id) const {
  return impl_->read([&]() -> AtWatermark<std::optional<std::vector<LoanView>>> {
    auto lease = impl_->pool.acquire();
    SnapshotRead work(*lease);
    AtWatermark<std::optional<std::vector<LoanView>>> result;
    result.watermark = read_watermark(work, to_string(ProjectionKind::loan));
    if (work.exec_params("SELECT 1 FROM read.balances WHERE account_id = $1", account_id).empty()) return result;
    result.value = read_loans(work, "borrower", account_id);
    return result;
  });
}

AtWatermark<std::optional<EntriesPage>> ReadModels::entries(const std::string& account_id,
                                                            std::int64_t after_position,
                                                            std::size_t limit) const {
  return impl_->read([&]() -> AtWatermark<std::optional<EntriesPage>> {
    auto lease = impl_->pool.acquire();
    SnapshotRead work(*lease);
    AtWatermark<std::optional<EntriesPage>> result;
    result.watermark =
        read_watermark(work, to_string(ProjectionKind::balance), domain::account_stream(account_id));
    if (work.exec_params("SELECT 1 FROM read.balances WHERE account_id = $1", account_id).empty()) {
      return result;
    }
    EntriesPage page;
    const auto rows = work.exec_params(
        std::string("SELECT position, version, transfer_id, direction, phase, amount, counterparty, "
                    "balance_after, ") +
            micros +
            " FROM read.entries WHERE account_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        account_id, after_position, static_cast<long long>(limit));
    for (const auto& row : rows) {
      page.entries.push_back({row[0].as<std::int64_t>(), row[1].as<std::int64_t>(),
                              row[2].as<std::string>(), row[3].as<std::string>(),
                              row[4].as<std::string>(), row[5].as<std::int64_t>(),
                              row[6].as<std::string>(), row[7].as<std::int64_t>(),
                              row[8].as<std::int64_t>()});
    }
    if (page.entries.size() == limit) page.next_cursor = page.entries.back().position;
    result.value = std::move(page);
    return result;
  });
}

AtWatermark<AuditPage> ReadModels::audit(const AuditFilter& filter) const {
  return impl_->read([&]() -> AtWatermark<AuditPage> {
    auto lease = impl_->pool.acquire();
    SnapshotRead work(*lease);
    AtWatermark<AuditPage> result;
    result.watermark = read_watermark(work, to_string(ProjectionKind::audit));
    // Absent filters are NULL parameters, so one statement serves every combination.
    auto text = [](const std::optional<std::string>& value) -> const char* {
      return value ? value->c_str() : nullptr;
    };
    auto time = [](const std::optional<std::int64_t>& value) -> std::optional<std::string> {
      if (!value) return std::nullopt;
      return std::to_string(*value);
    };
    const auto from = time(filter.from_us);
    const auto to = time(filter.to_us);
    // read.audit holds what the filters and the order need but the stream; everything an answer
    // shows comes from the event store's row at the same position (one primary-key probe per
    // row). A query by stream walks the store's (stream_id, version) index from the version the
    // cursor stands at, and joins read.audit by position for the other filters (migration 0015).
    std::int64_t after_version = 0;
    std::int64_t through_version = 0;
    if (filter.stream_id) {
      after_version = stream_version_at(work, *filter.stream_id, filter.after_position);
      // The walk stops at the stream's last event the model holds: a model behind the store (a
      // stalled projector) would otherwise walk every later event of the stream to fill a page.
      const auto highest =
          work.exec("SELECT coalesce(max(position), 0) FROM read.audit")[0][0].as<std::int64_t>();
      through_version = stream_version_at(work, *filter.stream_id, highest);
    }
    const auto rows = work.exec_params(
        std::string(
            "SELECT e.position, e.stream_id, e.version, e.type, e.event_id::text, "
            "e.metadata::text, "
            "(extract(epoch FROM e.recorded_at) * 1000000)::bigint, e.payload "
            "FROM read.audit a JOIN events e ON e.position = a.position WHERE a.position > $1 "
            "AND ($2::text IS NULL OR a.actor = $2) "
            "AND ($3::text IS NULL OR (e.stream_id = $3 AND e.version > $8::bigint "
            "AND e.version <= $9::bigint)) "
            "AND ($4::text IS NULL OR a.type = $4) "
            "AND ($5::bigint IS NULL OR a.recorded_at >= 'epoch'::timestamptz + $5::bigint * "
            "interval '1 microsecond') "
            "AND ($6::bigint IS NULL OR a.recorded_at < 'epoch'::timestamptz + $6::bigint * "
            "interval '1 microsecond') ") +
            (filter.stream_id ? "ORDER BY e.version LIMIT $7" : "ORDER BY a.position LIMIT $7"),
        filter.after_position, text(filter.actor), text(filter.stream_id), text(filter.type),
        from ? from->c_str() : nullptr, to ? to->c_str() : nullptr,
        static_cast<long long>(filter.limit), after_version, through_version);
    for (const auto& row : rows) {
      AuditRow audit;
      audit.position = row[0].as<std::int64_t>();
      audit.stream_id = row[1].as<std::string>();
      audit.version = row[2].as<std::int64_t>();
      audit.type = row[3].as<std::string>();
      audit.event_id = row[4].as<std::string>();
      const auto metadata = domain::metadata_from_json(row[5].c_str());
      const auto decoded = domain::decode_event(audit.type, pqxx::binarystring(row[7]).str());
      if (!metadata || !decoded) {
        // The projector applied this position, so the store's row decoded then: an altered store.
        throw std::runtime_error("audit: the event store's row at position " + std::to_string(audit.position) +
                                 " does not decode (run `ledger replay verify`)");
      }
      audit.actor = metadata->actor;
      audit.command_id = metadata->command_id;
      audit.correlation_id = metadata->correlation_id;
      audit.causation_id = metadata->causation_id;
      audit.request_id = metadata->request_id;
      audit.client_address = metadata->client_address;
      audit.recorded_at_us = row[6].as<std::int64_t>();
      audit.data_json = jsonb_text(domain::event_to_json(*decoded));
      result.value.rows.push_back(std::move(audit));
    }
    if (result.value.rows.size() == filter.limit) result.value.next_cursor = result.value.rows.back().position;
    return result;
  });
}

std::int64_t ReadModels::lowest_watermark() const {
  return impl_->read([&] {
    auto lease = impl_->pool.acquire();
    pqxx::read_transaction work(*lease);
    return work.exec("SELECT coalesce(min(watermark), 0) FROM read.projections")[0][0].as<std::int64_t>();
  });
}

std::vector<ProjectionProgress> ReadModels::progress() const {
  return impl_->read([&]() -> std::vector<ProjectionProgress> {
    auto lease = impl_->pool.acquire();
    pqxx::read_transaction work(*lease);
    std::vector<ProjectionProgress> result;
    const auto rows = work.exec(
        "SELECT p.name, p.watermark, h.position, COALESCE(extract(epoch FROM clock_timestamp() - "
        "(SELECT e.recorded_at FROM events e WHERE e.position = p.watermark + 1)), 0)::float8, p.applied, "
        // A stall the watermark has passed (a rebuild swapped in) is over.
        "CASE WHEN p.stalled_position > p.watermark THEN p.stalled_position ELSE 0 END, "
        "coalesce(p.stalled_reason, ''), "
        "coalesce(extract(epoch FROM clock_timestamp() - p.stalled_since), 0)::float8 "
        "FROM read.projections p CROSS JOIN event_store_head h ORDER BY p.name");
    const auto now = Clock::now();
    std::lock_guard lock(impl_->mutex);
    for (const auto& row : rows) {
      ProjectionProgress progress;
      progress.name = row[0].as<std::string>();
      progress.watermark = row[1].as<std::int64_t>();
      progress.head = row[2].as<std::int64_t>();
      progress.lag_events = progress.head - progress.watermark;
      progress.lag_seconds = row[3].as<double>();
      progress.events_applied = row[4].as<std::int64_t>();
      progress.stalled_position = row[5].as<std::int64_t>();
      if (progress.stalled_position > 0) {
        progress.stalled_reason = row[6].as<std::string>();
        progress.stalled_seconds = row[7].as<double>();
      }
      auto& previous = impl_->applied_samples[progress.name];
      const double seconds = std::chrono::duration<double>(now - previous.first).count();
      if (previous.first != Clock::time_point{} && seconds > 0) {
        progress.events_per_second = static_cast<double>(progress.events_applied - previous.second) / seconds;
      }
      previous = {now, progress.events_applied};
      result.push_back(std::move(progress));
    }
    return result;
  });
}

void ReadModels::wait_for(ProjectionKind kind, std::int64_t min_position,
                          std::chrono::milliseconds wait,
                          std::function<void(bool reached, std::int64_t watermark)> then,
                          std::optional<std::string> stream_id) {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;
    if (!impl_->watcher.joinable()) impl_->watcher = std::thread([this] { impl_->watch(); });
    impl_->waiters.push_back(
        {std::string(to_string(kind)), std::move(stream_id), min_position, Clock::now() + wait, std::move(then)});
  }
  impl_->changed.notify_all();
}

}  // namespace ledger::projections
