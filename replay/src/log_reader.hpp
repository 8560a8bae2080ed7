#pragma once
// Reads positions [from, to] of the log in order, in batches, through the engine's binary COPY
// reader (engine::LogCopyReader). Range readers ("lanes"), each on a PostgreSQL connection of
// its own, read the next batches at once while the caller works on this one: batch j covers
// positions [from + j·B, from + (j+1)·B - 1] and goes to lane j mod lanes. One COPY keeps one
// server process busy; on a machine shared with other work a second one gets the reading more
// of the CPU (replay/README.md, "Reading the log"). The batches' storage is reused, so a replay
// allocates little per event.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <vector>

#include "ledger/engine/event_store.hpp"

namespace ledger::replay {

// Range readers a replay uses by default.
inline constexpr std::size_t default_read_lanes = 2;

class LogReader {
 public:
  // Work on one batch that needs nothing from the batches around it (verify's hash checks
  // inside a batch): run on the lane's thread as the batch arrives, so it overlaps the
  // caller's work; its result comes with the batch (mark()). Called from several threads.
  using BatchCheck = std::function<std::int64_t(const std::vector<domain::RecordedEvent>& batch)>;

  LogReader(const db::ConnectionPool& pool, std::int64_t from, std::int64_t to, std::size_t batch_events,
            BatchCheck check = {}, std::size_t lanes = default_read_lanes)
      : next_from_(std::max<std::int64_t>(from, 1)),
        to_(to),
        batch_positions_(static_cast<std::int64_t>(std::max<std::size_t>(batch_events, 1))),
        check_(std::move(check)) {
    lanes = std::max<std::size_t>(lanes, 1);
    for (std::size_t lane = 0; lane < lanes; ++lane) {
      lanes_.push_back(std::make_unique<engine::LogCopyReader>(pool, GlobalPosition(from), GlobalPosition(to)));
    }
    batches_.resize(lanes + 1);
    for (std::size_t slot = 0; slot < batches_.size(); ++slot) free_.push_back(slot);
  }

  ~LogReader() {
    for (auto& batch : in_flight_) batch.done.wait();
  }

  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;

  // The next events in position order (gaps included as they are: callers check density);
  // empty when the range is done. Valid until the next call.
  const std::vector<domain::RecordedEvent>& next() {
    if (current_ != no_slot) free_.push_back(current_);
    current_ = no_slot;
    while (true) {
      submit();
      if (in_flight_.empty()) return empty_;
      InFlight batch = std::move(in_flight_.front());
      in_flight_.pop_front();
      current_ = batch.slot;
      batch.done.get();  // rethrows what the lane threw
      // A stretch of positions all missing reads as an empty batch: not the end.
      if (!batches_[current_].events.empty()) return batches_[current_].events;
      free_.push_back(current_);
      current_ = no_slot;
    }
  }

  // What the BatchCheck returned for the batch next() returned last (0 without one).
  [[nodiscard]] std::int64_t mark() const { return current_ == no_slot ? 0 : batches_[current_].mark; }

 private:
  static constexpr std::size_t no_slot = static_cast<std::size_t>(-1);

  struct Batch {
    std::vector<domain::RecordedEvent> events;
    std::int64_t mark = 0;
  };
  struct InFlight {
    std::size_t slot;
    std::future<void> done;
  };

  // Starts the next batches while a lane and a slot are free. Batch j's lane is j mod lanes, and
  // batch j + lanes starts only once batch j was taken, so a lane reads one batch at a time.
  void submit() {
    while (in_flight_.size() < lanes_.size() && !free_.empty() && next_from_ <= to_) {
      const std::size_t slot = free_.back();
      free_.pop_back();
      const std::int64_t from = next_from_;
      const std::int64_t last = std::min(to_, from + batch_positions_ - 1);
      next_from_ = last + 1;
      engine::LogCopyReader& lane = *lanes_[next_lane_];
      next_lane_ = (next_lane_ + 1) % lanes_.size();
      in_flight_.push_back({slot, std::async(std::launch::async, [this, &lane, slot, from, last] {
                              Batch& batch = batches_[slot];
                              lane.read_range(GlobalPosition(from), GlobalPosition(last), batch.events);
                              batch.mark = check_ && !batch.events.empty() ? check_(batch.events) : 0;
                            })});
    }
  }

  std::int64_t next_from_;
  std::int64_t to_;
  std::int64_t batch_positions_;
  BatchCheck check_;
  std::vector<std::unique_ptr<engine::LogCopyReader>> lanes_;
  std::size_t next_lane_ = 0;
  std::vector<Batch> batches_;  // lanes + 1 slots: one per lane reading, one with the caller
  std::vector<std::size_t> free_;
  std::size_t current_ = no_slot;
  const std::vector<domain::RecordedEvent> empty_;
  std::deque<InFlight> in_flight_;  // in position order; last: waited for before the rest goes
};

}  // namespace ledger::replay
