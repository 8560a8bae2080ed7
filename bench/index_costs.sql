-- What each index of the audit read model and of the event store costs per row written, by hand
-- (issue 18; not part of ledger-bench). Run against a database a bench left with a log, e.g.
--   ledger-bench --catch-up-scale --database-url URL --out DIR    (a store of about 1.2 million events)
--   psql URL -f bench/index_costs.sql
-- as a superuser (server-side COPY files in the data directory's parent, /tmp here). It copies the
-- store's rows out once, then COPYs them into scratch tables with one index set each, in one
-- transaction per COPY, and prints each COPY's time; the scratch tables are dropped at the end.
-- Times are of the whole COPY (heap, WAL, indexes), on a checkpointed cluster, so each
-- difference from the "primary key only" run is that index's cost. Run it more than once: on a
-- shared VM one COPY's time moves by half from one run to the next.
\set ON_ERROR_STOP on
\timing on

-- The audit model's rows as the projector writes them (migration 0016).
COPY (SELECT position, type, metadata->>'actor', recorded_at FROM events ORDER BY position)
  TO '/tmp/ledger_index_costs_audit.txt';
-- The same rows with the type and the actor as integer codes (dense ranks of the text), to
-- weigh audit keys that compare as integers against the text keys read.audit has.
COPY (SELECT position, dense_rank() OVER (ORDER BY type), dense_rank() OVER (ORDER BY metadata->>'actor'),
             recorded_at FROM events ORDER BY position)
  TO '/tmp/ledger_index_costs_audit_codes.txt';
-- The event store's rows, in binary as the appender sends them.
COPY (SELECT * FROM events ORDER BY position) TO '/tmp/ledger_index_costs_events.bin' (FORMAT binary);

CREATE TABLE scratch_audit_pk (position bigint PRIMARY KEY, type text NOT NULL, actor text NOT NULL,
                               recorded_at timestamptz NOT NULL);
CREATE TABLE scratch_audit_actor (LIKE scratch_audit_pk INCLUDING ALL);
CREATE INDEX ON scratch_audit_actor (actor, position);
CREATE TABLE scratch_audit_type (LIKE scratch_audit_pk INCLUDING ALL);
CREATE INDEX ON scratch_audit_type (type, position);
CREATE TABLE scratch_audit_brin (LIKE scratch_audit_pk INCLUDING ALL);
CREATE INDEX ON scratch_audit_brin USING brin (recorded_at);
CREATE TABLE scratch_audit_all (LIKE scratch_audit_pk INCLUDING ALL);
CREATE INDEX ON scratch_audit_all (actor, position);
CREATE INDEX ON scratch_audit_all (type, position);
CREATE INDEX ON scratch_audit_all USING brin (recorded_at);

CREATE TABLE scratch_audit_codes (position bigint PRIMARY KEY, type_code integer NOT NULL,
                                  actor_code integer NOT NULL, recorded_at timestamptz NOT NULL);
CREATE INDEX ON scratch_audit_codes (actor_code, position);
CREATE INDEX ON scratch_audit_codes (type_code, position);
CREATE INDEX ON scratch_audit_codes USING brin (recorded_at);

CREATE TABLE scratch_events_heap (LIKE events);
CREATE TABLE scratch_events_pk (LIKE events);
ALTER TABLE scratch_events_pk ADD PRIMARY KEY (position);
CREATE TABLE scratch_events_event_id (LIKE scratch_events_pk INCLUDING ALL);
ALTER TABLE scratch_events_event_id ADD UNIQUE (event_id);
CREATE TABLE scratch_events_stream_version (LIKE scratch_events_pk INCLUDING ALL);
ALTER TABLE scratch_events_stream_version ADD UNIQUE (stream_id, version);
CREATE TABLE scratch_events_brin (LIKE scratch_events_pk INCLUDING ALL);
CREATE INDEX ON scratch_events_brin USING brin (recorded_at);

CHECKPOINT;
\echo audit: primary key only
COPY scratch_audit_pk FROM '/tmp/ledger_index_costs_audit.txt';
\echo audit: primary key and (actor, position)
COPY scratch_audit_actor FROM '/tmp/ledger_index_costs_audit.txt';
\echo audit: primary key and (type, position)
COPY scratch_audit_type FROM '/tmp/ledger_index_costs_audit.txt';
\echo audit: primary key and brin (recorded_at)
COPY scratch_audit_brin FROM '/tmp/ledger_index_costs_audit.txt';
\echo audit: all four, as read.audit
COPY scratch_audit_all FROM '/tmp/ledger_index_costs_audit.txt';
\echo audit: all four, the type and the actor as integer codes
COPY scratch_audit_codes FROM '/tmp/ledger_index_costs_audit_codes.txt';

CHECKPOINT;
\echo events: no index
COPY scratch_events_heap FROM '/tmp/ledger_index_costs_events.bin' (FORMAT binary);
\echo events: primary key only
COPY scratch_events_pk FROM '/tmp/ledger_index_costs_events.bin' (FORMAT binary);
\echo events: primary key and unique (event_id)
COPY scratch_events_event_id FROM '/tmp/ledger_index_costs_events.bin' (FORMAT binary);
\echo events: primary key and unique (stream_id, version)
COPY scratch_events_stream_version FROM '/tmp/ledger_index_costs_events.bin' (FORMAT binary);
\echo events: primary key and brin (recorded_at)
COPY scratch_events_brin FROM '/tmp/ledger_index_costs_events.bin' (FORMAT binary);

\timing off
SELECT count(*) AS rows_each FROM scratch_audit_pk;
DROP TABLE scratch_audit_pk, scratch_audit_actor, scratch_audit_type, scratch_audit_brin, scratch_audit_all,
           scratch_audit_codes,
           scratch_events_heap, scratch_events_pk, scratch_events_event_id, scratch_events_stream_version,
           scratch_events_brin;
