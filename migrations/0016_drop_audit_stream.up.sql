-- Migration 0015 left read.audit's stream column NULL in every row the projector writes and
-- kept it, with its index, for the release before it, whose serves filtered by them during the
-- rolling upgrade. No binary of this release or the one before reads or writes them (the audit
-- query by stream walks the event store's (stream_id, version) index), so both go: each audit
-- row inserted no longer maintains a fifth index. Measured 2026-12-02 on the bench's store
-- (catch-up from empty read models to position 1,000,000, five runs each): 168 index bytes per
-- row with the column's index, 136 without; the time saved was within the VM's noise.
--
-- Catalogue changes only: DROP COLUMN marks the column dropped (rows written before 0015 keep
-- their ids' bytes until the table is rewritten, e.g. by `ledger rebuild audit`) and drops
-- audit_stream_idx with it. An upgrade from a release before 0015 must not keep that
-- release's processes running across this one (docs/operations.md, "Upgrading to migration
-- 0016").

-- Every audit read and write would queue behind an ALTER waiting for the table's lock (a
-- running `ledger replay reconcile` holds it for its whole run, `ledger rebuild audit` its
-- shadow for a round): give up after 5 s instead; `ledger migrate up` can be run again. The
-- shadow first, as the rebuild's swap takes them, so neither waits holding what the other
-- needs: a rebuild interrupted before this migration left a shadow made LIKE the table before;
-- its indexes are built from the live table's when it completes.
SET LOCAL lock_timeout = '5s';
ALTER TABLE IF EXISTS rebuild.audit DROP COLUMN IF EXISTS stream_id;
ALTER TABLE read.audit DROP COLUMN stream_id;
