-- Migration 0015 left read.audit's stream column NULL in every row the projector writes and
-- kept it, with its index, for the release before it, whose serves filtered by them during the
-- rolling upgrade. No binary of this release or the one before reads or writes them (the audit
-- query by stream walks the event store's (stream_id, version) index), so both go: each audit
-- row inserted no longer maintains a fifth index. Measured 2026-12-02 on the bench's store
-- (catch-up from empty read models to position 1,118,483): the `COPY read.audit` statements
-- took 22.2 and 18.0 s of PostgreSQL's time with the NULL column and its index, 15.5 and 18.0 s
-- without them; index bytes per row 169 against 137.
--
-- Catalogue changes only: DROP COLUMN marks the column dropped (its NULLs took no space) and
-- drops audit_stream_idx with it. An upgrade from a release before 0015 must not keep that
-- release's serves running across this one (docs/operations.md, "Upgrading to migration 0016").

-- Every audit read and write would queue behind an ALTER waiting for the table's lock (a
-- running `ledger replay reconcile` holds it for its whole run): give up after 5 s instead;
-- `ledger migrate up` can be run again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE read.audit DROP COLUMN stream_id;
-- A rebuild interrupted before this migration left a shadow made LIKE the table before; the
-- shadow's indexes are built from the live table's when it completes.
ALTER TABLE IF EXISTS rebuild.audit DROP COLUMN IF EXISTS stream_id;
