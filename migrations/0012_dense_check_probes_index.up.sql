-- The check of migration 0006, planned so that it can only probe the (stream_id, version)
-- index. Its plan is made once per session, at the session's first append, from that append's
-- row count and the log's size then; written as one NOT EXISTS under an OR, a large first batch
-- on a small log got a plan that scans the whole events table, and the session kept it while
-- the log grew (every append then read the whole log: found by the bench, issue 18). A LATERAL
-- subquery with LIMIT 1 that names the outer row is run per appended stream, as an index probe,
-- whatever the estimates.
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
      LEFT JOIN LATERAL (SELECT true AS found FROM events e
                          WHERE e.stream_id = added.stream_id AND e.version = added.first_version - 1
                          LIMIT 1) previous ON true
     WHERE added.rows_added <> added.last_version - added.first_version + 1
        OR (added.first_version > 1 AND previous.found IS NULL)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'version gap: stream % would get versions % to % without the versions before them',
                        bad.stream_id, bad.first_version, bad.last_version
            USING ERRCODE = 'check_violation', CONSTRAINT = 'events_stream_versions_dense';
    END IF;
    RETURN NULL;
END
$$;
