#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
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

  // Streams with an event of `type` after position `after`, in position order, at most
  // `limit`: (position, stream id) pairs to page through (close of business lists loans).
  [[nodiscard]] std::vector<std::pair<GlobalPosition, std::string>> streams_with_event(
      std::string_view type, GlobalPosition after, std::size_t limit) const;

  // Walks positions [from, to] checking density and the hash chain; names the first position
  // that fails. `to` 0 means the head.
  [[nodiscard]] ChainVerification verify_chain(GlobalPosition from = GlobalPosition(1),
                                               GlobalPosition to = GlobalPosition(0)) const;

 private:
  db::ConnectionPool& pool_;
};

}  // namespace ledger::engine
