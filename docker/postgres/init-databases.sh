#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d): one role
# and one database per service, each role owning only its own database. Passwords come from the
# container's environment (docker-compose.yml, overridable in .env), never from this file.
set -euo pipefail

for service in orchestrator payment inventory notify; do
    password_var="${service^^}_DB_PASSWORD"
    password="${!password_var:?$password_var must be set}"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
         -v role="$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
    echo "init-databases: database and role '$service' created"
done
