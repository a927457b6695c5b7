-- A builder's doctor report (operate/doctor_reports.py): the newest one a builder sent wins.
INSERT INTO builder_doctor AS d (builder, checked_at, received_at, ok, roles, checks)
VALUES (%(builder)s, %(checked_at)s, now(), %(ok)s, %(roles)s, %(checks)s)
ON CONFLICT (builder) DO UPDATE SET
    checked_at = EXCLUDED.checked_at, received_at = EXCLUDED.received_at, ok = EXCLUDED.ok,
    roles = EXCLUDED.roles, checks = EXCLUDED.checks
WHERE d.checked_at <= EXCLUDED.checked_at;
