-- The catalog against PyPI: our serial, the latest sample of PyPI's, and how old our newest event is.
SELECT s.last_serial, s.derived_serial, s.updated_at,
       (SELECT to_timestamp(j.ts) FROM journal j WHERE j.serial = s.last_serial),
       x.pypi_serial, x.taken_at, x.wheels, x.wheel_bytes
FROM sync_state s
LEFT JOIN LATERAL (SELECT * FROM sync_samples ORDER BY taken_at DESC LIMIT 1) x ON true;
