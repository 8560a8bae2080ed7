#include "read_side.hpp"

#include <pqxx/pqxx>

#include <deque>


namespace ledger::bench {

using Clock = std::chrono::steady_clock;

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
  connection.prepare("sample",
                     "SELECT (SELECT position FROM event_store_head), "
                     "(SELECT min(watermark) FROM read.projections)");
  const auto started = Clock::now();
  std::deque<std::pair<Clock::time_point, std::int64_t>> seen;  // (first seen, head)
  while (!stopping_) {
    const auto now = Clock::now();
    std::int64_t head = 0;
    std::int64_t watermark = 0;
    {
      pqxx::nontransaction work(connection);
      const auto row = work.exec_prepared1("sample");
      head = row[0].as<std::int64_t>();
      watermark = row[1].as<std::int64_t>();
    }
    if (seen.empty() || head > seen.back().second) seen.emplace_back(now, head);
    while (!seen.empty() && seen.front().second <= watermark) {
      const double lag = std::chrono::duration<double, std::milli>(now - seen.front().first).count();
      lags_ms_.push_back(lag);
      timeline_.emplace_back(std::chrono::duration<double>(now - started).count(), lag);
      seen.pop_front();
    }
    std::this_thread::sleep_until(now + interval_);
  }
}

std::int64_t query_scalar(const std::string& database_url, const std::string& sql) {
  pqxx::connection connection(database_url);
  pqxx::nontransaction work(connection);
  return work.exec1(sql)[0].as<std::int64_t>();
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
