#pragma once

#include <cstdint>

namespace ledger::engine {

// Counters of the RocksDB snapshot cache (SnapshotStore), reported in EngineStats.
struct SnapshotStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t corrupt = 0;
  std::uint64_t written = 0;
  bool directory_rebuilt = false;  // RocksDB could not open the directory: wiped at start
};

}  // namespace ledger::engine
