#pragma once
// JSON writing helpers shared by the router and the query handlers (private to the API).

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

#include "ledger/core/time_text.hpp"

namespace ledger::api {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

inline void write_string(JsonWriter& w, std::string_view value) {
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

// One member of the object being written: "key": value.
inline void write_member(JsonWriter& w, const char* key, std::string_view value) {
  w.Key(key);
  write_string(w, value);
}
template <std::integral Integer>
  requires(!std::same_as<Integer, bool>)
inline void write_member(JsonWriter& w, const char* key, Integer value) {
  w.Key(key);
  w.Int64(static_cast<std::int64_t>(value));
}

}  // namespace ledger::api
