-- What each builder's doctor said when its worker last started (operate/doctor_reports.py). Builders
-- hold no catalog credentials: a worker sends its report over SFTP into the index host's incoming
-- folder, the builder_health DAG records it here, the dashboard shows it.
--
-- builder      the worker's name (its Celery hostname, e.g. pi-kitchen@pi-kitchen)
-- checked_at   when the worker ran its checks (its own clock, never later than the index host's)
-- received_at  when the index host recorded the report
-- ok           no check failed (computed on the index host from the checks, not taken from the report)
-- roles        the roles it examined (builder; index-host for an index host's worker)
-- checks       every finding: [{role, name, what, status (ok|warn|FAIL), detail, fix}]

CREATE TABLE builder_doctor (
    builder      text PRIMARY KEY,
    checked_at   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    ok           boolean NOT NULL,
    roles        text[] NOT NULL,
    checks       jsonb NOT NULL
);
