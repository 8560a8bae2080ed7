#pragma once
// JSON writing helpers shared by the router and the query handlers (private to the API).

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <string_view>

#include "ledger/core/time_text.hpp"

namespace ledger::api {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

inline void write_string(JsonWriter& w, std::string_view value) {
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

}  // namespace ledger::api
