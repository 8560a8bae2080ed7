#include "appender.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
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
using db::BinaryArray;

namespace {

constexpr const char* append_statement = "ledger_append_batch";
constexpr const char* append_records_statement = "ledger_append_records";

// The whole append in one statement, so a commit costs one round trip besides BEGIN, the head's
// lock and COMMIT. Every row travels as binary array parameters (BinaryArray): PostgreSQL
// copies each element's bytes (checking text as UTF-8) and parses only the metadata's JSON. The
// data-modifying CTEs run even when unreferenced; the events' density check (migration 0006's
// statement trigger) runs at the statement's end.
constexpr const char* append_sql = R"sql(
WITH new_events AS (
  INSERT INTO events (position, stream_id, version, event_id, type, schema_version, payload,
                      metadata, recorded_at, hash)
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],
                       $6::smallint[], $7::bytea[], $8::jsonb[], $9::timestamptz[], $10::bytea[])
), new_keys AS (
  INSERT INTO idempotency_keys (actor, key, request_hash, outcome, position)
  SELECT * FROM unnest($11::text[], $12::text[], $13::bytea[], $14::bytea[], $15::bigint[])
), new_expiries AS (
  INSERT INTO pending_expiries (transfer_id, expires_at)
  SELECT * FROM unnest($16::text[], $17::timestamptz[])
)
UPDATE event_store_head SET position = $18, hash = $19
)sql";

// append_sql on a head the writer expects (append_on_head), in a statement of its own with no
// transaction around it: the head's row is updated first (the main query reads `head`, the
// inserts run after it) and only if it still is where the writer left it; the inserts take
// their rows only when it was. The row lock taken by the update is held through the
// statement's implicit commit, as lock_head's is through COMMIT.
constexpr const char* append_on_head_statement = "ledger_append_on_head";
constexpr const char* append_on_head_sql = R"sql(
WITH head AS (
  UPDATE event_store_head SET position = $18, hash = $19
  WHERE position = $20 AND hash = $21
  RETURNING 1
), new_events AS (
  INSERT INTO events (position, stream_id, version, event_id, type, schema_version, payload,
                      metadata, recorded_at, hash)
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],
                       $6::smallint[], $7::bytea[], $8::jsonb[], $9::timestamptz[], $10::bytea[])
  WHERE EXISTS (SELECT FROM head)
), new_keys AS (
  INSERT INTO idempotency_keys (actor, key, request_hash, outcome, position)
  SELECT * FROM unnest($11::text[], $12::text[], $13::bytea[], $14::bytea[], $15::bigint[])
  WHERE EXISTS (SELECT FROM head)
), new_expiries AS (
  INSERT INTO pending_expiries (transfer_id, expires_at)
  SELECT * FROM unnest($16::text[], $17::timestamptz[])
  WHERE EXISTS (SELECT FROM head)
)
SELECT count(*) FROM head
)sql";

// A batch of no events (keyed refusals only): an INSERT into events, even of no rows, would fire
// its statement triggers (the relay's wake-up, the density check) for nothing.
constexpr const char* append_records_sql = R"sql(
WITH new_keys AS (
  INSERT INTO idempotency_keys (actor, key, request_hash, outcome, position)
  SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bigint[])
), new_expiries AS (
  INSERT INTO pending_expiries (transfer_id, expires_at)
  SELECT * FROM unnest($6::text[], $7::timestamptz[])
)
UPDATE event_store_head SET position = $8, hash = $9
)sql";

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

// The trigger of migration 0006 refused the batch: it would have left a version gap. Its
// message is the error's primary one, on the first line of libpq's text after the severity
// (which the server's lc_messages may translate); a DETAIL line below may quote row data.
bool is_version_gap(const pqxx::check_violation& error) {
  const std::string_view text(error.what());
  return text.substr(0, text.find('\n')).find(":  version gap: stream ") != std::string_view::npos;
}

}  // namespace

void prepare_append(pqxx::connection& connection) {
  connection.prepare(append_statement, append_sql);
  connection.prepare(append_records_statement, append_records_sql);
  connection.prepare(append_on_head_statement, append_on_head_sql);
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

// The append statement's parameters: one binary array per column (BinaryArray).
struct AppendParameters {
  BinaryArray positions{BinaryArray::Element::int8};
  BinaryArray stream_ids{BinaryArray::Element::text};
  BinaryArray versions{BinaryArray::Element::int8};
  BinaryArray event_ids{BinaryArray::Element::uuid};
  BinaryArray types{BinaryArray::Element::text};
  BinaryArray schema_versions{BinaryArray::Element::int2};
  BinaryArray payloads{BinaryArray::Element::bytea};
  BinaryArray metadata{BinaryArray::Element::jsonb};
  BinaryArray recorded_at{BinaryArray::Element::timestamptz};
  BinaryArray hashes{BinaryArray::Element::bytea};
  BinaryArray key_actors{BinaryArray::Element::text};
  BinaryArray keys{BinaryArray::Element::text};
  BinaryArray request_hashes{BinaryArray::Element::bytea};
  BinaryArray outcomes{BinaryArray::Element::bytea};
  BinaryArray key_positions{BinaryArray::Element::int8};
  BinaryArray expiry_ids{BinaryArray::Element::text};
  BinaryArray expiry_times{BinaryArray::Element::timestamptz};

  // A command's events share their metadata: serialized once per run of equal metadata.
  void add_events(const std::vector<RecordedEvent>& events) {
    const EventMetadata* last_metadata = nullptr;
    std::string metadata_json;
    for (const auto& event : events) {
      positions.add_int8(event.position.value());
      stream_ids.add_bytes(event.stream_id);
      versions.add_int8(event.version.value());
      event_ids.add_uuid(event.event_id);
      types.add_bytes(event.type);
      schema_versions.add_int2(event.schema_version);
      payloads.add_bytes(event.payload);
      if (last_metadata == nullptr || !(*last_metadata == event.metadata)) {
        metadata_json = metadata_to_json(event.metadata);
        last_metadata = &event.metadata;
      }
      metadata.add_jsonb(metadata_json);
      recorded_at.add_timestamp(event.recorded_at_us);
      hashes.add_bytes(event.hash);
    }
  }

  void add_records(const std::vector<IdempotencyRecord>& records) {
    for (const auto& record : records) {
      key_actors.add_bytes(record.actor);
      keys.add_bytes(record.key);
      request_hashes.add_bytes(record.request_hash);
      outcomes.add_bytes(record.outcome);
      key_positions.add_int8(record.position);
    }
  }

  void add_expiries(const std::vector<ExpiryRecord>& expiries) {
    for (const auto& expiry : expiries) {
      expiry_ids.add_bytes(expiry.transfer_id);
      expiry_times.add_timestamp(expiry.expires_at_us);
    }
  }
};

// A parameter pqxx 6 sends in binary.
pqxx::binarystring binary(BinaryArray& array) {
  const std::string bytes = array.finish();
  return pqxx::binarystring(bytes);
}

// Runs `statement`, mapping the store's refusals: a key written before (an event's or an
// idempotency record's) or a version gap the store refuses (the batch was decided on a state
// the store does not hold) is an AppendConflict, and the transaction writes nothing.
template <typename Statement>
auto refusals_as_conflicts(Statement statement) {
  try {
    return statement();
  } catch (const pqxx::unique_violation& error) {
    throw AppendConflict(error.what());
  } catch (const pqxx::check_violation& error) {
    if (!is_version_gap(error)) throw;
    spdlog::error("append refused by the store: {}", error.what());
    throw AppendConflict(error.what());
  }
}

// Runs the append statement in `work` (refusals as in refusals_as_conflicts).
void run_append_statement(pqxx::work& work, AppendParameters& p, const LockedHead& head_after) {
  refusals_as_conflicts([&] {
    if (p.positions.size() == 0) {
      work.exec_prepared(append_records_statement, binary(p.key_actors), binary(p.keys),
                         binary(p.request_hashes), binary(p.outcomes), binary(p.key_positions),
                         binary(p.expiry_ids), binary(p.expiry_times), head_after.position,
                         pqxx::binarystring(head_after.hash));
      return;
    }
    work.exec_prepared(append_statement, binary(p.positions), binary(p.stream_ids),
                       binary(p.versions), binary(p.event_ids), binary(p.types),
                       binary(p.schema_versions), binary(p.payloads), binary(p.metadata),
                       binary(p.recorded_at), binary(p.hashes), binary(p.key_actors),
                       binary(p.keys), binary(p.request_hashes), binary(p.outcomes),
                       binary(p.key_positions), binary(p.expiry_ids), binary(p.expiry_times),
                       head_after.position, pqxx::binarystring(head_after.hash));
  });
}

}  // namespace

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

namespace {

// The append's parameters for the rows of `parts` (sealed one after another from `head` up to
// `head_after`), `records` and `expiries`, once the rows pass the batch's checks.
AppendParameters checked_parameters(const LockedHead& head, const LockedHead& head_after,
                                    const std::vector<const std::vector<RecordedEvent>*>& parts,
                                    const std::vector<IdempotencyRecord>& records,
                                    const std::vector<ExpiryRecord>& expiries) {
  // The checks look at the rows of every part together.
  std::vector<RecordedEvent> joined;
  const std::vector<RecordedEvent>* all = parts.size() == 1 ? parts.front() : &joined;
  if (parts.size() != 1) {
    for (const auto* part : parts) joined.insert(joined.end(), part->begin(), part->end());
  }
  assert_no_problem(check_batch_balanced(*all));
  assert_no_problem(check_streams_continue(*all));
  assert_no_problem(check_positions_dense(*all, head.position));
  LEDGER_ASSERT(head.position + static_cast<std::int64_t>(all->size()) == head_after.position,
                "the head after an append must follow its last row");
  LEDGER_ASSERT(head_after.hash == (all->empty() ? head.hash : all->back().hash),
                "the head after an append must hold its last row's hash");
  AppendParameters parameters;
  parameters.add_events(*all);
  parameters.add_records(records);
  parameters.add_expiries(expiries);
  return parameters;
}

}  // namespace

void write_and_commit(pqxx::work& work, const LockedHead& head, const LockedHead& head_after,
                      const std::vector<const std::vector<RecordedEvent>*>& parts,
                      const std::vector<IdempotencyRecord>& records,
                      const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times) {
  const auto rows_started = Clock::now();
  AppendParameters parameters = checked_parameters(head, head_after, parts, records, expiries);
  add_step_time(times, &AppendStepTimes::rows, rows_started);

  const auto write_started = Clock::now();
  run_append_statement(work, parameters, head_after);
  add_step_time(times, &AppendStepTimes::write, write_started);

  const auto commit_started = Clock::now();
  try {
    work.commit();
  } catch (const pqxx::in_doubt_error&) {
    // The caller asks the store whether it landed; if it did, this time was its commit's.
    add_step_time(times, &AppendStepTimes::commit, commit_started);
    throw;
  }
  add_step_time(times, &AppendStepTimes::commit, commit_started);
}

AppendOutcome append_batch(
    pqxx::work& work, const LockedHead& head, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times) {
  const auto rows_started = Clock::now();
  const LockedHead after = seal_rows(head, events);
  const std::vector<IdempotencyRecord> records = records_for(GlobalPosition(head.position + 1));
  add_step_time(times, &AppendStepTimes::rows, rows_started);
  write_and_commit(work, head, after, {&events}, records, expiries, times);
  const GlobalPosition last(after.position);
  return {GlobalPosition(head.position + 1), last, std::move(after)};
}

std::optional<LockedHead> append_on_head(
    pqxx::connection& connection, const LockedHead& head, std::vector<RecordedEvent>& events,
    const std::function<std::vector<IdempotencyRecord>(GlobalPosition first)>& records_for,
    const std::vector<ExpiryRecord>& expiries, AppendStepTimes* times) {
  LEDGER_ASSERT(!events.empty(), "an append on the head carries events");
  const auto rows_started = Clock::now();
  LockedHead after = seal_rows(head, events);
  const std::vector<IdempotencyRecord> records = records_for(GlobalPosition(head.position + 1));
  AppendParameters p = checked_parameters(head, after, {&events}, records, expiries);
  add_step_time(times, &AppendStepTimes::rows, rows_started);

  const auto write_started = Clock::now();
  // A connection found dead here has sent nothing: a plain error (nothing written), not a
  // commit in doubt. The statement's PREPARE goes first for the same reason.
  connection.prepare_now(append_on_head_statement);
  pqxx::nontransaction statement(connection);
  bool moved = false;
  try {
    const pqxx::result result = refusals_as_conflicts([&] {
      return statement.exec_prepared(
          append_on_head_statement, binary(p.positions), binary(p.stream_ids), binary(p.versions),
          binary(p.event_ids), binary(p.types), binary(p.schema_versions), binary(p.payloads),
          binary(p.metadata), binary(p.recorded_at), binary(p.hashes), binary(p.key_actors),
          binary(p.keys), binary(p.request_hashes), binary(p.outcomes), binary(p.key_positions),
          binary(p.expiry_ids), binary(p.expiry_times), after.position,
          pqxx::binarystring(after.hash), head.position, pqxx::binarystring(head.hash));
    });
    moved = result.at(0).at(0).as<std::int64_t>() == 0;
  } catch (const pqxx::broken_connection& error) {
    // Sent or not, committed or not: only the store can tell (the caller asks it).
    add_step_time(times, &AppendStepTimes::write, write_started);
    throw pqxx::in_doubt_error(
        std::string("the connection was lost during an append on the head: ") + error.what());
  }
  add_step_time(times, &AppendStepTimes::write, write_started);
  if (moved) return std::nullopt;
  return after;
}

}  // namespace ledger::engine
