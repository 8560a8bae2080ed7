#include "appender.hpp"

#include "ledger/core/assert.hpp"
#include "ledger/core/hex.hpp"

namespace ledger::engine {

namespace {

constexpr const char* append_statement = "ledger_append_batch";

// One statement writes the whole batch: data-modifying CTEs run even when unreferenced.
constexpr const char* append_sql = R"sql(
WITH new_events AS (
  INSERT INTO events (position, stream_id, version, event_id, type, schema_version, payload,
                      metadata, recorded_at, hash)
  SELECT p, s, v, e, t, sv, pl, md, 'epoch'::timestamptz + r * interval '1 microsecond', h
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::smallint[],
              $7::bytea[], $8::jsonb[], $9::bigint[], $10::bytea[])
       AS u(p, s, v, e, t, sv, pl, md, r, h)
), new_keys AS (
  INSERT INTO idempotency_keys (actor, key, request_hash, outcome, position)
  SELECT * FROM unnest($11::text[], $12::text[], $13::bytea[], $14::bytea[], $15::bigint[])
), new_expiries AS (
  INSERT INTO pending_expiries (transfer_id, expires_at)
  SELECT id, 'epoch'::timestamptz + at * interval '1 microsecond'
  FROM unnest($16::text[], $17::bigint[]) AS x(id, at)
)
UPDATE event_store_head SET position = $18, hash = $19
)sql";

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

  ArrayLiteral positions, streams, versions, ids, types, schema_versions, payloads, metadata,
      times, hashes;
  for (std::int64_t i = 0; i < count; ++i) {
    RecordedEvent& event = events[static_cast<std::size_t>(i)];
    event.position = GlobalPosition(first + i);
    event.hash = chain_hash(previous_hash, event);
    previous_hash = event.hash;
    positions.add_number(event.position.value());
    streams.add_text(event.stream_id);
    versions.add_number(event.version.value());
    ids.add_text(event.event_id);
    types.add_text(event.type);
    schema_versions.add_number(event.schema_version);
    payloads.add_bytes(event.payload);
    metadata.add_text(metadata_to_json(event.metadata));
    times.add_number(event.recorded_at_us);
    hashes.add_bytes(event.hash);
  }

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
    work.exec_prepared(append_statement, positions.finish(), streams.finish(), versions.finish(),
                       ids.finish(), types.finish(), schema_versions.finish(), payloads.finish(),
                       metadata.finish(), times.finish(), hashes.finish(), key_actors.finish(),
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
