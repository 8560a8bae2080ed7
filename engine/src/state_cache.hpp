#pragma once
// LRU cache of stream states, bounded in streams. Owned by the engine's writer thread; only
// counts() may be read from other threads.

#include <atomic>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

#include "ledger/domain/decide.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

class StateCache {
 public:
  explicit StateCache(std::size_t streams_max) : streams_max_(streams_max) {}

  [[nodiscard]] const StreamState* find(const std::string& stream_id) {
    auto found = index_.find(stream_id);
    if (found == index_.end()) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    hits_.fetch_add(1, std::memory_order_relaxed);
    entries_.splice(entries_.begin(), entries_, found->second);
    return &found->second->second;
  }

  void put(const std::string& stream_id, StreamState state) {
    if (streams_max_ == 0) return;
    auto found = index_.find(stream_id);
    if (found != index_.end()) {
      found->second->second = std::move(state);
      entries_.splice(entries_.begin(), entries_, found->second);
      return;
    }
    entries_.emplace_front(stream_id, std::move(state));
    index_.emplace(stream_id, entries_.begin());
    while (index_.size() > streams_max_) {
      index_.erase(entries_.back().first);
      entries_.pop_back();
    }
    streams_.store(index_.size(), std::memory_order_relaxed);
  }

  void erase(const std::string& stream_id) {
    auto found = index_.find(stream_id);
    if (found == index_.end()) return;
    entries_.erase(found->second);
    index_.erase(found);
    streams_.store(index_.size(), std::memory_order_relaxed);
  }

  void clear() {
    index_.clear();
    entries_.clear();
    streams_.store(0, std::memory_order_relaxed);
  }

  [[nodiscard]] std::size_t size() const { return index_.size(); }

  struct Counts {
    std::size_t streams = 0;
    std::size_t streams_max = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
  };
  [[nodiscard]] Counts counts() const {
    return {streams_.load(std::memory_order_relaxed), streams_max_,
            hits_.load(std::memory_order_relaxed), misses_.load(std::memory_order_relaxed)};
  }

 private:
  using Entry = std::pair<std::string, domain::StreamState>;
  std::size_t streams_max_;
  std::list<Entry> entries_;
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  std::atomic<std::size_t> streams_{0};
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
};

}  // namespace ledger::engine
