-- The binary before reads the stream id from read.audit: the rows this release wrote get it
-- back from the event store, and the column is required again. Writers wait (readers do not)
-- from the start, or a projector of this release would insert NULLs behind the fill and SET
-- NOT NULL would fail: stop this release's projectors and rebuilds first
-- (docs/operations.md, "Upgrading to migration 0015"). Every filled row is rewritten, with
-- its index entries; `ledger migrate down` may run this script more than once (its trials run
-- in a savepoint, migrations/README.md), so VACUUM read.audit afterwards.
LOCK TABLE read.audit IN SHARE ROW EXCLUSIVE MODE;
UPDATE read.audit a SET stream_id = e.stream_id FROM events e
WHERE a.stream_id IS NULL AND e.position = a.position;
ALTER TABLE read.audit ALTER COLUMN stream_id SET NOT NULL;
DO $$
BEGIN
    IF to_regclass('rebuild.audit') IS NOT NULL THEN
        LOCK TABLE rebuild.audit IN SHARE ROW EXCLUSIVE MODE;
        UPDATE rebuild.audit a SET stream_id = e.stream_id FROM events e
        WHERE a.stream_id IS NULL AND e.position = a.position;
        ALTER TABLE rebuild.audit ALTER COLUMN stream_id SET NOT NULL;
    END IF;
END
$$;
