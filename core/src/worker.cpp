#include "ledger/core/worker.hpp"

namespace ledger {

void StoppableThread::start(std::function<void()> body) {
  if (thread_.joinable()) return;
  thread_ = std::thread(std::move(body));
}

void StoppableThread::stop() {
  {
    // Under the mutex, so a pause() about to wait cannot miss the wake-up.
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StoppableThread::pause(std::chrono::milliseconds duration) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, duration, [&] { return stopping_.load(); });
}

}  // namespace ledger
