#pragma once
// Catch-up reads of the event store shared by the projectors of one process (`ledger project
// all`): each round's range is read, and its hash chain checked, once for all of them instead
// of once by each (issue 18: three reads of every range were 40 % of PostgreSQL's CPU in a
// catch-up). A range stays until every projector that is catching up has taken or passed it,
// at most `ranges_max` of them; a projector ahead of another waits up to `lead_wait` for room,
// then evicts the range needed last (the one furthest behind never waits). A projector that
// took no range for `idle_after` (stalled, near the head, stopped) no longer holds any.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "ledger/domain/recorded_event.hpp"
#include "ledger/projections/projector.hpp"
#include "stored_range.hpp"

namespace ledger::engine {
class LogCopyReader;
}

namespace ledger::projections {

// One range as read: (low, high] with the row at low, chain checked whole.
struct SharedRange {
  StoredRange stored;                         // read_ahead set
  std::vector<domain::RecordedEvent> events;  // positions max(low, 1) to high, in order
};

class CatchUpReads {
 public:
  struct Limits {
    std::size_t ranges_max = 4;
    std::chrono::milliseconds lead_wait{5'000};
    std::chrono::milliseconds idle_after{10'000};
    std::size_t reader_threads = 2;
  };

  CatchUpReads(const db::ConnectionPool& pool, Limits limits);
  ~CatchUpReads();
  CatchUpReads(const CatchUpReads&) = delete;
  CatchUpReads& operator=(const CatchUpReads&) = delete;

  struct Taken {
    std::shared_ptr<const SharedRange> range;
    bool read_for_another = false;  // another projector's request started the read
    std::int64_t rows_read = 0;     // the rows the read fetched, counted by its first taker
  };
  // The range [low, high] of a `partitions`-partition topic: started now unless it is read or
  // being read, then waited for. Throws what reading it threw.
  Taken take(const void* projector, std::int64_t low, std::int64_t high, std::int32_t partitions);
  // take() without waiting for the range: started, after waiting for room as take() does
  // (before a round's transaction, so that its wait holds no locks).
  void request(const void* projector, std::int64_t low, std::int64_t high,
               std::int32_t partitions);
  // Starts reading [low, high] unless it is read or being read, or no range has room.
  void prefetch(const void* projector, std::int64_t low, std::int64_t high,
                std::int32_t partitions);
  // The store no longer ends [low, high] as read: never handed out again.
  void forget(std::int64_t low, std::int64_t high, std::int32_t partitions);
  // The projector stopped catching up: nothing is kept for it any more.
  void leave(const void* projector);

 private:
  struct Entry {
    std::int64_t low = 0;
    std::int64_t high = 0;
    std::int32_t partitions = 0;
    const void* asked_first = nullptr;
    bool rows_counted = false;
    bool ready = false;
    std::promise<std::shared_ptr<const SharedRange>> promise;
    std::shared_future<std::shared_ptr<const SharedRange>> result;
    std::set<const void*> wanted_by;  // catching up, below it, and it not taken yet
  };
  using Entries = std::list<std::shared_ptr<Entry>>;

  Entries::iterator find(std::int64_t low, std::int64_t high, std::int32_t partitions);
  std::shared_ptr<Entry> find_or_start(std::unique_lock<std::mutex>& lock, const void* projector,
                                       std::int64_t low, std::int64_t high,
                                       std::int32_t partitions);
  std::shared_ptr<Entry> start(const void* projector, std::int64_t low, std::int64_t high,
                               std::int32_t partitions, bool urgent);
  void note_progress(const void* projector, std::int64_t high);
  void drop_participant(const void* projector);
  void drop_idle_participants();
  void erase_unwanted();
  void evict_newest_ready(const void* projector);
  void read_loop();
  void stop_readers();

  const db::ConnectionPool& pool_;
  const Limits limits_;
  std::mutex mutex_;
  std::condition_variable changed_;  // entries erased, reads queued, stopping
  Entries entries_;
  std::list<std::shared_ptr<Entry>> queue_;  // reads not started, urgent ones first
  struct Participant {
    std::int64_t passed = 0;  // the high end of the last range it took
    std::chrono::steady_clock::time_point last_take;
  };
  std::map<const void*, Participant> participants_;
  bool stopping_ = false;
  std::vector<std::thread> readers_;
};

}  // namespace ledger::projections
