#pragma once
// Folding streams from the event store, optionally starting from trusted snapshots.

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include <pqxx/pqxx>

#include "ledger/db/pool.hpp"
#include "ledger/domain/decide.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "snapshot_writer.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

// An empty state of the right aggregate kind for `stream_id` (account- or transfer-).
[[nodiscard]] StreamState empty_stream_state(const std::string& stream_id);

// Folds the event at `version` of `stream_id` (type and FlatBuffers payload as stored) into
// `state`, which must hold the version before it; throws when it does not or the payload does
// not decode.
void fold_event(const std::string& stream_id, StreamState& state, std::int64_t version, const std::string& type,
                const std::string& payload, std::string hash);

// Loads every stream in `stream_ids` with one query (two when snapshots go stale). A snapshot
// is used only when the event at its version still has its hash; otherwise it is dropped and
// the stream refolded from version 1. Streams without events come back empty (version 0).
// A stream folded from 8 events or more is snapshotted: queued on `writer` when there is one
// (the pipeline's loads, some under the head lock, never wait for RocksDB), else written to
// `snapshots` here (a caller with no snapshot thread).
[[nodiscard]] std::unordered_map<std::string, domain::StreamState> load_streams(
    pqxx::transaction_base& work, const std::vector<std::string>& stream_ids,
    SnapshotStore* snapshots, SnapshotWriter* writer = nullptr);

// As load_streams, with the streams split in ranges read at once: the first through `work`, each
// other through a connection of `pool` free now (up to `extra_connections_max`, leaving two
// free, none opened with retries), outside a transaction. A cold store is read one heap page
// at a time per statement, so the reads in flight grow with the statements. Only for a caller
// that needs no common snapshot of the streams (each statement sees what is committed when it
// runs): the pipelined decision path, which reads outside a transaction already and learns at
// the append what other writers committed since. Small loads stay in one statement.
[[nodiscard]] std::unordered_map<std::string, domain::StreamState> load_streams_spread(
    pqxx::transaction_base& work, db::ConnectionPool& pool,
    const std::vector<std::string>& stream_ids, std::size_t extra_connections_max,
    SnapshotStore* snapshots, SnapshotWriter* writer);

}  // namespace ledger::engine
