-- The production stack's databases (not a catalog migration): run by airflow-init as the PostgreSQL
-- superuser through wheelwright.operate.stack.prepare_databases, once per database, on every start.
-- {role} and {database} are quoted identifiers; %(password)s is bound on the client (utility
-- statements take no server-side parameters). Two roles, two databases: the catalog's role cannot reach
-- Airflow's metadata, Airflow's role cannot reach the catalog, and PUBLIC reaches neither.

-- name: role_exists
SELECT 1 FROM pg_roles WHERE rolname = %(role)s;

-- name: role_create
CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %(password)s;

-- name: role_alter
ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %(password)s;

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(database)s;

-- name: database_create
CREATE DATABASE {database} OWNER {role} ENCODING 'UTF8' TEMPLATE template0;

-- name: database_private
REVOKE ALL ON DATABASE {database} FROM PUBLIC;
