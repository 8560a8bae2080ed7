ALTER TABLE read.projections
    DROP COLUMN stalled_since,
    DROP COLUMN stalled_reason,
    DROP COLUMN stalled_position;
