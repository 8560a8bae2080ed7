#include "health_snapshot.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

namespace ledger::api {

HealthSnapshots::HealthSnapshots(const Services& services, boost::asio::thread_pool& blocking,
                                 std::chrono::milliseconds refresh_interval)
    : services_(services), blocking_(blocking), refresh_interval_(refresh_interval) {}

void HealthSnapshots::get(Use use) {
  std::shared_ptr<const HealthSnapshot> fresh;
  {
    std::lock_guard lock(mutex_);
    // The age counts from when the check started, so two checks never start closer together
    // than the interval.
    if (last_ && std::chrono::steady_clock::now() - last_->taken < refresh_interval_) {
      fresh = last_;
    } else {
      waiting_.push_back(std::move(use));
      if (refreshing_) return;
      refreshing_ = true;
    }
  }
  if (fresh) return use(std::move(fresh));
  boost::asio::post(blocking_, [this] { refresh(); });
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
