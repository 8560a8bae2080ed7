DROP SCHEMA read CASCADE;
DROP TABLE relay_partitions;
DELETE FROM checkpoints WHERE name = 'relay';
DROP TRIGGER events_notify_appended ON events;
DROP FUNCTION notify_events_appended();
