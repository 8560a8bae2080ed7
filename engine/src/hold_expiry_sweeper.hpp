#pragma once
// Expires holds whose time has come (private to the engine): on its own thread it finds due
// holds in pending_expiries and submits ExpireHold commands through the public Engine API, like
// any other client, then forgets the holds that are settled.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"

namespace ledger::engine {

class HoldExpirySweeper {
 public:
  // Starts sweeping every `interval` (a positive one) on a thread of its own.
  HoldExpirySweeper(Engine& engine, db::ConnectionPool& pool, std::chrono::milliseconds interval,
                    std::function<std::int64_t()> clock_us);
  ~HoldExpirySweeper();
  HoldExpirySweeper(const HoldExpirySweeper&) = delete;
  HoldExpirySweeper& operator=(const HoldExpirySweeper&) = delete;

  // Waits for a sweep under way to finish and stops. Idempotent.
  void stop();

 private:
  void run();
  void sweep();

  Engine& engine_;
  db::ConnectionPool& pool_;
  std::chrono::milliseconds interval_;
  std::function<std::int64_t()> clock_us_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ledger::engine
