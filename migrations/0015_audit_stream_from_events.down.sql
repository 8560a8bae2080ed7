-- The stream id comes back from the event store, which holds it for every position.
ALTER TABLE read.audit ADD COLUMN stream_id text;
UPDATE read.audit a SET stream_id = e.stream_id FROM events e WHERE e.position = a.position;
ALTER TABLE read.audit ALTER COLUMN stream_id SET NOT NULL;
CREATE INDEX audit_stream_idx ON read.audit (stream_id, position);
-- A shadow made under this migration lacks the column: the next rebuild starts it over.
DROP TABLE IF EXISTS rebuild.audit;
