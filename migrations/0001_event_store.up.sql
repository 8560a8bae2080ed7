-- The event store: the immutable, hash-chained, densely numbered log (DESIGN.md invariants 1-3, 6).
CREATE TABLE events (
    position       bigint      PRIMARY KEY CHECK (position > 0),
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    event_id       uuid        NOT NULL UNIQUE,
    type           text        NOT NULL,
    schema_version smallint    NOT NULL,
    payload        bytea       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    hash           bytea       NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);
-- recorded_at grows with position, so a BRIN index serves time ranges at a tiny write cost.
CREATE INDEX events_recorded_at_idx ON events USING brin (recorded_at);

-- One row: the last assigned position and its hash. Appenders take it with
-- UPDATE ... RETURNING, which serialises commits and keeps positions dense and in commit order.
CREATE TABLE event_store_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL CHECK (position >= 0),
    hash      bytea   NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO event_store_head (singleton, position, hash)
VALUES (true, 0, decode(repeat('00', 32), 'hex'));

-- Outcome of every command that carried an idempotency key, written in the same transaction
-- as the command's events (invariant 4). Keys are scoped by the authenticated actor.
CREATE TABLE idempotency_keys (
    actor        text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    outcome      bytea       NOT NULL,
    position     bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);

-- Progress of the relay and other log readers.
CREATE TABLE checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION events_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events is not allowed', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();
