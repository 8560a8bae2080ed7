#include "read_side.hpp"

#include <pqxx/pqxx>

#include <deque>
#include <map>
#include <sstream>

namespace ledger::bench {

using Clock = std::chrono::steady_clock;

namespace {

// Whether the connection's role sees other roles' sessions (pg_read_all_stats or superuser):
// without it pg_stat_activity shows them with no backend_type, and an autovacuum figure would
// say "never" when it cannot know.
bool sees_other_sessions(pqxx::connection& connection) {
  return pqxx::nontransaction(connection)
      .exec1("SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')")[0]
      .as<bool>();
}

}  // namespace

LagSampler::LagSampler(std::string database_url, std::chrono::milliseconds interval)
    : url_(std::move(database_url)), interval_(interval) {}

LagSampler::~LagSampler() { stop(); }

void LagSampler::start() { thread_ = std::thread([this] { run(); }); }

void LagSampler::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void LagSampler::run() {
  pqxx::connection connection(url_);
  sees_autovacuum_ = sees_other_sessions(connection);
  connection.prepare(
      "sample",
      "SELECT (SELECT position FROM event_store_head), "
      "(SELECT min(watermark) FROM read.projections), "
      "EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
      "AND datname = current_database()), "
      "(SELECT string_agg(name || '=' || watermark, ',' ORDER BY name) FROM read.projections)");
  const auto started = Clock::now();
  struct Seen {
    Clock::time_point at;  // the first sample that showed this head
    std::int64_t head;
    bool autovacuum;  // an autovacuum worker ran at some sample since
  };
  std::deque<Seen> seen;
  // Each read model's own: (first seen, head), to find which one the lag waits for.
  std::map<std::string, std::deque<std::pair<Clock::time_point, std::int64_t>>> seen_by_projection;
  while (!stopping_) {
    const auto now = Clock::now();
    std::int64_t head = 0;
    std::int64_t watermark = 0;
    bool autovacuum = false;
    std::string projection_watermarks;
    {
      pqxx::nontransaction work(connection);
      const auto row = work.exec_prepared1("sample");
      head = row[0].as<std::int64_t>();
      watermark = row[1].as<std::int64_t>();
      autovacuum = row[2].as<bool>();
      projection_watermarks = row[3].c_str();
    }
    std::istringstream pairs(projection_watermarks);
    for (std::string pair; std::getline(pairs, pair, ',');) {
      const auto equals = pair.find('=');
      if (equals == std::string::npos) continue;
      const std::string name = pair.substr(0, equals);
      const std::int64_t its_watermark = std::stoll(pair.substr(equals + 1));
      auto& waiting = seen_by_projection[name];
      if (waiting.empty() || head > waiting.back().second) waiting.emplace_back(now, head);
      while (!waiting.empty() && waiting.front().second <= its_watermark) {
        lags_by_projection_ms_[name].push_back(
            std::chrono::duration<double, std::milli>(now - waiting.front().first).count());
        waiting.pop_front();
      }
    }
    ++samples_;
    if (autovacuum) ++autovacuum_samples_;
    if (seen.empty() || head > seen.back().head) seen.push_back({now, head, false});
    for (auto& waiting : seen) waiting.autovacuum = waiting.autovacuum || autovacuum;
    while (!seen.empty() && seen.front().head <= watermark) {
      const double lag = std::chrono::duration<double, std::milli>(now - seen.front().at).count();
      lags_ms_.push_back(lag);
      (seen.front().autovacuum ? lags_during_autovacuum_ms_ : lags_without_autovacuum_ms_)
          .push_back(lag);
      timeline_.emplace_back(std::chrono::duration<double>(now - started).count(), lag);
      seen.pop_front();
    }
    std::this_thread::sleep_until(now + interval_);
  }
}

AutovacuumWatch::AutovacuumWatch(std::string database_url, std::chrono::milliseconds interval)
    : url_(std::move(database_url)), interval_(interval) {}

AutovacuumWatch::~AutovacuumWatch() { stop(); }

void AutovacuumWatch::start() { thread_ = std::thread([this] { run(); }); }

void AutovacuumWatch::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

std::string AutovacuumWatch::tables() const {
  std::string names;
  for (const auto& what : seen_) names += (names.empty() ? "" : ", ") + what;
  return names;
}

void AutovacuumWatch::run() {
  try {
    pqxx::connection connection(url_);
    sees_autovacuum_ = sees_other_sessions(connection);
    // Workers only (the rebuild's own VACUUM before its swap is part of what is timed), vacuum
    // or analyze: their query names the table ("autovacuum: VACUUM ANALYZE public.events").
    connection.prepare(
        "sample",
        "SELECT query FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
        "AND datname = current_database()");
    while (!stopping_) {
      const auto now = Clock::now();
      const auto rows = pqxx::nontransaction(connection).exec_prepared("sample");
      ++samples_;
      if (!rows.empty()) ++busy_samples_;
      for (const auto& row : rows) {
        std::string what = row[0].c_str();
        if (what.starts_with("autovacuum: ")) what.erase(0, 12);
        seen_.insert(std::move(what));
      }
      std::this_thread::sleep_until(now + interval_);
    }
  } catch (const std::exception& error) {
    // The bench goes on without these figures; the row says why.
    problem_ = error.what();
  }
}

std::int64_t query_scalar(const std::string& database_url, const std::string& sql) {
  pqxx::connection connection(database_url);
  pqxx::nontransaction work(connection);
  return work.exec1(sql)[0].as<std::int64_t>();
}

std::map<std::string, std::int64_t> maintenance_counts(const std::string& database_url) {
  pqxx::connection connection(database_url);
  pqxx::nontransaction work(connection);
  std::map<std::string, std::int64_t> counts;
  for (const auto& row :
       work.exec("SELECT schemaname || '.' || relname, autovacuum_count, autoanalyze_count "
                 "FROM pg_stat_user_tables")) {
    counts["autovacuum " + row[0].as<std::string>()] = row[1].as<std::int64_t>();
    counts["autoanalyze " + row[0].as<std::string>()] = row[2].as<std::int64_t>();
  }
  // PostgreSQL 15's view (17 moved the counters to pg_stat_checkpointer): without it the rows
  // are left out, not the run.
  if (work.exec1("SELECT current_setting('server_version_num')::int < 170000")[0].as<bool>()) {
    const auto checkpoints =
        work.exec1("SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter");
    counts["checkpoints (timed)"] = checkpoints[0].as<std::int64_t>();
    counts["checkpoints (requested)"] = checkpoints[1].as<std::int64_t>();
  }
  return counts;
}

double seconds_until(const std::string& database_url, const std::string& sql, std::int64_t target,
                     std::chrono::seconds limit) {
  pqxx::connection connection(database_url);
  const auto started = Clock::now();
  while (Clock::now() - started < limit) {
    std::int64_t value = 0;
    {
      pqxx::nontransaction work(connection);
      value = work.exec1(sql)[0].as<std::int64_t>();
    }
    if (value >= target) return std::chrono::duration<double>(Clock::now() - started).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

}  // namespace ledger::bench
