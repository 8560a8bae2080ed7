#pragma once
// All SQL on the events table, for the event store's reader, the stream loader, the appender
// and the in-doubt check, and on the idempotency table (private to the engine). What a batch
// runs is a Statement, prepared once per session (exec_statement).

#include <pqxx/pqxx>
#include <utility>

#include "ledger/db/prepared.hpp"
#include "ledger/engine/event_store.hpp"

namespace ledger::domain::sql {

// A statement a batch runs (issue 18): PostgreSQL parses it once per session, not per batch.
using db::exec_statement;
using db::Statement;

inline constexpr const char* select_event_columns =
    "SELECT position, stream_id, version, event_id::text, type, schema_version, payload, "
    "metadata::text, (extract(epoch FROM recorded_at) * 1000000)::bigint, hash FROM events";

// Streams (unnest of ids and the version to start from) with their events from that version,
// each stream's in order. LATERAL makes it one index range scan per stream; a plain join lets
// the planner pick a (parallel) sequential scan of the whole log once it grows.
inline constexpr const char* select_stream_tails =
    "SELECT e.stream_id, e.version, e.type, e.payload, e.hash "
    "FROM unnest($1::text[], $2::bigint[]) AS s(id, from_version) "
    "CROSS JOIN LATERAL (SELECT stream_id, version, type, payload, hash FROM events "
    "  WHERE stream_id = s.id AND version >= s.from_version ORDER BY version) e "
    "ORDER BY e.stream_id, e.version";
inline constexpr Statement stream_tails_statement{"ledger_stream_tails", select_stream_tails};

// The head row, locked until the transaction ends: appenders take it first.
inline constexpr const char* lock_head = "SELECT position, hash FROM event_store_head FOR UPDATE";
inline constexpr Statement lock_head_statement{"ledger_lock_head", lock_head};

// Each stream's stored version (0: none).
inline constexpr const char* select_stored_versions =
    "SELECT s.id, coalesce((SELECT max(e.version) FROM events e WHERE e.stream_id = s.id), 0) "
    "FROM unnest($1::text[]) AS s(id)";
inline constexpr Statement stored_versions_statement{"ledger_stored_versions", select_stored_versions};

// The events appended in a range of positions (after $1, up to $2), in position order: what
// another writer committed, for the state cache to fold in.
inline constexpr const char* select_events_between =
    "SELECT stream_id, version, type, payload, hash FROM events WHERE position > $1 AND position <= $2 "
    "ORDER BY position";
inline constexpr Statement events_between_statement{"ledger_events_between", select_events_between};

// The stored idempotency records of (actor, key) pairs (unnest of actors and keys). LIMIT 1 (the
// key is the primary key: at most one row) keeps the LATERAL subquery from being flattened into
// a join the planner may hash after scanning the whole table: prepared, such a plan chosen once
// stayed for the session (the bench saw thousands of whole-table scans a minute).
inline constexpr Statement idempotency_keys_statement{
    "ledger_idempotency_keys",
    "SELECT k.actor, k.key, k.request_hash, k.outcome "
    "FROM unnest($1::text[], $2::text[]) AS w(actor, key) "
    "CROSS JOIN LATERAL (SELECT actor, key, request_hash, outcome FROM idempotency_keys "
    "  WHERE actor = w.actor AND key = w.key LIMIT 1) k"};

// The type is written out, not a parameter: only then can a plan use the partial index of
// migration 0014, whose predicate it must match.
inline constexpr Statement loans_disbursed_statement{
    "ledger_loans_disbursed",
    "SELECT position, stream_id FROM events WHERE type = 'loan_disbursed' AND position > $1 "
    "ORDER BY position LIMIT $2"};

// The head, unlocked: where a reader or the relay stands.
inline constexpr Statement read_head_statement{"ledger_read_head",
                                               "SELECT position, hash FROM event_store_head"};

// Whether the event with this id is stored.
inline bool event_exists(pqxx::transaction_base& work, const std::string& event_id) {
  return !work.exec_params("SELECT 1 FROM events WHERE event_id = $1::uuid", event_id).empty();
}

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
