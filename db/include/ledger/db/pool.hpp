#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/connection>

namespace ledger::db {

struct PoolSettings {
  std::string url;
  std::size_t connections_max = 16;
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds statement_timeout{30'000};
  std::chrono::milliseconds acquire_timeout{5'000};
  // 0: none. Otherwise a session idle inside a transaction this long is ended by the server.
  std::chrono::milliseconds idle_in_transaction_timeout{0};
  // Connecting retries with exponential backoff, from backoff_initial, this many times.
  int connect_attempts_max = 6;
  std::chrono::milliseconds backoff_initial{100};
};

// The database could not be reached within the configured attempts or timeouts.
class DatabaseUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PoolStats {
  std::size_t connections_max = 0;
  std::size_t open = 0;
  std::size_t in_use = 0;
};

// A bounded pool of PostgreSQL connections. Thread-safe. Connections are opened lazily;
// a connection found broken when returned is closed and replaced on the next acquire.
class ConnectionPool {
 public:
  explicit ConnectionPool(PoolSettings settings);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Exclusive use of one connection until destroyed.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    pqxx::connection& operator*() const { return *connection_; }
    pqxx::connection* operator->() const { return connection_.get(); }
    // Drops the connection instead of returning it (after an error left it in doubt).
    void discard() noexcept { discard_ = true; }

   private:
    friend class ConnectionPool;
    Lease(ConnectionPool* pool, std::unique_ptr<pqxx::connection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    ConnectionPool* pool_;
    std::unique_ptr<pqxx::connection> connection_;
    bool discard_ = false;
  };

  // Waits up to acquire_timeout for a free slot; connects (with retries) when needed.
  // Throws DatabaseUnavailable when no connection can be had.
  [[nodiscard]] Lease acquire();
  // A connection only if more than `keep_free` slots are free now and one is idle or opens at
  // the first attempt within 2 s (nothing when it does not, and no new connection tried for the
  // next 10 s): for work that can do without one, such as an extra reader beside a leased
  // connection, leaving `keep_free` to the pool's other users.
  [[nodiscard]] std::optional<Lease> try_acquire(std::size_t keep_free = 0);

  [[nodiscard]] PoolStats stats() const;
  [[nodiscard]] const PoolSettings& settings() const { return settings_; }

  // Opens one connection with the pool's timeouts and retry policy (used by tools that need a
  // dedicated connection, e.g. LISTEN).
  [[nodiscard]] std::unique_ptr<pqxx::connection> connect_dedicated() const;

 private:
  // With `lock` held and a slot free: an idle connection, or a new one (connected unlocked).
  Lease take_slot(std::unique_lock<std::mutex>& lock, bool one_attempt);
  void release(std::unique_ptr<pqxx::connection> connection, bool discard);

  PoolSettings settings_;
  std::string connection_string_;
  mutable std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  std::size_t open_ = 0;
  std::size_t in_use_ = 0;
  std::chrono::steady_clock::time_point optional_opens_paused_until_{};
};

// Opens one connection to `url`, retrying with exponential backoff per `settings`.
[[nodiscard]] std::unique_ptr<pqxx::connection> connect_with_retry(const std::string& url,
                                                                   const PoolSettings& settings);

}  // namespace ledger::db
