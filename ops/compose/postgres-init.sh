#!/usr/bin/env bash
# Runs once, on an empty data directory (docker-entrypoint-initdb.d): the schema owner that
# `ledger migrate up` runs as, and the application role serve and the projectors use (the
# migrations grant it what it needs; they create it without a password when it is missing).
set -euo pipefail
owner_password=$(cat /run/secrets/owner-password)
app_password=$(cat /run/secrets/app-password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_password="$owner_password" -v app_password="$app_password" <<'SQL'
CREATE ROLE ledger_owner LOGIN CREATEROLE PASSWORD :'owner_password';
CREATE ROLE ledger_app LOGIN PASSWORD :'app_password';
GRANT ALL ON DATABASE ledger TO ledger_owner;
ALTER SCHEMA public OWNER TO ledger_owner;
SQL
