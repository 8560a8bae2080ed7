-- The audit query by stream walks the event store's own (stream_id, version) index and joins
-- read.audit by position (projections/src/read_models.cpp), so the audit projector no longer
-- writes the stream id (issue 18, item 4): its rows leave the column NULL. The index on it
-- had random keys (a `transfer-<id>` stream per transfer); NULL keys all go to its end, in
-- position order, so it now grows like the primary key. Measured 2026-12-02 on the bench's
-- store (catch-up from empty read models to position 1,118,483): the `COPY read.audit`
-- statements took 24.2 and 28.0 s of PostgreSQL's time with the stream ids written, 22.2 and
-- 18.0 s with NULLs and the index, 15.5 and 18.0 s without the index; per row, 105 heap and
-- 210 index bytes with the ids, 78 and 169 with NULLs.
--
-- The column and its index stay for the previous release: its serves, which run on the
-- migrated schema while the serves are rolled (docs/operations.md, "Upgrade with migrations"),
-- still filter by the column through the index, and its projectors still write it. A later
-- migration drops both, once no binary that reads them runs. Catalogue changes only: no row
-- is read or rewritten.

-- The ALTERs need the tables' exclusive lock, and every audit read and write would queue behind
-- one still waiting for it (a running `ledger replay reconcile` holds the table for its whole
-- run): give up after 5 s instead; `ledger migrate up` can be run again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE read.audit ALTER COLUMN stream_id DROP NOT NULL;
-- A rebuild interrupted before this migration left a shadow made LIKE the table before: the
-- new projector resumes it too.
ALTER TABLE IF EXISTS rebuild.audit ALTER COLUMN stream_id DROP NOT NULL;
