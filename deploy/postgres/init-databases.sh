#!/bin/sh
# First start of the PostgreSQL volume only (docker-entrypoint-initdb.d): the roles and the
# project's own database. Temporal's databases (temporal, temporal_visibility) are created and
# migrated by the temporal-schema job with Temporal's own tool (temporal-sql-tool).
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v temporal_password="$TEMPORAL_DB_PASSWORD" \
     -v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" -v app_db="$APP_DB_NAME" <<'EOSQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
EOSQL
