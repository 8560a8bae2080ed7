#pragma once
// The writer's cache of stream states, bounded in streams. Owned by the engine's writer thread;
// only counts() may be read from other threads.
//
// What is read again stays: accounts, loans, pending holds and every other stream live in an
// LRU. A settled transfer (posted, voided or expired; or one that does not exist) is read again
// only by a retry or a late post or void of the same id, so its stream goes to a FIFO of its
// own, bounded to an eighth of the cache (settled_share_divisor): a transfer that settles no
// longer evicts an account, and write-once transfer streams no longer fill the cache. The
// policy is decided in put() from the state itself; callers do not change.
//
// Why a bounded FIFO and not "do not keep": the pipelined writer (decide_while_committing)
// decides the next batch on the cached states before the previous batch committed. A stream
// that batch changed must still be found in the cache: reloaded from the store it would be
// stale (its events are still in flight), and the decision built on it would lose at the
// append and be decided again. Dropped on put, a settled transfer would be exactly that stream
// for the next command naming it. In the FIFO it stays until an eighth of the cache of newer
// settled transfers came after it (62,500 with the default 500,000 streams, against at most
// three batches in flight: 6,000 commands at the default batch size), so what the pipeline just decided is found, as it
// is for every other stream while the cache is larger than the streams in flight. Beyond that
// (a tiny cache) the writer sees that a command names a stream a batch in flight wrote and the
// cache lost, and waits for the batches in flight before deciding it (the pipeline's
// names_held_uncached): the cache is only a cache.
//
// Whatever leaves the cache is read again from the snapshot store or the event store: slower,
// never different.

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

#include "ledger/domain/decide.hpp"
#include "ledger/engine/engine.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

class StateCache {
 public:
  // Settled transfers take at most 1 / settled_share_divisor of the streams.
  static constexpr std::size_t settled_share_divisor = 8;

  explicit StateCache(std::size_t streams_max)
      : streams_max_(streams_max), settled_max_(streams_max / settled_share_divisor) {}

  // The cached state of `stream_id`, or null; counted as a hit or a miss of its kind.
  [[nodiscard]] const StreamState* find(const std::string& stream_id);

  // Caches `state` as the current state of `stream_id`, in the LRU or, settled, in the FIFO
  // (moving it between the two when its transfer settled), evicting beyond the bounds.
  void put(const std::string& stream_id, StreamState state);

  // The cached state of `stream_id`, or null, neither counted nor made recent (for keeping the
  // cache coherent, which is not a use).
  [[nodiscard]] const StreamState* peek(const std::string& stream_id) const;

  void erase(const std::string& stream_id);
  void clear();

  [[nodiscard]] std::size_t size() const { return index_.size(); }

  struct Counts {
    std::size_t streams = 0;
    std::size_t streams_max = 0;
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    StateCacheBreakdown breakdown;
  };
  [[nodiscard]] Counts counts() const;

  // Whether put() keeps `state` with the settled transfers.
  [[nodiscard]] static bool is_settled(const StreamState& state);
  [[nodiscard]] static StateCacheKind kind_of(const std::string& stream_id);

 private:
  using Entry = std::pair<std::string, StreamState>;
  struct Slot {
    std::list<Entry>::iterator entry;
    bool settled = false;
  };

  std::list<Entry>& list_of(const Slot& slot) { return slot.settled ? settled_ : recent_; }
  void evict_oldest(std::list<Entry>& entries);
  void publish_sizes();

  std::size_t streams_max_;
  std::size_t settled_max_;
  std::list<Entry> recent_;   // LRU, most recently used first
  std::list<Entry> settled_;  // FIFO, newest first
  std::unordered_map<std::string, Slot> index_;
  std::atomic<std::size_t> streams_{0};
  std::atomic<std::size_t> settled_streams_{0};
  std::array<std::atomic<std::uint64_t>, state_cache_kinds> hits_{};
  std::array<std::atomic<std::uint64_t>, state_cache_kinds> misses_{};
};

}  // namespace ledger::engine
