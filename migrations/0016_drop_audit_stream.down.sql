-- The column and its index back, as migration 0015 left them: nullable, and NULL in every row
-- (this release's projector never wrote it); reverting 0015 too then fills them from the store.
-- ADD COLUMN takes the table's exclusive lock and the index build reads the whole table under
-- it, so audit reads and writes wait: 3.3 s for 1,120,000 rows on the bench's store
-- (2026-12-02), with the runner's trials (migrations/README.md).
SET LOCAL lock_timeout = '5s';
ALTER TABLE read.audit ADD COLUMN stream_id text;
CREATE INDEX audit_stream_idx ON read.audit (stream_id, position);
-- A half-built shadow gets the column; its indexes are built from the live table's at the end.
ALTER TABLE IF EXISTS rebuild.audit ADD COLUMN IF NOT EXISTS stream_id text;
