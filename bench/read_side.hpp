#pragma once
// Read-side measurements for ledger-bench: how far the read models trail the event store.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ledger::bench {

// Samples the store head and the lowest projection watermark every `interval`. A position's
// lag is the time from the first sample whose head shows it to the first sample whose
// watermark covers it: command-to-read-model lag, to within one interval.
class LagSampler {
 public:
  explicit LagSampler(std::string database_url,
                      std::chrono::milliseconds interval = std::chrono::milliseconds(2));
  ~LagSampler();
  void start();
  void stop();
  [[nodiscard]] const std::vector<double>& lags_ms() const { return lags_ms_; }
  // (seconds since start, lag in ms of the positions covered at that sample)
  [[nodiscard]] const std::vector<std::pair<double, double>>& timeline() const { return timeline_; }
  // The same lags split by whether an autovacuum worker ran at any sample while the position
  // waited (issue 18, item 4: is autovacuum the stall?), and the share of samples it ran at.
  [[nodiscard]] const std::vector<double>& lags_during_autovacuum_ms() const {
    return lags_during_autovacuum_ms_;
  }
  [[nodiscard]] const std::vector<double>& lags_without_autovacuum_ms() const {
    return lags_without_autovacuum_ms_;
  }
  // The lag of each read model alone (by its name in read.projections).
  [[nodiscard]] const std::map<std::string, std::vector<double>>& lags_by_projection_ms() const {
    return lags_by_projection_ms_;
  }
  // Whether the sampler's role can see autovacuum workers (pg_read_all_stats or superuser):
  // the autovacuum figures mean nothing otherwise.
  [[nodiscard]] bool sees_autovacuum() const { return sees_autovacuum_; }
  [[nodiscard]] double autovacuum_share() const {
    return samples_ > 0 ? static_cast<double>(autovacuum_samples_) / static_cast<double>(samples_)
                        : 0;
  }

 private:
  void run();
  std::string url_;
  std::chrono::milliseconds interval_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::vector<double> lags_ms_;
  std::vector<std::pair<double, double>> timeline_;
  std::vector<double> lags_during_autovacuum_ms_;
  std::vector<double> lags_without_autovacuum_ms_;
  std::map<std::string, std::vector<double>> lags_by_projection_ms_;
  std::atomic<bool> sees_autovacuum_{false};
  std::int64_t samples_ = 0;
  std::int64_t autovacuum_samples_ = 0;
};

// Which autovacuum workers ran beside a stretch of the bench (a replay or rebuild run): every
// `interval`, what the workers in this database were doing (vacuum or analyze, and the table).
// Needs a role that sees other sessions (pg_read_all_stats); sees_autovacuum() says whether it
// had one. Read the figures after stop().
class AutovacuumWatch {
 public:
  explicit AutovacuumWatch(std::string database_url,
                           std::chrono::milliseconds interval = std::chrono::milliseconds(100));
  ~AutovacuumWatch();
  void start();
  void stop();
  [[nodiscard]] bool sees_autovacuum() const { return sees_autovacuum_; }
  // Of the samples, the share with an autovacuum worker running.
  [[nodiscard]] double share() const {
    return samples_ > 0 ? static_cast<double>(busy_samples_) / static_cast<double>(samples_) : 0;
  }
  // What the workers did at some sample ("VACUUM public.events"), comma-separated in order;
  // empty when none.
  [[nodiscard]] std::string tables() const;
  [[nodiscard]] std::int64_t samples() const { return samples_; }
  // Why the sampling stopped early (a lost connection); empty when it did not.
  [[nodiscard]] const std::string& problem() const { return problem_; }

 private:
  void run();
  std::string url_;
  std::chrono::milliseconds interval_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::atomic<bool> sees_autovacuum_{false};
  std::int64_t samples_ = 0;
  std::int64_t busy_samples_ = 0;
  std::set<std::string> seen_;  // what the workers did, at some sample
  std::string problem_;
};

// Autovacuum and autoanalyze runs per table ("autovacuum schema.table"), and checkpoints, so
// far: two readings bracket a run.
[[nodiscard]] std::map<std::string, std::int64_t> maintenance_counts(
    const std::string& database_url);

// One number from a query.
[[nodiscard]] std::int64_t query_scalar(const std::string& database_url, const std::string& sql);

// Waits until `sql` (one number) reaches `target`; returns the seconds it took, or a negative
// number after `limit`.
[[nodiscard]] double seconds_until(const std::string& database_url, const std::string& sql,
                                   std::int64_t target, std::chrono::seconds limit);

}  // namespace ledger::bench
