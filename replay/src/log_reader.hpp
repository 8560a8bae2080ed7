#pragma once
// Reads positions [from, to] of the log in order, in batches, with the next batch read on
// another thread while the caller works on this one (reading is half of a replay's time).

#include <future>
#include <vector>

#include "ledger/engine/event_store.hpp"

namespace ledger::replay {

class LogReader {
 public:
  LogReader(const engine::EventStore& store, std::int64_t from, std::int64_t to, std::size_t batch_events)
      : store_(store), next_(from), to_(to), batch_events_(batch_events) {}

  // The next events in position order (gaps included as they are: callers check density);
  // empty when the range is done.
  std::vector<domain::RecordedEvent> next() {
    std::vector<domain::RecordedEvent> batch = pending_.valid() ? pending_.get() : read(next_);
    while (!batch.empty() && batch.back().position.value() > to_) batch.pop_back();
    if (batch.empty()) {
      next_ = to_ + 1;
      return batch;
    }
    next_ = batch.back().position.value() + 1;
    if (next_ <= to_) pending_ = std::async(std::launch::async, [this, from = next_] { return read(from); });
    return batch;
  }

 private:
  std::vector<domain::RecordedEvent> read(std::int64_t from) const {
    if (from > to_) return {};
    const auto wanted = static_cast<std::size_t>(std::min<std::int64_t>(to_ - from + 1, static_cast<std::int64_t>(batch_events_)));
    return store_.read_all(GlobalPosition(from), wanted);
  }

  const engine::EventStore& store_;
  std::int64_t next_;
  std::int64_t to_;
  std::size_t batch_events_;
  std::future<std::vector<domain::RecordedEvent>> pending_;
};

}  // namespace ledger::replay
