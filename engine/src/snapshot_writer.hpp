#pragma once
// Writes snapshots to RocksDB on its own thread, off the commit path (private to the engine).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ledger/core/assert.hpp"
#include "ledger/domain/decide.hpp"
#include "ledger/domain/recorded_event.hpp"
#include "ledger/engine/snapshot_store.hpp"

namespace ledger::engine {

class SnapshotWriter {
 public:
  // Snapshots of a stream are taken each time its version passes a multiple of `every_events`;
  // at most `queue_max` wait to be written (beyond that they are dropped: only a cache).
  SnapshotWriter(SnapshotStore& store, std::int64_t every_events, std::size_t queue_max);
  // Writes what is queued, then joins the thread.
  ~SnapshotWriter();
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  // After a commit: each stream of `streams` that `rows` changed gets its last hash, and a
  // snapshot is queued for those that passed a multiple of every_events. Streams is a map of
  // stream id to domain::StreamState. Without a writer (`writer` null) only the hashes are set.
  template <typename Streams>
  static void remember_appended(SnapshotWriter* writer, Streams& streams,
                                const std::vector<domain::RecordedEvent>& rows);

  void enqueue(const std::string& stream_id, const domain::StreamState& state);
  // Writes what is queued and stops the thread. Idempotent.
  void stop();

 private:
  void run();

  SnapshotStore& store_;
  std::int64_t every_events_;
  std::size_t queue_max_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::pair<std::string, domain::StreamState>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

template <typename Streams>
void SnapshotWriter::remember_appended(SnapshotWriter* writer, Streams& streams,
                                       const std::vector<domain::RecordedEvent>& rows) {
  struct Appended {
    const domain::RecordedEvent* last = nullptr;
    std::int64_t count = 0;
  };
  std::unordered_map<std::string_view, Appended> appended;
  appended.reserve(rows.size());
  for (const auto& row : rows) {
    auto& entry = appended[row.stream_id];
    entry.last = &row;
    ++entry.count;
  }
  for (auto& [stream_id, state] : streams) {
    auto changed = appended.find(stream_id);
    if (changed == appended.end()) continue;
    LEDGER_ASSERT(changed->second.last->version == state.version,
                  "decided states and appended rows disagree");
    state.last_hash = changed->second.last->hash;
    if (writer == nullptr) continue;
    const std::int64_t every = writer->every_events_;
    const std::int64_t before = state.version.value() - changed->second.count;
    if (every > 0 && state.version.value() / every != before / every) {
      writer->enqueue(stream_id, state);
    }
  }
}

}  // namespace ledger::engine
