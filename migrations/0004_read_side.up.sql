-- The read side (DESIGN.md invariants 8 and 9): a wake-up for the relay, and the read models
-- in their own schema. Every read-model table is written by projectors only, in the same
-- transaction as the projection's watermark in read.projections.

-- Appends wake the relay at commit (one notification per transaction, however many rows).
CREATE FUNCTION notify_events_appended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_events_appended', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify_appended
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_appended();

INSERT INTO checkpoints (name, position) VALUES ('relay', 0) ON CONFLICT DO NOTHING;

-- The highest offset Kafka acknowledged to the relay, per partition. A broker whose partitions
-- end below these has lost data (a restarted development broker, a recreated topic).
CREATE TABLE relay_partitions (
    topic               text   NOT NULL,
    partition           int    NOT NULL,
    acknowledged_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON relay_partitions TO ledger_app;

CREATE SCHEMA read;

-- Per projection: the contiguous global position applied (every event at or below it is in
-- the read model, none above it).
CREATE TABLE read.projections (
    name       text        PRIMARY KEY,
    watermark  bigint      NOT NULL DEFAULT 0 CHECK (watermark >= 0),
    -- Events applied since the projection was created (a counter for rates).
    applied    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO read.projections (name) VALUES ('balance'), ('audit');

-- Per projection and Kafka partition: the next offset to consume. Seeked to on assignment.
CREATE TABLE read.kafka_offsets (
    projection  text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);

-- balance: the fold of each account stream; `version` is the stream version applied.
CREATE TABLE read.balances (
    account_id      text     PRIMARY KEY,
    currency        text     NOT NULL,
    kind            text     NOT NULL,
    owner           text     NOT NULL,
    ledger_code     bigint   NOT NULL,
    flags           bigint   NOT NULL,
    overdraft_limit bigint   NOT NULL,
    status          text     NOT NULL,
    debits_posted   bigint   NOT NULL,
    credits_posted  bigint   NOT NULL,
    debits_pending  bigint   NOT NULL,
    credits_pending bigint   NOT NULL,
    pending_count   bigint   NOT NULL,
    version         bigint   NOT NULL,
    position        bigint   NOT NULL
);

-- statement (part of the balance projection): one row per entry of an account stream.
CREATE TABLE read.entries (
    account_id    text        NOT NULL,
    position      bigint      NOT NULL,
    version       bigint      NOT NULL,
    transfer_id   text        NOT NULL,
    direction     text        NOT NULL,
    phase         text        NOT NULL,
    amount        bigint      NOT NULL,
    counterparty  text        NOT NULL,
    balance_after bigint      NOT NULL,
    recorded_at   timestamptz NOT NULL,
    PRIMARY KEY (account_id, position)
);

-- audit: one row per event.
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

GRANT USAGE ON SCHEMA read TO ledger_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA read TO ledger_app;
