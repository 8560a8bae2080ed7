DROP SCHEMA read CASCADE;
DELETE FROM checkpoints WHERE name = 'relay';
DROP TRIGGER events_notify_appended ON events;
DROP FUNCTION notify_events_appended();
