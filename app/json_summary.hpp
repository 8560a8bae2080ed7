#pragma once
// The one-line JSON summary a command prints with --json.

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <functional>
#include <iostream>

namespace ledger::app {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Prints {…} with the members `write` adds, and a newline.
inline void print_json(const std::function<void(JsonWriter&)>& write, std::ostream& out = std::cout) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write(w);
  w.EndObject();
  out << buffer.GetString() << "\n";
}

}  // namespace ledger::app
