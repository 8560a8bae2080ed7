#pragma once
// Writes one batch of events in one PostgreSQL transaction (private to the engine).

#include <chrono>
#include <functional>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

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
  std::size_t command = 0;  // the batch's command that placed the hold (for splitting a batch)
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

// The head of the store as an appender holds it (row locked): the last position and its hash.
struct LockedHead {
  std::int64_t position = 0;
  std::string hash;
};

struct AppendOutcome {
  GlobalPosition first_position{0};
  GlobalPosition last_position{0};
  LockedHead head_after;  // where the append left the head
};

// How long an append's steps took; the functions below add to it when given one. `rows`:
// hashing the events into the chain and encoding them, the idempotency records and the expiries
// (no round trip); `write`: the one statement that inserts them and moves the head, the store's
// density check included; `commit`: the COMMIT (its WAL flush), also when its outcome is in
// doubt. An append on the head (append_on_head) commits within its statement: there `write`
// holds the commit too.
struct AppendStepTimes {
  std::chrono::steady_clock::duration rows{};
  std::chrono::steady_clock::duration write{};
  std::chrono::steady_clock::duration commit{};
};

// Takes the head row (SELECT ... FOR UPDATE) in `work`: until the transaction ends no other
// appender can commit, so positions stay dense and in commit order, and what is read next
// about the streams stays current until the commit.
LockedHead lock_head(pqxx::work& work);

// The stored version of each stream (0 for a stream the store does not hold).
std::unordered_map<std::string, std::int64_t> read_stored_versions(
    pqxx::work& work, const std::vector<std::string>& stream_ids);

// An event as the state cache folds it in (stream_loader's fold_event).
struct StoredEvent {
  std::string stream_id;
  std::int64_t version = 0;
  std::string type;
  std::string payload;
  std::string hash;
};

// The events appended at positions after `from` up to `to`, in position order.
std::vector<StoredEvent> events_between(pqxx::work& work, std::int64_t from, std::int64_t to);

// Appends `events` (position and hash are filled in here) after `head`, which the caller locked
// in `work` (lock_head), and commits: extends the hash chain; inserts events, idempotency
// records (built by `records_for` once positions are known) and expiries and moves the head, all
// in one statement; commits with synchronous_commit on. Throws AppendConflict on a version or key
// conflict, or a version gap the store refuses (nothing written), pqxx::broken_connection when
// the connection is lost before the commit, and pqxx::in_doubt_error when it is lost during it.
AppendOutcome append_batch(
    pqxx::work& work, const LockedHead& head, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times = nullptr);

// append_batch in two steps, so rows can be decided on rows not yet written: seal_rows gives
// `events` their positions after `head` and extends the hash chain over them (nothing is
// written) and returns the head after them; write_and_commit writes the rows of `parts` (sealed
// one after another from `head` up to `head_after`), `records` and `expiries`, moves the head to
// `head_after` and commits (the same checks and errors as append_batch).
LockedHead seal_rows(const LockedHead& head, std::vector<RecordedEvent>& events);

// Appends `events` after `head` as append_batch does, but without a transaction around it: one
// autocommit statement moves the head only if it still is `head` (taking its row lock first and
// holding it through the statement's commit, so positions stay dense and in commit order) and
// inserts the rows only then. One round trip instead of four (BEGIN, the head's lock, the
// append, COMMIT), for a writer that knows where its own last commit left the head. Returns
// the head after the append, or nothing when the head has moved (another writer committed:
// nothing is written). `events` must not be empty. Throws AppendConflict as append_batch does,
// and pqxx::in_doubt_error when the connection is lost during the statement (it may have
// committed).
std::optional<LockedHead> append_on_head(
    pqxx::connection& connection, const LockedHead& head, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times = nullptr);
void write_and_commit(pqxx::work& work, const LockedHead& head, const LockedHead& head_after,
                      const std::vector<const std::vector<RecordedEvent>*>& parts,
                      const std::vector<IdempotencyRecord>& records,
                      const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times = nullptr);

}  // namespace ledger::engine
