#include "appender.hpp"

#include <pqxx/tablewriter>

#include <ctime>
#include <optional>

#include "ledger/core/assert.hpp"
#include "ledger/core/hex.hpp"

namespace ledger::engine {

namespace {

constexpr const char* append_statement = "ledger_append_batch";

// The events go in by COPY (the fastest way into PostgreSQL); the rest of the batch in one
// statement whose data-modifying CTEs run even when unreferenced.
constexpr const char* append_sql = R"sql(
WITH new_keys AS (
  INSERT INTO idempotency_keys (actor, key, request_hash, outcome, position)
  SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bigint[])
), new_expiries AS (
  INSERT INTO pending_expiries (transfer_id, expires_at)
  SELECT id, 'epoch'::timestamptz + at * interval '1 microsecond'
  FROM unnest($6::text[], $7::bigint[]) AS x(id, at)
)
UPDATE event_store_head SET position = $8, hash = $9
)sql";

// Appends one field of COPY's text format (tab-separated, backslash escapes).
void copy_text(std::string& line, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\': line += "\\\\"; break;
      case '\t': line += "\\t"; break;
      case '\n': line += "\\n"; break;
      case '\r': line += "\\r"; break;
      default: line.push_back(c);
    }
  }
}

void copy_bytes(std::string& line, std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  line += "\\\\x";
  const std::size_t start = line.size();
  line.resize(start + bytes.size() * 2);
  char* out = line.data() + start;
  for (unsigned char byte : bytes) {
    *out++ = digits[byte >> 4];
    *out++ = digits[byte & 0xf];
  }
}

void copy_timestamp(std::string& line, std::int64_t micros_since_epoch) {
  const std::int64_t seconds = micros_since_epoch >= 0 ? micros_since_epoch / 1'000'000
                                                       : (micros_since_epoch - 999'999) / 1'000'000;
  const std::int64_t micros = micros_since_epoch - seconds * 1'000'000;
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<long long>(micros));
  line += buffer;
}

// Builders of PostgreSQL array literals in text form.
class ArrayLiteral {
 public:
  ArrayLiteral() { text_.push_back('{'); }
  void add_number(std::int64_t value) {
    separate();
    text_ += std::to_string(value);
  }
  void add_text(std::string_view value) {
    separate();
    text_.push_back('"');
    for (char c : value) {
      if (c == '"' || c == '\\') text_.push_back('\\');
      text_.push_back(c);
    }
    text_.push_back('"');
  }
  void add_bytes(std::string_view bytes) {
    separate();
    text_ += "\"\\\\x";
    text_ += to_hex(bytes);
    text_.push_back('"');
  }
  std::string finish() {
    text_.push_back('}');
    return std::move(text_);
  }

 private:
  void separate() {
    if (text_.size() > 1) text_.push_back(',');
  }
  std::string text_;
};

}  // namespace

void prepare_append(pqxx::connection& connection) {
  connection.prepare(append_statement, append_sql);
}

AppendOutcome append_batch(
    pqxx::work& work, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries) {
  const auto count = static_cast<std::int64_t>(events.size());
  const auto head = work.exec_params1(
      "UPDATE event_store_head SET position = position + $1 RETURNING position, hash", count);
  const std::int64_t last = head[0].as<std::int64_t>();
  const std::int64_t first = last - count + 1;
  std::string previous_hash = pqxx::binarystring(head[1]).str();

  // The rows stream to PostgreSQL in chunks while the rest are still being hashed and
  // formatted, so the server parses and indexes one chunk while this thread prepares the next.
  constexpr std::int64_t copy_chunk_rows = 256;
  // A command's events share their metadata: serialize it once per command.
  const EventMetadata* last_metadata = nullptr;
  std::string metadata_json;
  std::string chunk;
  chunk.reserve(static_cast<std::size_t>(copy_chunk_rows) * 640);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // pqxx 6 keeps raw COPY lines only on the deprecated tablewriter; a "line" may hold several
  // newline-separated rows (the writer adds the last newline).
  std::optional<pqxx::tablewriter> writer;
  try {
    if (count > 0) writer.emplace(work, "events");
    for (std::int64_t i = 0; i < count; ++i) {
      RecordedEvent& event = events[static_cast<std::size_t>(i)];
      event.position = GlobalPosition(first + i);
      event.hash = chain_hash(previous_hash, event);
      previous_hash = event.hash;
      if (!chunk.empty()) chunk.push_back('\n');
      chunk += std::to_string(event.position.value());
      chunk.push_back('\t');
      copy_text(chunk, event.stream_id);
      chunk.push_back('\t');
      chunk += std::to_string(event.version.value());
      chunk.push_back('\t');
      chunk += event.event_id;
      chunk.push_back('\t');
      copy_text(chunk, event.type);
      chunk.push_back('\t');
      chunk += std::to_string(event.schema_version);
      chunk.push_back('\t');
      copy_bytes(chunk, event.payload);
      chunk.push_back('\t');
      if (last_metadata == nullptr || !(*last_metadata == event.metadata)) {
        metadata_json = metadata_to_json(event.metadata);
        last_metadata = &event.metadata;
      }
      copy_text(chunk, metadata_json);
      chunk.push_back('\t');
      copy_timestamp(chunk, event.recorded_at_us);
      chunk.push_back('\t');
      copy_bytes(chunk, event.hash);
      if ((i + 1) % copy_chunk_rows == 0 || i + 1 == count) {
        writer->write_raw_line(chunk);
        chunk.clear();
      }
    }
    if (writer) writer->complete();
  } catch (const pqxx::unique_violation& error) {
    throw AppendConflict(error.what());
  }
#pragma GCC diagnostic pop

  ArrayLiteral key_actors, keys, request_hashes, outcomes, key_positions;
  for (const auto& record : records_for(GlobalPosition(first))) {
    key_actors.add_text(record.actor);
    keys.add_text(record.key);
    request_hashes.add_bytes(record.request_hash);
    outcomes.add_bytes(record.outcome);
    key_positions.add_number(record.position);
  }
  ArrayLiteral expiry_ids, expiry_times;
  for (const auto& expiry : expiries) {
    expiry_ids.add_text(expiry.transfer_id);
    expiry_times.add_number(expiry.expires_at_us);
  }

  try {
    work.exec_prepared(append_statement, key_actors.finish(),
                       keys.finish(), request_hashes.finish(), outcomes.finish(),
                       key_positions.finish(), expiry_ids.finish(), expiry_times.finish(), last,
                       pqxx::binarystring(previous_hash));
  } catch (const pqxx::unique_violation& error) {
    throw AppendConflict(error.what());
  }
  work.commit();
  return {GlobalPosition(first), GlobalPosition(last)};
}

}  // namespace ledger::engine
