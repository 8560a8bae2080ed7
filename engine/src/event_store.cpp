#include "ledger/engine/event_store.hpp"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <pqxx/pqxx>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <limits>

#include "ledger/core/assert.hpp"
#include "ledger/core/hex.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/db/database_url.hpp"
#include "ledger/db/pool.hpp"
#include "store_sql.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

namespace {

// Runs `read` in a read-only transaction on a pooled session. A session whose read failed is
// dropped, not returned to the pool: a prepared statement the failure left unusable there (a
// migration changed a column's type: "cached plan must not change result type") would fail
// every later read on it, and a broken connection is of no use either.
template <typename Read>
auto read_pooled(db::ConnectionPool& pool, Read&& read) {
  auto lease = pool.acquire();
  try {
    pqxx::read_transaction work(*lease);
    return read(work);
  } catch (...) {
    lease.discard();
    throw;
  }
}

}  // namespace

EventStore::EventStore(db::ConnectionPool& pool) : pool_(pool) {}

std::vector<RecordedEvent> EventStore::read_stream(const std::string& stream_id,
                                                   StreamVersion from_version,
                                                   std::size_t limit) const {
  static const std::string text =
      std::string(sql::select_event_columns) +
      " WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3";
  return read_pooled(pool_, [&](pqxx::read_transaction& work) {
    const auto rows = sql::exec_statement(work, "ledger_read_stream", text, stream_id,
                                          from_version.value(), static_cast<long long>(limit));
    std::vector<RecordedEvent> events;
    events.reserve(rows.size());
    for (const auto& row : rows) events.push_back(sql::read_event_row(row));
    return events;
  });
}

std::vector<RecordedEvent> EventStore::read_all(GlobalPosition from, std::size_t limit) const {
  // The relay's read, and a projector's for what Kafka did not bring: once per poll or round.
  static const std::string text =
      std::string(sql::select_event_columns) + " WHERE position >= $1 ORDER BY position LIMIT $2";
  return read_pooled(pool_, [&](pqxx::read_transaction& work) {
    const auto rows = sql::exec_statement(work, "ledger_read_all", text, from.value(),
                                          static_cast<long long>(limit));
    std::vector<RecordedEvent> events;
    events.reserve(rows.size());
    for (const auto& row : rows) events.push_back(sql::read_event_row(row));
    return events;
  });
}

std::vector<std::pair<GlobalPosition, std::string>> EventStore::loans_disbursed(GlobalPosition after,
                                                                             std::size_t limit) const {
  return read_pooled(pool_, [&](pqxx::read_transaction& work) {
    const auto rows = sql::exec_statement(work, sql::loans_disbursed_statement, after.value(),
                                          static_cast<long long>(limit));
    std::vector<std::pair<GlobalPosition, std::string>> streams;
    streams.reserve(rows.size());
    for (const auto& row : rows) {
      streams.emplace_back(GlobalPosition(row[0].as<std::int64_t>()), row[1].as<std::string>());
    }
    return streams;
  });
}

StoreHead EventStore::head() const {
  return read_pooled(pool_, [&](pqxx::read_transaction& work) {
    const auto rows = sql::exec_statement(work, sql::read_head_statement);
    if (rows.size() != 1) throw pqxx::unexpected_rows("the event store has no head row");
    return StoreHead{GlobalPosition(rows[0][0].as<std::int64_t>()),
                     pqxx::binarystring(rows[0][1]).str()};
  });
}

ChainVerification EventStore::verify_chain(GlobalPosition from, GlobalPosition to) const {
  constexpr std::size_t verify_batch_events = 10'000;
  ChainVerification result;
  if (to.value() == 0) to = head().position;
  std::string previous = domain::genesis_hash();
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
      if (!chains_from(previous, event)) {
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


// --- LogCopyReader ---------------------------------------------------------------------------

namespace {

// The columns of select_event_columns, as stored (binary COPY sends each type's own bytes).
constexpr const char* copy_event_columns =
    "position, stream_id, version, event_id, type, schema_version, payload, metadata, recorded_at, hash";
constexpr int copy_event_fields = 10;
// PostgreSQL counts timestamps from 2000-01-01 UTC; the store's callers from 1970-01-01.
constexpr std::int64_t postgres_epoch_us = 946'684'800'000'000;
constexpr std::string_view copy_signature{"PGCOPY\n\377\r\n\0", 11};
constexpr std::uint8_t jsonb_format_version = 1;
// Parsed bytes are dropped from the receive buffer at the latest once they are this many.
constexpr std::size_t compact_after_bytes = 1 << 20;

std::uint64_t big_endian(const char* bytes, std::size_t size) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i) value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  return value;
}

// The canonical text of a uuid (lower-case, hyphenated), as uuid::text prints it.
void uuid_text(std::string& out, const char* bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  out.resize(36);
  std::size_t at = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[at++] = '-';
    const auto byte = static_cast<unsigned char>(bytes[i]);
    out[at++] = digits[byte >> 4];
    out[at++] = digits[byte & 0x0f];
  }
}

// The metadata of jsonb's own text output ({"key": "value", ...}) when every value is a plain
// string without escapes; false for anything else, which metadata_from_json then parses (the
// same result either way: this is only the common case without building a document).
bool simple_metadata(std::string_view json, EventMetadata& metadata) {
  if (json.find('\\') != std::string_view::npos) return false;
  std::size_t at = 0;
  auto skip_spaces = [&] {
    while (at < json.size() && json[at] == ' ') ++at;
  };
  auto string = [&](std::string_view& value) {
    if (at >= json.size() || json[at] != '"') return false;
    const std::size_t end = json.find('"', at + 1);
    if (end == std::string_view::npos) return false;
    value = json.substr(at + 1, end - at - 1);
    for (const char c : value) {
      if (static_cast<unsigned char>(c) < 0x20) return false;
    }
    at = end + 1;
    return true;
  };
  metadata = EventMetadata{};
  unsigned seen = 0;
  skip_spaces();
  if (at >= json.size() || json[at++] != '{') return false;
  skip_spaces();
  if (at < json.size() && json[at] == '}') {
    ++at;
  } else {
    while (true) {
      std::string_view key, value;
      skip_spaces();
      if (!string(key)) return false;
      skip_spaces();
      if (at >= json.size() || json[at++] != ':') return false;
      skip_spaces();
      if (!string(value)) return false;
      static constexpr std::pair<std::string_view, std::string EventMetadata::*> fields[] = {
          {"actor", &EventMetadata::actor},
          {"command_id", &EventMetadata::command_id},
          {"correlation_id", &EventMetadata::correlation_id},
          {"causation_id", &EventMetadata::causation_id},
          {"request_id", &EventMetadata::request_id},
          {"client_address", &EventMetadata::client_address}};
      for (std::size_t i = 0; i < std::size(fields); ++i) {
        // The first of duplicate keys counts, as for metadata_from_json.
        if (key == fields[i].first && (seen & (1U << i)) == 0) {
          seen |= 1U << i;
          (metadata.*fields[i].second).assign(value);
        }
      }
      skip_spaces();
      if (at >= json.size()) return false;
      const char next = json[at++];
      if (next == '}') break;
      if (next != ',') return false;
    }
  }
  skip_spaces();
  return at == json.size();
}

}  // namespace

struct LogCopyReader::Impl {
  PGconn* connection = nullptr;
  std::int64_t next_chunk_from = 0;  // the first position of the next COPY
  std::int64_t to = 0;
  std::int64_t chunk_events = 0;
  bool copying = false;      // a COPY is open: rows or its end are still to come
  bool header_read = false;  // of the open COPY
  std::string buffer;        // bytes received and not parsed yet, from `offset`
  std::size_t offset = 0;

  ~Impl() {
    if (connection != nullptr) PQfinish(connection);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("reading the event store: " + what);
  }
  [[noreturn]] void fail_server(const std::string& what) const {
    std::string message = PQerrorMessage(connection);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    fail(what + ": " + message);
  }

  // Starts the COPY of the next chunk; false when the range is done.
  bool start_chunk() {
    if (next_chunk_from > to) return false;
    const std::int64_t last = std::min(to, next_chunk_from + chunk_events - 1);
    const std::string copy = std::string("COPY (SELECT ") + copy_event_columns + " FROM events WHERE position BETWEEN " +
                             std::to_string(next_chunk_from) + " AND " + std::to_string(last) +
                             " ORDER BY position) TO STDOUT (FORMAT binary)";
    PGresult* result = PQexec(connection, copy.c_str());
    const bool started = PQresultStatus(result) == PGRES_COPY_OUT;
    PQclear(result);
    if (!started) fail_server("COPY of positions " + std::to_string(next_chunk_from) + " to " + std::to_string(last));
    next_chunk_from = last + 1;
    copying = true;
    header_read = false;
    buffer.clear();
    offset = 0;
    return true;
  }

  // Receives the next message of the open COPY into the buffer; false at its end (then the
  // whole stream must have been parsed).
  bool receive() {
    char* data = nullptr;
    const int length = PQgetCopyData(connection, &data, 0);
    if (length > 0) {
      if (offset > 0 && (offset == buffer.size() || offset >= compact_after_bytes)) {
        buffer.erase(0, offset);
        offset = 0;
      }
      buffer.append(data, static_cast<std::size_t>(length));
      PQfreemem(data);
      return true;
    }
    if (length == -2) fail_server("COPY failed");
    // -1: the COPY is done; its result says how.
    bool ok = true;
    for (PGresult* result = PQgetResult(connection); result != nullptr; result = PQgetResult(connection)) {
      ok = ok && PQresultStatus(result) == PGRES_COMMAND_OK;
      PQclear(result);
    }
    if (!ok) fail_server("COPY failed");
    copying = false;
    if (offset != buffer.size()) fail("the COPY stream ended inside a row");
    return false;
  }

  // Bytes available from the buffer's offset.
  [[nodiscard]] std::size_t available() const { return buffer.size() - offset; }

  // Makes `size` bytes available; false when the COPY ended first (an error unless at a row).
  bool need(std::size_t size) {
    while (available() < size) {
      if (!receive()) return false;
    }
    return true;
  }

  const char* take(std::size_t size) {
    const char* at = buffer.data() + offset;
    offset += size;
    return at;
  }

  // One field of the current row: its bytes (the row must hold one, never NULL).
  std::string_view field(const char* column) {
    if (!need(4)) fail("the COPY stream ended inside a row");
    const auto length = static_cast<std::int32_t>(static_cast<std::uint32_t>(big_endian(take(4), 4)));
    if (length < 0) fail(std::string("NULL ") + column);
    if (!need(static_cast<std::size_t>(length))) fail("the COPY stream ended inside a row");
    return {take(static_cast<std::size_t>(length)), static_cast<std::size_t>(length)};
  }

  std::int64_t integer(const char* column, std::size_t size) {
    const auto bytes = field(column);
    if (bytes.size() != size) fail(std::string("unexpected size of ") + column);
    const std::uint64_t value = big_endian(bytes.data(), size);
    // Sign-extend the narrower integers (int2).
    if (size < 8 && (value >> (8 * size - 1)) != 0) return static_cast<std::int64_t>(value | (~std::uint64_t{0} << (8 * size)));
    return static_cast<std::int64_t>(value);
  }

  // Parses the next row into `event`; false when the range is done.
  bool next_row(RecordedEvent& event) {
    while (true) {
      if (!copying && !start_chunk()) return false;
      if (!header_read) {
        if (!need(copy_signature.size() + 8)) continue;  // an empty COPY still sends its header
        if (std::string_view(take(copy_signature.size()), copy_signature.size()) != copy_signature) {
          fail("not a binary COPY stream");
        }
        take(4);  // flags
        const auto extension = static_cast<std::size_t>(big_endian(take(4), 4));
        if (!need(extension)) fail("the COPY header is cut short");
        take(extension);
        header_read = true;
      }
      if (!need(2)) continue;  // the COPY ended: the next chunk
      const auto fields = static_cast<std::int16_t>(static_cast<std::uint16_t>(big_endian(take(2), 2)));
      if (fields == -1) {
        // The trailer; the stream must end right after it.
        if (need(1)) fail("bytes after the COPY trailer");
        continue;
      }
      if (fields != copy_event_fields) fail("a row with " + std::to_string(fields) + " columns");
      event.position = GlobalPosition(integer("position", 8));
      const auto stream_id = field("stream_id");
      event.stream_id.assign(stream_id);
      event.version = StreamVersion(integer("version", 8));
      const auto event_id = field("event_id");
      if (event_id.size() != 16) fail("unexpected size of event_id");
      uuid_text(event.event_id, event_id.data());
      event.type.assign(field("type"));
      event.schema_version = static_cast<std::int16_t>(integer("schema_version", 2));
      event.payload.assign(field("payload"));
      const auto metadata = field("metadata");
      if (metadata.empty() || static_cast<std::uint8_t>(metadata.front()) != jsonb_format_version) {
        fail("unexpected jsonb format of metadata");
      }
      const auto json = metadata.substr(1);
      // As read_all: metadata that is not an object of strings reads as empty (the hash chain
      // then names the event).
      if (!simple_metadata(json, event.metadata)) {
        event.metadata = metadata_from_json(json).value_or(EventMetadata{});
      }
      event.recorded_at_us = integer("recorded_at", 8) + postgres_epoch_us;
      event.hash.assign(field("hash"));
      return true;
    }
  }
};

LogCopyReader::LogCopyReader(const db::ConnectionPool& pool, GlobalPosition from, GlobalPosition to,
                             std::int64_t chunk_events)
    : impl_(std::make_unique<Impl>()) {
  const auto& settings = pool.settings();
  const std::string conninfo = db::connection_string(settings.url, settings.connect_timeout,
                                                     settings.statement_timeout, settings.idle_in_transaction_timeout);
  impl_->connection = PQconnectdb(conninfo.c_str());
  if (PQstatus(impl_->connection) != CONNECTION_OK) {
    impl_->fail_server("cannot connect to read the log");
  }
  // Text columns arrive in the client encoding: UTF-8, as for every other reader.
  if (PQsetClientEncoding(impl_->connection, "UTF8") != 0) impl_->fail_server("cannot set the client encoding");
  impl_->next_chunk_from = std::max<std::int64_t>(from.value(), 1);
  impl_->to = to.value();
  impl_->chunk_events = std::max<std::int64_t>(chunk_events, 1);
}

LogCopyReader::~LogCopyReader() = default;

void LogCopyReader::read(std::vector<RecordedEvent>& out, std::size_t limit) {
  std::size_t count = 0;
  while (count < limit) {
    if (count == out.size()) out.emplace_back();
    if (!impl_->next_row(out[count])) break;
    ++count;
  }
  out.resize(count);
}

void LogCopyReader::read_range(GlobalPosition from, GlobalPosition to, std::vector<RecordedEvent>& out) {
  if (impl_->copying) throw std::logic_error("LogCopyReader::read_range while a read() has a COPY open");
  impl_->next_chunk_from = std::max<std::int64_t>(from.value(), 1);
  impl_->to = to.value();
  impl_->chunk_events = std::max<std::int64_t>(to.value() - impl_->next_chunk_from + 1, 1);
  read(out, std::numeric_limits<std::size_t>::max());
}

}  // namespace ledger::engine
