#include "appender.hpp"

#include <pqxx/tablewriter>

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "append_checks.hpp"
#include "ledger/core/assert.hpp"
#include "ledger/db/sql_text.hpp"
#include "store_sql.hpp"

namespace ledger::engine {

using Clock = std::chrono::steady_clock;

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

using db::ArrayLiteral;
using db::copy_bytes;
using db::copy_text;
using db::copy_timestamp;

namespace {

constexpr const char* append_statement = "ledger_append_batch";

// The events and the idempotency records go in by COPY (the fastest way into PostgreSQL: no
// array literal for it to parse per batch); the rest of the batch in one statement whose
// data-modifying CTE runs even when unreferenced.
constexpr const char* append_sql = R"sql(
WITH new_expiries AS (
  INSERT INTO pending_expiries (transfer_id, expires_at)
  SELECT id, 'epoch'::timestamptz + at * interval '1 microsecond'
  FROM unnest($1::text[], $2::bigint[]) AS x(id, at)
)
UPDATE event_store_head SET position = $3, hash = $4
)sql";

// The columns of idempotency_keys the appender COPYs (created_at takes its default).
const std::vector<std::string>& idempotency_key_columns() {
  static const std::vector<std::string> columns = {"actor", "key", "request_hash", "outcome", "position"};
  return columns;
}

// Adds the time since `started` to `step` of `times`, when the caller asked for them.
void add_step_time(AppendStepTimes* times, Clock::duration AppendStepTimes::*step,
                   Clock::time_point started) {
  if (times != nullptr) times->*step += Clock::now() - started;
}

// A problem a check of append_checks.hpp found is a bug in deciding, never user input: stop
// before anything is written.
void assert_no_problem(const std::string& problem) {
  LEDGER_ASSERT(problem.empty(), problem.c_str());
}

// The trigger of migration 0006 refused the batch: it would have left a version gap.
bool is_version_gap(const pqxx::check_violation& error) {
  return std::string_view(error.what()).find("version gap") != std::string_view::npos;
}

// COPYs the batch's idempotency records into idempotency_keys. A key stored before (by
// another writer) or twice in the batch is a unique violation: AppendConflict, and the
// transaction writes nothing.
void copy_idempotency_records(pqxx::work& work, const std::vector<IdempotencyRecord>& records) {
  if (records.empty()) return;
  std::string lines;
  lines.reserve(records.size() * 160);
  for (const auto& record : records) {
    if (!lines.empty()) lines.push_back('\n');
    copy_text(lines, record.actor);
    lines.push_back('\t');
    copy_text(lines, record.key);
    lines.push_back('\t');
    copy_bytes(lines, record.request_hash);
    lines.push_back('\t');
    copy_bytes(lines, record.outcome);
    lines.push_back('\t');
    lines += std::to_string(record.position);
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  try {
    pqxx::tablewriter writer(work, domain::sql::idempotency_keys_table, idempotency_key_columns().begin(),
                             idempotency_key_columns().end());
    writer.write_raw_line(lines);
    writer.complete();
  } catch (const pqxx::unique_violation& error) {
    throw AppendConflict(error.what());
  }
#pragma GCC diagnostic pop
}

}  // namespace

void prepare_append(pqxx::connection& connection) {
  connection.prepare(append_statement, append_sql);
}

LockedHead lock_head(pqxx::work& work) {
  const auto result = domain::sql::exec_statement(work, domain::sql::lock_head_statement);
  if (result.size() != 1) throw pqxx::unexpected_rows("the event store has no head row");
  const auto row = result[0];
  return {row[0].as<std::int64_t>(), pqxx::binarystring(row[1]).str()};
}

std::unordered_map<std::string, std::int64_t> read_stored_versions(
    pqxx::work& work, const std::vector<std::string>& stream_ids) {
  std::unordered_map<std::string, std::int64_t> versions;
  if (stream_ids.empty()) return versions;
  ArrayLiteral ids;
  for (const auto& id : stream_ids) ids.add_text(id);
  for (const auto& row : domain::sql::exec_statement(work, domain::sql::stored_versions_statement, ids.finish())) {
    versions.emplace(row[0].as<std::string>(), row[1].as<std::int64_t>());
  }
  return versions;
}

std::vector<StoredEvent> events_between(pqxx::work& work, std::int64_t from, std::int64_t to) {
  const auto rows = domain::sql::exec_statement(work, domain::sql::events_between_statement, from, to);
  std::vector<StoredEvent> events;
  events.reserve(rows.size());
  for (const auto& row : rows) {
    events.push_back({row[0].as<std::string>(), row[1].as<std::int64_t>(), row[2].as<std::string>(),
                      pqxx::binarystring(row[3]).str(), pqxx::binarystring(row[4]).str()});
  }
  return events;
}

namespace {

// One event as a line of the events table's COPY text (no newline). A command's events share
// their metadata: `metadata_json` keeps the last one serialized (`last_metadata` its source).
void append_copy_row(std::string& chunk, const RecordedEvent& event, const EventMetadata*& last_metadata,
                     std::string& metadata_json) {
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
}

// Runs `copy` (a COPY into events): a key written before or a version gap the store refuses
// (the batch was decided on a state the store does not hold) is an AppendConflict.
template <typename Copy>
void copy_events_or_conflict(Copy&& copy) {
  try {
    copy();
  } catch (const pqxx::unique_violation& error) {
    throw AppendConflict(error.what());
  } catch (const pqxx::check_violation& error) {
    if (!is_version_gap(error)) throw;
    spdlog::error("append refused by the store: {}", error.what());
    throw AppendConflict(error.what());
  }
}

}  // namespace

LockedHead write_batch(
    pqxx::work& work, const LockedHead& head, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    AppendStepTimes* times) {
  const auto events_started = Clock::now();
  const auto count = static_cast<std::int64_t>(events.size());
  assert_no_problem(check_batch_balanced(events));
  assert_no_problem(check_streams_continue(events));
  const std::int64_t last = head.position + count;
  const std::int64_t first = head.position + 1;
  std::string previous_hash = head.hash;

  // The rows stream to PostgreSQL in chunks while the rest are still being hashed and
  // formatted, so the server parses and indexes one chunk while this thread prepares the next.
  constexpr std::int64_t copy_chunk_rows = 256;
  const EventMetadata* last_metadata = nullptr;
  std::string metadata_json;
  std::string chunk;
  chunk.reserve(static_cast<std::size_t>(copy_chunk_rows) * 640);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // pqxx 6 keeps raw COPY lines only on the deprecated tablewriter; a "line" may hold several
  // newline-separated rows (the writer adds the last newline).
  std::optional<pqxx::tablewriter> writer;
  copy_events_or_conflict([&] {
    if (count > 0) writer.emplace(work, domain::sql::events_table);
    for (std::int64_t i = 0; i < count; ++i) {
      RecordedEvent& event = events[static_cast<std::size_t>(i)];
      event.position = GlobalPosition(first + i);
      event.hash = chain_hash(previous_hash, event);
      previous_hash = event.hash;
      if (!chunk.empty()) chunk.push_back('\n');
      append_copy_row(chunk, event, last_metadata, metadata_json);
      if ((i + 1) % copy_chunk_rows == 0 || i + 1 == count) {
        writer->write_raw_line(chunk);
        chunk.clear();
      }
    }
    assert_no_problem(check_positions_dense(events, head.position));
    if (writer) writer->complete();
  });
#pragma GCC diagnostic pop
  add_step_time(times, &AppendStepTimes::events, events_started);

  const std::vector<IdempotencyRecord> records = records_for(GlobalPosition(first));
  const auto keys_started = Clock::now();
  copy_idempotency_records(work, records);
  add_step_time(times, &AppendStepTimes::idempotency_keys, keys_started);
  return {last, std::move(previous_hash)};
}

LockedHead seal_rows(const LockedHead& head, std::vector<RecordedEvent>& events) {
  std::string previous_hash = head.hash;
  std::int64_t position = head.position;
  for (RecordedEvent& event : events) {
    event.position = GlobalPosition(++position);
    event.hash = chain_hash(previous_hash, event);
    previous_hash = event.hash;
  }
  return {position, std::move(previous_hash)};
}

void write_sealed(pqxx::work& work, const LockedHead& head,
                  const std::vector<const std::vector<RecordedEvent>*>& parts,
                  const std::vector<IdempotencyRecord>& records, AppendStepTimes* times) {
  const auto events_started = Clock::now();
  std::vector<RecordedEvent> all;  // the checks look at the rows of every part together
  std::size_t count = 0;
  for (const auto* part : parts) count += part->size();
  all.reserve(count);
  for (const auto* part : parts) all.insert(all.end(), part->begin(), part->end());
  assert_no_problem(check_batch_balanced(all));
  assert_no_problem(check_streams_continue(all));
  assert_no_problem(check_positions_dense(all, head.position));
  const EventMetadata* last_metadata = nullptr;
  std::string metadata_json;
  std::string lines;
  lines.reserve(count * 640);
  for (const auto& event : all) {
    if (!lines.empty()) lines.push_back('\n');
    append_copy_row(lines, event, last_metadata, metadata_json);
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  copy_events_or_conflict([&] {
    if (count == 0) return;
    pqxx::tablewriter writer(work, domain::sql::events_table);
    writer.write_raw_line(lines);
    writer.complete();
  });
#pragma GCC diagnostic pop
  add_step_time(times, &AppendStepTimes::events, events_started);
  const auto keys_started = Clock::now();
  copy_idempotency_records(work, records);
  add_step_time(times, &AppendStepTimes::idempotency_keys, keys_started);
}

void commit_batch(pqxx::work& work, const LockedHead& head_after,
                  const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times) {
  const auto started = Clock::now();
  ArrayLiteral expiry_ids, expiry_times;
  for (const auto& expiry : expiries) {
    expiry_ids.add_text(expiry.transfer_id);
    expiry_times.add_number(expiry.expires_at_us);
  }
  try {
    work.exec_prepared(append_statement, expiry_ids.finish(), expiry_times.finish(), head_after.position,
                       pqxx::binarystring(head_after.hash));
  } catch (const pqxx::unique_violation& error) {
    throw AppendConflict(error.what());
  }
  try {
    work.commit();
  } catch (const pqxx::in_doubt_error&) {
    // The caller asks the store whether it landed; if it did, this time was its commit's.
    add_step_time(times, &AppendStepTimes::commit, started);
    throw;
  }
  add_step_time(times, &AppendStepTimes::commit, started);
}

AppendOutcome append_batch(
    pqxx::work& work, const LockedHead& head, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times) {
  const LockedHead after = write_batch(work, head, events, records_for, times);
  commit_batch(work, after, expiries, times);
  return {GlobalPosition(head.position + 1), GlobalPosition(after.position)};
}

}  // namespace ledger::engine
