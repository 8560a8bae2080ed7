#include "stream_loader.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <future>
#include <stdexcept>

#include "ledger/db/sql_text.hpp"
#include "store_sql.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

namespace {

void fold_row(const std::string& stream_id, StreamState& state, const pqxx::row& row) {
  fold_event(stream_id, state, row[1].as<std::int64_t>(), row[2].as<std::string>(),
             pqxx::binarystring(row[3]).str(), pqxx::binarystring(row[4]).str());
}

pqxx::result query(pqxx::transaction_base& work, const std::vector<std::string>& ids,
                   const std::vector<std::int64_t>& from_versions) {
  db::ArrayLiteral id_array, version_array;
  for (const auto& id : ids) id_array.add_text(id);
  for (const auto version : from_versions) version_array.add_number(version);
  return sql::exec_statement(work, sql::stream_tails_statement, id_array.finish(), version_array.finish());
}

// A stream folded over at least this many events past its snapshot (or from its start) gets a
// snapshot of the state loaded: the next load starts there. Appends snapshot a stream only when
// this engine's own append crosses a multiple of snapshot_every_events, so a stream another
// writer moves (several serves on one store) would otherwise be folded further at every load,
// and so would a stream shorter than that (most accounts of a large population): each event
// folded is a heap page PostgreSQL reads for a miss on the writer's critical path, against one
// RocksDB put without a WAL.
constexpr std::int64_t snapshot_after_folding_events = 8;

// A range read on a connection of its own has at least this many streams: below it the
// thread and the round trip cost more than the reads they overlap.
constexpr std::size_t streams_per_spread_range_min = 16;
// Free connections a spread load leaves to the pool's other users: the committer's next batch,
// and a second one for its check of a commit in doubt, the hold sweeper or a query.
constexpr std::size_t spread_load_keeps_free = 2;

}  // namespace

void fold_event(const std::string& stream_id, StreamState& state, std::int64_t version, const std::string& type,
                const std::string& payload, std::string hash) {
  if (version != state.version.value() + 1) {
    throw std::runtime_error("stream " + stream_id + " is not dense at version " +
                             std::to_string(version));
  }
  auto event = domain::decode_event(type, payload);
  if (!event) {
    throw std::runtime_error("event " + stream_id + "@" + std::to_string(version) +
                             " cannot be decoded as " + type);
  }
  std::visit(
      [&](auto& aggregate) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(aggregate)>, std::monostate>) {
          domain::apply(aggregate, *event);
        }
      },
      state.aggregate);
  state.version = StreamVersion(version);
  state.last_hash = std::move(hash);
}

StreamState empty_stream_state(const std::string& stream_id) {
  StreamState state;
  if (is_stream_of(stream_id, StreamKind::account)) {
    state.aggregate = AccountState{};
  } else if (is_stream_of(stream_id, StreamKind::loan)) {
    state.aggregate = LoanState{};
  } else {
    state.aggregate = TransferState{};
  }
  return state;
}

std::unordered_map<std::string, domain::StreamState> load_streams(
    pqxx::transaction_base& work, const std::vector<std::string>& stream_ids,
    SnapshotStore* snapshots, SnapshotWriter* writer) {
  std::unordered_map<std::string, domain::StreamState> states;
  std::unordered_map<std::string, domain::StreamState> snapshot_states;
  std::vector<std::int64_t> from_versions;
  from_versions.reserve(stream_ids.size());
  for (const auto& id : stream_ids) {
    states.emplace(id, empty_stream_state(id));
    std::optional<domain::StreamState> snapshot = snapshots ? snapshots->get(id) : std::nullopt;
    if (snapshot) {
      from_versions.push_back(snapshot->version.value());
      snapshot_states.emplace(id, std::move(*snapshot));
    } else {
      from_versions.push_back(1);
    }
  }
  if (stream_ids.empty()) return states;

  std::vector<std::string> stale;
  std::unordered_map<std::string, std::int64_t> folded;  // rows folded per stream, past any snapshot
  const auto rows = query(work, stream_ids, from_versions);
  std::string current;
  bool skipping = false;
  for (const auto& row : rows) {
    const std::string stream_id = row[0].as<std::string>();
    domain::StreamState& state = states.at(stream_id);
    if (stream_id != current) {
      current = stream_id;
      skipping = false;
      auto snapshot = snapshot_states.find(stream_id);
      if (snapshot != snapshot_states.end()) {
        // The first row is the event the snapshot was taken at: it must still match.
        if (row[1].as<std::int64_t>() == snapshot->second.version.value() &&
            pqxx::binarystring(row[4]).str() == snapshot->second.last_hash) {
          state = std::move(snapshot->second);
          snapshot_states.erase(snapshot);
          continue;
        }
        spdlog::warn("snapshot of {} does not match the event store; refolding", stream_id);
        snapshots->remove(stream_id);
        snapshot_states.erase(snapshot);
        stale.push_back(stream_id);
        skipping = true;
        continue;
      }
    }
    if (skipping) continue;
    fold_row(stream_id, state, row);
    ++folded[stream_id];
  }
  // Snapshots of streams that returned no row at all (the event store has no such version).
  for (auto& [stream_id, snapshot] : snapshot_states) {
    spdlog::warn("snapshot of {} is ahead of the event store; refolding", stream_id);
    snapshots->remove(stream_id);
    stale.push_back(stream_id);
  }
  if (!stale.empty()) {
    for (const auto& id : stale) states[id] = empty_stream_state(id);
    const auto again = query(work, stale, std::vector<std::int64_t>(stale.size(), 1));
    for (const auto& row : again) {
      const std::string stream_id = row[0].as<std::string>();
      fold_row(stream_id, states.at(stream_id), row);
      ++folded[stream_id];
    }
  }
  if (snapshots != nullptr) {
    // What was read is the store's (checked against it again when the snapshot is used).
    for (const auto& [stream_id, count] : folded) {
      if (count < snapshot_after_folding_events) continue;
      if (writer != nullptr) {
        writer->enqueue(stream_id, states.at(stream_id));
      } else {
        snapshots->put(stream_id, states.at(stream_id));
      }
    }
  }
  return states;
}

std::unordered_map<std::string, domain::StreamState> load_streams_spread(
    pqxx::transaction_base& work, db::ConnectionPool& pool,
    const std::vector<std::string>& stream_ids, std::size_t extra_connections_max,
    SnapshotStore* snapshots, SnapshotWriter* writer) {
  const std::size_t ranges_max =
      std::min(extra_connections_max + 1, stream_ids.size() / streams_per_spread_range_min);
  std::vector<db::ConnectionPool::Lease> leases;
  while (leases.size() + 1 < ranges_max) {
    auto lease = pool.try_acquire(spread_load_keeps_free);
    if (!lease) break;
    leases.push_back(std::move(*lease));
  }
  if (leases.empty()) return load_streams(work, stream_ids, snapshots, writer);

  // Consecutive ranges of the ids (the callers' are sorted: neighbours share index pages).
  const std::size_t ranges = leases.size() + 1;
  std::vector<std::vector<std::string>> range_ids(ranges);
  for (std::size_t r = 0; r < ranges; ++r) {
    const auto first =
        stream_ids.begin() + static_cast<std::ptrdiff_t>(stream_ids.size() * r / ranges);
    const auto last =
        stream_ids.begin() + static_cast<std::ptrdiff_t>(stream_ids.size() * (r + 1) / ranges);
    range_ids[r].assign(first, last);
  }
  // Declared after the leases: destroyed first, each future joins its thread before its
  // connection goes back to the pool.
  std::vector<std::future<std::unordered_map<std::string, domain::StreamState>>> others;
  for (std::size_t r = 1; r < ranges; ++r) {
    // A range that fails leaves its connection to the pool, which drops it if it broke.
    others.push_back(std::async(std::launch::async, [&, r] {
      pqxx::nontransaction read(*leases[r - 1]);
      return load_streams(read, range_ids[r], snapshots, writer);
    }));
  }
  auto states = load_streams(work, range_ids[0], snapshots, writer);
  std::exception_ptr failure;
  for (auto& other : others) {
    try {
      states.merge(other.get());
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return states;
}

}  // namespace ledger::engine
