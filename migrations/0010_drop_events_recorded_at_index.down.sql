CREATE INDEX events_recorded_at_idx ON events USING brin (recorded_at);
