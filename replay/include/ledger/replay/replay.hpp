#pragma once
// What auditors and operators run against the event store, the source of truth (DESIGN.md):
// export, verify, as-of balances, reconcile and republish. Every function reads the store
// in position order in bounded batches; none holds the log in memory.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ledger/core/strong_type.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/domain/state.hpp"

namespace ledger::db {
class ConnectionPool;
}

namespace ledger::replay {

// Called after each batch with the events done so far and the expected total (0: unknown).
using Progress = std::function<void(std::int64_t done, std::int64_t total)>;

// Positions [from, to]; `to` 0 means the head at the start of the run.
struct PositionRange {
  GlobalPosition from{1};
  GlobalPosition to{0};
};

// --- export ---------------------------------------------------------------------------------

enum class ExportFormat { json_lines, csv };

struct ExportFilter {
  PositionRange range;
  std::optional<std::string> stream_id;      // one stream (read by its index)
  std::optional<std::int64_t> from_time_us;  // recorded_at >= this
  std::optional<std::int64_t> to_time_us;    // recorded_at < this
  std::vector<std::string> types;            // empty: every type
};

struct ExportSummary {
  std::int64_t events_scanned = 0;
  std::int64_t events_written = 0;
  GlobalPosition last_position{0};
};

// Writes the matching events with their payloads decoded to JSON. JSON lines carry every
// stored field (data, metadata, hex hash), so parse_exported_event reads them back exactly.
ExportSummary export_events(db::ConnectionPool& pool, const ExportFilter& filter, ExportFormat format,
                            std::ostream& out, const Progress& progress = {});

// The event an export line describes, payload re-encoded from its JSON; std::nullopt when the
// line is not a well-formed export line. An auditor's tool can recompute the hash chain.
[[nodiscard]] std::optional<domain::RecordedEvent> parse_exported_event(std::string_view json_line);

// --- verify ---------------------------------------------------------------------------------

// Per currency, the sums over all accounts (credits minus debits). Double entry means both
// are zero whenever every transfer's legs are in.
struct CurrencyTotals {
  std::int64_t posted = 0;
  std::int64_t pending = 0;
  std::int64_t accounts = 0;
  friend bool operator==(const CurrencyTotals&, const CurrencyTotals&) = default;
};

struct VerifyCheckpoint {
  GlobalPosition position{0};
  std::map<std::string, CurrencyTotals> totals;  // by currency code
};

struct VerifyResult {
  bool ok = true;
  std::int64_t events_checked = 0;
  std::int64_t streams = 0;
  GlobalPosition first_bad_position{0};  // set when !ok
  std::string problem;                   // what failed there
  bool double_entry_checked = false;     // only a verify from position 1 knows every account
  std::vector<VerifyCheckpoint> checkpoints;  // the last one is the end of the range
};

struct VerifyOptions {
  PositionRange range;
  std::int64_t checkpoint_every = 1'000'000;  // report totals at the first balanced position after
  // Threads that check the hash chain, each a slice of every batch (0: one per core); the
  // ordered checks (density, versions, double entry) run on the calling thread meanwhile.
  std::size_t hash_threads = 0;
  std::size_t batch_events = 20'000;  // positions read (and their hashes checked) at a time
  // Range readers: batches read at once, each on a PostgreSQL connection of its own.
  std::size_t read_lanes = 2;
};

// Checks dense positions, dense per-stream versions, the hash chain, that every payload
// decodes, and double entry; stops at the first failure.
[[nodiscard]] VerifyResult verify(db::ConnectionPool& pool, const VerifyOptions& options,
                                  const Progress& progress = {});

// --- reconcile ------------------------------------------------------------------------------

struct ReconcileResult {
  std::int64_t rows_checked = 0;
  std::int64_t differences = 0;
  std::map<std::string, std::int64_t> watermarks;  // by projection: the position compared at
};

// Folds the log up to each read model's watermark and compares every row of read.balances,
// read.entries, read.audit, read.loans and read.loan_installments with it, in one snapshot.
// Each difference is a line on `report` (at most `report_max` lines; all are counted).
[[nodiscard]] ReconcileResult reconcile(db::ConnectionPool& pool, std::ostream& report,
                                        std::int64_t report_max = 1'000,
                                        const Progress& progress = {});

// --- publish --------------------------------------------------------------------------------

struct PublishSettings {
  std::string brokers;
  std::string topic = "ledger.events";
  std::string json_topic;  // also the JSON view here when set (relay::RelaySettings)
  std::map<std::string, std::string> kafka_properties;
};

struct PublishResult {
  std::int64_t events_published = 0;
  GlobalPosition last_position{0};
};

// Re-sends the events of `range` to Kafka exactly as the relay publishes them (key, envelope,
// headers) and waits until Kafka acknowledged every one. Consumers dedupe by position.
PublishResult publish(db::ConnectionPool& pool, const PublishSettings& settings,
                      const PositionRange& range, const Progress& progress = {});

}  // namespace ledger::replay
