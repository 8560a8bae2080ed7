#pragma once
// A background thread that runs until stop(), and the status it publishes to other threads:
// the shape of the relay, the projectors and other long-running loops.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace ledger {

class StoppableThread {
 public:
  StoppableThread() = default;
  ~StoppableThread() { stop(); }
  StoppableThread(const StoppableThread&) = delete;
  StoppableThread& operator=(const StoppableThread&) = delete;

  // Runs `body` on a new thread; does nothing when it already runs. `body` returns once
  // stopping() is true.
  void start(std::function<void()> body);
  // Sets stopping(), wakes pause() and joins the thread.
  void stop();
  [[nodiscard]] bool stopping() const { return stopping_.load(); }
  // Sleeps up to `duration`, returning early once stop() is called.
  void pause(std::chrono::milliseconds duration);

 private:
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
};

// A value one thread updates and others read whole.
template <typename T>
class SharedStatus {
 public:
  template <typename F>
  void update(F&& change) {
    std::lock_guard lock(mutex_);
    change(value_);
  }
  [[nodiscard]] T get() const {
    std::lock_guard lock(mutex_);
    return value_;
  }

 private:
  mutable std::mutex mutex_;
  T value_;
};

}  // namespace ledger
