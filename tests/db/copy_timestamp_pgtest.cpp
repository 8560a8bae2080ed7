// db::copy_timestamp against a real PostgreSQL: every read model's rows carry a time written in
// COPY's text format, so what the server reads from it must be exactly the instant given, in
// the exact text the C library's calendar gives (the formatting before issue 18 replaced it).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <pqxx/pqxx>
#include <pqxx/tablewriter>
#include <random>
#include <string>
#include <vector>

#include "ledger/db/sql_text.hpp"
#include "test_cluster.hpp"

using namespace ledger;

namespace {

// The oracle: gmtime_r and snprintf, as copy_timestamp wrote every time before.
std::string formatted_by_the_c_library(std::int64_t micros_since_epoch) {
  const std::int64_t seconds = micros_since_epoch >= 0 ? micros_since_epoch / 1'000'000
                                                       : (micros_since_epoch - 999'999) / 1'000'000;
  const std::int64_t micros = micros_since_epoch - seconds * 1'000'000;
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00",
                utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                utc.tm_sec, static_cast<long long>(micros));
  return buffer;
}

constexpr std::int64_t second_us = 1'000'000;
constexpr std::int64_t day_us = 86'400 * second_us;

}  // namespace

TEST_CASE("copy_timestamp writes the instant PostgreSQL reads back, in the C library's text") {
  std::vector<std::int64_t> instants = {
      0,   // the epoch
      -1,  // a microsecond before it
      1,
      -day_us,                              // 1969-12-31
      951'782'400 * second_us,              // 2000-02-29, a leap day of a century divisible by 400
      1'709'164'800 * second_us + 1,        // 2024-02-29 00:00:00.000001
      -2'203'891'200 * second_us,           // 1900-03-01: 1900 had no 29 February
      1'798'761'599 * second_us + 999'999,  // 2026-12-31 23:59:59.999999
      -62'135'596'800 * second_us,          // 0001-01-01 00:00:00, the first four-digit year
      253'402'300'799 * second_us + 999'999,  // 9999-12-31 23:59:59.999999, the last
      253'402'300'800 * second_us,            // 10000-01-01: past the fast path, as before
      -62'135'596'800 * second_us - 1,  // 0000-12-31 23:59:59.999999 (1 BC): before it, as before
  };
  // And random instants over the four-digit years, weighted to the last century's.
  std::mt19937_64 random(20261203);
  std::uniform_int_distribution<std::int64_t> any_year(-62'135'596'800 * second_us,
                                                       253'402'300'799 * second_us);
  std::uniform_int_distribution<std::int64_t> recent(0, 4'102'444'800 * second_us);  // to 2100
  for (int i = 0; i < 5'000; ++i) instants.push_back(any_year(random));
  for (int i = 0; i < 5'000; ++i) instants.push_back(recent(random));

  std::string rows;
  for (std::size_t i = 0; i < instants.size(); ++i) {
    std::string field;
    db::copy_timestamp(field, instants[i]);
    // Years 1 BC and before: the C library writes year 0 and below, which PostgreSQL does not
    // read as the same instant (it has no year 0); only the text is compared for them.
    if (instants[i] >= -62'135'596'800 * second_us) {
      rows += std::to_string(i) + '\t' + field + '\n';
    }
    INFO("instant " << instants[i] << " µs");
    CHECK(field == formatted_by_the_c_library(instants[i]));
  }
  rows.pop_back();

  test::TestDatabase database;
  pqxx::connection connection(database.app_url());
  pqxx::work work(connection);
  work.exec("CREATE TEMP TABLE instants (i integer PRIMARY KEY, at timestamptz NOT NULL)");
  // A session time zone far from UTC: the "+00" the field carries decides, not the session.
  work.exec("SET LOCAL TimeZone = 'Pacific/Kiritimati'");
  {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    pqxx::tablewriter writer(work, "instants");
    writer.write_raw_line(rows);
    writer.complete();
#pragma GCC diagnostic pop
  }
  std::size_t compared = 0;
  for (const auto& row :
       work.exec("SELECT i, (extract(epoch FROM at) * 1000000)::bigint FROM instants ORDER BY i")) {
    const auto index = row[0].as<std::size_t>();
    INFO("instant " << instants.at(index) << " µs");
    CHECK(row[1].as<std::int64_t>() == instants.at(index));
    ++compared;
  }
  CHECK(compared == instants.size() - 1);  // all but 1 BC
}
