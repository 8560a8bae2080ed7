#pragma once
// `ledger rebuild`: a read model rebuilt from the event store (not from Kafka, whose retention
// is not the history) into shadow tables, then swapped in atomically. Queries keep answering
// from the old tables and the live projector keeps running until the swap; after it the
// projector goes on from the rebuilt watermark (it reads its watermark under a row lock in
// every batch), so nothing is skipped and nothing applied twice.

#include <cstdint>
#include <stdexcept>

#include "ledger/projections/projector.hpp"
#include "ledger/replay/replay.hpp"

namespace ledger::replay {

struct RebuildOptions {
  // Events per shadow transaction (a kill loses at most one), in whole reads: a transaction
  // commits once it holds this many or more.
  std::size_t batch_events = 500'000;
  std::size_t read_events = 50'000;  // events read from the log and folded at a time
  // Folded rows (balances) the rebuild keeps in memory between its transactions: it reads a
  // row only the first time, and writes a changed one once per transaction, not per read.
  // Memory: about 250 bytes a row, this many plus those one transaction touches.
  std::size_t states_kept = 1'000'000;
  bool restart = false;               // drop a half-done rebuild instead of resuming it
  // Swap once the shadow is this close to the head; the rest is applied inside the swap.
  std::int64_t swap_within = 20'000;
  // Passes in a row after which the shadow, still beyond swap_within, is no closer to the head
  // than when they started (the log grows at least as fast as the rebuild reads it): the
  // rebuild stops chasing the head. If it is then at most swap_stretch_max events behind, the
  // swap applies them while the live projector waits for it; else the rebuild fails, its
  // progress kept for the next run to resume.
  int lagging_passes_max = 3;
  std::int64_t swap_stretch_max = 500'000;
};

// The event store grows at least as fast as the rebuild reads it, and the swap would have to
// apply more than RebuildOptions::swap_stretch_max events with the live projector waiting.
class RebuildOutrun : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RebuildResult {
  GlobalPosition watermark{0};     // of the swapped-in read model
  GlobalPosition resumed_from{0};  // 0: this run started from the first event
  std::int64_t events_applied = 0; // by this run
  int passes = 0;                  // reads of the log up to the head of the moment, before the swap
  // The log grew as fast as the rebuild read it (lagging_passes_max) and the swap applied the
  // rest: swap_applied events (also the last stretch of every rebuild), the projector waiting.
  bool outrun = false;
  std::int64_t swap_applied = 0;
};

// Needs the owner role: it creates, drops and renames tables. A failure or a kill at any
// point leaves the live read model untouched, and the next run resumes from the shadow's
// last committed batch (unless options.restart). Throws RebuildOutrun when the log outgrows it
// beyond options.swap_stretch_max.
RebuildResult rebuild(db::ConnectionPool& owner_pool, projections::ProjectionKind kind,
                      const RebuildOptions& options, const Progress& progress = {});

}  // namespace ledger::replay
