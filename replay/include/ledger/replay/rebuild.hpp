#pragma once
// `ledger rebuild`: a read model rebuilt from the event store (not from Kafka, whose retention
// is not the history) into shadow tables, then swapped in atomically. Queries keep answering
// from the old tables and the live projector keeps running until the swap; after it the
// projector goes on from the rebuilt watermark (it reads its watermark under a row lock in
// every batch), so nothing is skipped and nothing applied twice.

#include <cstdint>

#include "ledger/projections/projector.hpp"
#include "ledger/replay/replay.hpp"

namespace ledger::replay {

struct RebuildOptions {
  std::size_t batch_events = 50'000;  // events per shadow transaction
  bool restart = false;               // drop a half-done rebuild instead of resuming it
  // Swap once the shadow is this close to the head; the rest is applied inside the swap.
  std::int64_t swap_within = 20'000;
  // Passes in a row that do not bring the shadow to 3/4 of its distance from the head (the log
  // grows about as fast as the rebuild reads it) before the rebuild stops chasing the head and
  // the swap applies the rest, however long, while the live projector waits for it.
  int lagging_passes_max = 3;
};

struct RebuildResult {
  GlobalPosition watermark{0};     // of the swapped-in read model
  GlobalPosition resumed_from{0};  // 0: this run started from the first event
  std::int64_t events_applied = 0; // by this run
  int passes = 0;                  // reads of the log up to the head of the moment, before the swap
  // The log grew faster than the rebuild read it (lagging_passes_max): the swap applied the
  // rest in its own transaction, swap_applied events, while the live projector waited.
  bool outrun = false;
  std::int64_t swap_applied = 0;
};

// Needs the owner role: it creates, drops and renames tables. A failure or a kill at any
// point leaves the live read model untouched, and the next run resumes from the shadow's
// last committed batch (unless options.restart).
RebuildResult rebuild(db::ConnectionPool& owner_pool, projections::ProjectionKind kind,
                      const RebuildOptions& options, const Progress& progress = {});

}  // namespace ledger::replay
