-- The role the services connect as. It may read and append events but never change them
-- (invariant 1); roles are cluster-wide, so it is created only when missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_app') THEN
        CREATE ROLE ledger_app LOGIN;
    END IF;
END
$$;

REVOKE ALL ON events FROM PUBLIC;
REVOKE ALL ON events FROM ledger_app;
GRANT SELECT, INSERT ON events TO ledger_app;
GRANT SELECT, UPDATE ON event_store_head TO ledger_app;
GRANT SELECT, INSERT ON idempotency_keys TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON checkpoints TO ledger_app;
GRANT SELECT ON schema_migrations TO ledger_app;
