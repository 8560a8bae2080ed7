// `ledger replay export`: events as JSON lines or CSV, payloads decoded to JSON.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <ostream>

#include "ledger/core/hex.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/replay/replay.hpp"
#include "log_reader.hpp"

namespace ledger::replay {

namespace {

constexpr std::size_t export_batch_events = 10'000;
constexpr const char* csv_header =
    "position,stream_id,version,event_id,type,schema_version,recorded_at,actor,command_id,"
    "correlation_id,causation_id,request_id,client_address,data,hash\n";

std::string decoded_json(const domain::RecordedEvent& event) {
  const auto decoded = domain::decode_event(event.type, event.payload);
  if (!decoded) {
    throw std::runtime_error("position " + std::to_string(event.position.value()) + ": the " +
                             event.type + " payload does not decode (run `ledger replay verify`)");
  }
  return domain::event_to_json(*decoded);
}

void write_json_line(std::ostream& out, const domain::RecordedEvent& event) {
  const std::string line = domain::recorded_event_to_json(event);
  out.write(line.data(), static_cast<std::streamsize>(line.size()));
  out.put('\n');
}

// RFC 4180: quoted when it holds a comma, quote or line break; quotes doubled.
void write_csv_field(std::ostream& out, std::string_view value) {
  if (value.find_first_of(",\"\r\n") == std::string_view::npos) {
    out << value;
    return;
  }
  out.put('"');
  for (const char c : value) {
    if (c == '"') out.put('"');
    out.put(c);
  }
  out.put('"');
}

void write_csv_line(std::ostream& out, const domain::RecordedEvent& event) {
  const auto& m = event.metadata;
  out << event.position.value() << ',';
  write_csv_field(out, event.stream_id);
  out << ',' << event.version.value() << ',' << event.event_id << ',' << event.type << ','
      << event.schema_version << ',' << rfc3339(event.recorded_at_us);
  for (const std::string* field : {&m.actor, &m.command_id, &m.correlation_id, &m.causation_id,
                                   &m.request_id, &m.client_address}) {
    out.put(',');
    write_csv_field(out, *field);
  }
  out.put(',');
  write_csv_field(out, decoded_json(event));
  out << ',' << to_hex(event.hash) << '\n';
}

bool matches(const ExportFilter& filter, const domain::RecordedEvent& event) {
  if (filter.from_time_us && event.recorded_at_us < *filter.from_time_us) return false;
  if (filter.to_time_us && event.recorded_at_us >= *filter.to_time_us) return false;
  return filter.types.empty() ||
         std::find(filter.types.begin(), filter.types.end(), event.type) != filter.types.end();
}

}  // namespace

ExportSummary export_events(db::ConnectionPool& pool, const ExportFilter& filter, ExportFormat format,
                            std::ostream& out, const Progress& progress) {
  const engine::EventStore store(pool);
  const std::int64_t from = filter.range.from.value();
  const std::int64_t to = filter.range.to.value() > 0 ? filter.range.to.value() : store.head().position.value();
  ExportSummary summary;
  if (format == ExportFormat::csv) out << csv_header;
  auto write = [&](const std::vector<domain::RecordedEvent>& batch) {
    for (const auto& event : batch) {
      const std::int64_t position = event.position.value();
      ++summary.events_scanned;
      if (position < from || position > to || !matches(filter, event)) continue;
      format == ExportFormat::csv ? write_csv_line(out, event) : write_json_line(out, event);
      ++summary.events_written;
      summary.last_position = event.position;
    }
    if (!out) throw std::runtime_error("cannot write the export (disk full or a closed pipe)");
  };

  if (filter.stream_id) {
    // One stream: read by its (stream, version) index, not by scanning the log.
    std::int64_t version = 1;
    while (true) {
      const auto batch = store.read_stream(*filter.stream_id, StreamVersion(version), export_batch_events);
      if (batch.empty()) break;
      write(batch);
      version = batch.back().version.value() + 1;
      if (progress) progress(summary.events_scanned, 0);
      if (batch.back().position.value() >= to) break;
    }
  } else {
    LogReader reader(pool, from, to, export_batch_events);
    for (const auto* batch = &reader.next(); !batch->empty(); batch = &reader.next()) {
      write(*batch);
      if (progress) progress(summary.events_scanned, to - from + 1);
    }
  }
  out.flush();
  return summary;
}

std::optional<domain::RecordedEvent> parse_exported_event(std::string_view json_line) {
  rapidjson::Document doc;
  doc.Parse(json_line.data(), json_line.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  auto string_of = [&](const char* key) -> std::optional<std::string> {
    const auto member = doc.FindMember(key);
    if (member == doc.MemberEnd() || !member->value.IsString()) return std::nullopt;
    return std::string(member->value.GetString(), member->value.GetStringLength());
  };
  auto int_of = [&](const char* key) -> std::optional<std::int64_t> {
    const auto member = doc.FindMember(key);
    if (member == doc.MemberEnd() || !member->value.IsInt64()) return std::nullopt;
    return member->value.GetInt64();
  };
  auto object_text = [&](const char* key) -> std::optional<std::string> {
    const auto member = doc.FindMember(key);
    if (member == doc.MemberEnd() || !member->value.IsObject()) return std::nullopt;
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    member->value.Accept(w);
    return std::string(buffer.GetString(), buffer.GetSize());
  };
  const auto position = int_of("position"), version = int_of("version"), schema = int_of("schema_version");
  const auto stream = string_of("stream_id"), event_id = string_of("event_id"), type = string_of("type");
  const auto recorded_at = string_of("recorded_at"), hash = string_of("hash");
  const auto data = object_text("data"), metadata = object_text("metadata");
  if (!position || !version || !schema || !stream || !event_id || !type || !recorded_at || !hash ||
      !data || !metadata) {
    return std::nullopt;
  }
  const auto decoded = domain::event_from_json(*type, *data);
  const auto parsed_metadata = domain::metadata_from_json(*metadata);
  const auto time = parse_rfc3339(*recorded_at);
  const auto hash_bytes = from_hex(*hash);
  if (!decoded || !parsed_metadata || !time || !hash_bytes) return std::nullopt;
  domain::RecordedEvent event;
  event.position = GlobalPosition(*position);
  event.stream_id = *stream;
  event.version = StreamVersion(*version);
  event.event_id = *event_id;
  event.type = *type;
  event.schema_version = static_cast<std::int16_t>(*schema);
  event.payload = domain::encode_event(*decoded);
  event.metadata = *parsed_metadata;
  event.recorded_at_us = *time;
  event.hash = *hash_bytes;
  return event;
}

}  // namespace ledger::replay
