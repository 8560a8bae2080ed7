-- The store's incarnation (docs/operations.md, "Backup and restore"). A point-in-time restore
-- brings positions back that new events will take again, while Kafka still holds the lost
-- timeline's messages under the same positions. `ledger migrate new-incarnation`, run once the
-- restored cluster is up (ops/restore.sh --finish), gives the store a new id; the relay carries
-- it in every envelope and publishes again from the restore point under it, and projectors and
-- downstream consumers refuse messages of another incarnation. One row, replaced by the bump.
CREATE TABLE store_incarnation (
    id             uuid        PRIMARY KEY,
    -- The event store's head when this incarnation began: positions above it in an earlier
    -- incarnation are void (another timeline's events).
    since_position bigint      NOT NULL CHECK (since_position >= 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX store_incarnation_one_row ON store_incarnation ((true));
INSERT INTO store_incarnation (id, since_position) VALUES (gen_random_uuid(), 0);
GRANT SELECT ON store_incarnation TO ledger_app;

-- The incarnation each checkpoint was taken under: a relay whose checkpoint is of another
-- incarnation publishes again from the restore point.
ALTER TABLE checkpoints ADD COLUMN incarnation uuid;
ALTER TABLE read.projections ADD COLUMN incarnation uuid;
