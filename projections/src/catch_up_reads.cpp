#include "catch_up_reads.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "ledger/engine/event_store.hpp"

namespace ledger::projections {

using Clock = std::chrono::steady_clock;

CatchUpReads::CatchUpReads(const db::ConnectionPool& pool, Limits limits)
    : pool_(pool), limits_(limits) {
  try {
    for (std::size_t i = 0; i < std::max<std::size_t>(limits_.reader_threads, 1); ++i) {
      readers_.emplace_back([this] { read_loop(); });
    }
  } catch (...) {
    stop_readers();  // a thread that could not start: those that did are joined, not leaked
    throw;
  }
}

void CatchUpReads::stop_readers() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (auto& reader : readers_) reader.join();
  readers_.clear();
}

CatchUpReads::~CatchUpReads() {
  stop_readers();
  // Nobody waits any more (the projectors hold this object until they are gone), but a
  // promise destroyed unset would say "broken promise" to a waiter that is.
  for (auto& entry : queue_) {
    entry->promise.set_exception(std::make_exception_ptr(std::runtime_error("shutting down")));
  }
}

CatchUpReads::Taken CatchUpReads::take(const void* projector, std::int64_t low, std::int64_t high,
                                       std::int32_t partitions) {
  std::shared_future<std::shared_ptr<const SharedRange>> result;
  Taken taken;
  {
    std::unique_lock lock(mutex_);
    const auto entry = find_or_start(lock, projector, low, high, partitions);
    entry->wanted_by.erase(projector);
    taken.read_for_another = entry->asked_first != projector;
    if (!entry->rows_counted) {
      entry->rows_counted = true;
      taken.rows_read = -1;  // filled in below, once the read is done
    }
    result = entry->result;
  }
  changed_.notify_all();
  taken.range = result.get();
  if (taken.rows_read < 0) taken.rows_read = static_cast<std::int64_t>(taken.range->events.size());
  {
    const std::lock_guard lock(mutex_);
    note_progress(projector, high);
  }
  changed_.notify_all();
  return taken;
}

void CatchUpReads::request(const void* projector, std::int64_t low, std::int64_t high,
                           std::int32_t partitions) {
  {
    std::unique_lock lock(mutex_);
    (void)find_or_start(lock, projector, low, high, partitions);
  }
  changed_.notify_all();
}

void CatchUpReads::prefetch(const void* projector, std::int64_t low, std::int64_t high,
                            std::int32_t partitions) {
  {
    const std::lock_guard lock(mutex_);
    if (find(low, high, partitions) != entries_.end()) return;
    drop_idle_participants();
    erase_unwanted();
    if (entries_.size() >= limits_.ranges_max) return;  // the round that needs it reads it
    start(projector, low, high, partitions, false);
  }
  changed_.notify_all();
}

std::shared_ptr<CatchUpReads::Entry> CatchUpReads::find_or_start(std::unique_lock<std::mutex>& lock,
                                                                 const void* projector,
                                                                 std::int64_t low, std::int64_t high,
                                                                 std::int32_t partitions) {
  const auto deadline = Clock::now() + limits_.lead_wait;
  while (true) {
    const auto found = find(low, high, partitions);
    if (found != entries_.end()) return *found;  // maybe asked for by another while this waited
    drop_idle_participants();
    erase_unwanted();
    if (entries_.size() < limits_.ranges_max) break;
    // Full. Ahead of another projector, wait for it to take what is kept for it; the one
    // furthest behind never waits. Either way, then the ready range needed last goes (read
    // again by whoever reaches it).
    const bool ahead = std::any_of(participants_.begin(), participants_.end(), [&](const auto& p) {
      return p.first != projector && p.second.passed < low;
    });
    if (!ahead || changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      if (find(low, high, partitions) != entries_.end()) continue;
      evict_newest_ready(projector);
      break;
    }
  }
  return start(projector, low, high, partitions, true);
}

void CatchUpReads::forget(std::int64_t low, std::int64_t high, std::int32_t partitions) {
  {
    const std::lock_guard lock(mutex_);
    const auto found = find(low, high, partitions);
    if (found != entries_.end() && (*found)->ready) entries_.erase(found);
  }
  changed_.notify_all();
}

void CatchUpReads::leave(const void* projector) {
  {
    const std::lock_guard lock(mutex_);
    drop_participant(projector);
    erase_unwanted();
  }
  changed_.notify_all();
}

CatchUpReads::Entries::iterator CatchUpReads::find(std::int64_t low, std::int64_t high,
                                                   std::int32_t partitions) {
  return std::find_if(entries_.begin(), entries_.end(), [&](const auto& entry) {
    return entry->low == low && entry->high == high && entry->partitions == partitions;
  });
}

std::shared_ptr<CatchUpReads::Entry> CatchUpReads::start(const void* projector, std::int64_t low,
                                                         std::int64_t high,
                                                         std::int32_t partitions, bool urgent) {
  auto entry = std::make_shared<Entry>();
  entry->low = low;
  entry->high = high;
  entry->partitions = partitions;
  entry->asked_first = projector;
  entry->result = entry->promise.get_future().share();
  for (const auto& [participant, progress] : participants_) {
    if (progress.passed <= low) entry->wanted_by.insert(participant);
  }
  entry->wanted_by.insert(projector);
  entries_.push_back(entry);
  if (urgent) {
    queue_.push_front(entry);
  } else {
    queue_.push_back(entry);
  }
  return entry;
}

void CatchUpReads::note_progress(const void* projector, std::int64_t high) {
  auto& participant = participants_[projector];
  participant.passed = std::max(participant.passed, high);
  participant.last_take = Clock::now();
  for (const auto& entry : entries_) {
    if (entry->high <= participant.passed) entry->wanted_by.erase(projector);
  }
  erase_unwanted();
}

void CatchUpReads::drop_participant(const void* projector) {
  participants_.erase(projector);
  for (const auto& entry : entries_) entry->wanted_by.erase(projector);
}

void CatchUpReads::drop_idle_participants() {
  const auto now = Clock::now();
  for (auto it = participants_.begin(); it != participants_.end();) {
    const void* projector = it->first;
    if (now - it->second.last_take < limits_.idle_after) {
      ++it;
      continue;
    }
    it = participants_.erase(it);
    for (const auto& entry : entries_) entry->wanted_by.erase(projector);
  }
}

void CatchUpReads::erase_unwanted() {
  entries_.remove_if([](const auto& entry) { return entry->ready && entry->wanted_by.empty(); });
}

void CatchUpReads::evict_newest_ready(const void* projector) {
  auto newest = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const auto& entry = **it;
    if (!entry.ready || entry.wanted_by.count(projector) > 0) continue;
    if (newest == entries_.end() || entry.low > (*newest)->low) newest = it;
  }
  if (newest != entries_.end()) entries_.erase(newest);
}

void CatchUpReads::read_loop() {
  std::unique_ptr<engine::LogCopyReader> reader;
  while (true) {
    std::shared_ptr<Entry> entry;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      entry = queue_.front();
      queue_.pop_front();
    }
    try {
      if (!reader) {
        reader =
            std::make_unique<engine::LogCopyReader>(pool_, GlobalPosition(1), GlobalPosition(1));
      }
      auto range = std::make_shared<SharedRange>();
      reader->read_range(GlobalPosition(std::max<std::int64_t>(entry->low, 1)),
                         GlobalPosition(entry->high), range->events);
      range->stored = stored_range_of(entry->low, entry->high, range->events, entry->partitions);
      check_chain(range->stored, entry->high, range->events);
      range->stored.read_ahead = true;
      {
        const std::lock_guard lock(mutex_);
        entry->ready = true;
        erase_unwanted();
      }
      entry->promise.set_value(std::move(range));
    } catch (const std::exception& failure) {
      reader.reset();  // its connection may be inside a COPY, or gone
      spdlog::debug("catch-up reads: positions {} to {} failed: {}", entry->low, entry->high,
                    failure.what());
      {
        // Whoever asks for it next reads it again; whoever waits for it now fails its round.
        const std::lock_guard lock(mutex_);
        entries_.remove(entry);
      }
      entry->promise.set_exception(std::current_exception());
    }
    changed_.notify_all();
  }
}

}  // namespace ledger::projections
