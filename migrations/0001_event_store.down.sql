DROP TABLE checkpoints;
DROP TABLE idempotency_keys;
DROP TABLE event_store_head;
DROP TABLE events;
DROP FUNCTION events_are_immutable();
