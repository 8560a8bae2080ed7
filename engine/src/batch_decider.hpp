#pragma once
// Phase one of a batch (private to the engine): ids, idempotency, stream loads (cache,
// snapshots, store) and the domain's decisions, ending in the rows to append.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <pqxx/pqxx>

#include "appender.hpp"
#include "ledger/domain/decide.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "snapshot_writer.hpp"
#include "state_cache.hpp"
#include "uuid_generator.hpp"

namespace ledger::engine {

// A queued command and how to answer it.
struct Pending {
  Command command;
  Engine::Completion completion;
};

// Per command of a batch: how it is answered.
struct Slot {
  enum class Kind { decide, answered, follows } kind = Kind::decide;
  CommandOutcome outcome;    // answered (replay, reused key) or decided
  std::size_t follows = 0;   // same idempotency key as an earlier command of the batch
  std::string request_hash;  // SHA-256 of the fingerprint, when keyed
  std::size_t first_event = 0;
  std::size_t end_event = 0;
};

// What deciding a batch produced: the answers so far and the rows to append.
struct Decided {
  std::vector<Slot> slots;
  std::vector<RecordedEvent> rows;
  std::vector<ExpiryRecord> expiries;
  bool keyed = false;  // holds idempotency records to store
  // When a command was refused or wrote nothing: the streams the batch read and does not
  // write, as read.
  std::vector<StreamRead> unwritten_reads;
};

// A command whose events cannot be stored faithfully: an encoded event did not decode back to
// the same bytes. It is refused alone (its batch is split until it is), never appended.
class UnstorableCommand : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The transaction a batch is decided in, opened by the first call: deciding on cached states
// alone needs no round trip to the store.
using StoreReader = std::function<pqxx::transaction_base&()>;

// Reads the streams a batch needs that the cache lacks (load_streams through the StoreReader
// unless the caller gives another way).
using MissingStreamsLoader =
    std::function<std::unordered_map<std::string, StreamState>(const std::vector<std::string>&)>;

// Used on the writer thread only.
class BatchDecider {
 public:
  // `generate_id` fills ids a command left empty; `own_ids`: it generates UUIDv7s, which name
  // no existing stream. `snapshots` and `snapshot_writer` may be null.
  BatchDecider(std::function<std::string()> generate_id, bool own_ids,
               std::function<std::int64_t()> clock_us, UuidGenerator& uuids, StateCache& cache,
               SnapshotStore* snapshots, SnapshotWriter* snapshot_writer)
      : generate_id_(std::move(generate_id)),
        own_ids_(own_ids),
        clock_us_(std::move(clock_us)),
        uuids_(uuids),
        cache_(cache),
        snapshots_(snapshots),
        snapshot_writer_(snapshot_writer) {}

  // Fills empty ids. Streams named by ids the engine generated cannot exist yet: they are
  // remembered so that nobody looks them up.
  void assign_ids(std::vector<Pending>& batch);

  // Reads through `store` (or `load_missing`, when given) what the cache (unless `fresh`) does
  // not have; `working` ends holding every stream the batch touched. Throws UnstorableCommand.
  Decided decide(const StoreReader& store, std::vector<Pending>& batch, bool fresh,
                 WorkingSet& working, const MissingStreamsLoader& load_missing = {});

  // Positions and versions of each decided command's outcome, from the batch's first position.
  static void fill_positions(std::vector<Slot>& slots, const std::vector<RecordedEvent>& rows,
                             GlobalPosition first);

  // The idempotency records of the decided keyed commands (after fill_positions).
  static std::vector<IdempotencyRecord> records(const std::vector<Pending>& batch,
                                                const std::vector<Slot>& slots);

 private:
  void load_working(const StoreReader& store, const MissingStreamsLoader& load_missing,
                    const std::vector<Pending>& batch, const std::vector<Slot>& slots, bool fresh,
                    WorkingSet& working);
  void make_rows(const std::vector<Pending>& batch, const WorkingSet& working,
                 std::int64_t now_us, Decided& decided);
  void resolve_idempotency(const StoreReader& store, std::vector<Pending>& batch,
                           std::vector<Slot>& slots);

  std::function<std::string()> generate_id_;
  bool own_ids_;
  std::function<std::int64_t()> clock_us_;
  UuidGenerator& uuids_;
  StateCache& cache_;
  SnapshotStore* snapshots_;
  SnapshotWriter* snapshot_writer_;
  std::unordered_set<std::string> generated_streams_;
};

}  // namespace ledger::engine
