-- Read models that scale with the partitions of the events topic (projections/README.md,
-- "Partitions"). The relay puts every stream in one partition (murmur2 of the stream id), so a
-- read model's progress is kept per partition: `position` is the highest global position such
-- that every event of that partition's streams at or below it is applied. Each row is locked by
-- the one projector process assigned the partition, in the same transaction as the read-model
-- rows it writes. read.projections.watermark stays the minimum over the rows (every event at or
-- below it is applied): health, lag, the relay's replay point and `rebuild` use it.
ALTER TABLE read.projections
    -- The partition count the watermarks were split by (NULL: not split yet). A topic with
    -- another count maps streams to other partitions: the projector stops until a rebuild.
    ADD COLUMN partitions int CHECK (partitions > 0);

CREATE TABLE read.partition_watermarks (
    projection text        NOT NULL REFERENCES read.projections (name) ON DELETE CASCADE,
    partition  int         NOT NULL CHECK (partition >= 0),
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON read.partition_watermarks TO ledger_app;
