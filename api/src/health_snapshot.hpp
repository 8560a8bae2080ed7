#pragma once
// What /health, /health/ready and /metrics say of the database and the read side, taken at
// most once a second (private to the API).

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ledger/api/server.hpp"
#include "read_side_health.hpp"

namespace ledger::api {

struct HealthSnapshot {
  DatabaseHealth database;
  ReadSideHealth read_side;
  std::optional<ReadReplicaHealth> read_replica;  // set when queries read from a replica
  std::chrono::steady_clock::time_point taken;
};

// Owned by the Router; used from any thread. The probes need no token, and each check runs
// several queries on the small pool that also serves every read: answering each probe with a
// check of its own would let a flood of probes starve the queries. So a probe is answered from
// the last snapshot while it is younger than `refresh_interval` (on the calling thread, no
// query); an older one is refreshed by one task on the blocking pool, which answers every
// probe that arrived meanwhile. Hence at most one check per interval, whatever the probe rate.
class HealthSnapshots {
 public:
  using Use = std::function<void(std::shared_ptr<const HealthSnapshot>)>;

  HealthSnapshots(const Services& services, boost::asio::thread_pool& blocking,
                  std::chrono::milliseconds refresh_interval, std::chrono::milliseconds check_timeout);

  // Calls `use` with a snapshot no older than the interval: at once (on this thread) when the
  // last one is fresh, otherwise on the blocking pool when the refresh finishes. A refresh
  // running longer than `check_timeout` is answered (then, and at once for later probes) with
  // the database unreachable: a check that gets no answer is an outage, not a reason to hang.
  void get(Use use);
  // Checks run so far (each is one database check and one read-side check).
  [[nodiscard]] std::uint64_t refreshes() const { return refreshes_.load(); }

 private:
  void refresh();
  // The replica's health for a snapshot: the last finished check, or down while one has run
  // longer than check_timeout; starts the next check when none runs. The replica is checked
  // apart, so one that hangs (partitioned) never makes the database check overdue: that
  // would report the database down and the instance unready, though commands still work.
  [[nodiscard]] ReadReplicaHealth replica_health();
  // The refresh numbered `generation` is overdue: answers the probes waiting for it.
  void answer_overdue(std::uint64_t generation);
  // What a probe is told while a check is overdue; mutex_ held.
  [[nodiscard]] std::shared_ptr<const HealthSnapshot> overdue_snapshot();

  const Services& services_;
  boost::asio::thread_pool& blocking_;
  const std::chrono::milliseconds refresh_interval_;
  const std::chrono::milliseconds check_timeout_;
  std::mutex mutex_;
  std::shared_ptr<const HealthSnapshot> last_;  // null until the first check
  bool refreshing_ = false;
  std::chrono::steady_clock::time_point refresh_started_{};
  std::uint64_t refresh_generation_ = 0;
  std::vector<Use> waiting_;  // at most one per connection: a connection waits for its answer
  std::atomic<std::uint64_t> refreshes_{0};
  std::mutex replica_mutex_;
  ReadReplicaHealth replica_last_;  // down until the first check finishes
  bool replica_checking_ = false;
  std::chrono::steady_clock::time_point replica_check_started_{};
  // The last database error logged: an outage is logged once, not once per check.
  std::string logged_error_;
  std::string logged_projections_error_;
};

}  // namespace ledger::api
