#pragma once
// SQL shared by the event store's reader and appender (private to the engine).

#include <pqxx/pqxx>

#include "ledger/engine/event_store.hpp"

namespace ledger::domain::sql {

inline constexpr const char* select_event_columns =
    "SELECT position, stream_id, version, event_id::text, type, schema_version, payload, "
    "metadata::text, (extract(epoch FROM recorded_at) * 1000000)::bigint, hash FROM events";

inline domain::RecordedEvent read_event_row(const pqxx::row& row) {
  domain::RecordedEvent event;
  event.position = GlobalPosition(row[0].as<std::int64_t>());
  event.stream_id = row[1].as<std::string>();
  event.version = StreamVersion(row[2].as<std::int64_t>());
  event.event_id = row[3].as<std::string>();
  event.type = row[4].as<std::string>();
  event.schema_version = static_cast<std::int16_t>(row[5].as<int>());
  event.payload = pqxx::binarystring(row[6]).str();
  event.metadata = domain::metadata_from_json(row[7].c_str()).value_or(domain::EventMetadata{});
  event.recorded_at_us = row[8].as<std::int64_t>();
  event.hash = pqxx::binarystring(row[9]).str();
  return event;
}

}  // namespace ledger::domain::sql
