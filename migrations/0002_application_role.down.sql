REVOKE ALL ON schema_migrations FROM ledger_app;
REVOKE ALL ON checkpoints FROM ledger_app;
REVOKE ALL ON idempotency_keys FROM ledger_app;
REVOKE ALL ON event_store_head FROM ledger_app;
REVOKE ALL ON events FROM ledger_app;
