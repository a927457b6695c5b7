-- docker-compose only: the Airflow metadata database beside the catalog (not a catalog migration).
CREATE DATABASE airflow OWNER wheelwright;
