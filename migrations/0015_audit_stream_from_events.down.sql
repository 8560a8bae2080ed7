-- The binary before reads the stream id from read.audit: the rows this release wrote get it
-- back from the event store (a rewrite of those rows, which `ledger migrate down` may run more
-- than once: its trials run in a savepoint, migrations/README.md), and the column is required
-- again.
UPDATE read.audit a SET stream_id = e.stream_id FROM events e
WHERE a.stream_id IS NULL AND e.position = a.position;
ALTER TABLE read.audit ALTER COLUMN stream_id SET NOT NULL;
DO $$
BEGIN
    IF to_regclass('rebuild.audit') IS NOT NULL THEN
        UPDATE rebuild.audit a SET stream_id = e.stream_id FROM events e
        WHERE a.stream_id IS NULL AND e.position = a.position;
        ALTER TABLE rebuild.audit ALTER COLUMN stream_id SET NOT NULL;
    END IF;
END
$$;
