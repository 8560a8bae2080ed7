#pragma once
// Reads positions [from, to] of the log in order, in batches, with the next batch read on
// another thread while the caller works on this one. The events come through the engine's
// binary COPY reader (engine::LogCopyReader), on a connection of the reader's own; the two
// batches' storage is reused, so a replay allocates little per event.

#include <future>
#include <vector>

#include "ledger/engine/event_store.hpp"

namespace ledger::replay {

class LogReader {
 public:
  LogReader(const db::ConnectionPool& pool, std::int64_t from, std::int64_t to, std::size_t batch_events)
      : copy_(pool, GlobalPosition(from), GlobalPosition(to)), batch_events_(batch_events) {}

  ~LogReader() {
    if (pending_.valid()) pending_.wait();
  }

  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;

  // The next events in position order (gaps included as they are: callers check density);
  // empty when the range is done. Valid until the next call.
  const std::vector<domain::RecordedEvent>& next() {
    if (pending_.valid()) {
      pending_.get();  // rethrows what the read threw
      current_.swap(spare_);
    } else {
      copy_.read(current_, batch_events_);
    }
    if (!current_.empty()) {
      pending_ = std::async(std::launch::async, [this] { copy_.read(spare_, batch_events_); });
    }
    return current_;
  }

 private:
  engine::LogCopyReader copy_;
  std::size_t batch_events_;
  std::vector<domain::RecordedEvent> current_;
  std::vector<domain::RecordedEvent> spare_;
  std::future<void> pending_;  // last: waited for before the rest goes
};

}  // namespace ledger::replay
