#pragma once
// What a projector's round knows of the event store for the positions it moves: each
// position's partition and hash (projector.cpp), made from the store's rows.

#include <cstdint>
#include <string>
#include <vector>

#include "ledger/domain/recorded_event.hpp"

namespace ledger::projections {

// What the store holds for positions (low, high]: each position's partition and hash, and the
// hash at `low` (what position low + 1 chains from).
struct StoredRange {
  std::int64_t low = 0;
  std::vector<std::int32_t> partition;  // [i]: position low + i (index 0 unused)
  std::vector<std::string> hash;        // [i]: position low + i
  [[nodiscard]] std::int32_t partition_of(std::int64_t position) const {
    return partition[static_cast<std::size_t>(position - low)];
  }
  [[nodiscard]] const std::string& hash_of(std::int64_t position) const {
    return hash[static_cast<std::size_t>(position - low)];
  }
  // Read before its round, in another snapshot (read ahead, or by another projector of the
  // process): every position of (low, high] was checked to chain from the one before it when
  // it was read, and the round checks the store still ends it with hash_of(high).
  bool read_ahead = false;
};

// The StoredRange of (low, high] (low > 0) or [1, high] made from `events`, the store's rows
// from max(low, 1) on, in order; throws ProjectionError naming the first position missing.
[[nodiscard]] StoredRange stored_range_of(std::int64_t low, std::int64_t high,
                                          const std::vector<domain::RecordedEvent>& events,
                                          std::int32_t partition_count);

// Checks that every event of (range.low, high] chains from the hash before it (`events` as
// stored_range_of took them); throws ProjectionError naming the first that does not.
void check_chain(const StoredRange& range, std::int64_t high,
                 const std::vector<domain::RecordedEvent>& events);

}  // namespace ledger::projections
