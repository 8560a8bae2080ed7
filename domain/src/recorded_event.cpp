#include "ledger/domain/recorded_event.hpp"

#include <openssl/evp.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <array>
#include <cstring>

#include "ledger/core/assert.hpp"
#include "ledger/core/hex.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/domain/events.hpp"

namespace ledger::domain {

namespace {

void append_u64(std::string& out, std::uint64_t value) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(value >> (56 - 8 * i));  // big-endian
  out.append(bytes, sizeof bytes);
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

namespace {

using Digest = std::array<unsigned char, event_hash_size>;

Digest chain_digest(std::string_view previous_hash, const RecordedEvent& event) {
  LEDGER_ASSERT(previous_hash.size() == event_hash_size, "previous hash must be 32 bytes");
  // One buffer per thread, its storage reused: verify and the projectors hash every event of
  // the log, and allocating the bytes (and the digest's string) per event showed in profiles.
  thread_local std::string bytes;
  bytes.clear();
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
  Digest digest{};
  unsigned int length = 0;
  const bool hashed =
      EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, sha256, nullptr) == 1;
  LEDGER_ASSERT(hashed && length == digest.size(), "SHA-256 gives 32 bytes");
  if (bytes.capacity() > (std::size_t{1} << 20)) bytes = std::string();  // after an outsized event
  return digest;
}

}  // namespace

std::string chain_hash(std::string_view previous_hash, const RecordedEvent& event) {
  const Digest digest = chain_digest(previous_hash, event);
  return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}

bool chains_from(std::string_view previous_hash, const RecordedEvent& event) {
  if (event.hash.size() != event_hash_size) return false;
  const Digest digest = chain_digest(previous_hash, event);
  return std::memcmp(digest.data(), event.hash.data(), digest.size()) == 0;
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

}  // namespace ledger::domain
