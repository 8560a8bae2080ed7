#include "hold_expiry_sweeper.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <future>
#include <string>
#include <vector>

#include "ledger/db/sql_text.hpp"

namespace ledger::engine {

namespace {

constexpr std::size_t expiry_sweep_batch_max = 500;
constexpr const char* expiry_actor = "engine:expiry";

}  // namespace

HoldExpirySweeper::HoldExpirySweeper(Engine& engine, db::ConnectionPool& pool,
                                     std::chrono::milliseconds interval, std::int64_t lock_key,
                                     std::function<std::int64_t()> clock_us)
    : engine_(engine), pool_(pool), interval_(interval), lock_key_(lock_key), clock_us_(std::move(clock_us)) {
  stats_.enabled = true;
  thread_ = std::thread([this] { run(); });
}

HoldExpirySweeper::~HoldExpirySweeper() { stop(); }

void HoldExpirySweeper::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HoldExpiryStats HoldExpirySweeper::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void HoldExpirySweeper::run() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, interval_, [&] { return stopping_; })) break;
    }
    bool leading = false;
    try {
      leading = lead();
    } catch (const std::exception& error) {
      step_down(error.what());
    }
    if (!leading) continue;
    // A sweep that fails (the engine or the pool could not answer) is run again next time; the
    // lock's own session decides leadership, not the sweep.
    try {
      sweep();
    } catch (const std::exception& error) {
      spdlog::warn("hold expiry: sweep failed (will retry): {}", error.what());
    }
  }
  // Closing the session releases the lock: a standby takes over at its next try.
  const bool was_leader = stats().leader;
  lock_connection_.reset();
  std::lock_guard lock(mutex_);
  stats_.leader = false;
  if (was_leader) spdlog::info("hold expiry: stopped leading; the lock is released");
}

bool HoldExpirySweeper::lead() {
  // A leader that exits or is killed closes its socket, and the server ends the session and the
  // lock at once. One that vanishes without closing it (a host gone, a cable cut) is noticed by
  // the TCP keepalives every pooled connection has on both ends (db's connection string: 10 s
  // idle, then 3 probes 5 s apart, about 25 s); a leader cut off from the server likewise
  // notices, at its next check, that its session is gone.
  if (!lock_connection_) lock_connection_ = pool_.connect_dedicated();
  pqxx::nontransaction query(*lock_connection_);
  if (stats().leader) {
    // A session lock lives as long as its session: the session answering means it is held.
    query.exec("SELECT 1");
    return true;
  }
  if (!query.exec_params1("SELECT pg_try_advisory_lock($1)", lock_key_)[0].as<bool>()) return false;
  spdlog::info("hold expiry: leading (this instance sweeps expired holds; advisory lock {})", lock_key_);
  std::lock_guard lock(mutex_);
  stats_.leader = true;
  ++stats_.leadership_acquired;
  return true;
}

void HoldExpirySweeper::step_down(const char* reason) {
  // The lock's session may be gone (and the lock with it): drop it and campaign again on a new
  // one. A sweep cut short is finished by whoever leads next.
  lock_connection_.reset();
  std::lock_guard lock(mutex_);
  if (stats_.leader) {
    spdlog::warn("hold expiry: stopped leading, the lock's session failed ({}); standing by", reason);
    ++stats_.leadership_lost;
  } else {
    spdlog::warn("hold expiry: cannot try the lock (will retry): {}", reason);
  }
  stats_.leader = false;
}

void HoldExpirySweeper::sweep() {
  std::vector<std::string> due;
  {
    auto lease = pool_.acquire();
    pqxx::read_transaction work(*lease);
    const auto rows = work.exec_params(
        "SELECT transfer_id FROM pending_expiries "
        "WHERE expires_at <= 'epoch'::timestamptz + $1 * interval '1 microsecond' "
        "ORDER BY expires_at LIMIT $2",
        clock_us_(), static_cast<long long>(expiry_sweep_batch_max));
    for (const auto& row : rows) due.push_back(row[0].as<std::string>());
  }
  {
    std::lock_guard lock(mutex_);
    ++stats_.sweeps;
  }
  if (due.empty()) return;
  std::vector<std::future<domain::CommandOutcome>> outcomes;
  for (const auto& id : due) {
    domain::Command command{domain::SingleCommand{domain::ExpireHold{id}}, domain::CommandContext{}};
    command.context.actor = expiry_actor;
    outcomes.push_back(engine_.submit(std::move(command)));
  }
  db::ArrayLiteral done;
  for (std::size_t i = 0; i < due.size(); ++i) {
    const domain::CommandOutcome outcome = outcomes[i].get();
    if (outcome.accepted()) {
      // Counted as each one is known: a later command that fails the sweep does not hide it.
      std::lock_guard lock(mutex_);
      ++stats_.holds_expired;
    }
    if (outcome.accepted() || outcome.code == domain::RejectionCode::transfer_not_pending ||
        outcome.code == domain::RejectionCode::unknown_transfer) {
      done.add_text(due[i]);
    }
  }
  auto lease = pool_.acquire();
  pqxx::work work(*lease);
  work.exec_params("DELETE FROM pending_expiries WHERE transfer_id = ANY($1::text[])", done.finish());
  work.commit();
}

}  // namespace ledger::engine
