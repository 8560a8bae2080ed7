#include "snapshot_writer.hpp"

namespace ledger::engine {

SnapshotWriter::SnapshotWriter(SnapshotStore& store, std::int64_t every_events,
                               std::size_t queue_max)
    : store_(store), every_events_(every_events), queue_max_(queue_max) {
  thread_ = std::thread([this] { run(); });
}

SnapshotWriter::~SnapshotWriter() { stop(); }

void SnapshotWriter::enqueue(const std::string& stream_id, const domain::StreamState& state) {
  std::lock_guard lock(mutex_);
  if (queue_.size() >= queue_max_) return;  // only a cache
  queue_.emplace_back(stream_id, state);
  ready_.notify_one();
}

void SnapshotWriter::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SnapshotWriter::run() {
  while (true) {
    std::pair<std::string, domain::StreamState> item;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    store_.put(item.first, item.second);
  }
}

}  // namespace ledger::engine
