#!/usr/bin/env bash
# Create one database and one login role each for Airflow, MLflow and the inference log.
#
# Run by the postgres image's entrypoint (/docker-entrypoint-initdb.d) once, when the data volume
# is empty. The passwords come from the environment (docker-compose.yaml passes them from .env)
# and reach SQL as psql variables (:'name' quotes them as literals), never spliced into SQL text.
# Changing a password in .env later does not change the role: see the README.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"
: "${INFERENCE_DB_PASSWORD:?INFERENCE_DB_PASSWORD must be set}"

create_database() {
  local name="$1" password="$2"
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
  echo "init-databases: database and role '$name' ready"
}

create_database airflow "$AIRFLOW_DB_PASSWORD"
create_database mlflow "$MLFLOW_DB_PASSWORD"
create_database inference "$INFERENCE_DB_PASSWORD"
