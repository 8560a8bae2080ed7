#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ledger/core/strong_type.hpp"
#include "ledger/domain/recorded_event.hpp"

namespace ledger::db {
class ConnectionPool;
}

namespace ledger::engine {

struct StoreHead {
  GlobalPosition position{0};
  std::string hash;
};

struct ChainVerification {
  bool ok = true;
  std::int64_t events_checked = 0;
  GlobalPosition first_bad_position{0};
  std::string problem;
};

// Reads the event store. Thread-safe; each call takes a pooled connection.
class EventStore {
 public:
  explicit EventStore(db::ConnectionPool& pool);

  [[nodiscard]] std::vector<domain::RecordedEvent> read_stream(const std::string& stream_id,
                                                       StreamVersion from_version,
                                                       std::size_t limit) const;
  // Events with position >= from, in order, at most `limit`.
  [[nodiscard]] std::vector<domain::RecordedEvent> read_all(GlobalPosition from, std::size_t limit) const;
  [[nodiscard]] StoreHead head() const;

  // The loan_disbursed events after position `after`, in position order, at most `limit`:
  // (position, stream id) pairs to page through (close of business lists every loan). Read
  // through an index of those events alone (migration 0014), not the log.
  [[nodiscard]] std::vector<std::pair<GlobalPosition, std::string>> loans_disbursed(
      GlobalPosition after, std::size_t limit) const;

  // Walks positions [from, to] checking density and the hash chain; names the first position
  // that fails. `to` 0 means the head.
  [[nodiscard]] ChainVerification verify_chain(GlobalPosition from = GlobalPosition(1),
                                               GlobalPosition to = GlobalPosition(0)) const;

 private:
  db::ConnectionPool& pool_;
};

// Reads positions [from, to] of the log in position order for the tools that read all of it
// (`ledger replay`, `ledger rebuild`), the projectors' catch-up and the relay (which keeps one
// open while it leads and reads the next positions with each read_range). One `COPY (SELECT …) TO
// STDOUT (FORMAT binary)` per chunk of positions, on a libpq connection of its own opened from the
// pool's URL (libpqxx 6 has no binary COPY): bytea, uuid, int8 and timestamps arrive as their
// bytes, so neither PostgreSQL nor this process formats or parses their text (issue 18: hex and
// JSON text were a third of a verify's CPU). The events are exactly what EventStore::read_all
// returns; gaps are passed on as they are (callers check density). A chunk is one statement, so the
// pool's statement timeout bounds a chunk, not the log. Not thread-safe: one reader per thread.
class LogCopyReader {
 public:
  // Positions per COPY statement.
  static constexpr std::int64_t default_chunk_events = 100'000;

  LogCopyReader(const db::ConnectionPool& pool, GlobalPosition from, GlobalPosition to,
                std::int64_t chunk_events = default_chunk_events);
  ~LogCopyReader();
  LogCopyReader(const LogCopyReader&) = delete;
  LogCopyReader& operator=(const LogCopyReader&) = delete;

  // Fills `out` with the next events, at most `limit`, reusing its elements' storage; `out`
  // is left empty when the range is done. Throws std::runtime_error when the server fails or
  // sends what the events table cannot hold.
  void read(std::vector<domain::RecordedEvent>& out, std::size_t limit);
  // Fills `out` with every event of positions [from, to] through one COPY, reusing its storage,
  // whatever range the constructor named: for range readers that each take their share of a
  // log on a connection of their own. Not while a read() has a COPY open.
  void read_range(GlobalPosition from, GlobalPosition to, std::vector<domain::RecordedEvent>& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::engine
