-- The column and its index back, nullable as migration 0015 left them, but NULL in every row
-- (the up dropped the ids of the rows written before 0015 too); reverting 0015 as well then
-- fills every row from the store. ADD COLUMN takes the table's exclusive lock and the index
-- build reads the whole table under it, so audit reads and writes wait: 3.3 s for 1,120,000
-- rows on the bench's store (2026-12-02), with the runner's trials (migrations/README.md).
-- Stop `ledger rebuild audit` first (docs/operations.md, "Upgrading to migration 0016"): a
-- rebuild whose shadow's indexes were already built builds this one in its swap, while the
-- live projector waits.
SET LOCAL lock_timeout = '5s';
-- The shadow first, in the order the rebuild's swap locks them; a half-built shadow's indexes
-- are built from the live table's at the end.
ALTER TABLE IF EXISTS rebuild.audit ADD COLUMN IF NOT EXISTS stream_id text;
ALTER TABLE read.audit ADD COLUMN stream_id text;
CREATE INDEX audit_stream_idx ON read.audit (stream_id, position);
