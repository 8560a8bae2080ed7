-- Back to the check as migration 0006 wrote it.
CREATE OR REPLACE FUNCTION events_continue_their_streams() RETURNS trigger
LANGUAGE plpgsql
-- Names resolve in the events table's own schema, never in a caller's temporary one.
SET search_path = public, pg_catalog, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    SELECT added.stream_id, added.first_version, added.last_version, added.rows_added
      INTO bad
      FROM (SELECT stream_id, min(version) AS first_version, max(version) AS last_version,
                   count(*) AS rows_added
              FROM appended GROUP BY stream_id) added
     WHERE added.rows_added <> added.last_version - added.first_version + 1
        OR (added.first_version > 1 AND NOT EXISTS (
                SELECT 1 FROM events e
                 WHERE e.stream_id = added.stream_id AND e.version = added.first_version - 1))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'version gap: stream % would get versions % to % without the versions before them',
                        bad.stream_id, bad.first_version, bad.last_version
            USING ERRCODE = 'check_violation', CONSTRAINT = 'events_stream_versions_dense';
    END IF;
    RETURN NULL;
END
$$;
