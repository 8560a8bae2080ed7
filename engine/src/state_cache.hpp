#pragma once
// LRU cache of stream states, bounded in streams. Owned by the engine's writer thread.

#include <list>
#include <string>
#include <unordered_map>

#include "ledger/engine/domain.hpp"

namespace ledger::engine {

class StateCache {
 public:
  explicit StateCache(std::size_t streams_max) : streams_max_(streams_max) {}

  [[nodiscard]] const StreamState* find(const std::string& stream_id) {
    auto found = index_.find(stream_id);
    if (found == index_.end()) return nullptr;
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
  }

  void erase(const std::string& stream_id) {
    auto found = index_.find(stream_id);
    if (found == index_.end()) return;
    entries_.erase(found->second);
    index_.erase(found);
  }

  void clear() {
    index_.clear();
    entries_.clear();
  }

  [[nodiscard]] std::size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<std::string, StreamState>;
  std::size_t streams_max_;
  std::list<Entry> entries_;
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace ledger::engine
