ALTER TABLE read.balances RESET (fillfactor);

-- The dropped columns cannot be filled from the table itself: the audit model is recreated
-- empty in its 0004 form and its watermark reset, so the projector refills it from the event
-- store (it reads the store in order while far behind), as after a rebuild.
DROP TABLE read.audit;
CREATE TABLE read.audit (
    position       bigint      PRIMARY KEY,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL,
    type           text        NOT NULL,
    event_id       uuid        NOT NULL,
    actor          text        NOT NULL,
    command_id     text        NOT NULL,
    correlation_id text        NOT NULL,
    causation_id   text        NOT NULL,
    request_id     text        NOT NULL,
    client_address text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    data           jsonb       NOT NULL
);
CREATE INDEX audit_actor_idx ON read.audit (actor, position);
CREATE INDEX audit_stream_idx ON read.audit (stream_id, position);
CREATE INDEX audit_type_idx ON read.audit (type, position);
CREATE INDEX audit_recorded_at_idx ON read.audit USING brin (recorded_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON read.audit TO ledger_app;
DELETE FROM read.partition_watermarks WHERE projection = 'audit';
UPDATE read.projections SET watermark = 0, partitions = NULL, applied = 0 WHERE name = 'audit';
