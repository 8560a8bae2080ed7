#pragma once
// Writes one batch of events in one PostgreSQL transaction (private to the engine).

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "ledger/engine/event_store.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

struct IdempotencyRecord {
  std::string actor;
  std::string key;
  std::string request_hash;  // 32 bytes
  std::string outcome;       // JSON
  std::int64_t position = 0;
};

struct ExpiryRecord {
  std::string transfer_id;
  std::int64_t expires_at_us = 0;
};

// Prepares the append statement on a connection (once per connection; repeats are no-ops).
void prepare_append(pqxx::connection& connection);

// Another writer appended to one of the batch's streams first (unique (stream_id, version)),
// or stored the same idempotency key first.
class AppendConflict : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A stream a refused command read but the batch does not write, at the version it was read:
// nothing else catches a stale read then (another engine may have written the stream since).
struct StreamRead {
  std::string stream_id;
  std::int64_t version = 0;
};

struct AppendOutcome {
  GlobalPosition first_position{0};
  GlobalPosition last_position{0};
};

// Appends `events` (position and hash are filled in here) in the caller's transaction and
// commits it: takes the head row (UPDATE ... RETURNING), which serializes appenders and keeps
// positions dense and in commit order; extends the hash chain; inserts events, idempotency
// records (built by `records_for` once positions are known) and expiries in one statement;
// commits with synchronous_commit on. Throws AppendConflict on a version or key conflict, or
// a version gap the store refuses (nothing written), pqxx::broken_connection when the connection is lost before the commit,
// and pqxx::in_doubt_error when it is lost during it.
// `unwritten_reads` are checked against the store once the head row is held: a stream whose
// stored version differs is an AppendConflict too (the batch is decided again from the store).
AppendOutcome append_batch(
    pqxx::work& work, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries, const std::vector<StreamRead>& unwritten_reads);

}  // namespace ledger::engine
