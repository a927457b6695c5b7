-- Each builder's CPU temperature over the last day, from its health checks.
SELECT builder, checked_at, temp_c
FROM builder_health_samples
WHERE checked_at >= now() - interval '24 hours' AND temp_c IS NOT NULL
ORDER BY builder, checked_at;
