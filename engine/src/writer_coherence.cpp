#include "writer_coherence.hpp"

#include <spdlog/spdlog.h>

#include "stream_loader.hpp"

namespace ledger::engine {

namespace {

// Folds another writer's `events` into the cached states they continue; drops a state an event
// does not continue (the cache missed one), and skips events a state already holds (read from
// the store after they were committed). `dropped` streams are out of the cache already.
void fold_into(StateCache& cache, const std::vector<StoredEvent>& events,
               const std::unordered_set<std::string>& dropped) {
  for (const auto& event : events) {
    if (dropped.contains(event.stream_id)) continue;
    const StreamState* cached = cache.peek(event.stream_id);
    if (cached == nullptr || cached->version.value() >= event.version) continue;
    if (cached->version.value() + 1 != event.version) {
      cache.erase(event.stream_id);
      continue;
    }
    StreamState state = *cached;
    try {
      fold_event(event.stream_id, state, event.version, event.type, event.payload, event.hash);
    } catch (const std::exception& error) {
      spdlog::warn("another writer's event could not be folded into the cache ({}); dropping {}", error.what(),
                   event.stream_id);
      cache.erase(event.stream_id);
      continue;
    }
    cache.put(event.stream_id, std::move(state));
  }
}

}  // namespace

bool WriterCoherence::must_drain() {
  std::lock_guard lock(mutex_);
  return evict_all_;
}

DecisionStart WriterCoherence::sync(StateCache& cache, const HeldStreams& held) {
  std::vector<std::string> streams;
  std::vector<StoredEvent> foreign;
  std::vector<std::pair<std::string, StreamState>> committed;
  DecisionStart start;
  bool all = false;
  {
    std::lock_guard lock(mutex_);
    if (evict_all_ && held) {
      start.epoch = applied_epoch_;
      return start;
    }
    streams.swap(evictions_);
    foreign.swap(foreign_);
    committed.swap(committed_);
    all = evict_all_;
    evict_all_ = false;
    applied_epoch_ = epoch_;
    start.epoch = epoch_;
    if (held) {
      // Held streams stay pending: evictions as evictions, another writer's events and committed
      // states as they are (folding checks versions, and so does putting a committed state, so
      // neither overwrites a later commit of its stream); posts made meanwhile join them. The
      // append checks the decision against the store for them (a system account's stream is
      // renumbered there, any other one makes the commands naming it lose).
      std::unordered_set<std::string> seen;
      std::vector<std::string> evict_later;
      auto defer = [&](const std::string& stream_id, bool evict) {
        if (!held(stream_id)) return false;
        if (seen.insert(stream_id).second) start.deferred.push_back(stream_id);
        if (evict) evict_later.push_back(stream_id);
        return true;
      };
      std::erase_if(streams, [&](const std::string& stream_id) { return defer(stream_id, true); });
      std::vector<StoredEvent> waiting_events;
      std::erase_if(foreign, [&](StoredEvent& event) {
        if (!defer(event.stream_id, false)) return false;
        waiting_events.push_back(std::move(event));
        return true;
      });
      foreign_ = std::move(waiting_events);  // before any posted later: they apply in order
      std::vector<std::pair<std::string, StreamState>> waiting;
      std::erase_if(committed, [&](auto& entry) {
        if (!defer(entry.first, false)) return false;
        waiting.push_back(std::move(entry));
        return true;
      });
      committed_ = std::move(waiting);  // before any posted later: they apply in order
      std::sort(evict_later.begin(), evict_later.end());
      evict_later.erase(std::unique(evict_later.begin(), evict_later.end()), evict_later.end());
      evictions_.insert(evictions_.end(), evict_later.begin(), evict_later.end());
    }
  }
  if (all) {
    cache.clear();
    return start;
  }
  // Committed states first: an eviction or another writer's event posted later applies on top.
  // One older than what the cache holds (this engine committed the stream again since, or read
  // it from the store) is not put back over it; at the same version it replaces what may be a
  // loser's decided state.
  for (auto& [stream_id, state] : committed) {
    const StreamState* cached = cache.peek(stream_id);
    if (cached != nullptr && cached->version.value() > state.version.value()) {
      cache.erase(stream_id);  // which of the two is current is not known here: read it again
      continue;
    }
    cache.put(stream_id, std::move(state));
  }
  for (const auto& stream_id : streams) cache.erase(stream_id);
  if (!foreign.empty()) fold_into(cache, foreign, {streams.begin(), streams.end()});
  return start;
}

void WriterCoherence::evict(std::vector<std::string> streams, bool all) {
  std::lock_guard lock(mutex_);
  post(std::move(streams), all);
}

void WriterCoherence::fold_foreign(std::vector<StoredEvent> events) {
  std::vector<std::string> streams;
  streams.reserve(events.size());
  for (const auto& event : events) streams.push_back(event.stream_id);
  std::lock_guard lock(mutex_);
  if (foreign_.empty()) {
    foreign_ = std::move(events);
  } else {
    std::move(events.begin(), events.end(), std::back_inserter(foreign_));
  }
  ++epoch_;
  remember_moved(std::move(streams), false);
}

void WriterCoherence::remember_moved(std::vector<std::string> streams, bool all) {
  moved_.push_back({epoch_, std::move(streams), all});
  if (moved_.size() > moved_max) {
    moved_dropped_through_ = moved_.front().epoch;
    moved_.pop_front();
  }
}

void WriterCoherence::evict_after_losers(std::vector<std::string> unreliable_streams,
                                         std::vector<std::string> loser_streams,
                                         std::vector<std::pair<std::string, StreamState>> committed) {
  std::lock_guard lock(mutex_);
  std::move(committed.begin(), committed.end(), std::back_inserter(committed_));
  post(std::move(unreliable_streams), false);
  if (loser_streams.empty()) return;
  taints_.emplace_back(epoch_, std::move(loser_streams));
  if (taints_.size() > taints_max) {
    taints_dropped_through_ = taints_.front().first;
    taints_.pop_front();
  }
}

void WriterCoherence::post(std::vector<std::string> streams, bool all) {
  std::vector<std::string> named = streams;
  if (evictions_.empty()) {
    evictions_ = std::move(streams);
  } else {
    evictions_.insert(evictions_.end(), streams.begin(), streams.end());
  }
  evict_all_ = evict_all_ || all;
  ++epoch_;
  remember_moved(std::move(named), all);
}

SplitOutcome WriterCoherence::reconcile(pqxx::work& work, const LockedHead& head,
                                        std::vector<Pending>& batch, Decided& decided,
                                        const DecisionStart& start) {
  const std::uint64_t decided_at = start.epoch;
  const std::int64_t own_head = own_head_.load();
  const bool foreign = own_head != head.position;
  bool evicted_since = false;
  bool taints_lost = false;
  std::unordered_set<std::string> tainted(start.deferred.begin(), start.deferred.end());
  {
    std::lock_guard lock(mutex_);
    evicted_since = epoch_ != decided_at;
    taints_lost = decided_at < taints_dropped_through_;
    for (const auto& [epoch, streams] : taints_) {
      if (epoch > decided_at) tainted.insert(streams.begin(), streams.end());
    }
  }
  if (taints_lost) {
    // Too old to know what it built on: all of it is decided again, and the cache drops what
    // it decided.
    SplitOutcome outcome;
    for (const auto& row : decided.rows) outcome.unreliable_streams.push_back(row.stream_id);
    outcome.loser_streams = outcome.unreliable_streams;
    outcome.losers = std::move(batch);
    batch.clear();
    decided = Decided{};
    return outcome;
  }
  if (foreign) {
    // Another writer committed since this engine's last append (or the last is unknown).
    const bool listable = own_head != unknown_head && head.position - own_head <= moved_window_positions_max;
    if (listable) {
      fold_foreign(events_between(work, own_head, head.position));
    } else {
      evict({}, true);
    }
  }
  // A refusal reads streams no version check covers: those are checked even alone.
  if (!foreign && !evicted_since && tainted.empty() && decided.unwritten_reads.empty()) return {};
  return split_stale(batch, decided, stored_versions_of(work, decided, decided_at, tainted), tainted);
}

std::optional<LockedHead> WriterCoherence::own_head_if_unmoved(const Decided& decided,
                                                               const DecisionStart& start) {
  // reconcile()'s early return, for a head that is this engine's own.
  if (!decided.unwritten_reads.empty() || !start.deferred.empty()) return std::nullopt;
  std::lock_guard lock(mutex_);
  const std::int64_t own_head = own_head_.load();
  if (own_head == unknown_head || epoch_ != start.epoch || start.epoch < taints_dropped_through_) {
    return std::nullopt;
  }
  for (const auto& [epoch, streams] : taints_) {
    if (epoch > start.epoch) return std::nullopt;
  }
  return LockedHead{own_head, own_head_hash_};
}

void WriterCoherence::committed(LockedHead head_after) {
  std::lock_guard lock(mutex_);
  own_head_hash_ = std::move(head_after.hash);
  own_head_.store(head_after.position);
}

StoredVersions WriterCoherence::stored_versions_of(pqxx::work& work, const Decided& decided,
                                                   std::uint64_t decided_at,
                                                   const std::unordered_set<std::string>& tainted) {
  // What may differ from the decision: streams another writer's events or an eviction named
  // since it started (this append's own window of foreign events included: posted above),
  // tainted ones, and the reads of refusals. Every other stream is at the version the batch
  // decided on: only this engine's own commits moved it since, and the decision built on those
  // (a stream a batch in flight wrote is never read from the store meanwhile: the pipeline's
  // names_held_uncached).
  std::unordered_set<std::string> moved(tainted.begin(), tainted.end());
  bool every_stream = false;
  {
    std::lock_guard lock(mutex_);
    every_stream = decided_at < moved_dropped_through_;
    for (const auto& entry : moved_) {
      if (entry.epoch <= decided_at) continue;
      if (entry.all) every_stream = true;
      moved.insert(entry.streams.begin(), entry.streams.end());
    }
  }
  for (const auto& read : decided.unwritten_reads) moved.insert(read.stream_id);
  std::vector<std::string> streams = streams_to_check(decided);
  if (every_stream) return read_stored_versions(work, streams);
  StoredVersions stored;
  for (const auto& row : decided.rows) {
    // A stream's first row in the batch follows the version it was decided on.
    stored.try_emplace(row.stream_id, row.version.value() - 1);
  }
  std::erase_if(streams, [&](const std::string& id) { return !moved.contains(id); });
  if (!streams.empty()) {
    for (auto& [stream_id, version] : read_stored_versions(work, streams)) stored[stream_id] = version;
  }
  return stored;
}

}  // namespace ledger::engine
