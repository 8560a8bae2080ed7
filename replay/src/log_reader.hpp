#pragma once
// Reads positions [from, to] of the log in order, in batches, with the next batch read on
// another thread while the caller works on this one. The events come through the engine's
// binary COPY reader (engine::LogCopyReader), on a connection of the reader's own; the two
// batches' storage is reused, so a replay allocates little per event.

#include <cstdint>
#include <functional>
#include <future>
#include <vector>

#include "ledger/engine/event_store.hpp"

namespace ledger::replay {

class LogReader {
 public:
  // Work on a batch that needs no order across batches (verify's hash chain check): run on the
  // reading thread as each batch arrives, so it overlaps the caller's work on the batch before;
  // its result comes with the batch (mark()).
  using BatchCheck = std::function<std::int64_t(const std::vector<domain::RecordedEvent>& batch)>;

  LogReader(const db::ConnectionPool& pool, std::int64_t from, std::int64_t to, std::size_t batch_events,
            BatchCheck check = {})
      : copy_(pool, GlobalPosition(from), GlobalPosition(to)), batch_events_(batch_events), check_(std::move(check)) {}

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
      current_mark_ = spare_mark_;
    } else {
      current_mark_ = read(current_);
    }
    if (!current_.empty()) {
      pending_ = std::async(std::launch::async, [this] { spare_mark_ = read(spare_); });
    }
    return current_;
  }

  // What the BatchCheck returned for the batch next() returned last (0 without one).
  [[nodiscard]] std::int64_t mark() const { return current_mark_; }

 private:
  std::int64_t read(std::vector<domain::RecordedEvent>& batch) {
    copy_.read(batch, batch_events_);
    return check_ && !batch.empty() ? check_(batch) : 0;
  }

  engine::LogCopyReader copy_;
  std::size_t batch_events_;
  BatchCheck check_;
  std::vector<domain::RecordedEvent> current_;
  std::vector<domain::RecordedEvent> spare_;
  std::int64_t current_mark_ = 0;
  std::int64_t spare_mark_ = 0;
  std::future<void> pending_;  // last: waited for before the rest goes
};

}  // namespace ledger::replay
