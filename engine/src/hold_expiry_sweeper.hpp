#pragma once
// Expires holds whose time has come (private to the engine): on its own thread it finds due
// holds in pending_expiries and submits ExpireHold commands through the public Engine API, like
// any other client, then forgets the holds that are settled.
//
// One sweeper sweeps at a time however many engines share the database: the one holding a
// PostgreSQL advisory lock (session level, `lock_key`) on a connection of its own, elected like
// the relay. The others try to take the lock once per interval, so when the leader stops, dies
// or loses its connection (the server ends the session and with it the lock) another engine
// takes over within an interval of the server noticing. The election saves duplicate work and
// makes the sweeper observable; it is not what keeps a hold from expiring twice: ExpireHold is a
// command on the transfer's stream, so a second one (a deposed leader still finishing a sweep)
// is refused as transfer_not_pending, never written.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"

namespace ledger::engine {

class HoldExpirySweeper {
 public:
  // Starts campaigning for the lock and, once leader, sweeping every `interval` (a positive
  // one) on a thread of its own.
  HoldExpirySweeper(Engine& engine, db::ConnectionPool& pool, std::chrono::milliseconds interval,
                    std::int64_t lock_key, std::function<std::int64_t()> clock_us);
  ~HoldExpirySweeper();
  HoldExpirySweeper(const HoldExpirySweeper&) = delete;
  HoldExpirySweeper& operator=(const HoldExpirySweeper&) = delete;

  // Waits for a sweep under way to finish, closes the lock's connection (releasing the lock
  // to a standby) and stops. Idempotent.
  void stop();

  [[nodiscard]] HoldExpiryStats stats() const;

 private:
  void run();
  // True while this sweeper holds the lock: checks that the lock's session is still there when
  // leading, tries to take the lock otherwise. Throws when the database cannot be reached (then
  // step_down drops the session: whatever it held is gone or about to be).
  bool lead();
  void step_down(const char* reason);
  void sweep();

  Engine& engine_;
  db::ConnectionPool& pool_;
  std::chrono::milliseconds interval_;
  std::int64_t lock_key_;
  std::function<std::int64_t()> clock_us_;
  // The session holding the lock, touched only on the sweeper's thread; null while standing by
  // without a connection.
  std::unique_ptr<pqxx::connection> lock_connection_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  HoldExpiryStats stats_;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace ledger::engine
