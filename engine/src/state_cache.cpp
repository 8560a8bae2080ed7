#include "state_cache.hpp"

#include <variant>

namespace ledger::engine {

namespace {

std::size_t index_of(StateCacheKind kind) { return static_cast<std::size_t>(kind); }

}  // namespace

StateCacheKind StateCache::kind_of(const std::string& stream_id) {
  if (is_stream_of(stream_id, StreamKind::account)) return StateCacheKind::account;
  if (is_stream_of(stream_id, StreamKind::transfer)) return StateCacheKind::transfer;
  if (is_stream_of(stream_id, StreamKind::loan)) return StateCacheKind::loan;
  return StateCacheKind::other;
}

bool StateCache::is_settled(const StreamState& state) {
  const auto* transfer = std::get_if<TransferState>(&state.aggregate);
  // A pending hold is posted, voided or expired later: it is read again.
  return transfer != nullptr && !(transfer->exists && transfer->status == TransferStatus::pending);
}

const StreamState* StateCache::find(const std::string& stream_id) {
  const std::size_t kind = index_of(kind_of(stream_id));
  auto found = index_.find(stream_id);
  if (found == index_.end()) {
    misses_[kind].fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  hits_[kind].fetch_add(1, std::memory_order_relaxed);
  // A settled transfer keeps its place in the FIFO: a read does not make it stay longer.
  if (!found->second.settled) recent_.splice(recent_.begin(), recent_, found->second.entry);
  return &found->second.entry->second;
}

const StreamState* StateCache::peek(const std::string& stream_id) const {
  const auto found = index_.find(stream_id);
  return found == index_.end() ? nullptr : &found->second.entry->second;
}

void StateCache::put(const std::string& stream_id, StreamState state) {
  if (streams_max_ == 0) return;
  const bool settled = is_settled(state);
  auto found = index_.find(stream_id);
  if (found != index_.end()) {
    Slot& slot = found->second;
    if (slot.settled == settled) {
      // Put again (decided again): newest in its list, so the pipeline finds it while in flight.
      slot.entry->second = std::move(state);
      auto& entries = list_of(slot);
      entries.splice(entries.begin(), entries, slot.entry);
      return;
    }
    // A hold that settled moves to the FIFO (never leaving its pending state behind).
    list_of(slot).erase(slot.entry);
    index_.erase(found);
  }
  if (settled && settled_max_ == 0) {
    publish_sizes();
    return;
  }
  auto& entries = settled ? settled_ : recent_;
  entries.emplace_front(stream_id, std::move(state));
  index_.emplace(stream_id, Slot{entries.begin(), settled});
  while (settled_.size() > settled_max_) evict_oldest(settled_);
  // Beyond the bound: the LRU's least recently used goes (settled transfers already keep to
  // their share); the FIFO only when nothing else is left.
  while (index_.size() > streams_max_) evict_oldest(recent_.empty() ? settled_ : recent_);
  publish_sizes();
}

void StateCache::erase(const std::string& stream_id) {
  auto found = index_.find(stream_id);
  if (found == index_.end()) return;
  list_of(found->second).erase(found->second.entry);
  index_.erase(found);
  publish_sizes();
}

void StateCache::clear() {
  index_.clear();
  recent_.clear();
  settled_.clear();
  publish_sizes();
}

StateCache::Counts StateCache::counts() const {
  Counts counts;
  counts.streams = streams_.load(std::memory_order_relaxed);
  counts.streams_max = streams_max_;
  counts.breakdown.settled_transfer_streams = settled_streams_.load(std::memory_order_relaxed);
  for (std::size_t kind = 0; kind < state_cache_kinds; ++kind) {
    auto& lookups = counts.breakdown.lookups.at(kind);
    lookups.hits = hits_.at(kind).load(std::memory_order_relaxed);
    lookups.misses = misses_.at(kind).load(std::memory_order_relaxed);
    counts.hits += lookups.hits;
    counts.misses += lookups.misses;
  }
  return counts;
}

void StateCache::evict_oldest(std::list<Entry>& entries) {
  index_.erase(entries.back().first);
  entries.pop_back();
}

void StateCache::publish_sizes() {
  streams_.store(index_.size(), std::memory_order_relaxed);
  settled_streams_.store(settled_.size(), std::memory_order_relaxed);
}

}  // namespace ledger::engine
