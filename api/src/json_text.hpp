#pragma once
// JSON writing helpers shared by the router and the query handlers (private to the API).

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <string_view>

namespace ledger::api {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

inline void write_string(JsonWriter& w, std::string_view value) {
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

// RFC 3339 UTC with microseconds.
inline std::string rfc3339(std::int64_t micros_since_epoch) {
  const std::time_t seconds = static_cast<std::time_t>(micros_since_epoch / 1'000'000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[96];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<long long>(std::abs(micros_since_epoch % 1'000'000)));
  return text;
}

}  // namespace ledger::api
