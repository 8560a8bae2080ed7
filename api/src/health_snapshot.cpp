#include "health_snapshot.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace ledger::api {

HealthSnapshots::HealthSnapshots(const Services& services, boost::asio::thread_pool& blocking,
                                 std::chrono::milliseconds refresh_interval, std::chrono::milliseconds check_timeout)
    : services_(services), blocking_(blocking), refresh_interval_(refresh_interval), check_timeout_(check_timeout) {}

void HealthSnapshots::get(Use use) {
  std::shared_ptr<const HealthSnapshot> answer;
  std::uint64_t started = 0;
  {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    // The age counts from when the check started, so two checks never start closer together
    // than the interval.
    if (last_ && now - last_->taken < refresh_interval_) {
      answer = last_;
    } else if (refreshing_ && now - refresh_started_ >= check_timeout_) {
      answer = overdue_snapshot();  // the check hangs: no probe waits for it any more
    } else {
      waiting_.push_back(std::move(use));
      if (refreshing_) return;
      refreshing_ = true;
      refresh_started_ = now;
      started = ++refresh_generation_;
    }
  }
  if (answer) return use(std::move(answer));
  boost::asio::post(blocking_, [this] { refresh(); });
  // A timer waits on the pool without holding one of its threads (the pool is joined, timers
  // included, before the router goes).
  auto timer = std::make_shared<boost::asio::steady_timer>(blocking_.get_executor(), check_timeout_);
  timer->async_wait([this, timer, started](const boost::system::error_code&) { answer_overdue(started); });
}

std::shared_ptr<const HealthSnapshot> HealthSnapshots::overdue_snapshot() {
  auto snapshot = std::make_shared<HealthSnapshot>();
  snapshot->taken = refresh_started_;
  if (last_) {
    snapshot->database.pool_open = last_->database.pool_open;
    snapshot->database.pool_in_use = last_->database.pool_in_use;
    snapshot->database.pool_max = last_->database.pool_max;
    snapshot->read_side.relay = last_->read_side.relay;
  }
  if (services_.read_replica.check) snapshot->read_replica = replica_health();
  snapshot->database.reachable = false;
  snapshot->database.error =
      fmt::format("the database check has not answered for {} ms", check_timeout_.count());
  snapshot->database.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - refresh_started_).count();
  snapshot->read_side.projections_error = "the watermarks cannot be read now";
  if (logged_error_ != snapshot->database.error) {
    spdlog::warn("health: the database is unreachable: {}", snapshot->database.error);
    logged_error_ = snapshot->database.error;
  }
  return snapshot;
}

ReadReplicaHealth HealthSnapshots::replica_health() {
  bool start = false;
  ReadReplicaHealth answer;
  {
    std::lock_guard lock(replica_mutex_);
    const auto now = std::chrono::steady_clock::now();
    answer = replica_checking_ && now - replica_check_started_ >= check_timeout_ ? ReadReplicaHealth{} : replica_last_;
    if (!replica_checking_) {
      replica_checking_ = start = true;
      replica_check_started_ = now;
    }
  }
  if (start) {
    boost::asio::post(blocking_, [this] {
      ReadReplicaHealth checked = services_.read_replica.check();
      std::lock_guard lock(replica_mutex_);
      replica_last_ = checked;
      replica_checking_ = false;
    });
  }
  return answer;
}

void HealthSnapshots::answer_overdue(std::uint64_t generation) {
  std::vector<Use> waiting;
  std::shared_ptr<const HealthSnapshot> snapshot;
  {
    std::lock_guard lock(mutex_);
    if (!refreshing_ || generation != refresh_generation_ || waiting_.empty()) return;
    snapshot = overdue_snapshot();
    waiting.swap(waiting_);
  }
  for (auto& use : waiting) use(snapshot);
}

void HealthSnapshots::refresh() {
  auto snapshot = std::make_shared<HealthSnapshot>();
  snapshot->taken = std::chrono::steady_clock::now();
  ++refreshes_;
  snapshot->database = services_.check_database ? services_.check_database() : DatabaseHealth{};
  try {
    snapshot->read_side = check_read_side(services_);
  } catch (const std::exception& error) {
    // A check that throws must not leave `refreshing_` set: every later probe would wait.
    snapshot->read_side.projections_error = error.what();
  }
  if (services_.read_replica.check) snapshot->read_replica = replica_health();
  // The cause goes to the log only (connection text is for operators, not for probes); the
  // pool redacts passwords from it.
  const std::string error = snapshot->database.reachable ? std::string() : snapshot->database.error;
  std::vector<Use> waiting;
  {
    std::lock_guard lock(mutex_);
    if (error != logged_error_) {
      if (error.empty()) {
        spdlog::info("health: the database is reachable again");
      } else {
        spdlog::warn("health: the database is unreachable: {}", error);
      }
      logged_error_ = error;
    }
    if (snapshot->read_side.projections_error != logged_projections_error_) {
      if (!snapshot->read_side.projections_error.empty()) {
        spdlog::warn("health: the read models' watermarks cannot be read: {}", snapshot->read_side.projections_error);
      }
      logged_projections_error_ = snapshot->read_side.projections_error;
    }
    last_ = snapshot;
    refreshing_ = false;
    waiting.swap(waiting_);
  }
  for (auto& use : waiting) use(snapshot);
}

}  // namespace ledger::api
