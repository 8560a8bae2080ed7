#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ledger/domain/decide.hpp"
#include "ledger/engine/snapshot_stats.hpp"

namespace ledger::engine {

// Aggregate snapshots in RocksDB (schemas/snapshot.fbs). Only a cache (DESIGN.md invariant 7):
// the engine trusts a snapshot only when its (version, hash) matches the event store, and a
// value that fails its checksum or the FlatBuffers verifier is deleted and reported as missing.
// A directory RocksDB cannot open is reported, wiped and recreated. Thread-safe.
class SnapshotStore {
 public:
  explicit SnapshotStore(const std::string& directory);
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  [[nodiscard]] std::optional<domain::StreamState> get(const std::string& stream_id);
  void put(const std::string& stream_id, const domain::StreamState& state);
  void remove(const std::string& stream_id);
  // Writes raw bytes under a stream's key (tests use it to plant corrupt values).
  void put_raw(const std::string& stream_id, const std::string& bytes);

  using Stats = SnapshotStats;
  [[nodiscard]] Stats stats() const;

  // Encoding, exposed for tests.
  [[nodiscard]] static std::string encode(const std::string& stream_id, const domain::StreamState& state);
  [[nodiscard]] static std::optional<domain::StreamState> decode(const std::string& stream_id,
                                                         const std::string& bytes);
  // `body` followed by its checksum, as encode() frames a value.
  [[nodiscard]] static std::string with_checksum(std::string body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::engine
