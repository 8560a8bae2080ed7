-- Holds with a timeout, so the engine's sweeper finds the expired ones without scanning the
-- log. Written in the same transaction as the TransferPending event; rows are removed by the
-- sweeper once the hold has ended. A work list, not a source of truth: the events are.
CREATE TABLE pending_expiries (
    transfer_id text        PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX pending_expiries_expires_at_idx ON pending_expiries (expires_at);
GRANT SELECT, INSERT, DELETE ON pending_expiries TO ledger_app;
