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
                                     std::chrono::milliseconds interval,
                                     std::function<std::int64_t()> clock_us)
    : engine_(engine), pool_(pool), interval_(interval), clock_us_(std::move(clock_us)) {
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

void HoldExpirySweeper::run() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, interval_, [&] { return stopping_; })) return;
    }
    try {
      sweep();
    } catch (const std::exception& error) {
      spdlog::warn("expiry sweep failed (will retry): {}", error.what());
    }
  }
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
