-- The audit query by stream walks the event store's own (stream_id, version) index and joins
-- read.audit by position (projections/src/read_models.cpp), so the audit model no longer keeps
-- the stream id nor an index on it (issue 18, item 4). That index's keys are random (a
-- `transfer-<id>` stream per transfer): on the bench's store it was 115 MB beside a 210 MB
-- table, and copying 600,000 audit rows into the table with every index took 3.06 s, 1.65 s
-- without it (2026-12-01). Within a stream, versions grow with positions (both follow the commit
-- order), so paging by position through a stream is paging by version.
DROP INDEX read.audit_stream_idx;
-- Marks the column dropped: no table rewrite, milliseconds on a table of any size. Its space is
-- given back by `ledger rebuild audit` or VACUUM FULL read.audit.
ALTER TABLE read.audit DROP COLUMN stream_id;
-- A rebuild interrupted before this migration left a shadow table that still has the column,
-- which the projector no longer writes: drop it, so the next run starts the shadow over (its
-- progress row no longer names the shadow's tables).
DROP TABLE IF EXISTS rebuild.audit;
