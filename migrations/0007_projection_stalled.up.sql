-- A projection that cannot apply a position (an event it cannot decode, a read-model row the
-- database refuses) records it here, so `serve`'s /health, in another process, reports the
-- projection as stalled. The projector keeps retrying and clears these columns in the same
-- transaction as the watermark that moves past the position.
ALTER TABLE read.projections
    ADD COLUMN stalled_position bigint CHECK (stalled_position > 0),
    ADD COLUMN stalled_reason   text,
    ADD COLUMN stalled_since    timestamptz;
