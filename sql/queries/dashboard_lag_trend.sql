-- How far behind PyPI the catalog was, over the last week, from the samples.
SELECT taken_at, greatest(pypi_serial - serial, 0)
FROM sync_samples
WHERE taken_at >= now() - interval '7 days' AND pypi_serial IS NOT NULL
ORDER BY taken_at;
