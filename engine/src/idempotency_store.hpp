#pragma once
// The idempotency keys in PostgreSQL (private to the engine): looking keys up, the records a
// batch stores with its events (appender.hpp writes them), and whether a commit whose outcome
// was lost did land.

#include <chrono>
#include <cstdint>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "appender.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/domain/commands.hpp"

namespace ledger::engine {

using IdempotencyKey = std::pair<std::string, std::string>;  // actor, key

struct StoredIdempotencyKey {
  IdempotencyKey key;
  std::string request_hash;  // 32 bytes
  CommandOutcome outcome;
};

// SHA-256 of a request's fingerprint: what a key's record remembers of the request.
[[nodiscard]] std::string request_hash(std::string_view fingerprint);

// The stored records of `keys` (each once), in one query.
[[nodiscard]] std::vector<StoredIdempotencyKey> find_idempotency_keys(
    pqxx::transaction_base& work, const std::vector<IdempotencyKey>& keys);

// The record a keyed command's outcome is stored as.
[[nodiscard]] IdempotencyRecord idempotency_record(const CommandContext& context,
                                                   const std::string& request_hash,
                                                   const CommandOutcome& outcome);

// Whether a batch whose commit outcome is unknown did commit: its first event is stored.
// The session that sent the COMMIT (`backend_pid`) may still be running it, so it is
// terminated and waited for first: asking before it is gone could answer "not committed"
// for a commit that lands a moment later. std::nullopt when the store cannot be asked in
// `attempts_max` tries.
[[nodiscard]] std::optional<bool> committed_in_doubt(db::ConnectionPool& pool,
                                                     const std::string& first_event_id,
                                                     int backend_pid, int attempts_max);

// Ends the session `backend_pid` of this role if it is still the one that started more than
// `abandoned_for` ago (a later session that reused the pid started after it was abandoned).
// True when that session is gone or was told to end. The committing session of a commit whose
// check could not reach the store may still be running, holding the head row: one left
// between its statement and the Sync that commits it has no server timeout but TCP keepalive.
[[nodiscard]] bool end_abandoned_session(pqxx::connection& connection, int backend_pid,
                                         std::chrono::milliseconds abandoned_for);

}  // namespace ledger::engine
