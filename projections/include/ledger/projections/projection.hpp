#pragma once
// One read model's writer: applies events, strictly in global position order, inside the
// caller's transaction. The live projector and `ledger rebuild` share it, so a rebuilt read
// model is written by exactly the code that maintains it.

#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "ledger/domain/recorded_event.hpp"
#include "ledger/projections/projector.hpp"

namespace pqxx {
class transaction_base;
}

namespace ledger::projections {

class Projection {
 public:
  virtual ~Projection() = default;
  // `events` ascend in position; each partition's follow its watermark without a gap (all of
  // them contiguous when the caller holds every partition, as a rebuild does).
  virtual void apply(pqxx::transaction_base& work,
                     std::span<const domain::RecordedEvent> events) = 0;
  // Writes the rows apply() held back (WriterOptions::states_kept); the caller calls it before
  // every commit. A writer that keeps nothing wrote everything in apply().
  virtual void flush(pqxx::transaction_base& /*work*/) {}
  // Drops every row kept across transactions (WriterOptions::states_kept): another writer may
  // have changed them, or a transaction they were written in did not commit.
  virtual void forget_kept() {}
};

struct WriterOptions {
  // 0: every apply() reads the rows it updates by key and writes them back. Above 0, the writer
  // keeps up to this many folded rows in memory across apply() and transactions, reads only
  // those it lacks, and writes the changed ones in flush(); beyond this many it drops them all
  // after a flush (so it holds at most this many plus those one transaction touches, about 250
  // bytes each). A kept row is trusted to be what the table holds: the caller calls
  // forget_kept() whenever another writer may have changed the table since (the live
  // projector: a partition's watermark row that is not as its own last commit left it, see
  // projections/README.md "Kept balances"; a rebuild's shadow has no other writer). After
  // apply() or flush() threw, or a transaction it wrote in did not commit, roll back and call
  // forget_kept() (or discard the writer).
  std::size_t states_kept = 0;
};

// The writer of `kind` into the tables of `schema` ("read" live; a shadow schema to rebuild).
[[nodiscard]] std::unique_ptr<Projection> make_projection(ProjectionKind kind,
                                                          const std::string& schema = "read",
                                                          const WriterOptions& options = {});
// The tables a projection writes (unqualified names), all under one watermark.
[[nodiscard]] const std::vector<std::string>& projection_tables(ProjectionKind kind);
// Those of its tables whose writer finds rows by their key (an upsert, a delete by key). The
// others are only appended to: a rebuild fills them without their key constraints and adds
// those at the end, with the other indexes.
[[nodiscard]] const std::vector<std::string>& tables_written_by_key(ProjectionKind kind);

// A corrupt or inconsistent input the projector must not paper over (it stalls at that position
// and retries with backoff).
class ProjectionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ledger::projections
