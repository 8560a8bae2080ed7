#pragma once
// The command pipeline (private to the engine): the queue, the writer thread that decides
// batches (group commit), the committer thread that appends them while the next is decided,
// conflict and failure handling, and recovery of batches a failed commit voided.

#include <memory>

#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "snapshot_writer.hpp"
#include "uuid_generator.hpp"

namespace ledger::engine {

class Pipeline {
 public:
  // `settings.clock_us` and `settings.generate_id` are set; `own_ids`: generate_id makes
  // UUIDv7s. `snapshots` and `snapshot_writer` are null without snapshots. Starts its threads.
  Pipeline(const EngineSettings& settings, bool own_ids, db::ConnectionPool& pool,
           UuidGenerator& uuids, SnapshotStore* snapshots, SnapshotWriter* snapshot_writer);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Throws DatabaseCircuitOpen, EngineOverloaded or EngineUnavailable (stopping).
  void submit(domain::Command command, Engine::Completion completion);
  // Stops accepting, finishes everything queued, joins the threads. Idempotent.
  void stop();

  // Everything but the snapshot counters.
  [[nodiscard]] EngineStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::engine
