#include "ledger/engine/event_store.hpp"

#include <openssl/evp.h>
#include <pqxx/pqxx>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "ledger/core/assert.hpp"
#include "ledger/core/hex.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/engine/events.hpp"
#include "ledger/db/pool.hpp"
#include "store_sql.hpp"

namespace ledger::engine {

namespace {

void append_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

void append_field(std::string& out, std::string_view field) {
  append_u64(out, field.size());
  out.append(field);
}

constexpr std::pair<const char*, std::string EventMetadata::*> metadata_fields[] = {
    {"actor", &EventMetadata::actor},
    {"command_id", &EventMetadata::command_id},
    {"correlation_id", &EventMetadata::correlation_id},
    {"causation_id", &EventMetadata::causation_id},
    {"request_id", &EventMetadata::request_id},
    {"client_address", &EventMetadata::client_address},
};

}  // namespace

std::string metadata_to_json(const EventMetadata& metadata) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  for (const auto& [name, member] : metadata_fields) {
    writer.Key(name);
    const std::string& value = metadata.*member;
    writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::optional<EventMetadata> metadata_from_json(std::string_view json) {
  rapidjson::Document document;
  document.Parse(json.data(), json.size());
  if (document.HasParseError() || !document.IsObject()) return std::nullopt;
  EventMetadata metadata;
  for (const auto& [name, member] : metadata_fields) {
    const auto found = document.FindMember(name);
    if (found == document.MemberEnd()) continue;
    if (!found->value.IsString()) return std::nullopt;
    metadata.*member = std::string(found->value.GetString(), found->value.GetStringLength());
  }
  return metadata;
}

std::string genesis_hash() { return std::string(event_hash_size, '\0'); }

std::string chain_hash(std::string_view previous_hash, const RecordedEvent& event) {
  LEDGER_ASSERT(previous_hash.size() == event_hash_size, "previous hash must be 32 bytes");
  std::string bytes;
  bytes.reserve(160 + event.payload.size());
  bytes.append(previous_hash);
  append_u64(bytes, static_cast<std::uint64_t>(event.position.value()));
  append_field(bytes, event.stream_id);
  append_u64(bytes, static_cast<std::uint64_t>(event.version.value()));
  append_field(bytes, event.event_id);
  append_field(bytes, event.type);
  append_u64(bytes, static_cast<std::uint64_t>(event.schema_version));
  append_u64(bytes, static_cast<std::uint64_t>(event.recorded_at_us));
  append_field(bytes, event.payload);
  for (const auto& [name, member] : metadata_fields) append_field(bytes, event.metadata.*member);
  // Fetched once: OpenSSL 3 would otherwise look the algorithm up on every call.
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, sha256, nullptr);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string recorded_event_to_json(const RecordedEvent& event) {
  const auto decoded = decode_event(event.type, event.payload);
  if (!decoded) {
    throw std::runtime_error("position " + std::to_string(event.position.value()) + ": the " + event.type +
                             " payload does not decode (run `ledger replay verify`)");
  }
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  auto text = [&](const char* key, std::string_view value) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  auto raw = [&](const char* key, const std::string& json) {
    w.Key(key);
    w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  };
  w.StartObject();
  w.Key("position");
  w.Int64(event.position.value());
  text("stream_id", event.stream_id);
  w.Key("version");
  w.Int64(event.version.value());
  text("event_id", event.event_id);
  text("type", event.type);
  w.Key("schema_version");
  w.Int(event.schema_version);
  text("recorded_at", rfc3339(event.recorded_at_us));
  raw("data", event_to_json(*decoded));
  raw("metadata", metadata_to_json(event.metadata));
  text("hash", to_hex(event.hash));
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

EventStore::EventStore(db::ConnectionPool& pool) : pool_(pool) {}

std::vector<RecordedEvent> EventStore::read_stream(const std::string& stream_id,
                                                   StreamVersion from_version,
                                                   std::size_t limit) const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto rows = work.exec_params(std::string(sql::select_event_columns) +
                                         " WHERE stream_id = $1 AND version >= $2 ORDER BY version "
                                         "LIMIT $3",
                                     stream_id, from_version.value(), static_cast<long long>(limit));
  std::vector<RecordedEvent> events;
  events.reserve(rows.size());
  for (const auto& row : rows) events.push_back(sql::read_event_row(row));
  return events;
}

std::vector<RecordedEvent> EventStore::read_all(GlobalPosition from, std::size_t limit) const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto rows = work.exec_params(std::string(sql::select_event_columns) +
                                         " WHERE position >= $1 ORDER BY position LIMIT $2",
                                     from.value(), static_cast<long long>(limit));
  std::vector<RecordedEvent> events;
  events.reserve(rows.size());
  for (const auto& row : rows) events.push_back(sql::read_event_row(row));
  return events;
}

std::vector<std::pair<GlobalPosition, std::string>> EventStore::streams_with_event(std::string_view type,
                                                                                GlobalPosition after,
                                                                                std::size_t limit) const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto rows = work.exec_params(
      "SELECT position, stream_id FROM events WHERE type = $1 AND position > $2 ORDER BY position LIMIT $3",
      std::string(type), after.value(), static_cast<long long>(limit));
  std::vector<std::pair<GlobalPosition, std::string>> streams;
  streams.reserve(rows.size());
  for (const auto& row : rows) streams.emplace_back(GlobalPosition(row[0].as<std::int64_t>()), row[1].as<std::string>());
  return streams;
}

StoreHead EventStore::head() const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto row = work.exec1("SELECT position, hash FROM event_store_head");
  return {GlobalPosition(row[0].as<std::int64_t>()), pqxx::binarystring(row[1]).str()};
}

ChainVerification EventStore::verify_chain(GlobalPosition from, GlobalPosition to) const {
  constexpr std::size_t verify_batch_events = 10'000;
  ChainVerification result;
  if (to.value() == 0) to = head().position;
  std::string previous = genesis_hash();
  if (from.value() > 1) {
    auto before = read_all(GlobalPosition(from.value() - 1), 1);
    if (before.empty() || before.front().position.value() != from.value() - 1) {
      return {false, 0, GlobalPosition(from.value() - 1), "event missing"};
    }
    previous = before.front().hash;
  }
  std::int64_t expected = from.value();
  while (expected <= to.value()) {
    const auto batch = read_all(GlobalPosition(expected), verify_batch_events);
    if (batch.empty()) return {false, result.events_checked, GlobalPosition(expected), "event missing"};
    for (const auto& event : batch) {
      if (event.position.value() > to.value()) return result;
      if (event.position.value() != expected) {
        return {false, result.events_checked, GlobalPosition(expected), "event missing"};
      }
      if (chain_hash(previous, event) != event.hash) {
        return {false, result.events_checked, event.position,
                "hash does not match the chain (event or its predecessor was altered)"};
      }
      previous = event.hash;
      ++expected;
      ++result.events_checked;
    }
  }
  return result;
}

}  // namespace ledger::engine
