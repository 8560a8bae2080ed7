DROP TRIGGER events_stream_versions_dense ON events;
DROP FUNCTION events_continue_their_streams();
