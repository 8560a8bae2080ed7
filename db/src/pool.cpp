#include "ledger/db/pool.hpp"

#include <pqxx/except>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "ledger/db/database_url.hpp"

namespace ledger::db {

namespace {

// try_acquire's connections: one attempt, waiting at most this long (libpq counts whole seconds,
// at least 2), and none tried for a while after one failed.
constexpr std::chrono::milliseconds optional_connect_timeout_max{2'000};
constexpr std::chrono::seconds optional_opens_pause{10};

}  // namespace

std::unique_ptr<pqxx::connection> connect_with_retry(const std::string& url,
                                                     const PoolSettings& settings) {
  const std::string conninfo =
      connection_string(url, settings.connect_timeout, settings.statement_timeout,
                        settings.idle_in_transaction_timeout);
  auto backoff = settings.backoff_initial;
  for (int attempt = 1;; ++attempt) {
    try {
      return std::make_unique<pqxx::connection>(conninfo);
    } catch (const pqxx::broken_connection& error) {
      std::string reason = error.what();
      while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) reason.pop_back();
      if (attempt >= settings.connect_attempts_max) {
        throw DatabaseUnavailable("cannot connect to PostgreSQL at " + redact_database_url(url) +
                                  " after " + std::to_string(attempt) + " attempts: " + reason);
      }
      spdlog::warn("cannot connect to PostgreSQL (attempt {}/{}), retrying in {} ms: {}", attempt,
                   settings.connect_attempts_max, backoff.count(), reason);
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5'000));
    }
  }
}

ConnectionPool::ConnectionPool(PoolSettings settings)
    : settings_(std::move(settings)),
      connection_string_(connection_string(settings_.url, settings_.connect_timeout,
                                           settings_.statement_timeout,
                                           settings_.idle_in_transaction_timeout)) {}

ConnectionPool::~ConnectionPool() = default;

ConnectionPool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      connection_(std::move(other.connection_)),
      discard_(other.discard_) {}

ConnectionPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->release(std::move(connection_), discard_);
}

ConnectionPool::Lease ConnectionPool::acquire() {
  std::unique_lock lock(mutex_);
  const bool got_slot = available_.wait_for(lock, settings_.acquire_timeout, [&] {
    return !idle_.empty() || open_ < settings_.connections_max;
  });
  if (!got_slot) {
    throw DatabaseUnavailable("no PostgreSQL connection free within " +
                              std::to_string(settings_.acquire_timeout.count()) + " ms (pool of " +
                              std::to_string(settings_.connections_max) + ")");
  }
  return take_slot(lock, /*one_attempt=*/false);
}

std::optional<ConnectionPool::Lease> ConnectionPool::try_acquire(std::size_t keep_free) {
  std::unique_lock lock(mutex_);
  if (settings_.connections_max - std::min(settings_.connections_max, in_use_) <= keep_free) {
    return std::nullopt;
  }
  const auto now = std::chrono::steady_clock::now();
  if (idle_.empty() && now < optional_opens_paused_until_) return std::nullopt;
  try {
    return take_slot(lock, /*one_attempt=*/true);
  } catch (const DatabaseUnavailable& error) {
    // A server refusing clients or slow to answer: do without, and do not try again for a
    // while (each try may wait for the connect timeout).
    optional_opens_paused_until_ = now + optional_opens_pause;
    spdlog::warn(
        "an optional PostgreSQL connection could not be opened; not trying again for {} s: {}",
        std::chrono::duration_cast<std::chrono::seconds>(optional_opens_pause).count(),
        error.what());
    return std::nullopt;
  }
}

ConnectionPool::Lease ConnectionPool::take_slot(std::unique_lock<std::mutex>& lock,
                                                bool one_attempt) {
  if (!idle_.empty()) {
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    ++in_use_;
    return Lease(this, std::move(connection));
  }
  // Reserve the slot, then connect without holding the lock.
  ++open_;
  ++in_use_;
  lock.unlock();
  try {
    PoolSettings attempt = settings_;
    if (one_attempt) {
      attempt.connect_attempts_max = 1;
      attempt.connect_timeout = std::min(settings_.connect_timeout, optional_connect_timeout_max);
    }
    return Lease(this, connect_with_retry(settings_.url, attempt));
  } catch (...) {
    lock.lock();
    --open_;
    --in_use_;
    available_.notify_one();
    throw;
  }
}

std::unique_ptr<pqxx::connection> ConnectionPool::connect_dedicated() const {
  return connect_with_retry(settings_.url, settings_);
}

void ConnectionPool::release(std::unique_ptr<pqxx::connection> connection, bool discard) {
  const bool keep = connection && !discard && connection->is_open();
  std::lock_guard lock(mutex_);
  --in_use_;
  if (keep) {
    idle_.push_back(std::move(connection));
  } else {
    --open_;
  }
  available_.notify_one();
}

PoolStats ConnectionPool::stats() const {
  std::lock_guard lock(mutex_);
  return {settings_.connections_max, open_, in_use_};
}

}  // namespace ledger::db
