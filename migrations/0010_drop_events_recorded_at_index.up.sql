-- Issue 18: every index on events must be justified by a query that needs it. No query reads
-- events by recorded_at (time ranges are served by read.audit, whose own BRIN index stays;
-- `replay --since/--until` reads the log in position order and filters as it goes), yet each
-- appended row paid for this one (about 0.8 µs of the server's CPU, measured). See
-- engine/README.md, "Indexes on the append path".
DROP INDEX events_recorded_at_idx;
