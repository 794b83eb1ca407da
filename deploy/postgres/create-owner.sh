#!/bin/sh
# Runs once, when the postgres container initialises its data directory: creates the role the
# platform logs in as (no superuser, no CREATEDB, no CREATEROLE) and its database, owned by
# it. `conveyor migrate` then creates the tables as that role, so it owns them too.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$CONVEYOR_DB_PASSWORD" <<'SQL'
CREATE ROLE conveyor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE DATABASE conveyor OWNER conveyor;
SQL
